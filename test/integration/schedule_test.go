package integration

import (
	"encoding/json"
	"os/user"
	"strings"
	"testing"
	"time"

	"github.com/godwit/godwit/internal/api"
	"github.com/godwit/godwit/internal/audit"
	"github.com/godwit/godwit/internal/labtest"
)

// TestScheduledMigrations runs scheduled migrations on a 2-host lab with nobody present:
// a one-shot schedule moves a VM and names itself and its creator in the task and the
// audit trail; after the center was down past two schedules' time, the run-once one
// runs once on recovery and the skip one does not, and both say so; a schedule whose VM
// was deleted fails with the reason; bad requests are refused with a sentence and leave
// nothing behind.
func TestScheduledMigrations(t *testing.T) {
	l := newLab(t, 2)
	me, err := user.Current()
	if err != nil {
		t.Fatal(err)
	}
	var vm api.VM
	l.RunJSON(&vm, "vm", "create", "sch-a", "--host", "host-1")

	// (d) Bad input, while the VM boots: a non-zero exit with a sentence, and nothing
	// half-created.
	for _, c := range []struct {
		args []string
		want string
	}{
		{[]string{"past", "--at", "2020-01-01 00:00", "--", "vm", "migrate", "sch-a", "--to", "host-2"}, "2020-01-01 00:00:00 UTC is in the past"},
		{[]string{"bad-cron", "--cron", "0 25 * * *", "--", "vm", "migrate", "sch-a", "--to", "host-2"}, "the hour"},
		{[]string{"no-vm", "--at", "+1h", "--", "vm", "migrate", "nosuch", "--to", "host-2"}, "VM nosuch does not exist"},
		{[]string{"no-host", "--at", "+1h", "--", "vm", "migrate", "sch-a", "--to", "host-9"}, `no host named "host-9"`},
		{[]string{"bad-cmd", "--at", "+1h", "--", "vm", "stop", "sch-a"}, "can run only `vm migrate"},
		{[]string{"bad-flag", "--at", "+1h", "--", "vm", "migrate", "sch-a", "--to", "host-2", "--detach"}, "unknown flag: --detach"},
		{[]string{"no-cmd", "--at", "+1h"}, "give the command to schedule after --"},
	} {
		out, errOut, err := l.Run(append([]string{"schedule", "create"}, c.args...)...)
		if err == nil || !strings.Contains(errOut, c.want) {
			t.Errorf("schedule create %s: err=%v stdout=%q stderr=%q; want a non-zero exit saying %q", strings.Join(c.args, " "), err, out, errOut, c.want)
		}
	}
	var none []api.Schedule
	l.RunJSON(&none, "schedule", "list")
	if len(none) != 0 {
		t.Fatalf("schedule list after refused requests: %+v; want nothing", none)
	}

	// (c) A schedule whose VM is deleted before it runs fails with the reason.
	l.MustRun("vm", "create", "sch-ghost", "--host", "host-1", "--start=false")
	ghost := createSchedule(t, l, "ghost", "--at", "+8s", "--", "vm", "migrate", "sch-ghost", "--to", "host-2")
	l.MustRun("vm", "delete", "sch-ghost")

	// (a) A one-shot schedule moves the VM with no further action.
	l.WaitHTTP("client", "http://"+vm.IP+"/healthz", 90*time.Second)
	toH2 := createSchedule(t, l, "to-h2", "--at", "+5s", "--", "vm", "migrate", "sch-a", "--to", "host-2")
	if toH2.At == nil || toH2.NextRun == nil || !toH2.NextRun.Equal(*toH2.At) || toH2.Missed != "run-once" ||
		toH2.CreatedBy != me.Username || toH2.Command != "vm migrate sch-a --to host-2" {
		t.Fatalf("created schedule: %+v; want a one-shot by %s running vm migrate sch-a --to host-2", toH2, me.Username)
	}
	s := waitScheduleOutcome(t, l, "to-h2")
	if s.LastOutcome != api.ScheduleSucceeded || s.LastRun == nil || s.LastRun.Before(*toH2.At) || s.NextRun != nil ||
		len(s.LastMigrations) != 1 || s.LastMigrations[0].State != api.TaskSucceeded || s.LastMigrations[0].Destination != "host-2" {
		t.Fatalf("schedule show to-h2: %+v; want its last run succeeded with one migration to host-2", s)
	}
	var moved api.VM
	l.RunJSON(&moved, "vm", "show", "sch-a")
	if moved.Host != "host-2" {
		t.Fatalf("VM sch-a is on %s after the scheduled migration; want host-2", moved.Host)
	}
	initiator := "schedule to-h2 (created by " + me.Username + ")"
	var task api.Task
	l.RunJSON(&task, "task", "show", s.LastMigrations[0].ID)
	if task.Kind != "vm.migrate" || task.Initiator != initiator || task.State != api.TaskSucceeded {
		t.Errorf("the scheduled migration's task: %+v; want vm.migrate succeeded, initiated by %q", task, initiator)
	}
	var run api.Task
	l.RunJSON(&run, "task", "show", s.LastTask)
	if run.Kind != api.KindScheduleRun || run.Target != "to-h2" || run.Initiator != initiator || run.State != api.TaskSucceeded {
		t.Errorf("the schedule's run task: %+v", run)
	}
	recs := waitAudit(t, l, func(rs []audit.Record) bool { return find(rs, "vm.migrate") != nil }, "--vm", "sch-a", "--action", "vm.migrate")
	if r := recs[0]; r.Actor != "schedule to-h2" || r.ActorKind != audit.KindSchedule || r.OnBehalfOf != me.Username ||
		r.Outcome != audit.Succeeded || param(r, "migration") != s.LastMigrations[0].ID || param(r, "destination") != "host-2" {
		t.Errorf("the vm.migrate audit record: %+v params %s; want schedule to-h2 (schedule) on behalf of %s", r, r.Params, me.Username)
	}
	runs := waitAudit(t, l, func(rs []audit.Record) bool { return len(rs) >= 2 }, "--action", "schedule.run")
	if find(runs, "schedule.run") == nil || !strings.Contains(string(runs[0].Params)+string(runs[1].Params), s.LastMigrations[0].ID) {
		t.Errorf("schedule.run records %+v; want the one of to-h2 naming its migration", runs)
	}
	t.Logf("godwit schedule show to-h2:\n%s", l.MustRun("schedule", "show", "to-h2"))

	// (c) The ghost schedule ran meanwhile, and failed with the reason.
	g := waitScheduleOutcome(t, l, "ghost")
	if g.LastOutcome != api.ScheduleFailed || !strings.Contains(g.LastError, "VM sch-ghost does not exist") ||
		len(g.LastRefused) != 1 || len(g.LastMigrations) != 0 || g.LastRun == nil || g.LastRun.Before(*ghost.At) {
		t.Errorf("schedule show ghost: %+v; want failed: VM sch-ghost does not exist", g)
	}
	var gt api.Task
	l.RunJSON(&gt, "task", "show", g.LastTask)
	if gt.State != api.TaskFailed || !strings.Contains(gt.Error, "VM sch-ghost does not exist") {
		t.Errorf("the ghost schedule's run task: %+v; want failed with the reason", gt)
	}

	// (b) Missed runs: two one-shot schedules fall due while the center is down.
	once := createSchedule(t, l, "back-once", "--at", "+8s", "--missed", "run-once", "--", "vm", "migrate", "sch-a", "--to", "host-1")
	skip := createSchedule(t, l, "back-skip", "--at", "+8s", "--missed", "skip", "--", "vm", "migrate", "sch-a", "--to", "host-1")
	l.Stop("center")
	due := *once.At
	if skip.At.After(due) {
		due = *skip.At
	}
	time.Sleep(time.Until(due.Add(time.Second)))
	l.Start("center")

	o := waitScheduleOutcome(t, l, "back-once")
	if o.LastOutcome != api.ScheduleSucceeded || o.LastRun == nil || !o.LastRun.After(due) || len(o.LastMigrations) != 1 || o.Skipped != nil {
		t.Fatalf("schedule show back-once after the restart: %+v; want one run on recovery, succeeded", o)
	}
	l.RunJSON(&moved, "vm", "show", "sch-a")
	if moved.Host != "host-1" {
		t.Fatalf("VM sch-a is on %s after the run on recovery; want host-1", moved.Host)
	}
	var sk api.Schedule
	l.RunJSON(&sk, "schedule", "show", "back-skip")
	if sk.LastTask != "" || sk.LastRun != nil || sk.Skipped == nil || !sk.Skipped.Equal(*skip.At) || sk.NextRun != nil {
		t.Errorf("schedule show back-skip after the restart: %+v; want no run, its time skipped, no next run", sk)
	}
	if out := l.MustRun("schedule", "show", "back-skip"); !strings.Contains(out, "Skipped:") || !hasLine(out, "Last run:", "never") {
		t.Errorf("schedule show back-skip does not say that it never ran and that its run was skipped:\n%s", out)
	}
	missed := waitAudit(t, l, func(rs []audit.Record) bool { return len(rs) >= 2 }, "--action", "schedule.missed")
	byName := map[string]audit.Record{}
	for _, r := range missed {
		byName[r.Target] = r
	}
	for name, action := range map[string]string{"back-once": "run-once", "back-skip": "skip"} {
		r, ok := byName[name]
		if !ok || param(r, "missed") != "1" || param(r, "action") != action || r.Actor != "schedule "+name || r.OnBehalfOf != me.Username {
			t.Errorf("schedule.missed record of %s: %+v params %s; want 1 missed, %s", name, r, r.Params, action)
		}
	}
	if len(missed) != 2 {
		t.Errorf("%d schedule.missed records; want 2: %+v", len(missed), missed)
	}
	var ms []api.Migration
	l.RunJSON(&ms, "migration", "list", "--vm", "sch-a")
	if len(ms) != 2 {
		t.Errorf("VM sch-a has %d migrations; want 2 (to-h2, and back-once once): %+v", len(ms), ms)
	}
	t.Logf("godwit schedule list:\n%s", l.MustRun("schedule", "list"))
}

