package agent

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/uuid"

	"github.com/godwit/godwit/internal/api"
	"github.com/godwit/godwit/internal/netdev"
)

// stateSpec is a VM this host can define (its kernel is on the datastore).
func stateSpec(name, id string, nics int) api.VMSpec {
	s := api.VMSpec{Name: name, UUID: id, CPUs: 1, MemoryMiB: 64, Boot: api.Boot{Kernel: "[shared] images/g/vmlinuz"}}
	for i := range nics {
		s.NICs = append(s.NICs, api.NIC{Network: "lab", MAC: fmt.Sprintf("02:00:00:00:00:%02x", i+1)})
	}
	return s
}

func stateAgent(t *testing.T) *Agent {
	t.Helper()
	a, ds := testAgent(t)
	write(t, filepath.Join(ds, "images/g/vmlinuz"), "kernel")
	return a
}

// tapCollision finds two UUIDs whose first NICs get the same TAP name (TAP names hold
// 32 bits of a hash of the UUID, so a collision turns up after some 80,000 tries).
func tapCollision(t *testing.T) (string, string) {
	t.Helper()
	seen := map[string]string{}
	for range 2_000_000 {
		id := uuid.NewString()
		tap := netdev.TapName(id, 0)
		if other, ok := seen[tap]; ok {
			return other, id
		}
		seen[tap] = id
	}
	t.Fatal("no two UUIDs with the same TAP name in 2,000,000 tries")
	return "", ""
}

// Nothing on a host is shared by two VMs: not the run directory (sockets, pid file,
// definition), not a TAP, not a directory left behind. A VM that would share one is a
// 409 that says what, and the other VM's files are untouched.
func TestDefineRefusesShared(t *testing.T) {
	a := stateAgent(t)
	ctx := context.Background()

	// UUIDs that share their first 16 hex digits (time-ordered UUIDs made together do)
	// get run directories of their own.
	first, second := "0190b1c2-d3e4-7f00-8000-000000000001", "0190b1c2-d3e4-7f00-8000-000000000002"
	for _, s := range []api.VMSpec{stateSpec("a", first, 0), stateSpec("b", second, 0)} {
		if _, _, err := a.Define(ctx, s); err != nil {
			t.Fatalf("define %s: %v", s.Name, err)
		}
	}
	da, _ := a.get("a")
	db, _ := a.get("b")
	if da.dir == db.dir || filepath.Base(db.dir) != "0190b1c2d3e47f008000000000000002" {
		t.Fatalf("run directories %s and %s; want one per VM, named by the whole UUID", da.dir, db.dir)
	}
	if p, err := readPersisted(filepath.Join(da.dir, stateFile)); err != nil || p.Spec.Name != "a" {
		t.Fatalf("VM a's definition after b was defined: %+v, %v", p, err)
	}

	// The same UUID in another case is the same VM.
	_, _, err := a.Define(ctx, stateSpec("c", strings.ToUpper(first), 0))
	assertConflict(t, err, "already has a VM with UUID")

	// A TAP name another VM's NIC has.
	u1, u2 := tapCollision(t)
	if _, _, err := a.Define(ctx, stateSpec("tap-1", u1, 1)); err != nil {
		t.Fatal(err)
	}
	_, _, err = a.Define(ctx, stateSpec("tap-2", u2, 1))
	assertConflict(t, err, "NIC 0 of VM tap-2 would use TAP "+netdev.TapName(u1, 0)+" on host host-1, which NIC 0 of VM tap-1 uses")
	if _, err := a.get("tap-2"); err == nil {
		t.Fatal("the refused VM was defined")
	}

	// A run directory left on disk by no VM this host knows is not taken over.
	left := uuid.NewString()
	dir, err := a.vmDir(left)
	if err != nil {
		t.Fatal(err)
	}
	write(t, filepath.Join(dir, "qemu.pid"), "4242\n")
	_, _, err = a.Define(ctx, stateSpec("late", left, 0))
	assertConflict(t, err, "run directory "+dir+" of VM late already exists on host host-1")
	if b, err := os.ReadFile(filepath.Join(dir, "qemu.pid")); err != nil || string(b) != "4242\n" {
		t.Fatalf("the leftover directory was changed: %q, %v", b, err)
	}
	if _, err := os.Stat(filepath.Join(dir, stateFile)); !os.IsNotExist(err) {
		t.Fatalf("a definition was written into the leftover directory: %v", err)
	}
}

