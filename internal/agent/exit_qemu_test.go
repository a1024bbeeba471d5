package agent

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/godwit/godwit/internal/api"
	"github.com/godwit/godwit/internal/qemu"
	"github.com/godwit/godwit/internal/qmp"
)

// guestImage copies the test guest's kernel and initrd to the datastore ds and returns
// its boot section (the guest program runs as init and powers off on the power button).
func guestImage(t *testing.T, ds string) api.Boot {
	t.Helper()
	dir := os.Getenv("GODWIT_GUEST_DIR")
	if dir == "" {
		dir = filepath.Join("..", "..", "build", "guest")
	}
	initrd, err := os.ReadFile(filepath.Join(dir, "initrd.img"))
	if err != nil {
		t.Fatalf("the test guest's initrd (run `make guest`): %v", err)
	}
	cmdline, err := os.ReadFile(filepath.Join(dir, "cmdline"))
	if err != nil {
		t.Fatalf("the test guest's command line (run `make guest`): %v", err)
	}
	write(t, filepath.Join(ds, "images", "g", "initrd.img"), string(initrd))
	return api.Boot{Kernel: guestKernel(t, ds), Initrd: "[shared] images/g/initrd.img", Cmdline: strings.TrimSpace(string(cmdline))}
}

// A real QEMU of a real guest, ended three ways behind the agent's back: SIGKILL is a
// crash, the guest's own power-off (its power button, pressed through QMP) is the
// guest's, and a QMP quit is a stop on request. The agent's status says which, and
// when, once QEMU is gone; a running VM reports no exit.
func TestExitReasonsOfARealQEMU(t *testing.T) {
	a, ds := testAgent(t)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	a.runCtx = ctx
	defer a.wg.Wait()
	defer cancel()
	spec := api.VMSpec{Name: "ends", UUID: "7c2e4d1a-3b5f-4e6a-8d9c-0f1e2d3c4b5a", CPUs: 1, MemoryMiB: 256, Boot: guestImage(t, ds)}
	if _, _, err := a.Define(ctx, spec); err != nil {
		t.Fatal(err)
	}
	v, err := a.get("ends")
	if err != nil {
		t.Fatal(err)
	}
	start := func() (*qemu.Process, qemu.Spec) {
		t.Helper()
		_, p, q := startTestQEMU(ctx, t, a, "ends")
		a.mu.Lock()
		v.proc, v.state, v.exit, v.exitedAt = p, api.VMRunning, "", nil
		a.mu.Unlock()
		a.watch(v, p)
		if st := a.statusLocked(v); st.Exit != "" || st.PID == 0 {
			t.Fatalf("a running VM's status: %+v; want a PID and no exit", st)
		}
		a.mu.Lock()
		l := v.events
		a.mu.Unlock()
		for !l.listening() {
			if ctx.Err() != nil {
				t.Fatal("the agent never reached QEMU's events socket")
			}
			time.Sleep(10 * time.Millisecond)
		}
		return p, q
	}
	ended := func(how string) api.VMStatus {
		t.Helper()
		for {
			if st := a.statusLocked(v); st.State == api.VMStopped {
				return st
			}
			if ctx.Err() != nil {
				t.Fatalf("QEMU did not end after %s", how)
			}
			time.Sleep(50 * time.Millisecond)
		}
	}
	monitor := func(q qemu.Spec) *qmp.Monitor {
		t.Helper()
		m, err := qmp.Dial(ctx, q.QMPPath())
		if err != nil {
			t.Fatal(err)
		}
		return m
	}

	p, _ := start()
	before := time.Now()
	if err := p.Kill(); err != nil {
		t.Fatal(err)
	}
	if st := ended("SIGKILL"); st.Exit != api.ExitCrashed || st.ExitedAt == nil || st.ExitedAt.Before(before) {
		t.Fatalf("after SIGKILL: %+v; want exit crashed, with its time", st)
	}

	// The guest's power button: pressed until the guest's init, once up, powers off.
	_, q := start()
	m := monitor(q)
	for a.statusLocked(v).State == api.VMRunning {
		_ = m.SystemPowerdown(ctx)
		select {
		case <-ctx.Done():
			t.Fatal("the guest did not power itself off")
		case <-time.After(time.Second):
		}
	}
	m.Close()
	if st := ended("the power button"); st.Exit != api.ExitGuestPoweroff {
		t.Fatalf("after the guest powered off: %+v; want exit guest_poweroff", st)
	}

	_, q = start()
	m = monitor(q)
	if err := m.Quit(ctx); err != nil && !strings.Contains(err.Error(), "closed") {
		t.Logf("quit: %v", err)
	}
	m.Close()
	if st := ended("quit"); st.Exit != api.ExitRequested {
		t.Fatalf("after a QMP quit: %+v; want exit requested", st)
	}
}