// createSchedule runs `schedule create NAME ARGS...` with -o json before the -- that
// starts the scheduled command, and returns the schedule.
func createSchedule(t *testing.T, l *labtest.Lab, name string, args ...string) api.Schedule {
	t.Helper()
	out := l.MustRun(append([]string{"schedule", "create", name, "-o", "json"}, args...)...)
	var s api.Schedule
	if err := json.Unmarshal([]byte(out), &s); err != nil {
		t.Fatalf("schedule create %s: output is not a schedule: %v\n%s", name, err, out)
	}
	return s
}

// waitScheduleOutcome waits, for up to 3 minutes, until the schedule's last run has an
// outcome other than running, and returns the schedule.
func waitScheduleOutcome(t *testing.T, l *labtest.Lab, name string) api.Schedule {
	t.Helper()
	deadline := time.Now().Add(3 * time.Minute)
	for {
		var s api.Schedule
		l.RunJSON(&s, "schedule", "show", name)
		if s.LastOutcome != "" && s.LastOutcome != api.ScheduleRunning {
			return s
		}
		if time.Now().After(deadline) {
			t.Fatalf("schedule %s has no outcome after 3 minutes: %+v", name, s)
		}
		time.Sleep(300 * time.Millisecond)
	}
}

// hasLine reports whether out has a line that starts with prefix and ends with suffix.
func hasLine(out, prefix, suffix string) bool {
	for _, line := range strings.Split(out, "\n") {
		if strings.HasPrefix(line, prefix) && strings.HasSuffix(strings.TrimSpace(line), suffix) {
			return true
		}
	}
	return false
}
