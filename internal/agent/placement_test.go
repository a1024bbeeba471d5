package agent

import (
	"context"
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/godwit/godwit/internal/api"
	"github.com/godwit/godwit/internal/placement"
	"github.com/godwit/godwit/internal/qemu"
)

// The destination's preflight runs the placement engine's own checks on this host, with
// its free memory read from /proc/meminfo now: a VM that needs more memory than is free
// is refused with memory_short, another QEMU release with qemu_incompatible, a datastore
// or network this host lacks with datastore_missing or network_missing — each a 422 in
// preflightRefusal's words. A VM that fits passes, with the real QEMU probed.
func TestPreflightRunsThePlacementEngine(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	a, _ := cpuTestAgent(t, "")
	if err := a.probeAccel(ctx); err != nil {
		t.Fatalf("probeAccel: %v", err)
	}
	ver, err := qemu.Version(ctx, a.cfg.QEMU)
	if err != nil {
		t.Fatal(err)
	}
	a.qemuVer = ver // as Run sets it
	var major, minor int
	if _, err := fmt.Sscanf(ver, "%d.%d", &major, &minor); err != nil {
		t.Fatalf("QEMU version %q: %v", ver, err)
	}
	sameRelease, newer, older := fmt.Sprintf("%d.%d.99", major, minor), fmt.Sprintf("%d.%d.0", major, minor+1), fmt.Sprintf("%d.%d.0", major-1, minor)

	good := cpuSpec("x", "qemu64")
	if w := serve(a, http.MethodPost, "/agent/v1/preflight", api.IncomingRequest{ID: "m1", Source: "host-2", Spec: good, QEMUVersion: sameRelease}); w.Code != http.StatusNoContent {
		t.Fatalf("preflight of a small VM from QEMU %s: %d %s; want 204", sameRelease, w.Code, w.Body)
	}

	huge := good
	huge.MemoryMiB = 4 << 20 // 4 TiB: within a spec's bounds, beyond this host
	badDisk := good
	badDisk.Disks = []api.Disk{{Datastore: "nosuch", Path: "vms/x/disk.qcow2", Format: "qcow2"}}
	badNIC := good
	badNIC.NICs = []api.NIC{{Network: "dmz", MAC: "02:67:77:00:00:01"}}
	for _, tc := range []struct {
		name    string
		spec    api.VMSpec
		version string
		code    string
		says    []string
	}{
		{"memory", huge, sameRelease, placement.CodeMemoryShort, []string{"MiB free", "after its 1024 MiB reserve", "but x needs 4194560 MiB (4194304 MiB of memory plus 256 MiB overhead)"}},
		{"newer QEMU release", good, newer, placement.CodeQEMUIncompatible, []string{"host-1 runs QEMU " + ver + ", older than x's source QEMU " + newer}},
		{"older QEMU release", good, older, placement.CodeQEMUIncompatible, []string{"host-1 runs QEMU " + ver + " and x's source runs " + older, "same QEMU release"}},
		{"datastore", badDisk, sameRelease, placement.CodeDatastoreMissing, []string{"host-1 cannot reach datastore nosuch"}},
		{"network", badNIC, sameRelease, placement.CodeNetworkMissing, []string{"host-1 has no network dmz"}},
	} {
		w := serve(a, http.MethodPost, "/agent/v1/preflight", api.IncomingRequest{ID: "m1", Source: "host-2", Spec: tc.spec, QEMUVersion: tc.version})
		e := errorOf(t, w)
		if w.Code != http.StatusUnprocessableEntity || e.Code != tc.code || !strings.HasPrefix(e.Error, "host host-1 cannot take VM x: ") {
			t.Errorf("%s: %d %+v; want 422 %s from host-1", tc.name, w.Code, e, tc.code)
			continue
		}
		for _, s := range tc.says {
			if !strings.Contains(e.Error, s) {
				t.Errorf("%s: %q does not say %q", tc.name, e.Error, s)
			}
		}
	}

	// The free memory the refusal quotes is this host's, by the one rule.
	_, free, err := readMemInfo("/proc/meminfo")
	if err != nil {
		t.Fatal(err)
	}
	if placement.MemoryFits(free, huge.MemoryMiB) {
		t.Fatalf("this host has %d MiB free: the 4 TiB VM fits", free)
	}
}
