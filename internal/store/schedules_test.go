package store

import (
	"context"
	"encoding/json"
	"errors"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/godwit/godwit/internal/schedule"
)

// scheduleBase is the creation time of the test schedules.
var scheduleBase = time.Date(2026, 11, 26, 9, 0, 0, 0, time.UTC)

// cronSchedule returns a recurring test schedule.
func cronSchedule(name string) ScheduleRecord {
	return ScheduleRecord{Name: name, Kind: schedule.KindCron, Cron: "0 2 * * 6",
		Command:      json.RawMessage(`{"vm":"web-1","to":"host-2"}`),
		MissedPolicy: schedule.MissedSkip, Enabled: true, CreatedBy: "alice", Created: scheduleBase,
		NextRun: time.Date(2026, 11, 28, 2, 0, 0, 0, time.UTC)}
}

// sameSchedule reports whether two records hold the same values (times compared as instants).
func sameSchedule(a, b ScheduleRecord) bool {
	return a.Name == b.Name && a.Kind == b.Kind && a.At.Equal(b.At) && a.Cron == b.Cron &&
		string(a.Command) == string(b.Command) && a.MissedPolicy == b.MissedPolicy && a.Enabled == b.Enabled &&
		a.CreatedBy == b.CreatedBy && a.Created.Equal(b.Created) && a.LastRun.Equal(b.LastRun) &&
		a.LastRunAt.Equal(b.LastRunAt) && a.LastTask == b.LastTask && a.LastOutcome == b.LastOutcome &&
		a.LastError == b.LastError && a.NextRun.Equal(b.NextRun)
}

func TestSchedulesInsertListAndSurviveReopen(t *testing.T) {
	s, path := openTemp(t)
	ctx := context.Background()
	weekly := cronSchedule("weekly-drain")
	// A one-shot given in another zone is stored as the same instant, in UTC.
	once := ScheduleRecord{Name: "evacuate-h1", Kind: schedule.KindAt,
		At:      time.Date(2026, 11, 26, 15, 0, 0, 0, time.FixedZone("CET", 3600)),
		Command: json.RawMessage(`{"evacuate":"h1"}`), Enabled: false, CreatedBy: "bob", Created: scheduleBase}
	for _, r := range []ScheduleRecord{weekly, once} {
		if err := s.InsertSchedule(ctx, r); err != nil {
			t.Fatal(err)
		}
	}
	dup := cronSchedule("weekly-drain")
	dup.Cron = "@daily"
	var de *DuplicateError
	if err := s.InsertSchedule(ctx, dup); !errors.As(err, &de) || de.Field != "schedule" || de.Value != "weekly-drain" {
		t.Fatalf("duplicate name: %v; want a *DuplicateError on field schedule", err)
	}

	check := func(s *Store) {
		t.Helper()
		got, err := s.Schedule(ctx, "weekly-drain")
		if err != nil || !sameSchedule(got, weekly) {
			t.Fatalf("weekly-drain read back as %+v, %v; want %+v", got, err, weekly)
		}
		got, err = s.Schedule(ctx, "evacuate-h1")
		if err != nil || !sameSchedule(got, once) || got.At.Location() != time.UTC || got.At.Hour() != 14 ||
			!got.LastRun.IsZero() || !got.NextRun.IsZero() || got.Enabled {
			t.Fatalf("evacuate-h1 read back as %+v, %v", got, err)
		}
		if sp := got.Spec(); sp.Kind() != schedule.KindAt || !sp.At.Equal(once.At) {
			t.Fatalf("spec of evacuate-h1: %+v", sp)
		}
		all, err := s.ListSchedules(ctx)
		if err != nil || len(all) != 2 || all[0].Name != "evacuate-h1" || all[1].Name != "weekly-drain" {
			t.Fatalf("list: %+v, %v", all, err)
		}
		if _, err := s.Schedule(ctx, "nope"); !errors.Is(err, ErrNotFound) {
			t.Fatalf("missing schedule: %v; want ErrNotFound", err)
		}
	}
	check(s)
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	s2, err := Open(ctx, path)
	if err != nil {
		t.Fatal(err)
	}
	defer s2.Close()
	check(s2)
}

func TestListSchedulesEmpty(t *testing.T) {
	s, _ := openTemp(t)
	all, err := s.ListSchedules(context.Background())
	if err != nil || all == nil || len(all) != 0 {
		t.Fatalf("empty list: %#v, %v; want an empty, non-nil list", all, err)
	}
}

