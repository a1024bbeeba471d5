package center

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/godwit/godwit/internal/api"
	"github.com/godwit/godwit/internal/audit"
	"github.com/godwit/godwit/internal/pki"
)

// runningCenter is a center served by Run on a TCP port (TLS) and a unix socket, as
// `godwit center` serves it.
type runningCenter struct {
	*Center
	addr, socket string
}

// startCenter runs a center with the given HTTP limits until the test ends.
func startCenter(t *testing.T, limits api.ServerLimits) *runningCenter {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	dir := t.TempDir()
	sock := filepath.Join(dir, "center.sock")
	c, err := New(context.Background(), Config{Listen: addr, Socket: sock, DataDir: dir, HTTP: limits,
		Registry: prometheus.NewRegistry(), Log: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- c.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("center: %v", err)
		}
	})
	rc := &runningCenter{Center: c, addr: addr, socket: sock}
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		if conn, err := rc.dialTLS(); err == nil {
			conn.Close()
			return rc
		}
		if time.Now().After(deadline) {
			t.Fatal("the center did not start serving")
		}
	}
}

// dialTLS connects to the center's TCP port as a client that trusts the cluster's CA.
func (rc *runningCenter) dialTLS() (*tls.Conn, error) {
	return tls.Dial("tcp", rc.addr, &tls.Config{RootCAs: rc.ca.Pool(), ServerName: pki.CenterName, MinVersion: tls.VersionTLS13})
}

// httpsClient is an HTTPS client of the center that presents no certificate.
func (rc *runningCenter) httpsClient() *http.Client {
	return &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{
		TLSClientConfig: &tls.Config{RootCAs: rc.ca.Pool(), ServerName: pki.CenterName, MinVersion: tls.VersionTLS13}}}
}

// Over the center's real listener, a client that sends the header of a login or a join
// and then trickles the body is cut off at the read timeout, and the attempt is in the
// audit trail; meanwhile the center answers others; a huge header is answered 431.
func TestCenterCutsOffSlowLoginAndJoin(t *testing.T) {
	const read = 1500 * time.Millisecond
	rc := startCenter(t, api.ServerLimits{Read: read})
	var wg sync.WaitGroup
	for _, path := range []string{"/api/v1/login", "/api/v1/hosts/join"} {
		wg.Add(1)
		go func() {
			defer wg.Done()
			conn, err := rc.dialTLS()
			if err != nil {
				t.Error(err)
				return
			}
			defer conn.Close()
			start := time.Now()
			fmt.Fprintf(conn, "POST %s HTTP/1.1\r\nHost: godwit-center\r\nContent-Type: application/json\r\nContent-Length: 5000\r\n\r\n{\"user\":\"", path)
			go func() {
				for range 40 {
					time.Sleep(250 * time.Millisecond)
					if _, err := conn.Write([]byte("a")); err != nil {
						return
					}
				}
			}()
			_ = conn.SetReadDeadline(start.Add(read + 5*time.Second))
			_, err = io.Copy(io.Discard, conn)
			took := time.Since(start)
			var ne net.Error
			switch {
			case errors.As(err, &ne) && ne.Timeout():
				t.Errorf("%s: a trickled body held the connection for %s", path, took)
			case took < read-100*time.Millisecond:
				t.Errorf("%s: cut off after %s, before the read timeout %s", path, took, read)
			}
		}()
	}
	// While the two hang on, the center answers others at once.
	time.Sleep(300 * time.Millisecond)
	hc := rc.httpsClient()
	start := time.Now()
	resp, err := hc.Get("https://" + rc.addr + "/api/v1/pki/ca")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK || time.Since(start) > time.Second {
		t.Errorf("GET /api/v1/pki/ca while slow clients hang on: %s after %s", resp.Status, time.Since(start))
	}
	wg.Wait()

	req, _ := http.NewRequest(http.MethodPost, "https://"+rc.addr+"/api/v1/login", strings.NewReader(`{"user":"admin","password":"x"}`))
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("X-Pad", strings.Repeat("a", 2*api.MaxHeaderBytes))
	resp, err = hc.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusRequestHeaderFieldsTooLarge {
		t.Errorf("a login with a %d-byte header: %s; want 431", 2*api.MaxHeaderBytes, resp.Status)
	}

	// Each cut-off attempt is recorded as refused.
	for _, action := range []string{"user.login", "host.join"} {
		recs, err := rc.trail.List(context.Background(), audit.Filter{Action: action})
		if err != nil {
			t.Fatal(err)
		}
		if len(recs) != 1 || recs[0].Outcome != audit.Refused || !strings.Contains(recs[0].Error, "did not arrive in time") {
			t.Errorf("%s records: %+v; want the one cut-off attempt, refused because its body came too slowly", action, recs)
		}
	}
}

