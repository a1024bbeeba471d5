package center

import (
	"bytes"
	"context"
	"crypto/tls"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/godwit/godwit/internal/agent"
	"github.com/godwit/godwit/internal/api"
	"github.com/godwit/godwit/internal/audit"
	"github.com/godwit/godwit/internal/pki"
	"github.com/godwit/godwit/internal/store"
)

// Fuzz tests of the center's request handlers, end to end through the real handler
// (routing, audit middleware, metrics, decoding, validation, placement, the store) of a
// real center on a temporary database. The center knows two connected hosts, h1 and h2,
// whose agent is a stand-in: it accepts what the center sends it (checking that it
// decodes strictly) and hands stop and console requests to a real agent that holds the
// VM web-1. web-1 runs on h1 in the center's inventory; db-1, stopped, too. Requests are
// served as Handler serves them: as the in-process administrator.
//
// The property, for any body or query: the answer is never a 5xx, an answer that is
// not a 2xx is JSON with an "error" (a mux redirect, 3xx, is the only exception), and
// a state-changing request leaves exactly one audit record, with its outcome, that
// matches its hash.
//
// Run one for longer with, for example:
//
//	go test -run '^$' -fuzz '^FuzzCreateVM$' -fuzztime 30s ./internal/center

const (
	fuzzWebUUID = "0f8fad5b-d9cb-469f-a165-70867728950e"
	fuzzDBUUID  = "7c9e6679-7425-40de-944b-e07fc1f90ae7"
)

type fuzzCenter struct {
	c *Center
	h http.Handler
	// agent is the handler of the agent behind h1.
	agent http.Handler
}

// newFuzzCenter builds the center described above. heartbeatTimeout is how long hosts
// stay connected without a heartbeat.
func newFuzzCenter(f *testing.F, heartbeatTimeout time.Duration) *fuzzCenter {
	f.Helper()
	quiet := slog.New(slog.NewTextHandler(io.Discard, nil))

	// The real agent behind the stand-in, holding web-1 (never started: no QEMU runs).
	// Its state directory lies deep in a temporary one: the agent puts up to 16
	// characters of a VM's UUID in a path, so a UUID of "../" reaches up to 5 levels up.
	adir, err := os.MkdirTemp("", "gwfz")
	if err != nil {
		f.Fatal(err)
	}
	f.Cleanup(func() { os.RemoveAll(adir) })
	ds := filepath.Join(adir, "ds")
	fuzzWrite(f, filepath.Join(ds, "images/godwit-test/vmlinuz"), "kernel")
	fuzzWrite(f, filepath.Join(ds, "images/godwit-test/initrd.img"), "initrd")
	ag, err := agent.New(agent.Config{Name: "h1", Center: "https://127.0.0.1:9", Listen: "127.0.0.1:0",
		StateDir: filepath.Join(adir, "a/b/c/d/e/f/s"), Datastores: map[string]string{"shared": ds},
		QEMU: "/nonexistent/qemu-system-x86_64", Accel: "tcg", Registry: prometheus.NewRegistry(), Log: quiet}, "fuzz")
	if err != nil {
		f.Fatal(err)
	}
	if _, _, err := ag.Define(context.Background(), api.VMSpec{Name: "web-1", UUID: fuzzWebUUID, CPUs: 1, MemoryMiB: 512,
		Boot: api.Boot{Kernel: "[shared] images/godwit-test/vmlinuz"}}); err != nil {
		f.Fatal(err)
	}
	fuzzWrite(f, filepath.Join(adir, "a/b/c/d/e/f/s/vms", strings.ReplaceAll(fuzzWebUUID, "-", "")[:16], "console.log"),
		"SeaBIOS\nLinux version 6.1\nlogin: \n")
	agentHandler := ag.Handler()

	pool, err := ParsePool("198.18.1.0/24,198.18.1.100-198.18.1.199")
	if err != nil {
		f.Fatal(err)
	}
	c, err := New(context.Background(), Config{Listen: "127.0.0.1:0", DataDir: f.TempDir(),
		Pools: map[string]Pool{"lab": pool}, HeartbeatTimeout: heartbeatTimeout,
		Registry: prometheus.NewRegistry(), Log: quiet})
	if err != nil {
		f.Fatal(err)
	}
	// Run is not called: give the center the context it would have, and close its
	// store at the end.
	ctx, cancel := context.WithCancel(context.Background())
	c.runCtx = ctx
	f.Cleanup(func() {
		cancel()
		c.wg.Wait()
		c.store.Close()
	})
	fc := &fuzzCenter{c: c, h: c.Handler(), agent: agentHandler}

	for _, name := range []string{"h1", "h2"} {
		// Each host's stand-in serves TLS with a certificate the center's CA issued to
		// that host, as a joined agent does.
		key, err := pki.NewKey()
		if err != nil {
			f.Fatal(err)
		}
		cert, err := c.ca.Issue(key.Public(), pki.Leaf{Name: name}, time.Now())
		if err != nil {
			f.Fatal(err)
		}
		agentSrv := httptest.NewUnstartedServer(fuzzStandInAgent(f, agentHandler))
		agentSrv.TLS = pki.ServerTLS(tls.Certificate{Certificate: [][]byte{cert.Raw}, PrivateKey: key, Leaf: cert})
		agentSrv.StartTLS()
		f.Cleanup(agentSrv.Close)
		facts := fuzzHostFacts(name, agentSrv.URL)
		b, _ := json.Marshal(facts)
		if w := fc.do(http.MethodPost, "/api/v1/hosts/heartbeat", "", b); w.Code != http.StatusOK {
			f.Fatalf("heartbeat of %s: %d %s", name, w.Code, w.Body)
		}
	}
	old := time.Now().Add(-time.Hour)
	for _, r := range []store.VMRecord{
		{Spec: api.VMSpec{Name: "web-1", UUID: fuzzWebUUID, CPUs: 1, MemoryMiB: 512, CPUModel: "qemu64",
			Boot: api.Boot{Kernel: "[shared] images/godwit-test/vmlinuz"},
			NICs: []api.NIC{{Network: "lab", MAC: "02:67:77:00:00:01", IP: "198.18.1.100/24"}}},
			Host: "h1", Desired: api.VMRunning, State: api.VMRunning, PID: 4242, Created: old, Updated: old},
		{Spec: api.VMSpec{Name: "db-1", UUID: fuzzDBUUID, CPUs: 2, MemoryMiB: 1024, CPUModel: "qemu64",
			Boot: api.Boot{FromDisk: true}, Disks: []api.Disk{{Datastore: "shared", Path: "vms/db-1/disk.qcow2", Format: "qcow2"}},
			NICs: []api.NIC{{Network: "lab", MAC: "02:67:77:00:00:02", IP: "198.18.1.101/24"}}, MigrationPolicy: "safe"},
			Host: "h1", Desired: api.VMStopped, State: api.VMStopped, Created: old, Updated: old},
	} {
		if err := c.store.InsertVM(context.Background(), r); err != nil {
			f.Fatal(err)
		}
	}
	return fc
}

