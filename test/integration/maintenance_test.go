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

// TestMaintenanceEmptiesTheHost puts a host with two running VMs into maintenance mode,
// in a lab of three hosts with one migration slot each.
//
// First with no host to take them: the dry run names both VMs as blocked and changes
// nothing; entering leaves the host "blocked", naming each VM and why; a second request
// is refused; exit returns the host to normal with no VM moved.
//
// Then for real, the first move slowed (shaped link, a guest rewriting memory) so that
// the center is restarted in the middle of the evacuation. The restarted center resumes
// the plan from the store: each VM moves exactly once, to the one host open, the host is
// "entering" while a QEMU of it runs and "in maintenance" only once it reports none, and
// the plan and the audit trail name the plan, the reason, and predicted against actual.
func TestMaintenanceEmptiesTheHost(t *testing.T) {
	t.Parallel()
	l := labtest.NewWith(t, home, 3, "--center-arg=--max-migrations-per-host=1")
	a, _ := twoVMs(t, l, "host-1", "mnt-a", "mnt-b")
	hostShow := func(name string) api.Host {
		t.Helper()
		var h api.Host
		l.RunJSON(&h, "host", "show", name)
		return h
	}

	// The two other hosts are empty: in maintenance at once.
	for _, h := range []string{"host-2", "host-3"} {
		var got api.Host
		l.RunJSON(&got, "host", "maintenance", "enter", h, "--wait", "--reason", "firmware")
		if got.Maintenance == nil || got.Maintenance.State != api.MaintenanceIn {
			t.Fatalf("empty %s after enter --wait: %+v; want in maintenance", h, got.Maintenance)
		}
	}

	// Nowhere to go: the dry run says so, and changes nothing.
	var dry api.Plan
	l.RunJSON(&dry, "host", "maintenance", "enter", "host-1", "--dry-run")
	if dry.State != api.PlanProposed || len(dry.Moves) != 2 {
		t.Fatalf("dry run: %+v; want a proposed plan of two moves", dry)
	}
	for _, mv := range dry.Moves {
		if mv.State != api.MoveBlocked || mv.Code != "no_destination" || !strings.Contains(mv.Error, "maintenance") {
			t.Errorf("dry-run move of %s: %s %s %q; want blocked, no_destination, saying the hosts are in maintenance", mv.VM, mv.State, mv.Code, mv.Error)
		}
	}
	if h := hostShow("host-1"); h.Maintenance != nil {
		t.Fatalf("the dry run put host-1 in maintenance: %+v", h.Maintenance)
	}
	var blocked api.Host
	l.RunJSON(&blocked, "host", "maintenance", "enter", "host-1", "--wait", "--reason", "new disks")
	if m := blocked.Maintenance; m == nil || m.State != api.MaintenanceBlocked || len(m.Blocked) != 2 || m.Blocked[0].Code != "no_destination" {
		t.Fatalf("host-1 with nowhere to move its VMs: %+v; want blocked by both, no_destination", blocked.Maintenance)
	}
	if _, errOut, err := l.Run("host", "maintenance", "enter", "host-1"); err == nil || !strings.Contains(errOut, "already in maintenance") {
		t.Errorf("a second enter: %v %q; want it refused, saying the host is already in maintenance", err, errOut)
	}
	if out := l.MustRun("host", "maintenance", "exit", "host-1", "-o", "table"); !strings.Contains(out, "not in maintenance") {
		t.Errorf("exit: %q", out)
	}
	var blockedPlan api.Plan
	l.RunJSON(&blockedPlan, "plan", "show", blocked.Maintenance.Plan)
	if blockedPlan.State != api.PlanCancelled {
		t.Errorf("the blocked plan after exit: %s; want cancelled", blockedPlan.State)
	}
	for _, name := range []string{"mnt-a", "mnt-b"} {
		var ms []api.Migration
		l.RunJSON(&ms, "migration", "list", "--vm", name)
		if len(ms) != 0 {
			t.Fatalf("VM %s has migrations after a blocked maintenance: %+v", name, ms)
		}
	}

	// For real: host-3 opens; the first move is slowed, the second waits for the slot.
	l.MustRun("host", "maintenance", "exit", "host-3")
	l.Shape("host-1", faultRate)
	l.Shape("host-3", faultRate)
	dirty(t, l, a.IP, faultDirtyMiB, faultDirtyRate)
	var entering api.Host
	l.RunJSON(&entering, "host", "maintenance", "enter", "host-1", "--reason", "new disks")
	if entering.Maintenance == nil || entering.Maintenance.State != api.MaintenanceEntering || entering.Maintenance.Plan == "" {
		t.Fatalf("host-1 entering: %+v", entering.Maintenance)
	}
	planID := entering.Maintenance.Plan
	plan := func() api.Plan {
		t.Helper()
		var p api.Plan
		l.RunJSON(&p, "plan", "show", planID)
		return p
	}
	for start := time.Now(); ; time.Sleep(200 * time.Millisecond) {
		p := plan()
		var ms []api.Migration
		l.RunJSON(&ms, "migration", "list", "--vm", "mnt-a")
		if len(ms) == 1 && ms[0].State == api.MigrationRunning && ms[0].Progress.TransferredBytes > 0 {
			break
		}
		if time.Since(start) > 90*time.Second {
			t.Fatalf("the first move did not get under way: plan %+v, migrations %+v", p, ms)
		}
	}
	l.Stop("center")
	l.Start("center")
	if h := hostShow("host-1"); h.Maintenance == nil || h.Maintenance.State != api.MaintenanceEntering {
		t.Fatalf("host-1 after the center restarted: %+v; want still entering", h.Maintenance)
	}
	dirty(t, l, a.IP, 0, 0)
	l.Shape("host-1", "off")
	l.Shape("host-3", "off")

	var done api.Host
	for start := time.Now(); ; time.Sleep(300 * time.Millisecond) {
		done = hostShow("host-1")
		if done.Maintenance == nil {
			t.Fatal("host-1 left maintenance by itself")
		}
		if done.Maintenance.State == api.MaintenanceIn {
			break
		}
		if done.Maintenance.State == api.MaintenanceBlocked || time.Since(start) > 3*time.Minute {
			t.Fatalf("host-1 did not reach maintenance: %+v; plan %+v", done.Maintenance, plan())
		}
	}
	for _, v := range done.VMs {
		if v.PID != 0 || v.State == api.VMRunning {
			t.Errorf("host-1 is in maintenance while it reports %s %s (pid %d)", v.Name, v.State, v.PID)
		}
	}
	p := plan()
	if p.State != api.PlanDone || p.Finished == nil || p.ActualMakespanMS <= 0 || len(p.Moves) != 2 {
		t.Fatalf("plan after the evacuation: %+v; want done, with its makespan, two moves", p)
	}
	for _, mv := range p.Moves {
		if mv.State != api.MoveDone || mv.To != "host-3" || mv.Attempts != 1 || mv.ActualTotalMS <= 0 || mv.Prediction == nil {
			t.Errorf("move of %s: %+v; want done to host-3 in one attempt, predicted and actual", mv.VM, mv)
		}
	}
	for _, name := range []string{"mnt-a", "mnt-b"} {
		var vm api.VM
		l.RunJSON(&vm, "vm", "show", name)
		if vm.Host != "host-3" || vm.State != api.VMRunning {
			t.Errorf("VM %s after the evacuation: on %s, %s; want running on host-3", name, vm.Host, vm.State)
		}
		var ms []api.Migration
		l.RunJSON(&ms, "migration", "list", "--vm", name)
		if len(ms) != 1 || ms[0].Plan != planID || ms[0].State != api.MigrationSucceeded || !strings.Contains(ms[0].Reason, "new disks") {
			t.Errorf("VM %s's migrations: %s; want one, of plan %s, succeeded, naming the reason", name, describeMigrations(ms), planID)
		}
		recs := waitAudit(t, l, func(rs []audit.Record) bool { return find(rs, "migration.finish") != nil }, "--vm", name)
		mv := find(recs, "vm.migrate")
		if mv == nil || mv.Actor != audit.CenterActor || param(*mv, "plan") != planID || !strings.Contains(param(*mv, "reason"), "new disks") {
			t.Errorf("VM %s's vm.migrate record: %+v; want the center's, naming plan %s and the reason", name, mv, planID)
		}
		if fin := find(recs, "migration.finish"); fin == nil || param(*fin, "plan") != planID {
			t.Errorf("VM %s's migration.finish record: %+v; want it to name plan %s", name, fin, planID)
		}
	}
	out := l.MustRun("plan", "show", planID, "-o", "table")
	if !strings.Contains(out, "done") || !strings.Contains(out, "mnt-a") {
		t.Errorf("plan show: %q", out)
	}
	t.Logf("the plan, done:\n%s", out)

	// Out of maintenance, and the VMs back where they were.
	var back api.Plan
	l.RunJSON(&back, "host", "maintenance", "exit", "host-1", "--return", "--wait")
	if back.Kind != api.PlanReturn || back.State != api.PlanDone || len(back.Moves) != 2 {
		t.Fatalf("the return plan: %+v; want done, two moves", back)
	}
	for _, mv := range back.Moves {
		if mv.State != api.MoveDone || mv.From != "host-3" || mv.To != "host-1" || mv.Attempts != 1 {
			t.Errorf("return move of %s: %+v; want done, host-3 to host-1, one attempt", mv.VM, mv)
		}
		var vm api.VM
		l.RunJSON(&vm, "vm", "show", mv.VM)
		if vm.Host != "host-1" || vm.State != api.VMRunning {
			t.Errorf("VM %s after the return: on %s, %s; want running on host-1", mv.VM, vm.Host, vm.State)
		}
	}
	if h := hostShow("host-1"); h.Maintenance != nil {
		t.Errorf("host-1 after exit: %+v; want out of maintenance", h.Maintenance)
	}
	if st, body := l.RawAPI("POST", "/api/v1/hosts/host-1/maintenance", `{"enter":true,"return":true}`); st != 400 || !strings.Contains(body, "exit") {
		t.Errorf("enter with return: %d %s; want 400 pointing to exit --return", st, body)
	}
	if h := hostShow("host-1"); h.Maintenance != nil {
		t.Errorf("host-1 after a refused enter: %+v; want it unchanged", h.Maintenance)
	}
	l.MustRun("host", "maintenance", "host-2", "off")
}

// describeMigrations is a line per migration, for failures.
func describeMigrations(ms []api.Migration) string {
	var b strings.Builder
	for _, m := range ms {
		fmt.Fprintf(&b, "\n  %s %s→%s %s plan %q reason %q error %q", m.ID, m.Source, m.Destination, m.State, m.Plan, m.Reason, m.Error)
	}
	return b.String()
}
