package metrics

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"math"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/godwit/godwit/internal/api"
	"github.com/godwit/godwit/internal/store"
)

// scrape GETs /metrics from h through a real HTTP server and returns the body and its
// samples, keyed as they are printed: `name{label="value",...}`.
func scrape(t *testing.T, h http.Handler) (string, map[string]float64) {
	t.Helper()
	srv := httptest.NewServer(h)
	defer srv.Close()
	resp, err := srv.Client().Get(srv.URL + "/metrics")
	if err != nil {
		t.Fatalf("GET /metrics: %v", err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("read /metrics: %v", err)
	}
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("GET /metrics: %s\n%s", resp.Status, b)
	}
	if ct := resp.Header.Get("Content-Type"); !strings.HasPrefix(ct, "text/plain") {
		t.Fatalf("GET /metrics: Content-Type %q; want the Prometheus text format", ct)
	}
	return string(b), parseSamples(t, string(b))
}

func parseSamples(t *testing.T, body string) map[string]float64 {
	t.Helper()
	out := map[string]float64{}
	for _, line := range strings.Split(body, "\n") {
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		i := strings.LastIndexByte(line, ' ')
		if i < 0 {
			t.Fatalf("malformed sample line %q", line)
		}
		v, err := strconv.ParseFloat(line[i+1:], 64)
		if err != nil {
			t.Fatalf("sample line %q: %v", line, err)
		}
		out[line[:i]] = v
	}
	return out
}

// want checks that samples exist with the expected values (to within rounding).
func want(t *testing.T, got map[string]float64, exp map[string]float64) {
	t.Helper()
	for k, v := range exp {
		g, ok := got[k]
		if !ok {
			t.Errorf("no sample %s", k)
			continue
		}
		if math.Abs(g-v) > 1e-9*math.Max(1, math.Abs(v)) {
			t.Errorf("%s = %v; want %v", k, g, v)
		}
	}
}

type fakeInventory struct {
	hosts      []store.HostRecord
	vms        []store.VMRecord
	migrations []api.Migration
	err        error
}

func (f *fakeInventory) Hosts(context.Context) ([]store.HostRecord, error) { return f.hosts, f.err }
func (f *fakeInventory) VMs(context.Context) ([]store.VMRecord, error)     { return f.vms, f.err }
func (f *fakeInventory) Migrations(_ context.Context, vm string, active bool, _ int) ([]api.Migration, error) {
	if vm != "" || !active {
		return nil, errors.New("the collector should ask for every unfinished migration")
	}
	return f.migrations, f.err
}

func quiet() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