func fuzzHostFacts(name, agentURL string) api.HostFacts {
	return api.HostFacts{Name: name, AgentURL: agentURL, Address: "127.0.0.1", Version: "fuzz",
		CPU:       api.CPUInfo{Model: "Test CPU", Vendor: "GenuineIntel", Cores: 2, Threads: 2, Flags: []string{"sse2"}},
		MemoryMiB: 64 << 10, FreeMemoryMiB: 32 << 10, QEMUVersion: "8.2.2", Accel: "tcg", Health: "ok",
		Datastores: []api.Datastore{{Name: "shared", Path: "/srv/godwit/shared", TotalByte: 1 << 40, FreeByte: 1 << 39,
			Images: []api.Image{
				{Name: "godwit-test", Kernel: "[shared] images/godwit-test/vmlinuz", Initrd: "[shared] images/godwit-test/initrd.img", Cmdline: "console=ttyS0"},
				{Name: "disky", Disk: "[shared] images/disky/disk.qcow2"},
			}}},
		Networks:    []api.Network{{Name: "lab", Bridge: "br0", MTU: 1500}, {Name: "nopool", Bridge: "br1", MTU: 1500}},
		VMs:         []api.VMStatus{{Name: "web-1", UUID: fuzzWebUUID, State: api.VMRunning, PID: 4242, Accel: "tcg"}},
		BootTime:    time.Date(2025, 3, 1, 12, 0, 0, 0, time.UTC),
		AccelReason: "set by --accel",
	}
}

// fuzzStandInAgent answers the calls the center makes while creating, starting and
// migrating VMs the way a willing agent does, and hands the others (stop, console) to
// real. The source refuses to start a migration (409), so the center records it as
// failed and nothing is left to follow.
func fuzzStandInAgent(f *testing.F, real http.Handler) http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("PUT /agent/v1/vms/{name}", func(w http.ResponseWriter, r *http.Request) {
		var spec api.VMSpec
		if err := api.Decode(w, r, &spec); err != nil {
			// The center sent a spec the agent's decoder refuses: a bug the property
			// catches, since the center turns it into a 502.
			api.WriteJSON(w, http.StatusInternalServerError, api.Error{Error: "stand-in agent: the center's spec does not decode: " + err.Error()})
			return
		}
		if spec.Name != r.PathValue("name") {
			api.WriteJSON(w, http.StatusInternalServerError, api.Error{Error: "stand-in agent: the spec's name differs from the path's"})
			return
		}
		api.WriteJSON(w, http.StatusCreated, api.VMStatus{Name: spec.Name, UUID: spec.UUID, State: api.VMStopped})
	})
	mux.HandleFunc("POST /agent/v1/vms/{name}/start", func(w http.ResponseWriter, r *http.Request) {
		api.WriteJSON(w, http.StatusOK, api.VMStatus{Name: r.PathValue("name"), State: api.VMRunning, PID: 4243, Accel: "tcg"})
	})
	mux.HandleFunc("POST /agent/v1/preflight", func(w http.ResponseWriter, r *http.Request) {
		var req api.IncomingRequest
		if err := api.Decode(w, r, &req); err != nil {
			api.WriteJSON(w, http.StatusInternalServerError, api.Error{Error: "stand-in agent: the center's preflight does not decode: " + err.Error()})
			return
		}
		w.WriteHeader(http.StatusNoContent)
	})
	mux.HandleFunc("POST /agent/v1/vms/{name}/migrate", func(w http.ResponseWriter, r *http.Request) {
		var req api.AgentMigrateRequest
		if err := api.Decode(w, r, &req); err != nil {
			api.WriteJSON(w, http.StatusInternalServerError, api.Error{Error: "stand-in agent: the center's migrate does not decode: " + err.Error()})
			return
		}
		api.WriteError(w, api.Conflict("stand-in agent: VM %s cannot be migrated now", r.PathValue("name")))
	})
	mux.Handle("/", real)
	return mux
}