// unixClient is an HTTP client of the center's unix socket (as root: the administrator).
func (rc *runningCenter) unixClient() *http.Client {
	return &http.Client{Transport: &http.Transport{DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
		var d net.Dialer
		return d.DialContext(ctx, "unix", rc.socket)
	}}}
}

// Task streams through the served API: one user holds at most maxStreamsPerPrincipal
// (then 429 with a sentence); a stream whose client stops reading while tasks change
// rapidly is dropped, publishing stays fast, and a stream that reads gets every task's
// latest state.
func TestTaskStreamsBoundedAndStuckReaderDropped(t *testing.T) {
	rc := startCenter(t, api.ServerLimits{Write: time.Second})
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	hc := rc.unixClient()
	open := func() (*http.Response, error) {
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, "http://godwit/api/v1/tasks/stream", nil)
		return hc.Do(req)
	}

	// The stuck client: it sends its request and never reads a byte.
	stuck, err := net.Dial("unix", rc.socket)
	if err != nil {
		t.Fatal(err)
	}
	defer stuck.Close()
	fmt.Fprint(stuck, "GET /api/v1/tasks/stream HTTP/1.1\r\nHost: godwit\r\n\r\n")
	reader, err := open()
	if err != nil || reader.StatusCode != http.StatusOK {
		t.Fatalf("a task stream: %v %v", reader, err)
	}
	defer reader.Body.Close()
	latest := map[string]string{}
	readDone := make(chan error, 1)
	go func() {
		readDone <- api.ReadEvents(reader.Body, func(data []byte) error {
			var tk api.Task
			if err := json.Unmarshal(data, &tk); err != nil {
				return err
			}
			latest[tk.ID] = tk.Progress.Phase
			if tk.ID == "end" {
				return io.EOF
			}
			return nil
		})
	}()
	for rc.tasks.subscribers() < 2 {
		time.Sleep(5 * time.Millisecond)
	}

	// Tasks change rapidly, with large states, for longer than the write timeout.
	pad := strings.Repeat("x", 4<<10)
	start := time.Now()
	var slowest time.Duration
	for i := 0; time.Since(start) < 3*time.Second; i++ {
		t0 := time.Now()
		rc.updateTask(ctx, api.Task{ID: fmt.Sprintf("t%d", i%200), Kind: "vm.start", State: api.TaskRunning,
			Progress: api.TaskProgress{Phase: fmt.Sprint(i)}, Error: pad}, false)
		slowest = max(slowest, time.Since(t0))
		if i%200 == 199 {
			time.Sleep(time.Millisecond)
		}
	}
	// A publisher held by the stuck stream would wait for its write to time out
	// (api.WriteTimeout, 30 s); a second allows for a loaded machine's scheduling.
	if slowest > time.Second {
		t.Errorf("publishing a task change took up to %s with a stuck stream open", slowest)
	}
	rc.updateTask(ctx, api.Task{ID: "end", Kind: "vm.start", State: api.TaskRunning}, false)
	for deadline := time.Now().Add(10 * time.Second); rc.tasks.subscribers() != 1; time.Sleep(10 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("%d task streams open %s after a client stopped reading; want the stuck one dropped", rc.tasks.subscribers(), time.Since(start))
		}
	}
	select {
	case err := <-readDone:
		if !errors.Is(err, io.EOF) || len(latest) != 201 {
			t.Fatalf("the stream that reads: %d tasks seen, %v", len(latest), err)
		}
	case <-ctx.Done():
		t.Fatal("the stream that reads did not see the last task")
	}

	// One user holds at most maxStreamsPerPrincipal streams.
	for i := range maxStreamsPerPrincipal - 1 {
		resp, err := open()
		if err != nil || resp.StatusCode != http.StatusOK {
			t.Fatalf("stream %d of root: %v %v", i+2, resp, err)
		}
		defer resp.Body.Close()
	}
	resp, err := open()
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusTooManyRequests || !strings.Contains(string(body), "already holds") {
		t.Fatalf("stream %d of root: %s %s; want 429 with the reason", maxStreamsPerPrincipal+1, resp.Status, body)
	}
}