func TestInsertScheduleRefusesBadRecords(t *testing.T) {
	s, _ := openTemp(t)
	ctx := context.Background()
	at := scheduleBase.Add(time.Hour)
	for _, c := range []struct {
		name string
		edit func(*ScheduleRecord)
		want string
	}{
		{"no name", func(r *ScheduleRecord) { r.Name = "" }, "no name"},
		{"no kind", func(r *ScheduleRecord) { r.Kind = "" }, "neither"},
		{"cron without expression", func(r *ScheduleRecord) { r.Cron = "" }, "needs a cron expression"},
		{"cron with a time too", func(r *ScheduleRecord) { r.At = at }, "needs a cron expression and no time"},
		{"at without time", func(r *ScheduleRecord) { r.Kind, r.Cron = schedule.KindAt, "" }, "needs a time"},
		{"at with a cron expression", func(r *ScheduleRecord) { r.Kind, r.At = schedule.KindAt, at }, "no cron expression"},
		{"command not JSON", func(r *ScheduleRecord) { r.Command = json.RawMessage(`{"vm":`) }, "not JSON"},
		{"no command", func(r *ScheduleRecord) { r.Command = nil }, "not JSON"},
	} {
		r := cronSchedule("bad")
		c.edit(&r)
		if err := s.InsertSchedule(ctx, r); err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: %v; want an error saying %q", c.name, err, c.want)
		}
	}
	if all, err := s.ListSchedules(ctx); err != nil || len(all) != 0 {
		t.Fatalf("bad records were stored: %+v, %v", all, err)
	}
	// The table refuses an inconsistent row even from a writer that skips the checks.
	_, err := s.DB().ExecContext(ctx, `INSERT INTO schedules (name, kind, at, cron, command, created) VALUES ('x', 'at', '', '@daily', '{}', ?)`, ts(scheduleBase))
	if err == nil || !strings.Contains(err.Error(), "CHECK") {
		t.Fatalf("inconsistent row: %v; want a CHECK failure", err)
	}
}

func TestScheduleEnableNextDelete(t *testing.T) {
	s, _ := openTemp(t)
	ctx := context.Background()
	if err := s.InsertSchedule(ctx, cronSchedule("a")); err != nil {
		t.Fatal(err)
	}
	if err := s.InsertSchedule(ctx, cronSchedule("b")); err != nil {
		t.Fatal(err)
	}
	enabled := func(name string) bool {
		t.Helper()
		r, err := s.Schedule(ctx, name)
		if err != nil {
			t.Fatal(err)
		}
		return r.Enabled
	}
	if err := s.SetScheduleEnabled(ctx, "a", false); err != nil || enabled("a") || !enabled("b") {
		t.Fatalf("disable a: %v; a %v, b %v", err, enabled("a"), enabled("b"))
	}
	if err := s.SetScheduleEnabled(ctx, "a", true); err != nil || !enabled("a") {
		t.Fatalf("enable a: %v; a %v", err, enabled("a"))
	}
	if err := s.SetScheduleEnabled(ctx, "nope", true); !errors.Is(err, ErrNotFound) {
		t.Fatalf("enable a missing schedule: %v; want ErrNotFound", err)
	}

	next := time.Date(2026, 12, 5, 2, 0, 0, 0, time.UTC)
	if err := s.SetScheduleNext(ctx, "a", next.In(time.FixedZone("UTC-8", -8*3600))); err != nil {
		t.Fatal(err)
	}
	if r, _ := s.Schedule(ctx, "a"); !r.NextRun.Equal(next) || r.NextRun.Location() != time.UTC {
		t.Fatalf("next run %v; want %v", r.NextRun, next)
	}
	if err := s.SetScheduleNext(ctx, "a", time.Time{}); err != nil {
		t.Fatal(err)
	}
	if r, _ := s.Schedule(ctx, "a"); !r.NextRun.IsZero() {
		t.Fatalf("next run %v; want none", r.NextRun)
	}
	if err := s.SetScheduleNext(ctx, "nope", next); !errors.Is(err, ErrNotFound) {
		t.Fatalf("next of a missing schedule: %v; want ErrNotFound", err)
	}

	if err := s.DeleteSchedule(ctx, "a"); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Schedule(ctx, "a"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("deleted schedule: %v; want ErrNotFound", err)
	}
	if err := s.DeleteSchedule(ctx, "a"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("delete again: %v; want ErrNotFound", err)
	}
	if all, _ := s.ListSchedules(ctx); len(all) != 1 || all[0].Name != "b" {
		t.Fatalf("after delete: %+v", all)
	}
}