func fuzzWrite(tb testing.TB, path, data string) {
	tb.Helper()
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		tb.Fatal(err)
	}
	if err := os.WriteFile(path, []byte(data), 0o644); err != nil {
		tb.Fatal(err)
	}
}

// do serves one request to path (unescaped) with the raw query and, if not nil, a JSON
// body.
func (fc *fuzzCenter) do(method, path, rawQuery string, body []byte) *httptest.ResponseRecorder {
	r := httptest.NewRequest(method, "/", bytes.NewReader(body))
	r.URL.Path, r.URL.RawPath, r.URL.RawQuery = path, "", rawQuery
	if body != nil {
		r.Header.Set("Content-Type", "application/json")
	}
	w := httptest.NewRecorder()
	fc.h.ServeHTTP(w, r)
	return w
}

// doVM serves one request to /api/v1/vms/NAME plus rest, with NAME escaped as a client
// escapes it.
func (fc *fuzzCenter) doVM(method, name, rest, rawQuery string, body []byte) *httptest.ResponseRecorder {
	r := httptest.NewRequest(method, "/", bytes.NewReader(body))
	r.URL.Path = "/api/v1/vms/" + name + rest
	r.URL.RawPath = "/api/v1/vms/" + url.PathEscape(name) + rest
	r.URL.RawQuery = rawQuery
	if body != nil {
		r.Header.Set("Content-Type", "application/json")
	}
	w := httptest.NewRecorder()
	fc.h.ServeHTTP(w, r)
	return w
}

// fuzzCheckAnswer checks the property every answer must have.
func fuzzCheckAnswer(t *testing.T, what string, w *httptest.ResponseRecorder) {
	t.Helper()
	switch {
	case w.Code >= 500:
		t.Fatalf("%s: answered %d: %s", what, w.Code, w.Body)
	case w.Code >= 400:
		var e api.Error
		if err := json.Unmarshal(w.Body.Bytes(), &e); err != nil || strings.TrimSpace(e.Error) == "" {
			t.Fatalf("%s: answered %d without a JSON error: %q (%v)", what, w.Code, w.Body, err)
		}
	case w.Code >= 300:
		if w.Header().Get("Location") == "" {
			t.Fatalf("%s: answered %d without a Location", what, w.Code)
		}
	}
}

// auditHead returns the id of the newest audit record (0 if none).
func (fc *fuzzCenter) auditHead(t *testing.T) int64 {
	t.Helper()
	recs, err := fc.c.trail.List(context.Background(), audit.Filter{Limit: 1})
	if err != nil {
		t.Fatalf("read the audit trail: %v", err)
	}
	if len(recs) == 0 {
		return 0
	}
	return recs[0].ID
}

// checkAudit checks that the request left its audit record, after the record before,
// with the action (if not empty) and the outcome its status says, and that the record
// matches its hash. A request that changed state and then ended otherwise leaves two:
// the first, written with its first change, and the end, which names the first.
func (fc *fuzzCenter) checkAudit(t *testing.T, what string, before int64, action string, status int) {
	t.Helper()
	recs, err := fc.c.trail.List(context.Background(), audit.Filter{Limit: 2})
	if err != nil {
		t.Fatalf("%s: read the audit trail: %v", what, err)
	}
	if len(recs) == 0 || recs[0].ID != before+1 && recs[0].ID != before+2 {
		t.Fatalf("%s: answered %d but left no audit record (the newest is still %+v)", what, status, recs)
	}
	r := recs[0]
	for _, x := range recs {
		if h := x.ComputeHash(); h != x.Hash {
			t.Fatalf("%s: the audit record %d does not match its hash (%s, stored %s): %+v", what, x.ID, h, x.Hash, x)
		}
	}
	if r.ID == before+2 {
		first := recs[1]
		var p struct {
			First int64 `json:"first_record"`
		}
		if json.Unmarshal(r.Params, &p) != nil || p.First != first.ID || first.Action != r.Action || first.Outcome != audit.Succeeded {
			t.Fatalf("%s: answered %d and left two records that do not belong together: %+v %s and %+v %s", what, status,
				first, first.Params, r, r.Params)
		}
	}
	want := audit.Succeeded
	switch {
	case status >= 500:
		want = audit.Failed
	case status >= 400:
		want = audit.Refused
	}
	if action != "" && r.Action != action || r.Outcome != want {
		t.Fatalf("%s: the audit record is %s/%s; want %s/%s", what, r.Action, r.Outcome, action, want)
	}
}

