package agent

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/godwit/godwit/internal/admission"
	"github.com/godwit/godwit/internal/api"
	"github.com/godwit/godwit/internal/migration"
	"github.com/godwit/godwit/internal/qmp"
)

// TestMigrationRequestValidation checks what the source agent accepts of the center's
// migration requests: the priority and the bandwidth cap, when the migration starts and
// while it runs.
func TestMigrationRequestValidation(t *testing.T) {
	a, _ := cpuTestAgent(t, "")
	if _, _, err := a.Define(context.Background(), cpuSpec("keep", "")); err != nil {
		t.Fatal(err)
	}
	req := func(priority string, bw int64) api.AgentMigrateRequest {
		return api.AgentMigrateRequest{ID: "m1", Destination: "host-2", DestinationURL: "https://198.18.1.12:7700",
			DestinationAddr: "198.18.1.12", Priority: priority, MaxBandwidth: bw}
	}
	for _, c := range []struct {
		req        api.AgentMigrateRequest
		code       int
		errCode    string
		mentioning string
	}{
		{req("urgent", 0), 422, "invalid_priority", "high, normal or low"},
		{req("high ", -1), 422, "invalid_bandwidth", "negative"},
		{req("normal", -1), 422, "invalid_bandwidth", "bytes per second"},
		// Valid: refused only because keep does not run.
		{req("HIGH", 0), 409, "conflict", "only a running VM"},
		{req("low", 50e6), 409, "conflict", "only a running VM"},
		{req("", 0), 409, "conflict", "only a running VM"},
	} {
		w := serve(a, http.MethodPost, "/agent/v1/vms/keep/migrate", c.req)
		e := errorOf(t, w)
		if w.Code != c.code || e.Code != c.errCode || !strings.Contains(e.Error, c.mentioning) {
			t.Errorf("migrate with priority %q, max_bandwidth %d: %d %s; want %d %s mentioning %q",
				c.req.Priority, c.req.MaxBandwidth, w.Code, w.Body, c.code, c.errCode, c.mentioning)
		}
	}
	if p, err := parsePriority(" Low "); err != nil || p != admission.Low {
		t.Errorf("parsePriority(\" Low \") = %q, %v", p, err)
	}
	if p, err := parsePriority(""); err != nil || p != admission.Normal {
		t.Errorf("parsePriority(\"\") = %q, %v; want normal", p, err)
	}

	// The cap of a running migration, and of one that ended.
	running := &outgoing{cancel: func() {}, m: api.Migration{ID: "m-run", VM: "keep", State: api.MigrationRunning, Priority: "low", BandwidthCap: 10e6}}
	running.bandwidthCap.Store(10e6)
	ended := &outgoing{cancel: func() {}, m: api.Migration{ID: "m-done", VM: "keep", State: api.MigrationSucceeded}}
	a.migMu.Lock()
	a.migrations["m-run"], a.migrations["m-done"] = running, ended
	a.migMu.Unlock()

	w := serve(a, http.MethodPost, "/agent/v1/migrations/m-run/bandwidth", api.BandwidthRequest{MaxBandwidth: 5e6})
	var m api.Migration
	if err := json.Unmarshal(w.Body.Bytes(), &m); w.Code != http.StatusOK || err != nil || m.BandwidthCap != 5e6 || m.Priority != "low" {
		t.Errorf("setting the cap of a running migration: %d %s", w.Code, w.Body)
	}
	if got := running.bandwidthCap.Load(); got != 5e6 {
		t.Errorf("the driver would read a cap of %d, want 5000000", got)
	}
	w = serve(a, http.MethodGet, "/agent/v1/migrations/m-run", nil)
	if err := json.Unmarshal(w.Body.Bytes(), &m); err != nil || m.BandwidthCap != 5e6 {
		t.Errorf("the migration's record after the new cap: %d %s", w.Code, w.Body)
	}
	for _, c := range []struct {
		id, body   string
		code       int
		mentioning string
	}{
		{"m-run", `{"max_bandwidth":0}`, 200, ""},
		{"m-done", `{"max_bandwidth":1000000}`, 409, "has ended (succeeded)"},
		{"nosuch", `{"max_bandwidth":1000000}`, 404, "no record of migration nosuch"},
		{"m-run", `{"max_bandwidth":-5}`, 422, "negative"},
		{"m-run", `{"max_bw":1}`, 400, "unknown field"},
		{"m-run", `{"max_bandwidth":"fast"}`, 400, "max_bandwidth"},
		{"m-run", ``, 400, "empty"},
	} {
		r := serveRaw(a, http.MethodPost, "/agent/v1/migrations/"+c.id+"/bandwidth", c.body)
		if r.Code != c.code || c.mentioning != "" && !strings.Contains(errorOf(t, r).Error, c.mentioning) {
			t.Errorf("POST bandwidth of %s with %s: %d %s; want %d mentioning %q", c.id, c.body, r.Code, r.Body, c.code, c.mentioning)
		}
	}
	if got := running.bandwidthCap.Load(); got != 0 || running.snapshot().BandwidthCap != 0 {
		t.Errorf("after the cap was lifted the driver reads %d, the record says %d; want 0", got, running.snapshot().BandwidthCap)
	}

	// Only the center may change a cap or read the CPU catalog: hosts call each other
	// only to migrate.
	for _, p := range []struct{ method, path string }{
		{http.MethodPost, "/agent/v1/migrations/m-run/bandwidth"},
		{http.MethodGet, "/agent/v1/cpu-models"},
	} {
		_, pattern := a.api.Handler(httptest.NewRequest(p.method, p.path, nil))
		for _, rt := range Routes() {
			if rt.Pattern() == pattern && rt.Access != api.AccessCenter {
				t.Errorf("%s %s is open to %s", p.method, p.path, rt.Access)
			}
		}
	}
}