func TestRecordScheduleRunGuardsSlots(t *testing.T) {
	s, path := openTemp(t)
	ctx := context.Background()
	if err := s.InsertSchedule(ctx, cronSchedule("w")); err != nil {
		t.Fatal(err)
	}
	slot := time.Date(2026, 11, 28, 2, 0, 0, 0, time.UTC)
	startedAt := slot.Add(3 * time.Second)
	next := slot.AddDate(0, 0, 7)
	if err := s.RecordScheduleRun(ctx, "w", slot, startedAt, "task-1", next); err != nil {
		t.Fatal(err)
	}
	r, err := s.Schedule(ctx, "w")
	if err != nil || !r.LastRun.Equal(slot) || !r.LastRunAt.Equal(startedAt) || r.LastTask != "task-1" || !r.NextRun.Equal(next) {
		t.Fatalf("after the run: %+v, %v", r, err)
	}
	// The same slot, or an earlier one, is refused and changes nothing.
	for _, again := range []time.Time{slot, slot.Add(-time.Minute), slot.In(time.FixedZone("UTC+1", 3600))} {
		err := s.RecordScheduleRun(ctx, "w", again, startedAt.Add(time.Minute), "task-2", next.Add(time.Hour))
		if !errors.Is(err, ErrScheduleSlotDone) {
			t.Fatalf("slot %v again: %v; want ErrScheduleSlotDone", again, err)
		}
	}
	if r2, _ := s.Schedule(ctx, "w"); !sameSchedule(r, r2) {
		t.Fatalf("a refused run changed the schedule: %+v", r2)
	}
	// A slot half a second later is later, although its text sorts before the other's.
	half := slot.Add(500 * time.Millisecond)
	if err := s.RecordScheduleRun(ctx, "w", half, half, "task-3", next); err != nil {
		t.Fatalf("slot %v after %v: %v", half, slot, err)
	}
	if err := s.RecordScheduleRun(ctx, "w", slot.Add(time.Millisecond), half, "task-4", next); !errors.Is(err, ErrScheduleSlotDone) {
		t.Fatalf("slot before the half second: %v; want ErrScheduleSlotDone", err)
	}

	// Skipping moves the last slot on and keeps the last run's task.
	if err := s.RecordScheduleOutcome(ctx, "w", "task-3", "succeeded", ""); err != nil {
		t.Fatal(err)
	}
	through := slot.AddDate(0, 0, 21)
	if err := s.SkipScheduleSlots(ctx, "w", through, through.AddDate(0, 0, 7)); err != nil {
		t.Fatal(err)
	}
	r, _ = s.Schedule(ctx, "w")
	if !r.LastRun.Equal(through) || r.LastTask != "task-3" || r.LastOutcome != "succeeded" || !r.LastRunAt.Equal(half) ||
		!r.NextRun.Equal(through.AddDate(0, 0, 7)) {
		t.Fatalf("after skipping: %+v", r)
	}
	if err := s.RecordScheduleRun(ctx, "w", through.AddDate(0, 0, -7), through, "task-5", next); !errors.Is(err, ErrScheduleSlotDone) {
		t.Fatalf("run of a skipped slot: %v; want ErrScheduleSlotDone", err)
	}
	if err := s.SkipScheduleSlots(ctx, "w", through, through); !errors.Is(err, ErrScheduleSlotDone) {
		t.Fatalf("skip the same slots again: %v; want ErrScheduleSlotDone", err)
	}

	// Missing schedules, missing slots, missing tasks.
	if err := s.RecordScheduleRun(ctx, "nope", slot, slot, "t", next); !errors.Is(err, ErrNotFound) {
		t.Fatalf("missing schedule: %v; want ErrNotFound", err)
	}
	if err := s.SkipScheduleSlots(ctx, "nope", slot, next); !errors.Is(err, ErrNotFound) {
		t.Fatalf("skip on a missing schedule: %v; want ErrNotFound", err)
	}
	if err := s.RecordScheduleRun(ctx, "w", time.Time{}, slot, "t", next); err == nil || !strings.Contains(err.Error(), "no slot") {
		t.Fatalf("zero slot: %v", err)
	}
	if err := s.RecordScheduleRun(ctx, "w", through.Add(time.Hour), slot, "", next); err == nil || !strings.Contains(err.Error(), "no task") {
		t.Fatalf("no task: %v", err)
	}

	// The guard survives a restart of the center.
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	s2, err := Open(ctx, path)
	if err != nil {
		t.Fatal(err)
	}
	defer s2.Close()
	if err := s2.RecordScheduleRun(ctx, "w", through, through, "task-6", next); !errors.Is(err, ErrScheduleSlotDone) {
		t.Fatalf("settled slot after reopening: %v; want ErrScheduleSlotDone", err)
	}
	if err := s2.RecordScheduleRun(ctx, "w", through.AddDate(0, 0, 7), through.AddDate(0, 0, 7), "task-7", time.Time{}); err != nil {
		t.Fatal(err)
	}
	if r, _ := s2.Schedule(ctx, "w"); r.LastTask != "task-7" || r.LastOutcome != "" || !r.NextRun.IsZero() {
		t.Fatalf("after the run following the reopen: %+v", r)
	}
}