func FuzzCreateVM(f *testing.F) {
	for _, s := range []string{
		`{"name":"web-2"}`,
		`{"name":"web-3","start":true}`,
		`{"name":"web-4","host":"h2","cpus":2,"memory_mib":1024,"cpu_model":"host","data_disk_mib":0,"migration_policy":"fast-switchover"}`,
		`{"name":"web-5","image":"disky","nics":[{"network":"nopool"},{"network":"lab","ip":"198.18.1.150"}]}`,
		`{"name":"web-6","boot":{"kernel":"[shared] images/godwit-test/vmlinuz","initrd":"[shared] images/godwit-test/initrd.img","cmdline":"quiet"},"disks":[{"datastore":"shared","path":"vms/web-6/a.qcow2","format":"qcow2","size_mib":64}]}`,
		`{"name":"web-7","boot":{"from_disk":true},"disks":[{"path":"/srv/godwit/shared/vms/web-7/d.raw","format":"raw","size_mib":1}]}`,
		`{"name":"web-8","nics":[{"network":"lab","mac":"02:67:77:00:00:01"}]}`,
		`{"name":"web-9","nics":[{"network":"lab","mac":"02:AA:bb:00:00:09","ip":"198.18.1.101/24"}]}`,
		`{"name":"web-10","nics":[{"network":"lab","ip":"198.18.1.120"},{"network":"lab","ip":"198.18.1.120"}]}`,
		`{"name":"web-1"}`,
		`{"name":"-bad"}`,
		`{"name":"` + strings.Repeat("x", 64) + `"}`,
		`{"name":"a\u0000b"}`,
		`{"name":"web-11","host":"nosuch"}`,
		`{"name":"web-101","cpus":0}`,
		`{"name":"web-102","cpus":257}`,
		`{"name":"web-103","memory_mib":9223372036854775807}`,
		`{"name":"web-104","memory_mib":-9223372036854775808}`,
		`{"name":"web-105","data_disk_mib":-1}`,
		`{"name":"web-106","image":"nosuch"}`,
		`{"name":"web-107","image":"godwit-test","boot":{"kernel":"/k"}}`,
		`{"name":"web-108","boot":{"initrd":"/i"}}`,
		`{"name":"web-109","boot":{"kernel":"/k","from_disk":true}}`,
		`{"name":"web-110","boot":{"from_disk":true}}`,
		`{"name":"web-111","disks":[{"datastore":"nosuch","path":"a","format":"raw"}]}`,
		`{"name":"web-112","disks":[{"datastore":"shared","path":"a","format":"vmdk"}]}`,
		`{"name":"web-113","disks":[{"datastore":"shared","path":"a","format":"raw","size_mib":-5}]}`,
		`{"name":"web-114","nics":[{"network":""}]}`,
		`{"name":"web-115","nics":[{"network":"wan"}]}`,
		`{"name":"web-116","nics":[{"network":"lab","mac":"01:00:5e:00:00:01"}]}`,
		`{"name":"web-117","nics":[{"network":"lab","mac":"zz"}]}`,
		`{"name":"web-118","nics":[{"network":"lab","ip":"10.0.0.1"}]}`,
		`{"name":"web-119","nics":[{"network":"lab","ip":"::1"}]}`,
		`{"name":"web-120","migration_policy":"reckless"}`,
		`{"name":"web-121","cpus":"2"}`,
		`{"name":"web-122","cpus":1e99}`,
		`{"name":"web-123","bogus":true}`,
		`{"name":"web-124"} {"name":"web-13x"}`,
		`{"name":"web-125"`,
		``,
		`null`,
		`[]`,
		`{"name":"web-126","nics":` + strings.Repeat("[", 5000) + strings.Repeat("]", 5000) + `}`,
	} {
		f.Add([]byte(s))
	}
	f.Add([]byte(`{"name":"web-127","image":"` + strings.Repeat("x", api.MaxBodyBytes) + `"}`))
	fc := newFuzzCenter(f, 1000*time.Hour)
	f.Fuzz(func(t *testing.T, body []byte) {
		before := fc.auditHead(t)
		w := fc.do(http.MethodPost, "/api/v1/vms", "", body)
		what := fmt.Sprintf("POST /api/v1/vms %.300q", body)
		fuzzCheckAnswer(t, what, w)
		fc.checkAudit(t, what, before, "vm.create", w.Code)
		if w.Code/100 == 2 {
			var req api.CreateVMRequest
			var vm api.VM
			if err := api.DecodeJSON(bytes.NewReader(body), &req); err != nil {
				t.Fatalf("%s: created a VM from a body the decoder refuses: %v", what, err)
			}
			if err := json.Unmarshal(w.Body.Bytes(), &vm); err != nil || vm.Name != req.Name || vm.UUID == "" {
				t.Fatalf("%s: answered %d with %s (%v)", what, w.Code, w.Body, err)
			}
			// Forget the VM again, so that every input meets the same inventory.
			if err := fc.c.store.DeleteVM(context.Background(), vm.Name); err != nil {
				t.Fatalf("%s: remove the VM created: %v", what, err)
			}
		}
	})
}

