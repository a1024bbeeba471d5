package integration

import (
	"io"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/godwit/godwit/internal/api"
	"github.com/godwit/godwit/internal/labtest"
)

// TestMetrics creates a VM, migrates it once, and reads the outcome from the center's
// /metrics (over the lab's unix socket) and from both agents' /metrics (from the center's
// namespace, as Prometheus would reach them).
func TestMetrics(t *testing.T) {
	l := newLab(t, 2)
	var vm api.VM
	l.RunJSON(&vm, "vm", "create", "met-1", "--host", "host-1")
	l.WaitHTTP("client", "http://"+vm.IP+"/healthz", 90*time.Second)
	var sum migrationSummary
	l.RunJSON(&sum, "vm", "migrate", "met-1", "--to", "host-2")
	if sum.State != api.MigrationSucceeded {
		t.Fatalf("migration %+v; want a success", sum)
	}
	waitVM(t, l, "met-1", func(v api.VM) bool { return v.Host == "host-2" && v.State == api.VMRunning })
	// Read now, the accelerator probes having answered (the VM ran on both hosts).
	var hosts []api.Host
	l.RunJSON(&hosts, "host", "list")
	if len(hosts) != 2 {
		t.Fatalf("host list shows %d hosts, want 2", len(hosts))
	}
	agentURL := map[string]string{}
	accel := map[string]string{}
	for _, h := range hosts {
		agentURL[h.Name] = "https://" + h.Address + ":7700/metrics"
		accel[h.Name] = h.Accel
	}

	// The center records the outcome just after the CLI sees it: allow it a moment.
	c := waitMetrics(t, func() map[string]float64 { return centerMetrics(t, l) }, map[string]float64{
		`godwit_migrations_total{outcome="succeeded"}`: 1,
	})
	expectMetrics(t, "center", c, map[string]float64{
		`godwit_migrations_total{outcome="failed"}`:    0,
		`godwit_migrations_total{outcome="cancelled"}`: 0,
		`godwit_migration_duration_seconds_count`:      1,
		`godwit_migration_downtime_seconds_count`:      1,
		`godwit_migration_bytes_total`:                 float64(sum.Bytes),
		`godwit_migrations_running`:                    0,
		`godwit_tasks_queued`:                          0,
		`godwit_hosts{state="connected"}`:              2,
		`godwit_vms{state="running"}`:                  1,
		`godwit_api_requests_total{method="POST",route="/api/v1/vms/{name}/migrate",status="202"}`: 1,
	})
	if d := c[`godwit_migration_duration_seconds_sum`]; d <= 0 || d > 120 || d*1000 < sum.TotalMS*0.99 {
		t.Errorf("migration duration sum %v s; the migration took %.0f ms", d, sum.TotalMS)
	}
	for _, h := range []string{"host-1", "host-2"} {
		age, ok := c[`godwit_host_heartbeat_age_seconds{host="`+h+`"}`]
		if !ok || age < 0 || age > 10 {
			t.Errorf("heartbeat age of %s: %v (present %v); want a few seconds at most", h, age, ok)
		}
	}

	// The destination runs the VM; the source ran the migration and holds nothing now.
	dst := waitMetrics(t, func() map[string]float64 { return agentMetrics(t, l, "host-2", agentURL["host-2"]) }, map[string]float64{
		`godwit_agent_incoming_migrations_total{outcome="succeeded"}`: 1,
	})
	expectMetrics(t, "host-2", dst, map[string]float64{
		`godwit_agent_vms{state="running"}`:                           1,
		`godwit_agent_qemu_processes`:                                 1,
		`godwit_agent_incoming_migrations_total{outcome="failed"}`:    0,
		`godwit_agent_outgoing_migrations_total{outcome="succeeded"}`: 0,
		`godwit_agent_accel_info{accel="` + accel["host-2"] + `"}`:    1,
	})
	src := waitMetrics(t, func() map[string]float64 { return agentMetrics(t, l, "host-1", agentURL["host-1"]) }, map[string]float64{
		`godwit_agent_outgoing_migrations_total{outcome="succeeded"}`: 1,
	})
	expectMetrics(t, "host-1", src, map[string]float64{
		`godwit_agent_vms{state="running"}`:                           0,
		`godwit_agent_qemu_processes`:                                 0,
		`godwit_agent_incoming_migrations_total{outcome="succeeded"}`: 0,
		`godwit_agent_accel_info{accel="` + accel["host-1"] + `"}`:    1,
	})

	l.MustRun("vm", "stop", "met-1", "--force")
	l.MustRun("vm", "delete", "met-1")
}

// centerMetrics scrapes the center's /metrics over the lab's unix socket.
func centerMetrics(t *testing.T, l *labtest.Lab) map[string]float64 {
	t.Helper()
	code, body := l.RawAPI(http.MethodGet, "/metrics", "")
	if code != http.StatusOK {
		t.Fatalf("GET /metrics on the center: %d\n%s", code, body)
	}
	if !strings.Contains(body, "# TYPE godwit_migrations_total counter") {
		t.Fatalf("the center's /metrics is not the Prometheus text format:\n%s", body)
	}
	return parseMetrics(t, body)
}

// agentMetrics scrapes an agent's /metrics from the center's namespace.
// agentMetrics reads host's /metrics, over TLS without a client certificate (metrics are
// readable without one).
func agentMetrics(t *testing.T, l *labtest.Lab, host, url string) map[string]float64 {
	t.Helper()
	resp, err := l.HTTPS("center", host, nil).Get(url)
	if err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("GET %s: %s\n%s", url, resp.Status, b)
	}
	return parseMetrics(t, string(b))
}

// parseMetrics reads the samples of the Prometheus text format, keyed as printed:
// `name{label="value",...}`.
func parseMetrics(t *testing.T, body string) map[string]float64 {
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

// waitMetrics scrapes until the samples in until have their values (10 s at most) and
// returns the last scrape.
func waitMetrics(t *testing.T, scrape func() map[string]float64, until map[string]float64) map[string]float64 {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		s := scrape()
		ok := true
		for k, v := range until {
			ok = ok && s[k] == v
		}
		if ok || time.Now().After(deadline) {
			expectMetrics(t, "scrape", s, until)
			return s
		}
		time.Sleep(200 * time.Millisecond)
	}
}

func expectMetrics(t *testing.T, who string, got, want map[string]float64) {
	t.Helper()
	for k, v := range want {
		g, ok := got[k]
		switch {
		case !ok:
			t.Errorf("%s: no sample %s", who, k)
		case g != v:
			t.Errorf("%s: %s = %v; want %v", who, k, g, v)
		}
	}
}
