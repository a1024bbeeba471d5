package integration

import (
	"bytes"
	"context"
	"encoding/json"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/godwit/godwit/internal/api"
	"github.com/godwit/godwit/internal/labtest"
	"github.com/godwit/godwit/internal/qemu"
)

// westmereFlags are CPUID flags Westmere has and Nehalem lacks, under TCG as under KVM.
var westmereFlags = []string{"aes", "pclmulqdq"}

// waitGuestCPU waits until a host reports what it can give guests' CPUs.
func waitGuestCPU(t *testing.T, l *labtest.Lab, host string) api.Host {
	t.Helper()
	var h api.Host
	for deadline := time.Now().Add(90 * time.Second); time.Now().Before(deadline); time.Sleep(500 * time.Millisecond) {
		h = api.Host{}
		l.RunJSON(&h, "host", "show", host)
		if len(h.GuestCPU.Models) > 0 {
			return h
		}
	}
	t.Fatalf("%s did not report its guest CPU capabilities within 90 s: %+v (health %s %s)", host, h.GuestCPU, h.Health, h.HealthReason)
	return h
}

// mentionsAll reports whether s contains every one of words.
func mentionsAll(s string, words []string) bool {
	for _, w := range words {
		if !strings.Contains(s, w) {
			return false
		}
	}
	return true
}

