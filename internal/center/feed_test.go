package center

import (
	"context"
	"crypto/tls"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/godwit/godwit/internal/agent"
	"github.com/godwit/godwit/internal/api"
	"github.com/godwit/godwit/internal/pki"
)

// stallingWriter passes an answer on until its first non-empty write, which it holds
// until the request ends: a connection on which nothing arrives any more, as when the
// host is gone or the link is cut.
type stallingWriter struct {
	http.ResponseWriter
	ctx context.Context
}

func (w stallingWriter) Write(p []byte) (int, error) {
	if len(p) > 0 {
		<-w.ctx.Done()
		return 0, w.ctx.Err()
	}
	return w.ResponseWriter.Write(p)
}

func (w stallingWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }

// One progress stream serves every migration followed on a host; a stream that falls
// silent is taken for dead after api.ProgressSilence and opened again; the stream
// closes when no migration on the host is followed any more. The agent is a real one,
// behind TLS with a certificate the center's CA issued to the host; only the first
// stream's connection is made to fall silent.
func TestFeedOneStreamPerHost(t *testing.T) {
	c := newTestCenter(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer func() { cancel(); c.wg.Wait() }()
	c.runCtx = ctx

	quiet := slog.New(slog.NewTextHandler(io.Discard, nil))
	ag, err := agent.New(agent.Config{Name: "host-1", Center: "https://127.0.0.1:9", Listen: "127.0.0.1:0",
		StateDir: filepath.Join(t.TempDir(), "s"), Registry: prometheus.NewRegistry(), Log: quiet}, "test")
	if err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	var opened []time.Time
	var open atomic.Int32
	handler := ag.Handler()
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/agent/v1/migrations/stream" {
			handler.ServeHTTP(w, r)
			return
		}
		mu.Lock()
		opened = append(opened, time.Now())
		first := len(opened) == 1
		mu.Unlock()
		open.Add(1)
		defer open.Add(-1)
		if first {
			w = stallingWriter{ResponseWriter: w, ctx: r.Context()}
		}
		handler.ServeHTTP(w, r)
	}))
	key, err := pki.NewKey()
	if err != nil {
		t.Fatal(err)
	}
	cert, err := c.ca.Issue(key.Public(), pki.Leaf{Name: "host-1"}, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	srv.TLS = pki.ServerTLS(tls.Certificate{Certificate: [][]byte{cert.Raw}, PrivateKey: key, Leaf: cert})
	srv.StartTLS()
	defer srv.Close()
	if _, err := c.heartbeat(ctx, api.HostFacts{Name: "host-1", AgentURL: srv.URL}); err != nil {
		t.Fatal(err)
	}
	streams := func() []time.Time {
		mu.Lock()
		defer mu.Unlock()
		return append([]time.Time(nil), opened...)
	}

	wake := make(chan struct{}, 1)
	a := c.joinFeed(api.Migration{ID: "m-a", Source: "host-1"}, wake)
	b := c.joinFeed(api.Migration{ID: "m-b", Source: "host-1"}, wake)
	time.Sleep(time.Second)
	if n := len(streams()); n != 1 {
		t.Fatalf("two migrations followed on host-1: %d streams opened; want one", n)
	}
	deadline := time.Now().Add(api.ProgressSilence + 3*time.Second)
	for len(streams()) < 2 && time.Now().Before(deadline) {
		time.Sleep(50 * time.Millisecond)
	}
	s := streams()
	if len(s) != 2 {
		t.Fatalf("the stream fell silent: %d streams opened in %s; want it opened again after %s", len(s), api.ProgressSilence+3*time.Second, api.ProgressSilence)
	}
	if gap := s[1].Sub(s[0]); gap < api.ProgressSilence-time.Second {
		t.Errorf("the silent stream was opened again after %s; want after %s of silence", gap, api.ProgressSilence)
	}
	// The second stream is well: heartbeats keep it open past the silence bound.
	time.Sleep(api.ProgressSilence + time.Second)
	if n := len(streams()); n != 2 || open.Load() != 1 {
		t.Errorf("a stream with heartbeats: %d opened, %d open; want it kept", n, open.Load())
	}

	c.leaveFeed("host-1", a)
	time.Sleep(200 * time.Millisecond)
	if open.Load() != 1 {
		t.Errorf("one migration left on host-1: %d streams open; want the one kept", open.Load())
	}
	c.leaveFeed("host-1", b)
	deadline = time.Now().Add(2 * time.Second)
	for open.Load() != 0 && time.Now().Before(deadline) {
		time.Sleep(50 * time.Millisecond)
	}
	c.feedMu.Lock()
	feeds := len(c.feeds)
	c.feedMu.Unlock()
	if open.Load() != 0 || feeds != 0 {
		t.Errorf("no migration followed on host-1: %d streams open, %d feeds; want none", open.Load(), feeds)
	}
}
