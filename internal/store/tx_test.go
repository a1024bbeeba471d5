package store

import (
	"context"
	"database/sql"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/godwit/godwit/internal/api"
)

// A write's hooks run inside its transaction only when it changed rows: a hook's error
// undoes the write, a hook's own statement commits with it, and the task journal runs
// none.
func TestWriteRunsHooksWithChanges(t *testing.T) {
	s, _ := openTemp(t)
	now := time.Now()
	var calls, committed int
	hook := func(fail bool) context.Context {
		return WithTxHook(context.Background(), func(ctx context.Context, tx *sql.Tx) (func(), error) {
			calls++
			if fail {
				return nil, errors.New("the record cannot be written")
			}
			if _, err := tx.ExecContext(ctx, `INSERT INTO ip_cursor (network, last) VALUES ('hooked', '1')
				ON CONFLICT(network) DO UPDATE SET last = last + 1`); err != nil {
				return nil, err
			}
			return func() { committed++ }, nil
		})
	}
	if err := s.InsertVM(hook(true), vmRec("a", "u1", "02:67:77:00:00:01", "")); err == nil ||
		!strings.Contains(err.Error(), "the record cannot be written") || !strings.Contains(err.Error(), "nothing was changed") {
		t.Fatalf("insert with a failing hook: %v", err)
	}
	if _, err := s.VM(context.Background(), "a"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("the VM was inserted though its hook failed: %v", err)
	}
	if err := s.InsertVM(hook(false), vmRec("a", "u1", "02:67:77:00:00:01", "")); err != nil {
		t.Fatal(err)
	}
	if last, _ := s.LastIP(context.Background(), "hooked"); last != "1" || committed != 1 {
		t.Fatalf("the hook's statement: %q, committed %d times; want it written with the VM, once", last, committed)
	}
	// No change, no hook: a delete of nothing, maintenance already off.
	calls = 0
	if err := s.DeleteVM(hook(true), "nosuch"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("delete of nothing: %v", err)
	}
	if err := s.SetMaintenance(hook(true), "host-1", false, "", now); err != nil {
		t.Fatal(err)
	}
	if err := s.InsertTask(hook(true), api.Task{ID: "t1", Kind: "vm.start", State: api.TaskRunning, Queued: now}); err != nil {
		t.Fatal(err)
	}
	if calls != 0 {
		t.Fatalf("hooks ran %d times for writes that changed nothing or the task journal", calls)
	}
	// A migration's outcome and the VM's move are one write.
	if err := s.InsertMigration(context.Background(), api.Migration{ID: "m1", VM: "a", State: api.MigrationRunning, Started: now}); err != nil {
		t.Fatal(err)
	}
	m := api.Migration{ID: "m1", VM: "a", Destination: "host-2", State: api.MigrationSucceeded, Started: now}
	if err := s.EndMigration(hook(true), m, &api.VMStatus{State: api.VMRunning}, now); err == nil {
		t.Fatal("EndMigration with a failing hook succeeded")
	}
	if v, _ := s.VM(context.Background(), "a"); v.Host != "host-1" {
		t.Fatalf("the VM moved to %s though the outcome was not recorded", v.Host)
	}
	if err := s.EndMigration(hook(false), m, &api.VMStatus{State: api.VMRunning}, now); err != nil {
		t.Fatal(err)
	}
	v, _ := s.VM(context.Background(), "a")
	got, _ := s.Migration(context.Background(), "m1")
	if v.Host != "host-2" || v.State != api.VMRunning || got.State != api.MigrationSucceeded {
		t.Fatalf("after EndMigration: VM on %s (%s), migration %s", v.Host, v.State, got.State)
	}
}