func testCenter(t *testing.T, inv Inventory, now time.Time) *Center {
	t.Helper()
	c, err := NewCenter(CenterConfig{
		Registry:  prometheus.NewRegistry(),
		Inventory: inv,
		Connected: func(h store.HostRecord) bool { return now.Sub(h.LastHeartbeat) < 10*time.Second },
		Now:       func() time.Time { return now },
		Log:       quiet(),
	})
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func TestCenterMigrationOutcomes(t *testing.T) {
	c := testCenter(t, &fakeInventory{}, time.Now())
	body, s := scrape(t, c.Handler())
	for _, line := range []string{
		"# TYPE godwit_migrations_total counter",
		"# TYPE godwit_migration_duration_seconds histogram",
		"# TYPE godwit_migration_downtime_seconds histogram",
		"# TYPE godwit_migration_bytes_total counter",
		"# TYPE godwit_migrations_running gauge",
		"# TYPE godwit_tasks_queued gauge",
		"# HELP godwit_tasks_queued Migrations waiting to start",
	} {
		if !strings.Contains(body, line) {
			t.Errorf("scrape lacks %q", line)
		}
	}
	want(t, s, map[string]float64{
		`godwit_migrations_total{outcome="succeeded"}`: 0,
		`godwit_migrations_total{outcome="failed"}`:    0,
		`godwit_migrations_total{outcome="cancelled"}`: 0,
		`godwit_migration_duration_seconds_count`:      0,
		`godwit_migration_bytes_total`:                 0,
		`godwit_tasks_queued`:                          0,
		`godwit_migrations_running`:                    0,
	})

	start := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	end := start.Add(3 * time.Second)
	c.RecordMigration(api.Migration{ID: "a", State: api.MigrationSucceeded, Started: start, Finished: &end,
		TotalMS: 2500, DowntimeMS: 42, Bytes: 1 << 30})
	c.RecordMigration(api.Migration{ID: "b", State: api.MigrationFailed, Started: start, Finished: &end, Bytes: 1000})
	c.RecordMigration(api.Migration{ID: "c", State: api.MigrationCancelled, TotalMS: 700, Bytes: 24})
	c.RecordMigration(api.Migration{ID: "d", State: api.MigrationRunning, TotalMS: 1}) // not ended: ignored

	_, s = scrape(t, c.Handler())
	want(t, s, map[string]float64{
		`godwit_migrations_total{outcome="succeeded"}`: 1,
		`godwit_migrations_total{outcome="failed"}`:    1,
		`godwit_migrations_total{outcome="cancelled"}`: 1,
		// 2.5 s, 3 s (from Started/Finished, no TotalMS) and 0.7 s.
		`godwit_migration_duration_seconds_count`:          3,
		`godwit_migration_duration_seconds_sum`:            6.2,
		`godwit_migration_duration_seconds_bucket{le="1"}`: 1,
		`godwit_migration_duration_seconds_bucket{le="5"}`: 3,
		// Only the success has a downtime: 42 ms.
		`godwit_migration_downtime_seconds_count`:              1,
		`godwit_migration_downtime_seconds_sum`:                0.042,
		`godwit_migration_downtime_seconds_bucket{le="0.025"}`: 0,
		`godwit_migration_downtime_seconds_bucket{le="0.05"}`:  1,
		`godwit_migration_bytes_total`:                         1<<30 + 1024,
	})
	if _, ok := s[`godwit_migrations_total{outcome="running"}`]; ok {
		t.Error("an unfinished migration was counted as an outcome")
	}

	// The same function again: the counter goes on.
	c.RecordMigration(api.Migration{ID: "e", State: api.MigrationSucceeded, TotalMS: 1000, DowntimeMS: 5})
	_, s = scrape(t, c.Handler())
	want(t, s, map[string]float64{
		`godwit_migrations_total{outcome="succeeded"}`: 2,
		`godwit_migration_downtime_seconds_count`:      2,
	})
}

func TestCenterInventoryAtScrapeTime(t *testing.T) {
	now := time.Now()
	inv := &fakeInventory{
		hosts: []store.HostRecord{
			{Facts: api.HostFacts{Name: "host-1"}, LastHeartbeat: now.Add(-1500 * time.Millisecond)},
			{Facts: api.HostFacts{Name: "host-2"}, LastHeartbeat: now.Add(-30 * time.Second)},
		},
		vms: []store.VMRecord{{State: api.VMRunning}, {State: api.VMRunning}, {State: api.VMError}},
		migrations: []api.Migration{
			{ID: "m1", State: api.MigrationRunning}, {ID: "m2", State: api.MigrationPreparing},
			{ID: "m3", State: api.MigrationQueued},
		},
	}
	c := testCenter(t, inv, now)
	_, s := scrape(t, c.Handler())
	want(t, s, map[string]float64{
		`godwit_host_heartbeat_age_seconds{host="host-1"}`: 1.5,
		`godwit_host_heartbeat_age_seconds{host="host-2"}`: 30,
		`godwit_hosts{state="connected"}`:                  1,
		`godwit_hosts{state="disconnected"}`:               1,
		`godwit_vms{state="running"}`:                      2,
		`godwit_vms{state="error"}`:                        1,
		`godwit_vms{state="stopped"}`:                      0,
		`godwit_migrations_running`:                        2,
		`godwit_tasks_queued`:                              1,
	})

	// The store changes; the next scrape says so, with nothing updated in between.
	inv.hosts = inv.hosts[:1]
	inv.vms = nil
	inv.migrations = nil
	_, s = scrape(t, c.Handler())
	want(t, s, map[string]float64{
		`godwit_hosts{state="connected"}`:    1,
		`godwit_hosts{state="disconnected"}`: 0,
		`godwit_vms{state="running"}`:        0,
		`godwit_migrations_running`:          0,
		`godwit_tasks_queued`:                0,
	})
	if _, ok := s[`godwit_host_heartbeat_age_seconds{host="host-2"}`]; ok {
		t.Error("a host gone from the store still has a heartbeat age")
	}
}

func TestCenterScrapeSurvivesStoreError(t *testing.T) {
	c := testCenter(t, &fakeInventory{err: errors.New("database is locked")}, time.Now())
	_, s := scrape(t, c.Handler()) // 200: what could be read is served
	want(t, s, map[string]float64{`godwit_migrations_total{outcome="succeeded"}`: 0})
	if _, ok := s[`godwit_hosts{state="connected"}`]; ok {
		t.Error("hosts were reported although the store could not be read")
	}
}

func TestNewCenterRefusesADoubleRegistration(t *testing.T) {
	reg := prometheus.NewRegistry()
	cfg := CenterConfig{Registry: reg, Inventory: &fakeInventory{}, Connected: func(store.HostRecord) bool { return true }, Log: quiet()}
	if _, err := NewCenter(cfg); err != nil {
		t.Fatal(err)
	}
	if _, err := NewCenter(cfg); err == nil || !strings.Contains(err.Error(), "register metrics") {
		t.Fatalf("a second center on the same registry: err = %v; want a registration error", err)
	}
	if _, err := NewCenter(CenterConfig{}); err == nil {
		t.Fatal("NewCenter accepted an empty configuration")
	}
}

func TestInstrumentAPICountsRoutesNotPaths(t *testing.T) {
	c := testCenter(t, &fakeInventory{}, time.Now())
	mux := http.NewServeMux()
	mux.HandleFunc("GET /api/v1/vms/{name}", func(w http.ResponseWriter, r *http.Request) {
		if r.PathValue("name") == "missing" {
			http.Error(w, "no such VM", http.StatusNotFound)
			return
		}
		_, _ = io.WriteString(w, "{}")
	})
	mux.HandleFunc("POST /api/v1/vms/{name}/migrate", func(w http.ResponseWriter, r *http.Request) {
		w.WriteHeader(http.StatusAccepted)
	})
	mux.Handle("GET /metrics", c.Handler())
	srv := httptest.NewServer(c.InstrumentAPI(mux, mux))
	defer srv.Close()
	do := func(method, path string) {
		req, _ := http.NewRequest(method, srv.URL+path, nil)
		resp, err := srv.Client().Do(req)
		if err != nil {
			t.Fatalf("%s %s: %v", method, path, err)
		}
		resp.Body.Close()
	}
	for _, name := range []string{"a", "b", "c"} {
		do(http.MethodGet, "/api/v1/vms/"+name)
	}
	do(http.MethodGet, "/api/v1/vms/missing")
	do(http.MethodPost, "/api/v1/vms/a/migrate")
	do(http.MethodGet, "/no/such/path")
	do("BREW", "/api/v1/vms/a")

	_, s := scrape(t, srv.Config.Handler)
	want(t, s, map[string]float64{
		`godwit_api_requests_total{method="GET",route="/api/v1/vms/{name}",status="200"}`:          3,
		`godwit_api_requests_total{method="GET",route="/api/v1/vms/{name}",status="404"}`:          1,
		`godwit_api_requests_total{method="POST",route="/api/v1/vms/{name}/migrate",status="202"}`: 1,
		`godwit_api_requests_total{method="GET",route="unmatched",status="404"}`:                   1,
		`godwit_api_requests_total{method="other",route="unmatched",status="405"}`:                 1,
	})
	for k := range s {
		if strings.Contains(k, `/api/v1/vms/a"`) || strings.Contains(k, "BREW") || strings.Contains(k, "/no/such") {
			t.Errorf("a raw path or method leaked into a label: %s", k)
		}
	}
}

func TestRouteLabel(t *testing.T) {
	for in, want := range map[string]string{
		"":                           "unmatched",
		"GET /api/v1/vms/{name}":     "/api/v1/vms/{name}",
		"/api/":                      "/api/",
		"POST  /api/v1/hosts/{name}": "/api/v1/hosts/{name}",
	} {
		if got := routeLabel(in); got != want {
			t.Errorf("routeLabel(%q) = %q; want %q", in, got, want)
		}
	}
}

func TestAgentMetrics(t *testing.T) {
	vms := []api.VMStatus{
		{Name: "a", State: api.VMRunning, PID: 100},
		{Name: "b", State: api.VMIncoming, PID: 101},
		{Name: "c", State: api.VMStopped},
	}
	accel := ""
	a, err := NewAgent(AgentConfig{
		Registry: prometheus.NewRegistry(),
		VMs:      func() []api.VMStatus { return vms },
		Accel:    func() string { return accel },
		Log:      quiet(),
	})
	if err != nil {
		t.Fatal(err)
	}
	body, s := scrape(t, a.Handler())
	want(t, s, map[string]float64{
		`godwit_agent_vms{state="running"}`:                           1,
		`godwit_agent_vms{state="incoming"}`:                          1,
		`godwit_agent_vms{state="stopped"}`:                           1,
		`godwit_agent_vms{state="error"}`:                             0,
		`godwit_agent_qemu_processes`:                                 2,
		`godwit_agent_outgoing_migrations_total{outcome="succeeded"}`: 0,
		`godwit_agent_incoming_migrations_total{outcome="aborted"}`:   0,
		`godwit_agent_heartbeat_failures_total`:                       0,
		`godwit_agent_progress_streams`:                               0,
		`godwit_agent_progress_updates_total`:                         0,
		`godwit_agent_migration_reads_total{caller="center"}`:         0,
		`godwit_agent_migration_reads_total{caller="host"}`:           0,
	})
	if strings.Contains(body, "godwit_agent_accel_info{") {
		t.Error("an accelerator is reported while the probe runs")
	}

	accel = "tcg"
	vms = vms[:1]
	a.OutgoingEnded(api.MigrationSucceeded)
	a.OutgoingEnded(api.MigrationCancelled)
	a.OutgoingEnded(api.MigrationRunning) // not an outcome: ignored
	a.IncomingEnded(IncomingSucceeded)
	a.IncomingEnded(IncomingAborted)
	a.IncomingEnded(IncomingAborted)
	a.IncomingEnded("exploded") // not an outcome: ignored
	a.HeartbeatFailed()
	a.ProgressStreamOpened()
	a.ProgressStreamOpened()
	a.ProgressStreamClosed()
	a.ProgressSent(3)
	a.ProgressSent(0)
	a.MigrationRead(true)
	a.MigrationRead(false)
	a.MigrationRead(false)
	body, s = scrape(t, a.Handler())
	want(t, s, map[string]float64{
		`godwit_agent_accel_info{accel="tcg"}`:                        1,
		`godwit_agent_vms{state="running"}`:                           1,
		`godwit_agent_vms{state="incoming"}`:                          0,
		`godwit_agent_qemu_processes`:                                 1,
		`godwit_agent_outgoing_migrations_total{outcome="succeeded"}`: 1,
		`godwit_agent_outgoing_migrations_total{outcome="cancelled"}`: 1,
		`godwit_agent_outgoing_migrations_total{outcome="failed"}`:    0,
		`godwit_agent_incoming_migrations_total{outcome="succeeded"}`: 1,
		`godwit_agent_incoming_migrations_total{outcome="aborted"}`:   2,
		`godwit_agent_incoming_migrations_total{outcome="failed"}`:    0,
		`godwit_agent_heartbeat_failures_total`:                       1,
		`godwit_agent_progress_streams`:                               1,
		`godwit_agent_progress_updates_total`:                         3,
		`godwit_agent_migration_reads_total{caller="center"}`:         1,
		`godwit_agent_migration_reads_total{caller="host"}`:           2,
	})
	for _, bad := range []string{`outcome="running"`, `outcome="exploded"`} {
		if strings.Contains(body, bad) {
			t.Errorf("scrape has %s", bad)
		}
	}
}

func TestNewProcessRegistry(t *testing.T) {
	reg := NewProcessRegistry()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	names := map[string]bool{}
	for _, mf := range mfs {
		names[mf.GetName()] = true
	}
	if !names["go_goroutines"] || !names["process_start_time_seconds"] {
		t.Fatalf("the process registry lacks the Go or process metrics: %v", names)
	}
}
