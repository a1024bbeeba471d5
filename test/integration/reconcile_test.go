package integration

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/godwit/godwit/internal/api"
	"github.com/godwit/godwit/internal/audit"
	"github.com/godwit/godwit/internal/labtest"
)

// TestQueuedMigrationSurvivesCenterRestart runs the center with one migration slot per
// host, starts a slow migration and queues a second one behind it, and restarts the
// center. The restarted center's migration loop takes both from the store: the running
// one keeps its slot and is followed again, the queued one stays queued behind it — never
// started beside it — and runs once the first ends. Both succeed, each VM moves once, and
// the trail shows the first followed again after the restart.
func TestQueuedMigrationSurvivesCenterRestart(t *testing.T) {
	t.Parallel()
	l := labtest.NewWith(t, home, 2, "--center-arg=--max-migrations-per-host=1")
	a, _ := twoVMs(t, l, "host-1", "first", "second")

	show := func(id string) api.Migration {
		t.Helper()
		var m api.Migration
		l.RunJSON(&m, "migration", "show", id)
		return m
	}
	// The first migration copies slowly: a shaped link and a guest dirtying memory.
	l.Shape("host-1", faultRate)
	l.Shape("host-2", faultRate)
	dirty(t, l, a.IP, faultDirtyMiB, faultDirtyRate)
	var ma, mb api.Migration
	l.RunJSON(&ma, "vm", "migrate", "first", "--to", "host-2", "--detach")
	for start := time.Now(); ; time.Sleep(100 * time.Millisecond) {
		if ma = show(ma.ID); ma.State == api.MigrationRunning {
			break
		}
		if faultEnded(ma) || time.Since(start) > 90*time.Second {
			t.Fatalf("the first migration did not get under way: %s", faultDescribe(ma))
		}
	}
	l.RunJSON(&mb, "vm", "migrate", "second", "--to", "host-2", "--detach")
	if mb.State != api.MigrationQueued || !strings.Contains(mb.Waiting, "host") {
		t.Fatalf("the second migration, with the hosts' only slots taken: %s, waiting %q; want queued, waiting for a host's slot", mb.State, mb.Waiting)
	}

	l.Stop("center")
	l.Start("center")

	// The restarted center drives both again: the first still runs and holds the slots,
	// so the second waits, and says for what.
	for range 3 {
		ma, mb = show(ma.ID), show(mb.ID)
		if faultEnded(ma) {
			t.Fatalf("the first migration ended while it was slowed: %s", faultDescribe(ma))
		}
		if mb.State != api.MigrationQueued {
			t.Fatalf("after the restart the second migration is %s while the first (%s) holds the slots; want it queued", faultDescribe(mb), ma.State)
		}
		time.Sleep(500 * time.Millisecond)
	}
	if !strings.Contains(mb.Waiting, "host") {
		t.Errorf("after the restart the queued migration's note is %q; want what it waits for", mb.Waiting)
	}

	// Let the first converge; the second follows.
	dirty(t, l, a.IP, 0, 0)
	l.Shape("host-1", "off")
	l.Shape("host-2", "off")
	end := func(id string) api.Migration {
		t.Helper()
		for start := time.Now(); ; time.Sleep(200 * time.Millisecond) {
			m := show(id)
			if faultEnded(m) {
				return m
			}
			if time.Since(start) > 3*time.Minute {
				t.Fatalf("migration %s is stuck: %s", id, faultDescribe(m))
			}
		}
	}
	ma, mb = end(ma.ID), end(mb.ID)
	if ma.State != api.MigrationSucceeded || mb.State != api.MigrationSucceeded {
		t.Fatalf("after the restart: first %s, second %s; want both to succeed", faultDescribe(ma), faultDescribe(mb))
	}
	if mb.Finished == nil || ma.Finished == nil || !mb.Finished.After(*ma.Finished) {
		t.Errorf("the queued migration ended at %v, the first at %v; want it to run after the first", mb.Finished, ma.Finished)
	}
	for _, name := range []string{"first", "second"} {
		var vm api.VM
		l.RunJSON(&vm, "vm", "show", name)
		if vm.Host != "host-2" || vm.State != api.VMRunning {
			t.Errorf("VM %s after its migration: on %s, %s; want running on host-2", name, vm.Host, vm.State)
		}
		var ms []api.Migration
		l.RunJSON(&ms, "migration", "list", "--vm", name)
		if len(ms) != 1 {
			t.Errorf("VM %s has %d migrations; want the one asked for", name, len(ms))
		}
	}
	recs := waitAudit(t, l, func(rs []audit.Record) bool { return find(rs, "migration.finish") != nil }, "--vm", "first")
	if find(recs, "migration.resume") == nil {
		var acts []string
		for _, r := range recs {
			acts = append(acts, r.Action)
		}
		t.Errorf("the first VM's trail is %s; want the migration followed again after the restart (migration.resume)", fmt.Sprint(acts))
	}
}

// twoVMs creates VMs x and y on host and waits until both guests answer.
func twoVMs(t *testing.T, l *labtest.Lab, host, x, y string) (api.VM, api.VM) {
	t.Helper()
	var a, b api.VM
	l.RunJSON(&a, "vm", "create", x, "--host", host)
	l.RunJSON(&b, "vm", "create", y, "--host", host)
	l.WaitHTTP("client", "http://"+a.IP+"/healthz", 90*time.Second)
	l.WaitHTTP("client", "http://"+b.IP+"/healthz", 90*time.Second)
	return a, b
}