func FuzzMigrateVM(f *testing.F) {
	for _, c := range []struct{ name, body string }{
		{"web-1", `{"to":"h2"}`},
		{"web-1", `{"to":"h2","policy":"safe"}`},
		{"web-1", `{"to":"h2","policy":"qemu-defaults"}`},
		{"web-1", `{"to":"h1"}`},
		{"web-1", `{"to":"h3"}`},
		{"web-1", `{"to":""}`},
		{"web-1", `{}`},
		{"web-1", `{"to":"h2","policy":"nosuch"}`},
		{"web-1", `{"to":"h2","from":"h1"}`},
		{"web-1", `{"to":2}`},
		{"web-1", `{"to":"h2"}{"to":"h2"}`},
		{"web-1", `{"to":"h2"`},
		{"web-1", ``},
		{"web-1", `null`},
		{"db-1", `{"to":"h2"}`},
		{"nosuch", `{"to":"h2"}`},
		{"", `{"to":"h2"}`},
		{"..", `{"to":"h2"}`},
		{"a/b", `{"to":"h2"}`},
		{"web-1\x00", `{"to":"h2"}`},
		{"web-1", `{"to":"` + strings.Repeat("h", 100000) + `"}`},
	} {
		f.Add(c.name, []byte(c.body))
	}
	fc := newFuzzCenter(f, 1000*time.Hour)
	f.Fuzz(func(t *testing.T, name string, body []byte) {
		before := fc.auditHead(t)
		w := fc.doVM(http.MethodPost, name, "/migrate", "", body)
		what := fmt.Sprintf("POST /api/v1/vms/%s/migrate %.300q", url.PathEscape(name), body)
		fuzzCheckAnswer(t, what, w)
		if w.Code/100 != 3 {
			fc.checkAudit(t, what, before, "", w.Code)
		}
		if w.Code/100 == 2 {
			t.Fatalf("%s: answered %d, yet the stand-in source refuses every migration: %s", what, w.Code, w.Body)
		}
	})
}

func FuzzHeartbeat(f *testing.F) {
	good := fuzzHostFacts("h1", "https://127.0.0.1:9")
	goodJSON, _ := json.Marshal(good)
	f.Add(goodJSON)
	for _, s := range []string{
		`{"name":"h3","agent_url":"https://198.18.1.13:7700"}`,
		`{"name":"h1","agent_url":"https://127.0.0.1:9","vms":[]}`,
		`{"name":"h1","agent_url":"https://127.0.0.1:9","vms":[{"name":"web-1","uuid":"` + fuzzWebUUID + `","state":"error","error":"boom"}]}`,
		`{"name":"h1","agent_url":"https://127.0.0.1:9","vms":[{"name":"web-1","uuid":"other","state":"running"}]}`,
		`{"name":"h1","agent_url":"https://127.0.0.1:9","vms":[{"name":"web-1"},{"name":"web-1","uuid":"` + fuzzWebUUID + `","state":"stopped"}]}`,
		`{"name":"h1","agent_url":"https://127.0.0.1:9","vms":[{"name":"db-1","uuid":"` + fuzzDBUUID + `","state":"running","pid":-1}]}`,
		`{"name":"h1","agent_url":"https://127.0.0.1:9","vms":[{"name":"web-1","uuid":"` + fuzzWebUUID + `","state":"running","memory":{"dirtied":[{"period_ms":-1,"bytes":1e308},{"period_ms":100,"bytes":-5},{"period_ms":50,"bytes":1}],"nonzero_bytes":-1,"measured":"9999-12-31T23:59:59Z"}}]}`,
		`{"name":"h1","agent_url":"https://127.0.0.1:9","datastores":[{"name":"shared","images":[{"name":""}]},{"name":"shared"}]}`,
		`{"name":"h1","agent_url":"https://127.0.0.1:9","networks":[{"name":"lab","mtu":-1},{"name":"lab"}]}`,
		`{"name":"h1","agent_url":"https://127.0.0.1:9","load":1e308,"memory_mib":-1,"free_memory_mib":9223372036854775807}`,
		`{"name":"h1","agent_url":"https://127.0.0.1:9","boot_time":"0001-01-01T00:00:00Z"}`,
		`{"name":"h1","agent_url":"https://127.0.0.1:9","boot_time":"9999-12-31T23:59:59.999999999-23:59"}`,
		`{"name":"h1","agent_url":"https://127.0.0.1:9","datastores":[{"name":"shared","total_bytes":18446744073709551615}]}`,
		`{"name":"h1","agent_url":""}`,
		`{"name":"","agent_url":"https://x"}`,
		`{"name":"h 1","agent_url":"https://x"}`,
		`{"name":"h1\u0000","agent_url":"https://x"}`,
		`{"name":"h1","agent_url":"https://x","boot_time":"soon"}`,
		`{"name":"h1","agent_url":"https://x","state":"connected"}`,
		`{"name":"h1","agent_url":"https://x","cpu":{"flags":"sse2"}}`,
		`{"name":"h1"}{"name":"h2"}`,
		`{"name":"h1"`,
		``,
		`null`,
	} {
		f.Add([]byte(s))
	}
	fc := newFuzzCenter(f, time.Minute)
	f.Fuzz(func(t *testing.T, body []byte) {
		w := fc.do(http.MethodPost, "/api/v1/hosts/heartbeat", "", body)
		what := fmt.Sprintf("POST /api/v1/hosts/heartbeat %.300q", body)
		fuzzCheckAnswer(t, what, w)
		if w.Code/100 == 2 {
			var facts api.HostFacts
			if err := api.DecodeJSON(bytes.NewReader(body), &facts); err != nil {
				t.Fatalf("%s: took a heartbeat the decoder refuses: %v", what, err)
			}
			// The host is now in the inventory, readable by itself and in every list.
			if g := fc.do(http.MethodGet, "/api/v1/hosts/"+facts.Name, "", nil); g.Code != http.StatusOK {
				t.Fatalf("%s: then GET the host: %d %s", what, g.Code, g.Body)
			}
		}
		// Whatever a heartbeat holds, the inventory stays readable.
		for _, p := range []string{"/api/v1/hosts", "/api/v1/vms", "/api/v1/datastores", "/api/v1/networks"} {
			if g := fc.do(http.MethodGet, p, "", nil); g.Code != http.StatusOK {
				t.Fatalf("%s: then GET %s: %d %s", what, p, g.Code, g.Body)
			}
		}
	})
}

