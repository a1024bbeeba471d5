package agent

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/godwit/godwit/internal/api"
)

// However many refused requests, and however large, come in between two heartbeats, the
// agent keeps at most api.MaxAgentRefusals, bounded, counts the ones it dropped, and its
// heartbeat fits the center's body limit — also when a failed heartbeat puts them back.
func TestRefusalsKeptBounded(t *testing.T) {
	tr := newTrust(t.TempDir())
	path := "/" + strings.Repeat("p", 600<<10)
	const sent = 1000
	for i := range sent {
		tr.refuse(api.AgentRefusal{Time: time.Now(), From: "198.18.1.3:4000", Method: "GET", Path: path,
			Reason: "no certificate: " + path + strings.Repeat("!", i%3)})
	}
	rs := tr.takeRefusals()
	if len(rs) != api.MaxAgentRefusals {
		t.Fatalf("%d refusals kept; want %d", len(rs), api.MaxAgentRefusals)
	}
	if rs[0].Dropped != sent-api.MaxAgentRefusals {
		t.Fatalf("the oldest kept refusal counts %d dropped; want %d", rs[0].Dropped, sent-api.MaxAgentRefusals)
	}
	for _, r := range rs {
		if len(r.Path) > api.MaxRefusalField || len(r.Reason) > api.MaxRefusalField {
			t.Fatalf("a kept refusal has a %d-byte path and a %d-byte reason", len(r.Path), len(r.Reason))
		}
	}
	// The heartbeat failed: they go back, with the ones refused meanwhile, still bounded
	// and still counted.
	for range 10 {
		tr.refuse(api.AgentRefusal{Path: path})
	}
	tr.putBack(rs)
	again := tr.takeRefusals()
	dropped := 0
	for _, r := range again {
		dropped += r.Dropped
	}
	if len(again) != api.MaxAgentRefusals || dropped != sent+10-api.MaxAgentRefusals {
		t.Fatalf("after a failed heartbeat: %d kept, %d counted as dropped; want %d and %d", len(again), dropped, api.MaxAgentRefusals, sent+10-api.MaxAgentRefusals)
	}
	b, _ := json.Marshal(api.HostFacts{Name: "host-1", Refusals: again})
	if len(b) > api.MaxBodyBytes/4 {
		t.Fatalf("the heartbeat is %d bytes", len(b))
	}
}

// boundsSpec returns a spec that is good for testAgent's datastore ds, changed by change.
func boundsSpec(t *testing.T, ds string, change func(*api.VMSpec)) api.VMSpec {
	t.Helper()
	write(t, filepath.Join(ds, "images/g/vmlinuz"), "k")
	s := api.VMSpec{
		Name: "big", UUID: "0f8fad5b-d9cb-469f-a165-70867728950e", CPUs: 1, MemoryMiB: 64,
		Boot: api.Boot{Kernel: "[shared] images/g/vmlinuz", Cmdline: "console=ttyS0"},
		NICs: []api.NIC{{Network: "lab", MAC: "02:67:77:00:00:01"}},
	}
	change(&s)
	return s
}

// The agent refuses, with 422 and the bound, a spec beyond the limits — however the
// center or another host sends it — and creates nothing; one that an older agent stored
// is skipped when the agent starts, instead of making it panic.
func TestAgentRefusesOversizedSpecs(t *testing.T) {
	a, ds := testAgent(t)
	h := a.Handler()
	manyNICs := func(s *api.VMSpec) {
		s.NICs = make([]api.NIC, 10000)
		for i := range s.NICs {
			s.NICs[i] = api.NIC{Network: "lab", MAC: fmt.Sprintf("02:67:77:00:%02x:%02x", i>>8, i&255)}
		}
	}
	cases := map[string]struct {
		change func(*api.VMSpec)
		want   string
	}{
		"10,000 NICs": {manyNICs, "10000 NICs; a VM may have at most 8"},
		"100 disks": {func(s *api.VMSpec) {
			s.Disks = make([]api.Disk, 100)
			for i := range s.Disks {
				s.Disks[i] = api.Disk{Datastore: "shared", Path: fmt.Sprintf("d%d.qcow2", i), Format: "qcow2", SizeMiB: 1}
			}
		}, "100 disks"},
		"long command line": {func(s *api.VMSpec) { s.Boot.Cmdline = strings.Repeat("x ", 2000) }, "kernel command line is 4000 bytes"},
		"long kernel path":  {func(s *api.VMSpec) { s.Boot.Kernel = "[shared] " + strings.Repeat("d/", 1000) + "vmlinuz" }, "kernel's path"},
		"long disk path": {func(s *api.VMSpec) {
			s.Disks = []api.Disk{{Datastore: "shared", Path: strings.Repeat("p", 5000), Format: "raw", SizeMiB: 1}}
		}, "disk 0's path"},
		"huge disk": {func(s *api.VMSpec) {
			s.Disks = []api.Disk{{Datastore: "shared", Path: "d.qcow2", Format: "qcow2", SizeMiB: 1 << 40}}
		}, "at most 67108864 MiB"},
		"long CPU model": {func(s *api.VMSpec) { s.CPUModel = strings.Repeat("Skylake-", 100) }, "CPU model"},
	}
	for name, c := range cases {
		s := boundsSpec(t, ds, c.change)
		body, _ := json.Marshal(s)
		for _, route := range []struct{ method, path string }{
			{http.MethodPut, "/agent/v1/vms/big"},
			{http.MethodPost, "/agent/v1/preflight"},
		} {
			b := body
			if route.path == "/agent/v1/preflight" {
				b, _ = json.Marshal(api.IncomingRequest{ID: "m1", Source: "host-2", Spec: s})
			}
			r := httptest.NewRequest(route.method, route.path, bytes.NewReader(b))
			r.Header.Set("Content-Type", "application/json")
			w := httptest.NewRecorder()
			h.ServeHTTP(w, r)
			if w.Code != http.StatusUnprocessableEntity || !strings.Contains(w.Body.String(), c.want) {
				t.Errorf("%s: %s %s: %d %s; want 422 saying %q", name, route.method, route.path, w.Code, w.Body, c.want)
			}
		}
	}
	if vms, _ := filepath.Glob(filepath.Join(a.cfg.StateDir, "vms", "*")); len(vms) != 0 {
		t.Fatalf("refused specs left state behind: %v", vms)
	}
	if left, _ := os.ReadDir(ds); len(left) != 1 { // images/ only
		t.Fatalf("refused specs left files on the datastore: %v", left)
	}

	// A definition with 10,000 NICs that an older agent stored: the agent starts, and
	// leaves it alone.
	b, _ := json.Marshal(persisted{Spec: boundsSpec(t, ds, manyNICs)})
	write(t, filepath.Join(a.cfg.StateDir, "vms", "0f8fad5bd9cb469f", "vm.json"), string(b))
	if err := a.adoptAll(context.Background()); err != nil {
		t.Fatalf("adopt: %v", err)
	}
	if _, err := a.get("big"); err == nil {
		t.Fatal("the agent took on a VM with 10,000 NICs")
	}
}