// serveRaw sends a raw JSON body to the agent's API.
func serveRaw(a *Agent, method, path, body string) *httptest.ResponseRecorder {
	r := httptest.NewRequest(method, path, strings.NewReader(body))
	r.Header.Set("Content-Type", "application/json")
	w := httptest.NewRecorder()
	a.Handler().ServeHTTP(w, r)
	return w
}

func TestMigrationNice(t *testing.T) {
	for p, want := range map[admission.Priority]int{admission.High: -5, admission.Normal: 0, admission.Low: 10, "": 0} {
		if got := MigrationNice(p); got != want {
			t.Errorf("MigrationNice(%q) = %d, want %d", p, got, want)
		}
	}
}

// threadNiceOf reads the nice level of thread tid of process pid from /proc.
func threadNiceOf(pid, tid int) (int, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/task/%d/stat", pid, tid))
	if err != nil {
		return 0, err
	}
	// After the name in parentheses come the state (field 3) ... nice (field 19).
	s := string(b)
	f := strings.Fields(s[strings.LastIndexByte(s, ')')+1:])
	if len(f) < 17 {
		return 0, fmt.Errorf("unexpected /proc stat %q", s)
	}
	var nice int
	if _, err := fmt.Sscanf(f[16], "%d", &nice); err != nil {
		return 0, fmt.Errorf("nice field %q of %q: %w", f[16], s, err)
	}
	return nice, nil
}

// readThreadNice is threadNiceOf that fails the test on error.
func readThreadNice(t *testing.T, pid, tid int) int {
	t.Helper()
	n, err := threadNiceOf(pid, tid)
	if err != nil {
		t.Fatalf("the nice level of thread %d of process %d: %v", tid, pid, err)
	}
	return n
}

// TestSetThreadNice renices one thread of this test process, which ends with it.
func TestSetThreadNice(t *testing.T) {
	pid := os.Getpid()
	before := readThreadNice(t, pid, pid)
	done := make(chan niceResult)
	// The work runs on a thread that stays locked and ends with its goroutine, reniced;
	// never on the process's main thread, which would outlive it.
	go func() {
		runtime.LockOSThread()
		if unix.Gettid() != pid {
			done <- reniceOwnThread(pid)
			return
		}
		// This is the main thread: held here, the inner goroutine gets another one.
		defer runtime.UnlockOSThread()
		inner := make(chan niceResult)
		go func() {
			runtime.LockOSThread()
			inner <- reniceOwnThread(pid)
		}()
		done <- <-inner
	}()
	r := <-done
	if r.err != nil || r.low != NiceLow || r.high != NiceHigh || r.tid == pid {
		t.Errorf("thread %d: set %d → %d, set %d → %d (%v)", r.tid, NiceLow, r.low, NiceHigh, r.high, r.err)
	}
	if got := readThreadNice(t, pid, pid); got != before {
		t.Errorf("the process's main thread went from nice %d to %d; only the one thread may change", before, got)
	}
	if err := setThreadNice(pid, 1, NiceLow); err == nil || !strings.Contains(err.Error(), "not a thread of process") {
		t.Errorf("renicing pid 1 as a thread of this process = %v; want a refusal", err)
	}
}