// fuzzCenterQueryRoutes are the endpoints that read user input from the query string, each
// with the parameter the fuzzer gives a value of its own (the rest of the query is
// fuzzed raw).
var fuzzCenterQueryRoutes = []struct {
	method, path string
	vm           bool // path is /api/v1/vms/NAME + path
	param        string
}{
	{http.MethodPost, "/stop", true, "grace"},
	{http.MethodGet, "/console", true, "tail"},
	{http.MethodGet, "/api/v1/migrations", false, "vm"},
	{http.MethodGet, "/api/v1/audit", false, "since"},
	{http.MethodGet, "/api/v1/audit/export", false, "format"},
	{http.MethodGet, "/api/v1/tasks", false, "state"},
	{http.MethodGet, "", true, ""},
	{http.MethodPost, "/start", true, ""},
	{http.MethodGet, "/migrate/check", true, "policy"},
	{http.MethodGet, "/migrate/recommend", true, "policy"},
}

// FuzzQueryParams feeds fuzzed query strings to the handlers that parse them: stop's
// grace and force, console's tail, the migration list's vm, the audit trail's filters and
// export format, the task list's filters, the policy of a check's and a ranking's
// predictions. Besides the common property, the console must answer as the VM's agent
// answers for the same tail, since the center passes it on.
func FuzzQueryParams(f *testing.F) {
	for _, c := range []struct {
		route              uint8
		name, value, query string
	}{
		{0, "web-1", "", ""},
		{0, "web-1", "", "force=true"},
		{0, "web-1", "30s", ""},
		{0, "web-1", "0s", "force=false"},
		{0, "web-1", "10m0s", ""},
		{0, "web-1", "10m1s", ""},
		{0, "web-1", "-1s", ""},
		{0, "web-1", "1e9h", ""},
		{0, "web-1", "abc", ""},
		{0, "web-1", "30s", "grace=1s"},
		{0, "web-1", "", "grace=%zz"},
		{0, "db-1", "5s", ""},
		{0, "nosuch", "5s", ""},
		{1, "web-1", "", ""},
		{1, "web-1", "10", ""},
		{1, "web-1", "0", ""},
		{1, "web-1", "-1", ""},
		{1, "web-1", "99999999999999999999", ""},
		{1, "web-1", "abc", ""},
		{1, "web-1", "1", "tail=2"},
		{1, "web-1", "", "tail=%zz"},
		{1, "nosuch", "5", ""},
		{2, "", "web-1", ""},
		{2, "", "", "vm=%00"},
		{3, "", "24h", "until=2025-01-31&user=alice&vm=web-1&host=h1&action=vm.*&limit=5&order=oldest&after=1"},
		{3, "", "7d", ""},
		{3, "", "2w", "until=2025-01-31T12:00"},
		{3, "", "2025-01-31T12:00:00.5+01:00", ""},
		{3, "", "", "limit=-1"},
		{3, "", "", "limit=99999999999999999999"},
		{3, "", "", "after=x"},
		{3, "", "", "order=sideways"},
		{3, "", "", "action=*"},
		{3, "", "", "host=%27%20OR%201=1--"},
		{4, "", "csv", "limit=0"},
		{4, "", "jsonl", "since=1h"},
		{4, "", "xml", ""},
		{5, "", "running", "kind=vm.create&target=web-1"},
		{5, "", "bogus", ""},
		{6, "web-1", "", ""},
		{6, "", "", ""},
		{7, "web-1", "", ""},
		{8, "web-1", "balanced", "to=h1"},
		{8, "web-1", "nosuch", ""},
		{8, "web-1", "", "policy=%zz&to=h9"},
		{9, "web-1", "safe", ""},
		{9, "db-1", "qemu-defaults", ""},
		{9, "nosuch", "balanced", ""},
	} {
		f.Add(c.route, c.name, c.value, c.query)
	}
	fc := newFuzzCenter(f, 1000*time.Hour)
	f.Fuzz(func(t *testing.T, route uint8, name, value, rawQuery string) {
		rt := fuzzCenterQueryRoutes[int(route)%len(fuzzCenterQueryRoutes)]
		query := rawQuery
		if rt.param != "" && value != "" {
			query = rt.param + "=" + url.QueryEscape(value)
			if rawQuery != "" {
				query += "&" + rawQuery
			}
		}
		before := fc.auditHead(t)
		var w *httptest.ResponseRecorder
		var what string
		if rt.vm {
			w = fc.doVM(rt.method, name, rt.path, query, nil)
			what = fmt.Sprintf("%s /api/v1/vms/%s%s?%s", rt.method, url.PathEscape(name), rt.path, query)
		} else {
			w = fc.do(rt.method, rt.path, query, nil)
			what = fmt.Sprintf("%s %s?%s", rt.method, rt.path, query)
		}
		fuzzCheckAnswer(t, what, w)
		if rt.method == http.MethodPost && w.Code/100 != 3 {
			fc.checkAudit(t, what, before, "", w.Code)
		}
		if rt.path == "/console" && name == "web-1" {
			// The center passes tail on to the VM's agent: it must answer as the agent
			// answers for the same tail.
			q, _ := url.ParseQuery(query)
			direct := fc.agentConsole(t, q.Get("tail"))
			if w.Code/100 != direct.Code/100 || w.Code/100 == 2 && w.Body.String() != direct.Body.String() {
				t.Fatalf("%s: the center answered %d %.200q; the agent answers %d %.200q for tail %q",
					what, w.Code, w.Body, direct.Code, direct.Body, q.Get("tail"))
			}
		}
	})
}