// A heartbeat that carries more refusals than an agent may send, with fields larger than
// an agent keeps, is recorded bounded: at most api.MaxAgentRefusals records, every field
// cut, and the rest counted.
func TestHeartbeatRefusalsRecordedBounded(t *testing.T) {
	c := newTestCenter(t)
	huge := strings.Repeat("p", 600)
	f := fuzzHostFacts("host-1", "https://127.0.0.1:7700")
	const sent = 300
	for range sent {
		f.Refusals = append(f.Refusals, api.AgentRefusal{Time: time.Now(), From: huge, Method: "GET", Path: "/" + huge, Subject: huge, Reason: huge})
	}
	f.Refusals[0].Dropped = 7
	body, _ := json.Marshal(f)
	if len(body) > api.MaxBodyBytes {
		t.Fatalf("the test's heartbeat is %d bytes, over the body limit", len(body))
	}
	req := httptest.NewRequest(http.MethodPost, "/api/v1/hosts/heartbeat", strings.NewReader(string(body)))
	req.Header.Set("Content-Type", "application/json")
	w := httptest.NewRecorder()
	c.Handler().ServeHTTP(w, req)
	if w.Code != http.StatusOK {
		t.Fatalf("heartbeat: %d %s", w.Code, w.Body)
	}
	recs, err := c.trail.List(context.Background(), audit.Filter{Action: "agent.request", Limit: 1000})
	if err != nil {
		t.Fatal(err)
	}
	if len(recs) != api.MaxAgentRefusals {
		t.Fatalf("%d refusals recorded; want %d", len(recs), api.MaxAgentRefusals)
	}
	dropped := 0
	for _, r := range recs {
		var p map[string]any
		if err := json.Unmarshal(r.Params, &p); err != nil {
			t.Fatal(err)
		}
		if n, ok := p["dropped"].(float64); ok {
			dropped += int(n)
		}
		path, _ := p["path"].(string)
		if len(path) > api.MaxRefusalField || len(r.Actor) > api.MaxRefusalField || len(r.From) > api.MaxRefusalField || len(r.Error) > api.MaxRefusalField {
			t.Fatalf("a refusal recorded unbounded: path %d, actor %d, from %d, error %d bytes", len(path), len(r.Actor), len(r.From), len(r.Error))
		}
	}
	if want := 7 + sent - api.MaxAgentRefusals; dropped != want {
		t.Fatalf("the records count %d dropped refusals; want %d", dropped, want)
	}
}

// The center refuses, with 422 and the bound, a VM beyond the spec's limits, before it
// places or records anything.
func TestCreateVMRefusesOversizedSpecs(t *testing.T) {
	c := newTestCenter(t)
	h := c.Handler()
	nics := make([]api.NIC, 10000)
	for i := range nics {
		nics[i] = api.NIC{Network: "lab"}
	}
	disks := make([]api.Disk, 17)
	for i := range disks {
		disks[i] = api.Disk{Datastore: "shared", Path: fmt.Sprintf("d%d.raw", i), Format: "raw"}
	}
	for name, c := range map[string]struct {
		req  api.CreateVMRequest
		want string
	}{
		"10,000 NICs":       {api.CreateVMRequest{Name: "big", NICs: nics}, "10000 NICs; a VM may have at most 8"},
		"17 disks":          {api.CreateVMRequest{Name: "big", Disks: disks, Boot: api.Boot{FromDisk: true}}, "17 disks"},
		"long name":         {api.CreateVMRequest{Name: strings.Repeat("n", 200)}, "name is 200 bytes long; at most 63"},
		"long command line": {api.CreateVMRequest{Name: "big", Boot: api.Boot{Kernel: "/k", Cmdline: strings.Repeat("c", 3000)}}, "command line is 3000 bytes"},
		"long initrd path":  {api.CreateVMRequest{Name: "big", Boot: api.Boot{Kernel: "/k", Initrd: "/" + strings.Repeat("i", 2000)}}, "initrd's path"},
		"long image name":   {api.CreateVMRequest{Name: "big", Image: strings.Repeat("i", 300)}, "image name"},
		"huge data disk": {api.CreateVMRequest{Name: "big", Disks: []api.Disk{{Datastore: "shared", Path: "d.qcow2", Format: "qcow2", SizeMiB: 1 << 40}}},
			"64 TiB"},
	} {
		body, _ := json.Marshal(c.req)
		r := httptest.NewRequest(http.MethodPost, "/api/v1/vms", strings.NewReader(string(body)))
		r.Header.Set("Content-Type", "application/json")
		w := httptest.NewRecorder()
		h.ServeHTTP(w, r)
		if w.Code != http.StatusUnprocessableEntity || !strings.Contains(w.Body.String(), c.want) {
			t.Errorf("%s: %d %s; want 422 saying %q", name, w.Code, w.Body, c.want)
		}
	}
	if vms, err := c.store.VMs(context.Background()); err != nil || len(vms) != 0 {
		t.Fatalf("VMs after the refusals: %v, %v; want none", vms, err)
	}
}
