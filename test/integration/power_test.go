package integration

import (
	"encoding/json"
	"io"
	"net/http"
	"syscall"
	"testing"
	"time"

	"github.com/godwit/godwit/internal/api"
	"github.com/godwit/godwit/internal/audit"
)

// TestCenterKeepsTheVMsPowerState: the center keeps a VM in the power state it wants.
// Its QEMU killed with SIGKILL, the VM is started again where it ran (a new boot of the
// guest), and the audit trail says why; its QEMU lost while the host's agent was down
// (as in a host restart), the same. When the guest powers itself off, that is the
// guest's wish: the VM stays off and its desired state becomes stopped.
func TestCenterKeepsTheVMsPowerState(t *testing.T) {
	t.Parallel()
	l := newLab(t, 1)
	var vm api.VM
	l.RunJSON(&vm, "vm", "create", "ha-1", "--host", "host-1")
	l.WaitHTTP("client", "http://"+vm.IP+"/healthz", 90*time.Second)
	bootID := func() string {
		t.Helper()
		return l.Stats(vm.IP).BootID
	}
	show := func() api.VM {
		t.Helper()
		var v api.VM
		l.RunJSON(&v, "vm", "show", "ha-1")
		return v
	}
	// restartedAfter waits for the VM to run again under a new QEMU and a new boot,
	// and for the center's vm.start record that says why (exit).
	restartedAfter := func(how string, oldPID int, oldBoot, exit string) {
		t.Helper()
		for start := time.Now(); ; time.Sleep(300 * time.Millisecond) {
			v := show()
			if v.State == api.VMRunning && v.PID != 0 && v.PID != oldPID {
				break
			}
			if time.Since(start) > 2*time.Minute {
				t.Fatalf("after %s the VM was not started again: %+v", how, v)
			}
		}
		l.WaitHTTP("client", "http://"+vm.IP+"/healthz", 90*time.Second)
		if b := bootID(); b == oldBoot || b == "" {
			t.Errorf("after %s the guest's boot id is %q, as before; want a new boot", how, b)
		}
		recs := waitAudit(t, l, func(rs []audit.Record) bool {
			for _, r := range rs {
				if r.Action == "vm.start" && r.Actor == audit.CenterActor && param(r, "exit") == exit {
					return true
				}
			}
			return false
		}, "--vm", "ha-1")
		for _, r := range recs {
			if r.Action == "vm.start" && r.Actor == audit.CenterActor && param(r, "exit") == exit &&
				(r.Outcome != audit.Succeeded || param(r, "reason") == "") {
				t.Errorf("the center's restart after %s: %+v; want it succeeded, with its reason", how, r)
			}
		}
	}

	// A crash: SIGKILL to QEMU.
	v := show()
	boot := bootID()
	if err := syscall.Kill(v.PID, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	restartedAfter("SIGKILL", v.PID, boot, api.ExitCrashed)

	// A host restart, as the agent sees it: QEMU gone while the agent was down.
	v = show()
	boot = bootID()
	l.Stop("host-1")
	if err := syscall.Kill(v.PID, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	l.Start("host-1")
	restartedAfter("the agent found QEMU gone", v.PID, boot, api.ExitLost)

	// The guest's own power-off.
	resp, err := l.HTTP("client").Post("http://"+vm.IP+"/poweroff", "application/json", nil)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusAccepted {
		t.Fatalf("POST /poweroff: %s %s", resp.Status, b)
	}
	recs := waitAudit(t, l, func(rs []audit.Record) bool {
		for _, r := range rs {
			if r.Action == "vm.stop" && r.Actor == audit.CenterActor {
				return true
			}
		}
		return false
	}, "--vm", "ha-1")
	for _, r := range recs {
		if r.Action == "vm.stop" && r.Actor == audit.CenterActor && (param(r, "exit") != api.ExitGuestPoweroff || param(r, "desired") != api.VMStopped) {
			t.Errorf("the center's record of the guest's power-off: %+v; want exit guest_poweroff, desired stopped", r)
		}
	}
	v = show()
	if v.State != api.VMStopped || v.Desired != api.VMStopped {
		raw, _ := json.Marshal(v)
		t.Fatalf("after the guest powered off: %s; want stopped, and desired stopped", raw)
	}
	for _, r := range recs {
		if r.Action == "vm.start" && r.Actor == audit.CenterActor && param(r, "exit") == api.ExitGuestPoweroff {
			t.Errorf("the center restarted a guest that powered itself off: %+v", r)
		}
	}
}