// agentConsole asks the agent behind h1 for web-1's console with tail, directly.
func (fc *fuzzCenter) agentConsole(t *testing.T, tail string) *httptest.ResponseRecorder {
	t.Helper()
	r := httptest.NewRequest(http.MethodGet, "/agent/v1/vms/web-1/console", nil)
	if tail != "" {
		r.URL.RawQuery = "tail=" + url.QueryEscape(tail)
	}
	w := httptest.NewRecorder()
	fc.agent.ServeHTTP(w, r)
	return w
}

// fuzzAuthRoutes are the endpoints of users and tokens that decode a body.
var fuzzAuthRoutes = []struct{ path, action string }{
	{"/api/v1/login", "user.login"},
	{"/api/v1/users", "user.create"},
	{"/api/v1/tokens", "token.create"},
}

// FuzzAuthRequests fuzzes the bodies of logging in and of creating users and tokens,
// through the handler as the in-process administrator, with the common property.
func FuzzAuthRequests(f *testing.F) {
	for _, c := range []struct {
		route uint8
		body  string
	}{
		{0, `{"user":"admin","password":"wrong password"}`},
		{0, `{"user":"nosuch","password":"whatever1"}`},
		{0, `{"user":"admin","password":"` + strings.Repeat("p", 100) + `"}`},
		{0, `{"user":"admin"}`},
		{0, `{"user":1}`},
		{1, `{"name":"alice","role":"operator","password":"correct horse"}`},
		{1, `{"name":"bob","role":"viewer","password":"short"}`},
		{1, `{"name":"carol","role":"admin","password":"` + strings.Repeat("p", 73) + `"}`},
		{1, `{"name":"dave","role":"agent","password":"correct horse"}`},
		{1, `{"name":"eve","role":"root","password":"correct horse"}`},
		{1, `{"name":"Bad Name","role":"viewer","password":"correct horse"}`},
		{1, `{"name":"","role":"","password":""}`},
		{1, `{"name":"frank","role":"viewer","password":"correct horse","admin":true}`},
		{2, `{}`},
		{2, `{"user":"admin"}`},
		{2, `{"user":"admin","expires":"1h"}`},
		{2, `{"user":"admin","expires":"never"}`},
		{2, `{"user":"admin","expires":"0"}`},
		{2, `{"user":"admin","expires":"-1h"}`},
		{2, `{"user":"admin","expires":"9999999h"}`},
		{2, `{"user":"admin","expires":"soon"}`},
		{2, `{"user":"nosuch","expires":"1h"}`},
		{2, `{"user":"admin","expires":3600}`},
		{0, ``},
		{1, `null`},
		{2, `{"user":"admin"} {}`},
	} {
		f.Add(c.route, []byte(c.body))
	}
	fc := newFuzzCenter(f, 1000*time.Hour)
	f.Fuzz(func(t *testing.T, route uint8, body []byte) {
		rt := fuzzAuthRoutes[int(route)%len(fuzzAuthRoutes)]
		before := fc.auditHead(t)
		w := fc.do(http.MethodPost, rt.path, "", body)
		what := fmt.Sprintf("POST %s %.300q", rt.path, body)
		fuzzCheckAnswer(t, what, w)
		if w.Code != http.StatusNotFound {
			fc.checkAudit(t, what, before, rt.action, w.Code)
		}
	})
}

// fuzzPKIRoutes are the endpoints of joining, join tokens and revocation that decode a
// body.
var fuzzPKIRoutes = []struct{ path, action string }{
	{"/api/v1/hosts/join", "host.join"},
	{"/api/v1/join-tokens", "host.join-token.create"},
	{"/api/v1/hosts/h2/revoke", "host.revoke"},
}