func assertConflict(t *testing.T, err error, want string) {
	t.Helper()
	se, ok := err.(*api.StatusError)
	if !ok || se.Status != 409 || !strings.Contains(err.Error(), want) {
		t.Fatalf("got %v; want a 409 saying %q", err, want)
	}
}

// A torn vm.json loses nothing: the agent reads the VM from its copy, says so on the
// VM, and writes the definition back; only when both are unreadable is the directory
// left alone (and then recoverVM looks for a running QEMU).
func TestTornStateFileRecovered(t *testing.T) {
	a := stateAgent(t)
	ctx := context.Background()
	id := uuid.NewString()
	if _, _, err := a.Define(ctx, stateSpec("web-1", id, 1)); err != nil {
		t.Fatal(err)
	}
	v, _ := a.get("web-1")
	if err := os.Truncate(filepath.Join(v.dir, stateFile), 17); err != nil {
		t.Fatal(err)
	}

	// A restarted agent on the same state directory.
	restarted := func() *Agent {
		cfg := a.cfg
		cfg.Registry = nil
		r, err := New(cfg, "test")
		if err != nil {
			t.Fatal(err)
		}
		if err := r.adoptAll(ctx); err != nil {
			t.Fatal(err)
		}
		return r
	}
	b := restarted()
	st := b.statuses()
	if len(st) != 1 || st[0].Name != "web-1" || st[0].UUID != id || !strings.Contains(st[0].Error, "could not be read") ||
		!strings.Contains(st[0].Error, "used its copy "+backupFile) {
		t.Fatalf("VMs after the restart: %+v; want web-1, with an error saying its definition came from the copy", st)
	}
	if p, err := readPersisted(filepath.Join(v.dir, stateFile)); err != nil || p.Spec.UUID != id || len(p.Spec.NICs) != 1 {
		t.Fatalf("vm.json after the recovery: %+v, %v; want the definition written back", p, err)
	}

	// Both copies torn: nothing to read the VM from, and no QEMU runs it.
	for _, f := range []string{stateFile, backupFile} {
		if err := os.WriteFile(filepath.Join(v.dir, f), []byte(`{"spec": {"na`), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	if _, _, err := loadPersisted(v.dir); err == nil || !strings.Contains(err.Error(), "and its copy") {
		t.Fatalf("loadPersisted with both copies torn: %v", err)
	}
	if st := restarted().statuses(); len(st) != 0 {
		t.Fatalf("VMs with no definition and no QEMU: %+v; want none", st)
	}
	if _, err := os.Stat(v.dir); err != nil {
		t.Fatalf("the directory of the unreadable VM was removed: %v", err)
	}
}

// A VM defined before run directories were named by the whole UUID keeps its
// directory (16 hex digits) across restarts; a VM whose UUID starts the same gets its
// own.
func TestLegacyRunDirectoryKept(t *testing.T) {
	a := stateAgent(t)
	ctx := context.Background()
	old := "0190b1c2-d3e4-7f00-8000-00000000000a"
	legacy := filepath.Join(a.cfg.StateDir, "vms", "0190b1c2d3e47f00")
	v := &vm{spec: stateSpec("old", old, 0), dir: legacy}
	if err := v.save(); err != nil {
		t.Fatal(err)
	}
	if err := a.adoptAll(ctx); err != nil {
		t.Fatal(err)
	}
	got, err := a.get("old")
	if err != nil || got.dir != legacy {
		t.Fatalf("VM in a legacy directory after a restart: %+v, %v; want it known, in %s", got, err, legacy)
	}
	if _, _, err := a.Define(ctx, stateSpec("new", "0190b1c2-d3e4-7f00-8000-00000000000b", 0)); err != nil {
		t.Fatal(err)
	}
	if n, _ := a.get("new"); n.dir == legacy {
		t.Fatal("the new VM was given the old VM's directory")
	}
}
