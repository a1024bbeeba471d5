package center

import (
	"bytes"
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/godwit/godwit/internal/api"
	"github.com/godwit/godwit/internal/audit"
	"github.com/godwit/godwit/internal/schedule"
	"github.com/godwit/godwit/internal/store"
)

func TestParseScheduledCommand(t *testing.T) {
	for _, c := range []struct {
		words []string
		want  api.BulkMigrateRequest
	}{
		{[]string{"vm", "migrate", "web-1", "--to", "host-2"}, api.BulkMigrateRequest{VMs: []string{"web-1"}, To: "host-2"}},
		{[]string{"vm", "migrate", "a", "--to=h2", "b", "--priority", "low", "--policy", "safe", "--encryption", "required"},
			api.BulkMigrateRequest{VMs: []string{"a", "b"}, To: "h2", Priority: "low", Policy: "safe", Encryption: "required"}},
		{[]string{"vm", "migrate", "--auto", "a", "b", "c"}, api.BulkMigrateRequest{VMs: []string{"a", "b", "c"}, Auto: true}},
	} {
		got, err := api.ParseScheduledCommand(c.words)
		if err != nil || !reflect.DeepEqual(got, c.want) {
			t.Errorf("ParseScheduledCommand(%q) = %+v, %v; want %+v", c.words, got, err, c.want)
			continue
		}
		// The command line a schedule shows reads back as the same request.
		line := api.MigrateCommandLine(got)
		back, err := api.ParseScheduledCommand(strings.Fields(line))
		if err != nil || !reflect.DeepEqual(back, got) {
			t.Errorf("%q does not read back: %+v, %v", line, back, err)
		}
	}
	for _, c := range []struct {
		words []string
		want  string
	}{
		{nil, "no command given after --"},
		{[]string{"vm", "stop", "web-1"}, "only `vm migrate"},
		{[]string{"host", "evacuate", "host-1"}, "not `host evacuate host-1`"},
		{[]string{"vm"}, "only `vm migrate"},
		{[]string{"vm", "migrate", "web-1", "--to", "h", "--detach"}, "unknown flag: --detach"},
		{[]string{"vm", "migrate", "web-1", "--check"}, "unknown flag: --check"},
		{[]string{"vm", "migrate", "web-1", "--to"}, "needs an argument"},
		{[]string{"vm", "migrate", "web-1", "-h"}, "no help flag"},
		{[]string{"vm", "migrate", "--to", "h"}, "names no VM"},
		{[]string{"vm", "migrate", "web-1"}, "says nowhere to go"},
		{[]string{"vm", "migrate", "web-1", "--to", "h", "--auto"}, "both --to and --auto"},
	} {
		_, err := api.ParseScheduledCommand(c.words)
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("ParseScheduledCommand(%q) = %v; want an error saying %q", c.words, err, c.want)
		}
	}
}

// scheduleFixture is a center with two hosts and a stopped VM on host-1, a clock the test
// sets, and the REST API.
type scheduleFixture struct {
	c   *Center
	srv *httptest.Server
	now time.Time
}

func newScheduleFixture(t *testing.T) *scheduleFixture {
	t.Helper()
	f := &scheduleFixture{c: newTestCenter(t), now: time.Date(2026, 11, 26, 10, 0, 0, 0, time.UTC)}
	f.c.now = func() time.Time { return f.now }
	ctx := context.Background()
	for _, h := range []string{"host-1", "host-2"} {
		if _, err := f.c.store.SaveHeartbeat(ctx, api.HostFacts{Name: h}, f.now); err != nil {
			t.Fatal(err)
		}
	}
	f.addVM(t, "web-1")
	f.srv = httptest.NewServer(f.c.Handler())
	t.Cleanup(f.srv.Close)
	return f
}

func (f *scheduleFixture) addVM(t *testing.T, name string) {
	t.Helper()
	if err := f.c.store.InsertVM(context.Background(), store.VMRecord{Spec: api.VMSpec{Name: name, UUID: uuid.NewString(), MemoryMiB: 64},
		Host: "host-1", Desired: api.VMStopped, State: api.VMStopped, Created: f.now, Updated: f.now}); err != nil {
		t.Fatal(err)
	}
}