// TestRecordScheduleRunRace has two stores on one database file (two centers, or two
// connections) and many goroutines try to run the same slot: exactly one may.
func TestRecordScheduleRunRace(t *testing.T) {
	a, path := openTemp(t)
	ctx := context.Background()
	b, err := Open(ctx, path)
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	if err := a.InsertSchedule(ctx, cronSchedule("w")); err != nil {
		t.Fatal(err)
	}
	for round := range 5 {
		slot := time.Date(2026, 11, 28, 2, 0, 0, 0, time.UTC).AddDate(0, 0, 7*round)
		const runners = 16
		errs := make([]error, runners)
		var wg sync.WaitGroup
		for i := range runners {
			st := a
			if i%2 == 1 {
				st = b
			}
			wg.Go(func() {
				errs[i] = st.RecordScheduleRun(ctx, "w", slot, slot, "task-"+string(rune('a'+i)), slot.AddDate(0, 0, 7))
			})
		}
		wg.Wait()
		won := 0
		for _, err := range errs {
			switch {
			case err == nil:
				won++
			case !errors.Is(err, ErrScheduleSlotDone):
				t.Fatalf("round %d: %v", round, err)
			}
		}
		if won != 1 {
			t.Fatalf("round %d: %d runners ran slot %v; want exactly 1", round, won, slot)
		}
	}
}

func TestRecordScheduleOutcome(t *testing.T) {
	s, _ := openTemp(t)
	ctx := context.Background()
	if err := s.InsertSchedule(ctx, cronSchedule("w")); err != nil {
		t.Fatal(err)
	}
	// A schedule that never ran has no run to record an outcome for.
	if err := s.RecordScheduleOutcome(ctx, "w", "task-1", "succeeded", ""); !errors.Is(err, ErrScheduleStaleTask) {
		t.Fatalf("outcome before any run: %v; want ErrScheduleStaleTask", err)
	}
	slot := time.Date(2026, 11, 28, 2, 0, 0, 0, time.UTC)
	if err := s.RecordScheduleRun(ctx, "w", slot, slot, "task-1", slot.AddDate(0, 0, 7)); err != nil {
		t.Fatal(err)
	}
	if err := s.RecordScheduleOutcome(ctx, "w", "task-1", "failed", "host-2 is unreachable"); err != nil {
		t.Fatal(err)
	}
	if r, _ := s.Schedule(ctx, "w"); r.LastOutcome != "failed" || r.LastError != "host-2 is unreachable" {
		t.Fatalf("after the outcome: %+v", r)
	}
	// The next run clears it; a late outcome of the older run does not overwrite the new one's.
	slot2 := slot.AddDate(0, 0, 7)
	if err := s.RecordScheduleRun(ctx, "w", slot2, slot2, "task-2", slot2.AddDate(0, 0, 7)); err != nil {
		t.Fatal(err)
	}
	if r, _ := s.Schedule(ctx, "w"); r.LastOutcome != "" || r.LastError != "" || r.LastTask != "task-2" {
		t.Fatalf("a new run kept the old outcome: %+v", r)
	}
	if err := s.RecordScheduleOutcome(ctx, "w", "task-2", "succeeded", ""); err != nil {
		t.Fatal(err)
	}
	err := s.RecordScheduleOutcome(ctx, "w", "task-1", "failed", "late")
	if !errors.Is(err, ErrScheduleStaleTask) || !strings.Contains(err.Error(), "task-2") {
		t.Fatalf("stale outcome: %v; want ErrScheduleStaleTask naming the last run", err)
	}
	if r, _ := s.Schedule(ctx, "w"); r.LastOutcome != "succeeded" || r.LastError != "" {
		t.Fatalf("a stale outcome overwrote the last one: %+v", r)
	}
	if err := s.RecordScheduleOutcome(ctx, "nope", "task-1", "succeeded", ""); !errors.Is(err, ErrNotFound) {
		t.Fatalf("missing schedule: %v; want ErrNotFound", err)
	}
	if err := s.RecordScheduleOutcome(ctx, "w", "", "succeeded", ""); err == nil || !strings.Contains(err.Error(), "no task") {
		t.Fatalf("no task: %v", err)
	}
}