// FuzzPKIRequests fuzzes the bodies of joining, creating join tokens and revoking a
// host's certificates, with the common property; no join succeeds without a real token,
// and no certificate is issued by a refused request.
func FuzzPKIRequests(f *testing.F) {
	key, err := pki.NewKey()
	if err != nil {
		f.Fatal(err)
	}
	csr, err := pki.NewCSR(key, "h9")
	if err != nil {
		f.Fatal(err)
	}
	csrJSON, _ := json.Marshal(string(csr))
	for _, c := range []struct {
		route uint8
		body  string
	}{
		{0, `{"name":"h9","token":"gwjoin_0123456789abcdef_secret","csr":` + string(csrJSON) + `}`},
		{0, `{"name":"h9","token":"gwjoin_zz_secret","csr":"-----BEGIN CERTIFICATE REQUEST-----\nAAAA\n-----END CERTIFICATE REQUEST-----\n"}`},
		{0, `{"name":"../h9","token":"","csr":""}`},
		{0, `{"name":"godwit-center","token":"gwjoin_0123456789abcdef_x","csr":"x"}`},
		{0, `{"name":"h9","token":"gw_0123456789abcdef_secret"}`},
		{1, `{}`},
		{1, `{"host":"h9","expires":"1h"}`},
		{1, `{"host":"h9","expires":"never"}`},
		{1, `{"host":"h9","expires":"8d"}`},
		{1, `{"host":"Bad Host","expires":"1h"}`},
		{1, `{"expires":-1}`},
		{2, `{"reason":"decommissioned"}`},
		{2, `{"reason":1}`},
		{2, ``},
		{0, `null`},
	} {
		f.Add(c.route, []byte(c.body))
	}
	fc := newFuzzCenter(f, 1000*time.Hour)
	f.Fuzz(func(t *testing.T, route uint8, body []byte) {
		rt := fuzzPKIRoutes[int(route)%len(fuzzPKIRoutes)]
		before := fc.auditHead(t)
		certs, err := fc.c.store.Certs(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		w := fc.do(http.MethodPost, rt.path, "", body)
		what := fmt.Sprintf("POST %s %.300q", rt.path, body)
		fuzzCheckAnswer(t, what, w)
		if w.Code != http.StatusNotFound {
			fc.checkAudit(t, what, before, rt.action, w.Code)
		}
		after, err := fc.c.store.Certs(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		if rt.action == "host.join" && len(after) != len(certs) {
			t.Fatalf("%s: %d certificates issued without a valid join token (answer %d %s)", what, len(after)-len(certs), w.Code, w.Body)
		}
	})
}

// fuzzOpsRoutes are the endpoints of bulk migrations, maintenance mode and schedules that
// decode a body.
var fuzzOpsRoutes = []struct{ path, action string }{
	{"/api/v1/migrations", "migration.bulk"},
	{"/api/v1/hosts/h2/maintenance", "host.maintenance"},
	{"/api/v1/schedules", "schedule.create"},
}

// FuzzOperationsRequests fuzzes the bodies of bulk migrations, maintenance mode and
// schedule creation through the handler, with the common property.
func FuzzOperationsRequests(f *testing.F) {
	for _, c := range []struct {
		route uint8
		body  string
	}{
		{0, `{"vms":["web-1"],"to":"h2"}`},
		{0, `{"vms":["web-1","db-1"],"auto":true,"priority":"high"}`},
		{0, `{"vms":["web-1","web-1"],"to":"h2"}`},
		{0, `{"vms":[],"to":"h2"}`},
		{0, `{"vms":["nosuch"],"to":"h2","auto":true}`},
		{0, `{"vms":["web-1"],"to":"h2","priority":"urgent"}`},
		{1, `{"enter":true,"reason":"disks"}`},
		{1, `{"enter":false}`},
		{2, `{"name":"n1","at":"+1h","migrate":{"vms":["web-1"],"to":"h2"}}`},
		{2, `{"name":"n2","cron":"0 2 * * *","missed":"skip","migrate":{"vms":["web-1"],"auto":true}}`},
		{2, `{"name":"n3","cron":"61 * * * *","migrate":{"vms":["web-1"],"to":"h2"}}`},
		{2, `{"name":"n4","at":"2001-01-01T00:00:00Z","migrate":{"vms":["web-1"],"to":"h2"}}`},
		{2, `{"name":"../x","at":"+1h","migrate":{"vms":["web-1"],"to":"h2"}}`},
	} {
		f.Add(c.route, []byte(c.body))
	}
	fc := newFuzzCenter(f, 1000*time.Hour)
	f.Fuzz(func(t *testing.T, route uint8, body []byte) {
		rt := fuzzOpsRoutes[int(route)%len(fuzzOpsRoutes)]
		before := fc.auditHead(t)
		w := fc.do(http.MethodPost, rt.path, "", body)
		what := fmt.Sprintf("POST %s %.300q", rt.path, body)
		fuzzCheckAnswer(t, what, w)
		if w.Code != http.StatusNotFound && rt.action != "migration.bulk" {
			fc.checkAudit(t, what, before, rt.action, w.Code)
		}
	})
}