// do sends a request to the API and returns the status and body.
func (f *scheduleFixture) do(t *testing.T, method, path, body string) (int, string) {
	t.Helper()
	req, err := http.NewRequest(method, f.srv.URL+path, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/json")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var b bytes.Buffer
	_, _ = b.ReadFrom(resp.Body)
	return resp.StatusCode, b.String()
}

func (f *scheduleFixture) create(t *testing.T, req api.CreateScheduleRequest) api.Schedule {
	t.Helper()
	body, _ := json.Marshal(req)
	status, out := f.do(t, http.MethodPost, "/api/v1/schedules", string(body))
	if status != http.StatusCreated {
		t.Fatalf("create schedule %s: %d %s", req.Name, status, out)
	}
	var s api.Schedule
	if err := json.Unmarshal([]byte(out), &s); err != nil {
		t.Fatal(err)
	}
	return s
}

func (f *scheduleFixture) show(t *testing.T, name string) api.Schedule {
	t.Helper()
	s, err := f.c.getSchedule(context.Background(), name)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// records returns the audit records of an action, oldest first.
func (f *scheduleFixture) records(t *testing.T, action string) []audit.Record {
	t.Helper()
	rs, err := f.c.trail.List(context.Background(), audit.Filter{Action: action, Oldest: true})
	if err != nil {
		t.Fatal(err)
	}
	return rs
}

func param(t *testing.T, r audit.Record, key string) any {
	t.Helper()
	var p map[string]any
	if err := json.Unmarshal(r.Params, &p); err != nil {
		t.Fatalf("record %d: params %s: %v", r.ID, r.Params, err)
	}
	return p[key]
}

// Bad requests are refused with a sentence that says what is wrong, and none of them
// leaves a schedule behind; a good one is stored with its next run.
func TestCreateScheduleChecksEverything(t *testing.T) {
	f := newScheduleFixture(t)
	mv := `"migrate": {"vms": ["web-1"], "to": "host-1"}`
	for _, c := range []struct {
		name, body string
		status     int
		want       string
	}{
		{"bad name", `{"name": "no/slash", "at": "+1h", ` + mv + `}`, 400, "1-63 letters"},
		{"no time", `{"name": "s", ` + mv + `}`, 400, "say when schedule s runs"},
		{"time and cron", `{"name": "s", "at": "+1h", "cron": "@daily", ` + mv + `}`, 400, "give only one"},
		{"past time", `{"name": "s", "at": "2026-11-26 09:00", ` + mv + `}`, 400, "2026-11-26 09:00:00 UTC is in the past: it is now 2026-11-26 10:00:00 UTC"},
		{"unreadable time", `{"name": "s", "at": "tomorrow", ` + mv + `}`, 400, `cannot read "tomorrow"`},
		{"bad cron", `{"name": "s", "cron": "61 * * * *", ` + mv + `}`, 400, "the minute"},
		{"cron never fires", `{"name": "s", "cron": "0 0 31 2 *", ` + mv + `}`, 400, "never fires"},
		{"bad missed policy", `{"name": "s", "at": "+1h", "missed": "all", ` + mv + `}`, 400, `"run-once"`},
		{"no VMs", `{"name": "s", "at": "+1h", "migrate": {"to": "host-1"}}`, 400, "name the VMs"},
		{"nowhere", `{"name": "s", "at": "+1h", "migrate": {"vms": ["web-1"]}}`, 400, "say where"},
		{"to and auto", `{"name": "s", "at": "+1h", "migrate": {"vms": ["web-1"], "to": "host-1", "auto": true}}`, 400, "not both"},
		{"twice", `{"name": "s", "at": "+1h", "migrate": {"vms": ["web-1", "web-1"], "to": "host-1"}}`, 400, "named twice"},
		{"unknown VM", `{"name": "s", "at": "+1h", "migrate": {"vms": ["web-1", "ghost"], "to": "host-1"}}`, 422, "VM ghost does not exist"},
		{"unknown VMs", `{"name": "s", "at": "+1h", "migrate": {"vms": ["ghost", "spook"], "to": "host-1"}}`, 422, "VMs ghost, spook do not exist"},
		{"unknown host", `{"name": "s", "at": "+1h", "migrate": {"vms": ["web-1"], "to": "host-9"}}`, 422, `no host named "host-9"`},
		{"unknown policy", `{"name": "s", "at": "+1h", "migrate": {"vms": ["web-1"], "to": "host-1", "policy": "warp"}}`, 422, `"warp"`},
		{"unknown priority", `{"name": "s", "at": "+1h", "migrate": {"vms": ["web-1"], "to": "host-1", "priority": "urgent"}}`, 422, "urgent"},
		{"unknown encryption", `{"name": "s", "at": "+1h", "migrate": {"vms": ["web-1"], "to": "host-1", "encryption": "rot13"}}`, 422, "rot13"},
		{"unknown field", `{"name": "s", "at": "+1h", "when": "now", ` + mv + `}`, 400, "when"},
	} {
		status, body := f.do(t, http.MethodPost, "/api/v1/schedules", c.body)
		var e api.Error
		if err := json.Unmarshal([]byte(body), &e); err != nil {
			t.Errorf("%s: the answer %q is not an error body: %v", c.name, body, err)
		}
		if status != c.status || !strings.Contains(e.Error, c.want) {
			t.Errorf("%s: %d %s; want %d saying %q", c.name, status, strings.TrimSpace(body), c.status, c.want)
		}
	}
	if status, body := f.do(t, http.MethodGet, "/api/v1/schedules", ""); status != 200 || strings.TrimSpace(body) != "[]" {
		t.Fatalf("schedules after refused requests: %d %s; want none", status, body)
	}

	s := f.create(t, api.CreateScheduleRequest{Name: "later", At: "+90m", Migrate: api.BulkMigrateRequest{VMs: []string{"web-1"}, To: "host-1"}})
	at := f.now.Add(90 * time.Minute)
	if s.Kind != schedule.KindAt || s.At == nil || !s.At.Equal(at) || s.NextRun == nil || !s.NextRun.Equal(at) ||
		s.Missed != schedule.MissedRunOnce || !s.Enabled || s.Command != "vm migrate web-1 --to host-1" || s.LastRun != nil || s.LastOutcome != "" {
		t.Fatalf("created schedule: %+v; want a one-shot at %v, run-once, enabled, never run", s, at)
	}
	cr := f.create(t, api.CreateScheduleRequest{Name: "nightly", Cron: "30 2 * * *", Missed: "skip", Migrate: api.BulkMigrateRequest{VMs: []string{"web-1"}, Auto: true}})
	if want := time.Date(2026, 11, 27, 2, 30, 0, 0, time.UTC); cr.NextRun == nil || !cr.NextRun.Equal(want) || cr.Missed != "skip" || cr.Command != "vm migrate web-1 --auto" {
		t.Fatalf("created cron schedule: %+v; want its next run at %v", cr, want)
	}
	if status, body := f.do(t, http.MethodPost, "/api/v1/schedules", `{"name": "later", "at": "+1h", `+mv+`}`); status != 409 || !strings.Contains(body, "already exists") {
		t.Errorf("duplicate name: %d %s", status, body)
	}
	if status, body := f.do(t, http.MethodGet, "/api/v1/schedules/nosuch", ""); status != 404 || !strings.Contains(body, "no schedule named nosuch") {
		t.Errorf("GET an unknown schedule: %d %s", status, body)
	}
	if status, body := f.do(t, http.MethodDelete, "/api/v1/schedules/later", ""); status != 204 {
		t.Errorf("DELETE: %d %s", status, body)
	}
	var left []api.Schedule
	if _, body := f.do(t, http.MethodGet, "/api/v1/schedules", ""); json.Unmarshal([]byte(body), &left) != nil || len(left) != 1 || left[0].Name != "nightly" {
		t.Errorf("schedules after deleting one: %s", body)
	}
	// The requests are in the audit trail, refusals too.
	if rs := f.records(t, "schedule.create"); len(rs) < 3 || rs[len(rs)-1].Outcome != audit.Refused {
		t.Errorf("schedule.create records: %+v; want the refusals and the creations", rs)
	}
}

// A slot that falls due while the center runs runs at the next tick, however late; a
// VM deleted since the schedule was made and a VM that cannot move are refused with the
// reason, never moved elsewhere; the run, its refusals and its outcome are recorded, in
// the name of the schedule and its creator.
func TestScheduleRunRecordsRefusalsAndOutcome(t *testing.T) {
	f := newScheduleFixture(t)
	ctx := context.Background()
	f.addVM(t, "doomed")
	f.create(t, api.CreateScheduleRequest{Name: "move", At: "+10s", Missed: "skip",
		Migrate: api.BulkMigrateRequest{VMs: []string{"doomed", "web-1"}, To: "host-2"}})
	if err := f.c.store.DeleteVM(ctx, "doomed"); err != nil {
		t.Fatal(err)
	}

	// Before its time: nothing runs.
	since := f.now
	f.now = f.now.Add(5 * time.Second)
	f.c.scheduleTick(ctx, since, f.now)
	if s := f.show(t, "move"); s.LastTask != "" || s.LastRun != nil {
		t.Fatalf("the schedule ran before its time: %+v", s)
	}
	// The tick that sees the slot comes two minutes late (a slow run before it): the
	// slot fell due while the center ran, so it is on time and runs, even under skip.
	since = f.now
	f.now = f.now.Add(2 * time.Minute)
	f.c.scheduleTick(ctx, since, f.now)
	s := f.show(t, "move")
	if s.LastTask == "" || s.LastRun == nil || !s.LastRun.Equal(f.now) || s.NextRun != nil || s.Skipped != nil {
		t.Fatalf("after its time: %+v; want a run now and no next run", s)
	}
	// Nothing moved, so the run has already ended, and the next tick records the outcome.
	task, err := f.c.getTask(ctx, s.LastTask)
	if err != nil {
		t.Fatal(err)
	}
	var res api.ScheduleRunResult
	if err := json.Unmarshal(task.Result, &res); err != nil {
		t.Fatalf("run task %+v: %v", task, err)
	}
	if task.Kind != api.KindScheduleRun || task.Target != "move" || task.State != api.TaskFailed ||
		task.Initiator != "schedule move (created by anonymous)" || len(res.Migrations) != 0 || len(res.Refused) != 2 ||
		!strings.Contains(res.Refused[0].Error, "VM doomed does not exist") || !strings.Contains(res.Refused[1].Error, "VM web-1 is stopped") {
		t.Fatalf("run task: %+v, result %+v; want failed with both VMs refused", task, res)
	}
	if s.LastOutcome != api.ScheduleRunning {
		t.Errorf("outcome before the tick that settles it: %q", s.LastOutcome)
	}
	since = f.now
	f.now = f.now.Add(time.Second)
	f.c.scheduleTick(ctx, since, f.now)
	s = f.show(t, "move")
	if s.LastOutcome != api.ScheduleFailed || !strings.Contains(s.LastError, "VM doomed was not moved: VM doomed does not exist") ||
		!strings.Contains(s.LastError, "VM web-1 was not moved: VM web-1 is stopped") || len(s.LastRefused) != 2 {
		t.Fatalf("after the outcome: %+v; want failed with both reasons", s)
	}
	// It does not run again.
	f.now = f.now.Add(time.Hour)
	f.c.scheduleTick(ctx, since, f.now)
	if again := f.show(t, "move"); again.LastTask != s.LastTask {
		t.Fatalf("the one-shot schedule ran again: %+v", again)
	}

	// Audit: one vm.migrate refusal per VM, the run and its outcome, all in the name of
	// the schedule on behalf of its creator.
	migrates := f.records(t, "vm.migrate")
	runs := f.records(t, "schedule.run")
	outcomes := f.records(t, "schedule.outcome")
	if len(migrates) != 2 || len(runs) != 1 || len(outcomes) != 1 || len(f.records(t, "schedule.missed")) != 0 {
		t.Fatalf("records: %d vm.migrate, %d schedule.run, %d schedule.outcome; want 2, 1, 1 and no schedule.missed", len(migrates), len(runs), len(outcomes))
	}
	for _, r := range append(append(migrates, runs...), outcomes...) {
		if r.Actor != "schedule move" || r.ActorKind != audit.KindSchedule || r.OnBehalfOf != "anonymous" {
			t.Errorf("record %d (%s): actor %q (%s) for %q; want schedule move (schedule) for anonymous", r.ID, r.Action, r.Actor, r.ActorKind, r.OnBehalfOf)
		}
	}
	if migrates[0].Target != "doomed" || migrates[0].Outcome != audit.Refused || !strings.Contains(migrates[0].Error, "does not exist") {
		t.Errorf("vm.migrate record of the deleted VM: %+v", migrates[0])
	}
	if runs[0].Outcome != audit.Failed || param(t, runs[0], "task") != s.LastTask || outcomes[0].Outcome != audit.Failed ||
		!strings.Contains(outcomes[0].Error, "does not exist") {
		t.Errorf("run and outcome records: %+v %+v", runs[0], outcomes[0])
	}
}

// Slots that fell due while no center ran are missed: run-once runs once for all of
// them, skip runs none; each leaves a schedule.missed record that says how many.
func TestScheduleMissedRuns(t *testing.T) {
	f := newScheduleFixture(t)
	ctx := context.Background()
	mv := api.BulkMigrateRequest{VMs: []string{"web-1"}, To: "host-1"}
	f.create(t, api.CreateScheduleRequest{Name: "once-a", At: "+10s", Migrate: mv})
	f.create(t, api.CreateScheduleRequest{Name: "once-b", At: "+10s", Missed: "skip", Migrate: mv})
	f.create(t, api.CreateScheduleRequest{Name: "hourly", Cron: "@hourly", Missed: "run-once", Migrate: mv})
	f.create(t, api.CreateScheduleRequest{Name: "hourly-skip", Cron: "@hourly", Missed: "skip", Migrate: mv})

	// The center was down from 10:00 to 13:30: the one-shots' time and three hourly
	// slots passed. It starts at 13:30; its first tick comes a moment later.
	start := time.Date(2026, 11, 26, 13, 30, 0, 0, time.UTC)
	f.now = start.Add(50 * time.Millisecond)
	f.c.scheduleTick(ctx, start, f.now)
	ranAt := f.now

	for _, name := range []string{"once-a", "hourly"} {
		s := f.show(t, name)
		if s.LastTask == "" || s.LastRun == nil || !s.LastRun.Equal(ranAt) || s.Skipped != nil {
			t.Errorf("%s (run-once) after the restart: %+v; want one run now", name, s)
		}
	}
	for _, name := range []string{"once-b", "hourly-skip"} {
		s := f.show(t, name)
		if s.LastTask != "" || s.LastRun != nil || s.Skipped == nil {
			t.Errorf("%s (skip) after the restart: %+v; want no run and the skipped slot", name, s)
		}
	}
	if s := f.show(t, "once-b"); s.NextRun != nil || !s.Skipped.Equal(time.Date(2026, 11, 26, 10, 0, 10, 0, time.UTC)) {
		t.Errorf("skipped one-shot: %+v; want no next run, skipped at 10:00:10", s)
	}
	if s := f.show(t, "hourly-skip"); s.NextRun == nil || !s.NextRun.Equal(time.Date(2026, 11, 26, 14, 0, 0, 0, time.UTC)) ||
		!s.Skipped.Equal(time.Date(2026, 11, 26, 13, 0, 0, 0, time.UTC)) {
		t.Errorf("skipped hourly: %+v; want the next run at 14:00 and 13:00 skipped", s)
	}
	missed := map[string]audit.Record{}
	for _, r := range f.records(t, "schedule.missed") {
		missed[r.Target] = r
	}
	for name, want := range map[string]struct {
		n      float64
		action string
	}{"once-a": {1, "run-once"}, "once-b": {1, "skip"}, "hourly": {3, "run-once"}, "hourly-skip": {3, "skip"}} {
		r, ok := missed[name]
		if !ok || param(t, r, "missed") != want.n || param(t, r, "action") != want.action || r.Actor != "schedule "+name {
			t.Errorf("schedule.missed record of %s: %+v (params %s); want %v missed, %s", name, r, r.Params, want.n, want.action)
		}
	}
	if n := len(f.records(t, "schedule.missed")); n != 4 {
		t.Errorf("%d schedule.missed records; want 4", n)
	}
	if n := len(f.records(t, "schedule.run")); n != 2 {
		t.Errorf("%d schedule.run records; want 2 (the run-once schedules, once each)", n)
	}

	// Ticks later in the same hour change nothing; at 14:00 both hourly ones run on time.
	since := f.now
	f.now = start.Add(10 * time.Minute)
	f.c.scheduleTick(ctx, since, f.now)
	if n := len(f.records(t, "schedule.run")); n != 2 {
		t.Errorf("%d schedule.run records after a quiet tick; want 2", n)
	}
	since = f.now
	f.now = time.Date(2026, 11, 26, 14, 0, 1, 0, time.UTC)
	f.c.scheduleTick(ctx, since, f.now)
	if n := len(f.records(t, "schedule.run")); n != 4 {
		t.Errorf("%d schedule.run records after 14:00; want 4", n)
	}
	if n := len(f.records(t, "schedule.missed")); n != 4 {
		t.Errorf("%d schedule.missed records after 14:00; want still 4", n)
	}
}

// A disabled schedule does not run; enabling it skips the slots that passed meanwhile.
func TestScheduleDisableEnable(t *testing.T) {
	f := newScheduleFixture(t)
	ctx := context.Background()
	f.create(t, api.CreateScheduleRequest{Name: "hourly", Cron: "@hourly", Migrate: api.BulkMigrateRequest{VMs: []string{"web-1"}, To: "host-1"}})
	status, body := f.do(t, http.MethodPost, "/api/v1/schedules/hourly/disable", "")
	var s api.Schedule
	if status != 200 || json.Unmarshal([]byte(body), &s) != nil || s.Enabled || s.NextRun != nil {
		t.Fatalf("disable: %d %s", status, body)
	}
	since := f.now
	f.now = f.now.Add(150 * time.Minute) // 12:30: 11:00 and 12:00 pass
	f.c.scheduleTick(ctx, since, f.now)
	if s := f.show(t, "hourly"); s.LastTask != "" || s.Skipped != nil {
		t.Fatalf("a disabled schedule ran or settled slots: %+v", s)
	}
	status, body = f.do(t, http.MethodPost, "/api/v1/schedules/hourly/enable", "")
	if status != 200 || json.Unmarshal([]byte(body), &s) != nil || !s.Enabled || s.NextRun == nil ||
		!s.NextRun.Equal(time.Date(2026, 11, 26, 13, 0, 0, 0, time.UTC)) || s.Skipped == nil ||
		!s.Skipped.Equal(time.Date(2026, 11, 26, 12, 0, 0, 0, time.UTC)) {
		t.Fatalf("enable: %d %s; want enabled, next run 13:00, 12:00 skipped", status, body)
	}
	since = f.now
	f.now = f.now.Add(time.Second)
	f.c.scheduleTick(ctx, since, f.now)
	if s := f.show(t, "hourly"); s.LastTask != "" || len(f.records(t, "schedule.missed")) != 0 {
		t.Fatalf("the slots passed while disabled ran or counted as missed: %+v", s)
	}
	if rs := f.records(t, "schedule.enable"); len(rs) != 1 || param(t, rs[0], "skipped") != float64(2) {
		t.Fatalf("schedule.enable records: %+v; want one saying 2 runs were skipped", rs)
	}
	if status, body := f.do(t, http.MethodPost, "/api/v1/schedules/nosuch/enable", ""); status != 404 {
		t.Errorf("enable an unknown schedule: %d %s", status, body)
	}
}

// A slot is missed when it fell due while no center ran, however short the gap: a
// center down for 20 seconds across a one-shot's time skips it under skip.
func TestScheduleMissedWhileBrieflyDown(t *testing.T) {
	f := newScheduleFixture(t)
	ctx := context.Background()
	at, start := f.missBriefly(t)
	f.c.scheduleTick(ctx, start, f.now)
	s := f.show(t, "brief")
	if s.LastTask != "" || s.Skipped == nil || !s.Skipped.Equal(at) {
		t.Fatalf("after a short outage across its time: %+v; want it skipped, not run", s)
	}
	if rs := f.records(t, "schedule.missed"); len(rs) != 1 || param(t, rs[0], "missed") != float64(1) || param(t, rs[0], "action") != "skip" {
		t.Fatalf("schedule.missed records: %+v; want one saying 1 run was skipped", rs)
	}
}

// A schedule runs with its creator's rights as they are when it runs: a creator who was
// deleted, or demoted below the role migrations need, makes the run refused with that
// reason — in the run's task, the schedule's outcome and the audit trail — and nothing
// is migrated. A schedule of the center's local administrator runs as before.
func TestScheduleRunsWithCreatorsCurrentRights(t *testing.T) {
	f := newScheduleFixture(t)
	ctx := context.Background()
	for _, u := range []string{"olga", "dave"} {
		if _, err := f.c.createUser(ctx, api.CreateUserRequest{Name: u, Role: api.RoleOperator, Password: u + "-password"}); err != nil {
			t.Fatal(err)
		}
	}
	// Each operator creates a schedule through the authenticated API; root on the
	// center (the in-process caller here) creates a third.
	authed := httptest.NewServer(f.c.routes(false))
	defer authed.Close()
	mv := `"at": "+10s", "missed": "skip", "migrate": {"vms": ["web-1"], "to": "host-2"}`
	for _, u := range []string{"olga", "dave"} {
		req, _ := http.NewRequest(http.MethodPost, authed.URL+"/api/v1/schedules", strings.NewReader(`{"name": "by-`+u+`", `+mv+`}`))
		req.Header.Set("Content-Type", "application/json")
		req.SetBasicAuth(u, u+"-password")
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusCreated {
			t.Fatalf("%s creates a schedule: %d", u, resp.StatusCode)
		}
	}
	f.create(t, api.CreateScheduleRequest{Name: "by-root", At: "+10s", Missed: "skip", Migrate: api.BulkMigrateRequest{VMs: []string{"web-1"}, To: "host-2"}})

	// olga is deleted; dave is demoted to viewer.
	if err := f.c.deleteUser(ctx, "olga"); err != nil {
		t.Fatal(err)
	}
	if err := f.c.deleteUser(ctx, "dave"); err != nil {
		t.Fatal(err)
	}
	if _, err := f.c.createUser(ctx, api.CreateUserRequest{Name: "dave", Role: api.RoleViewer, Password: "dave-password"}); err != nil {
		t.Fatal(err)
	}

	since := f.now
	f.now = f.now.Add(time.Minute)
	f.c.scheduleTick(ctx, since, f.now)
	since = f.now
	f.now = f.now.Add(time.Second)
	f.c.scheduleTick(ctx, since, f.now)

	want := map[string]string{
		"by-olga": "schedule by-olga runs with the rights of its creator, user olga, who no longer exists",
		"by-dave": "schedule by-dave runs with the rights of its creator, user dave, who now has the viewer role; migrating VMs needs the operator role",
	}
	runs := map[string]audit.Record{}
	for _, r := range f.records(t, "schedule.run") {
		runs[r.Target] = r
	}
	for name, reason := range want {
		s := f.show(t, name)
		task, err := f.c.getTask(ctx, s.LastTask)
		if err != nil {
			t.Fatal(err)
		}
		if task.State != api.TaskFailed || !strings.Contains(task.Error, reason) || len(s.LastMigrations) != 0 || len(s.LastRefused) != 0 {
			t.Errorf("%s: run task %+v; want failed saying %q, nothing attempted", name, task, reason)
		}
		if s.LastOutcome != api.ScheduleFailed || !strings.Contains(s.LastError, reason) {
			t.Errorf("%s: outcome %q %q; want failed saying %q", name, s.LastOutcome, s.LastError, reason)
		}
		if r := runs[name]; r.Outcome != audit.Refused || !strings.Contains(r.Error, reason) {
			t.Errorf("%s: schedule.run record %+v; want refused saying %q", name, r, reason)
		}
	}
	// The local administrator's schedule ran: web-1 was refused for its own reason.
	root := f.show(t, "by-root")
	if root.LastOutcome != api.ScheduleFailed || len(root.LastRefused) != 1 || !strings.Contains(root.LastError, "VM web-1 is stopped") ||
		strings.Contains(root.LastError, "rights") {
		t.Errorf("by-root: %+v; want it run, web-1 refused because it is stopped", root)
	}
	// Only that run tried to migrate anything.
	if ms := f.records(t, "vm.migrate"); len(ms) != 1 || ms[0].OnBehalfOf != "anonymous" {
		t.Errorf("vm.migrate records: %+v; want only the local administrator's schedule's", ms)
	}
}

// missBriefly creates the one-shot schedule "brief" (missed runs skipped) and lets its
// slot at fall due while no center runs: the last tick of the center that stops comes a
// second before it, and the next center starts 10 seconds after it (f.now just after).
func (f *scheduleFixture) missBriefly(t *testing.T) (at, start time.Time) {
	t.Helper()
	f.create(t, api.CreateScheduleRequest{Name: "brief", At: "+10s", Missed: "skip",
		Migrate: api.BulkMigrateRequest{VMs: []string{"web-1"}, To: "host-2"}})
	at = f.now.Add(10 * time.Second)
	f.c.scheduleTick(context.Background(), f.now, at.Add(-time.Second))
	start = at.Add(10 * time.Second)
	f.now = start.Add(10 * time.Millisecond)
	return at, start
}