// niceResult is what reniceOwnThread did.
type niceResult struct {
	tid       int
	low, high int
	err       error
}

// reniceOwnThread sets the calling thread of process pid to NiceLow, then NiceHigh, and
// reads the level back after each.
func reniceOwnThread(pid int) niceResult {
	r := niceResult{tid: unix.Gettid()}
	r.err = setThreadNice(pid, r.tid, NiceLow)
	if r.err == nil {
		r.low, r.err = threadNiceOf(pid, r.tid)
	}
	if r.err == nil {
		r.err = setThreadNice(pid, r.tid, NiceHigh)
	}
	if r.err == nil {
		r.high, r.err = threadNiceOf(pid, r.tid)
	}
	return r
}

// TestReniceMigration starts a real QEMU, has it migrate (slowly, to a pipe), and checks
// that the agent finds its migration thread, renices it by priority and records it.
func TestReniceMigration(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	dir, err := os.MkdirTemp("", "gwrn")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	sock := filepath.Join(dir, "qmp.sock")
	cmd := exec.Command("qemu-system-x86_64", "-machine", "q35", "-accel", "tcg", "-m", "64", "-nodefaults",
		"-display", "none", "-S", "-qmp", "unix:"+sock+",server=on,wait=off")
	if err := cmd.Start(); err != nil {
		t.Fatalf("start QEMU: %v", err)
	}
	t.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })
	var mon *qmp.Monitor
	for mon == nil {
		if mon, err = qmp.Dial(ctx, sock); err != nil {
			if ctx.Err() != nil {
				t.Fatalf("QEMU's monitor: %v", err)
			}
			time.Sleep(50 * time.Millisecond) // QEMU is still starting
			mon = nil
		}
	}
	defer mon.Close()
	// 1 kB/s: the migration lasts far longer than the test.
	if err := mon.MigrateSetParameters(ctx, qmp.MigrationParameters{MaxBandwidth: qmp.Ptr(int64(1000))}); err != nil {
		t.Fatal(err)
	}
	o := &outgoing{cancel: func() {}, m: api.Migration{ID: "m1", State: api.MigrationRunning}}
	a, _ := cpuTestAgent(t, "")
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	stop := a.reniceMigration(ctx, mon, cmd.Process.Pid, admission.Low, o, log)
	if err := mon.Migrate(ctx, "exec:cat > /dev/null"); err != nil {
		stop()
		t.Fatalf("migrate: %v", err)
	}
	var nice *int
	for deadline := time.Now().Add(20 * time.Second); nice == nil && time.Now().Before(deadline); time.Sleep(50 * time.Millisecond) {
		nice = o.snapshot().ThreadNice
	}
	stop()
	if nice == nil || *nice != NiceLow {
		t.Fatalf("ThreadNice = %v after a low priority migration started; want %d", nice, NiceLow)
	}
	tid, ok, err := migration.MigrationThread(ctx, mon)
	if err != nil || !ok {
		t.Fatalf("the migration thread: %d, %v, %v", tid, ok, err)
	}
	if got := readThreadNice(t, cmd.Process.Pid, tid); got != NiceLow {
		t.Errorf("QEMU's migration thread %d runs at nice %d, want %d", tid, got, NiceLow)
	}
	if got := readThreadNice(t, cmd.Process.Pid, cmd.Process.Pid); got != 0 {
		t.Errorf("QEMU's main thread runs at nice %d; only the migration thread may change", got)
	}
	_ = mon.MigrateCancel(ctx)
}