// TestHostCPUCapabilities runs a lab whose host-2 is limited to Nehalem: the hosts report
// different CPU models, host-2 refuses to run or receive a Westmere VM (naming the flags
// it lacks) and runs a Nehalem one.
func TestHostCPUCapabilities(t *testing.T) {
	l := labtest.NewWith(t, home, 2, "--cpu-limit", "host-2=Nehalem")

	h1, h2 := waitGuestCPU(t, l, "host-1"), waitGuestCPU(t, l, "host-2")
	t.Logf("host-1: %s, %d flags, %d models; host-2: limited to %s, %d flags, %d models",
		h1.GuestCPU.Accel, len(h1.GuestCPU.Flags), len(h1.GuestCPU.Models), h2.GuestCPU.LimitedTo, len(h2.GuestCPU.Flags), len(h2.GuestCPU.Models))
	if !slices.Contains(h1.GuestCPU.Models, "Westmere") || h1.GuestCPU.LimitedTo != "" {
		t.Errorf("host-1 reports models %v, limited to %q; want Westmere among them and no limit", h1.GuestCPU.Models, h1.GuestCPU.LimitedTo)
	}
	if slices.Contains(h2.GuestCPU.Models, "Westmere") || !slices.Contains(h2.GuestCPU.Models, "Nehalem") || h2.GuestCPU.LimitedTo != "Nehalem" {
		t.Errorf("host-2 reports models %v, limited to %q; want Nehalem but not Westmere, limited to Nehalem", h2.GuestCPU.Models, h2.GuestCPU.LimitedTo)
	}
	for _, f := range westmereFlags {
		if !slices.Contains(h1.GuestCPU.Flags, f) || slices.Contains(h2.GuestCPU.Flags, f) {
			t.Errorf("flag %s: host-1 has it: %v, host-2 has it: %v; want only host-1", f, slices.Contains(h1.GuestCPU.Flags, f), slices.Contains(h2.GuestCPU.Flags, f))
		}
	}
	if h1.GuestCPU.Catalog == "" || h1.GuestCPU.Catalog != h2.GuestCPU.Catalog {
		t.Errorf("catalogs %q and %q; want one catalog for the same QEMU", h1.GuestCPU.Catalog, h2.GuestCPU.Catalog)
	}

	// A Westmere VM cannot run on host-2.
	_, errOut, err := l.Run("vm", "create", "west-2", "--host", "host-2", "--cpu-model", "Westmere")
	t.Logf("vm create west-2 --host host-2 --cpu-model Westmere: %v: %s", err, strings.TrimSpace(errOut))
	if err == nil || !mentionsAll(errOut, westmereFlags) {
		t.Errorf("vm create --host host-2 --cpu-model Westmere: err=%v stderr=%q; want a refusal naming %v", err, errOut, westmereFlags)
	}
	var refused api.VM
	if err := l.API().Do(context.Background(), http.MethodGet, "/api/v1/vms/west-2", nil, &refused); err == nil {
		// Created but refused at start: it must not run, and says why.
		if refused.State == api.VMRunning || refused.PID != 0 || len(qemuProcesses(refused.UUID)) != 0 {
			t.Errorf("the refused Westmere VM runs on host-2: %+v", refused)
		}
		l.MustRun("vm", "delete", "west-2")
	}

	// A Nehalem VM runs there.
	var neh api.VM
	l.RunJSON(&neh, "vm", "create", "neh-2", "--host", "host-2", "--cpu-model", "Nehalem")
	waitVM(t, l, "neh-2", func(v api.VM) bool { return v.Host == "host-2" && v.State == api.VMRunning })
	l.WaitHTTP("client", "http://"+neh.IP+"/healthz", 90*time.Second)

	// A Westmere VM runs on host-1, and cannot move to host-2: the destination refuses
	// it before anything moves, and it keeps running where it was.
	var west api.VM
	l.RunJSON(&west, "vm", "create", "west-1", "--host", "host-1", "--cpu-model", "Westmere")
	l.WaitHTTP("client", "http://"+west.IP+"/healthz", 90*time.Second)
	before := waitVM(t, l, "west-1", func(v api.VM) bool { return v.Host == "host-1" && v.State == api.VMRunning })
	_, errOut, err = l.Run("vm", "migrate", "west-1", "--to", "host-2")
	t.Logf("vm migrate west-1 --to host-2: %v: %s", err, strings.TrimSpace(errOut))
	if err == nil || !mentionsAll(errOut, westmereFlags) {
		t.Errorf("vm migrate west-1 --to host-2: err=%v stderr=%q; want a refusal naming %v", err, errOut, westmereFlags)
	}
	after := waitVM(t, l, "west-1", func(v api.VM) bool { return v.State == api.VMRunning })
	if after.Host != "host-1" || after.PID != before.PID {
		t.Errorf("after the refused migration west-1 is %s on %s (pid %d); want running on host-1 as pid %d", after.State, after.Host, after.PID, before.PID)
	}
	if pids := qemuProcesses(west.UUID); len(pids) != 1 || pids[0] != before.PID {
		t.Errorf("QEMU processes of west-1 after the refused migration: %v; want only host-1's %d", pids, before.PID)
	}
	l.WaitHTTP("client", "http://"+west.IP+"/healthz", 10*time.Second)

	// host-2's agent itself refuses the VM, whatever the center checked first: its
	// preflight, as the center calls it, names the flags.
	hc := l.AsCenter("host-2")
	body, _ := json.Marshal(api.IncomingRequest{ID: "cpu-check", Source: "host-1", Spec: after.Spec, QEMUVersion: h1.QEMUVersion, Address: h2.Address})
	resp, err := hc.Post(h2.AgentURL+"/agent/v1/preflight", "application/json", bytes.NewReader(body))
	if err != nil {
		t.Fatalf("preflight on host-2's agent: %v", err)
	}
	var refusal api.Error
	_ = json.NewDecoder(resp.Body).Decode(&refusal)
	resp.Body.Close()
	t.Logf("host-2's preflight of west-1: %d %+v", resp.StatusCode, refusal)
	if resp.StatusCode != http.StatusUnprocessableEntity || refusal.Code != "cpu_unsupported" ||
		!mentionsAll(refusal.Error, westmereFlags) || !strings.Contains(refusal.Error, "limited to Nehalem") {
		t.Errorf("host-2's preflight of the Westmere VM: %d %+v; want 422 cpu_unsupported naming %v and the limit", resp.StatusCode, refusal, westmereFlags)
	}
	// The catalog the center fetches, from the same agent.
	resp, err = hc.Get(h2.AgentURL + "/agent/v1/cpu-models")
	if err != nil {
		t.Fatalf("GET cpu-models on host-2's agent: %v", err)
	}
	var caps qemu.CPUCaps
	err = json.NewDecoder(resp.Body).Decode(&caps)
	resp.Body.Close()
	if wm, ok := caps.Model("Westmere"); resp.StatusCode != http.StatusOK || err != nil || !ok || !mentionsAll(strings.Join(wm.Flags, " "), westmereFlags) ||
		caps.LimitedTo != "Nehalem" || slices.Contains(caps.Flags, "aes") {
		t.Errorf("GET cpu-models on host-2: %d, %v: limited to %q, Westmere %v %v", resp.StatusCode, err, caps.LimitedTo, ok, wm.Flags)
	}

	for _, vm := range []string{"west-1", "neh-2"} {
		l.MustRun("vm", "stop", vm, "--force")
		l.MustRun("vm", "delete", vm)
	}
}
