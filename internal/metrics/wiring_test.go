package metrics_test

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"math"
	"net"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/godwit/godwit/internal/agent"
	"github.com/godwit/godwit/internal/api"
	"github.com/godwit/godwit/internal/center"
)

// These tests scrape the real center's and agent's /metrics, wired as they run.

func quiet() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

func get(t *testing.T, hc *http.Client, url string) (int, string) {
	t.Helper()
	resp, err := hc.Get(url)
	if err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

func samples(t *testing.T, body string) map[string]float64 {
	t.Helper()
	out := map[string]float64{}
	for _, line := range strings.Split(body, "\n") {
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		i := strings.LastIndexByte(line, ' ')
		v, err := strconv.ParseFloat(line[i+1:], 64)
		if i < 0 || err != nil {
			t.Fatalf("malformed sample line %q", line)
		}
		out[line[:i]] = v
	}
	return out
}

func check(t *testing.T, got map[string]float64, exp map[string]float64) {
	t.Helper()
	for k, v := range exp {
		g, ok := got[k]
		switch {
		case !ok:
			t.Errorf("no sample %s", k)
		case math.Abs(g-v) > 1e-9:
			t.Errorf("%s = %v; want %v", k, g, v)
		}
	}
}

// TestCenterServesMetrics runs a center on a unix socket, sends it a heartbeat and a few
// API requests, and scrapes GET /metrics on the same listener.
func TestCenterServesMetrics(t *testing.T) {
	dir := t.TempDir()
	sock := filepath.Join(dir, "c.sock")
	reg := prometheus.NewRegistry()
	c, err := center.New(context.Background(), center.Config{DataDir: filepath.Join(dir, "data"), Socket: sock, Registry: reg, Log: quiet()})
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
	hc := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, "unix", sock)
		}}}
	cl, err := api.NewClient("unix://"+sock, 10*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		err := cl.Do(ctx, http.MethodPost, "/api/v1/hosts/heartbeat", api.HostFacts{Name: "host-1", AgentURL: "https://127.0.0.1:1"}, nil)
		if err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("heartbeat to the center: %v", err)
		}
		time.Sleep(20 * time.Millisecond)
	}
	var se *api.StatusError
	if err := cl.Do(ctx, http.MethodGet, "/api/v1/vms/nosuch", nil, nil); !errors.As(err, &se) || se.Status != http.StatusNotFound {
		t.Fatalf("GET a missing VM: %v; want a 404", err)
	}
	_ = cl.Do(ctx, http.MethodGet, "/api/v1/vms/other", nil, nil)

	code, body := get(t, hc, "http://godwit/metrics")
	if code != http.StatusOK {
		t.Fatalf("GET /metrics: %d\n%s", code, body)
	}
	s := samples(t, body)
	check(t, s, map[string]float64{
		`godwit_hosts{state="connected"}`:              1,
		`godwit_hosts{state="disconnected"}`:           0,
		`godwit_vms{state="running"}`:                  0,
		`godwit_migrations_total{outcome="succeeded"}`: 0,
		`godwit_migration_duration_seconds_count`:      0,
		`godwit_migrations_running`:                    0,
		`godwit_tasks_queued`:                          0,
		`godwit_api_requests_total{method="POST",route="/api/v1/hosts/heartbeat",status="200"}`: 1,
		`godwit_api_requests_total{method="GET",route="/api/v1/vms/{name}",status="404"}`:       2,
	})
	if age, ok := s[`godwit_host_heartbeat_age_seconds{host="host-1"}`]; !ok || age < 0 || age > 5 {
		t.Errorf("heartbeat age of host-1: %v (present %v); want a few seconds at most", age, ok)
	}
	// The scrape itself is counted on the next one, under its route.
	_, body = get(t, hc, "http://godwit/metrics")
	check(t, samples(t, body), map[string]float64{
		`godwit_api_requests_total{method="GET",route="/metrics",status="200"}`: 1,
	})
	// The registry passed in is the one served.
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	found := false
	for _, mf := range mfs {
		found = found || mf.GetName() == "godwit_host_heartbeat_age_seconds"
	}
	if !found {
		t.Error("the registry given to the center does not hold its metrics")
	}
}

// TestAgentServesMetrics scrapes an agent's API handler: no VMs yet, the probe not done,
// and an incoming migration it refuses counted as failed.
func TestAgentServesMetrics(t *testing.T) {
	a, err := agent.New(agent.Config{
		Name: "host-1", Center: "https://127.0.0.1:1", Listen: "127.0.0.1:7700", StateDir: t.TempDir(),
		Datastores: map[string]string{"shared": t.TempDir()}, Registry: prometheus.NewRegistry(), Log: quiet(),
	}, "test")
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(a.Handler())
	defer srv.Close()
	code, body := get(t, srv.Client(), srv.URL+"/metrics")
	if code != http.StatusOK {
		t.Fatalf("GET /metrics: %d\n%s", code, body)
	}
	check(t, samples(t, body), map[string]float64{
		`godwit_agent_vms{state="running"}`:                           0,
		`godwit_agent_qemu_processes`:                                 0,
		`godwit_agent_outgoing_migrations_total{outcome="succeeded"}`: 0,
		`godwit_agent_incoming_migrations_total{outcome="failed"}`:    0,
		`godwit_agent_heartbeat_failures_total`:                       0,
	})
	if strings.Contains(body, "godwit_agent_accel_info{") {
		t.Error("the accelerator is reported before the probe answered")
	}
	if strings.Contains(body, "go_goroutines") {
		t.Error("the agent's own registry holds process metrics it was not given")
	}

	resp, err := srv.Client().Post(srv.URL+"/agent/v1/incoming", "application/json",
		strings.NewReader(`{"id":"m1","source":"host-2","spec":{"name":"web-1"}}`))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode < 400 {
		t.Fatalf("an incoming VM without a valid spec was accepted: %s", resp.Status)
	}
	_, body = get(t, srv.Client(), srv.URL+"/metrics")
	check(t, samples(t, body), map[string]float64{
		`godwit_agent_incoming_migrations_total{outcome="failed"}`: 1,
	})
}
