package schedule

import (
	"strings"
	"testing"
	"time"
)

func TestDue(t *testing.T) {
	hourly := Spec{Cron: "0 * * * *"}
	oneShot := Spec{At: utc(2026, 11, 26, 10, 0)}
	created := utc(2026, 11, 26, 9, 30)
	at := func(h, m, s int) time.Time { return time.Date(2026, 11, 26, h, m, s, 0, time.UTC) }
	var zero time.Time
	for _, c := range []struct {
		name     string
		spec     Spec
		policy   string
		lastSlot time.Time
		created  time.Time // the schedule's creation time when not the default
		now      time.Time
		grace    time.Duration
		want     Decision
	}{
		{name: "nothing due yet", spec: hourly, now: at(9, 45, 0),
			want: Decision{Next: at(10, 0, 0)}},
		{name: "slot before creation does not count", spec: hourly, now: at(9, 59, 59),
			want: Decision{Next: at(10, 0, 0)}},
		{name: "due now, run-once", spec: hourly, policy: MissedRunOnce, now: at(10, 0, 20),
			want: Decision{Run: true, Slot: at(10, 0, 0), Next: at(11, 0, 0)}},
		{name: "due now, skip: on time is not missed", spec: hourly, policy: MissedSkip, now: at(10, 0, 20),
			want: Decision{Run: true, Slot: at(10, 0, 0), Next: at(11, 0, 0)}},
		{name: "due now, empty policy", spec: hourly, now: at(10, 0, 59),
			want: Decision{Run: true, Slot: at(10, 0, 0), Next: at(11, 0, 0)}},
		{name: "slot done is not run again", spec: hourly, lastSlot: at(10, 0, 0), now: at(10, 0, 40),
			want: Decision{Next: at(11, 0, 0)}},
		{name: "slot done, much later", spec: hourly, policy: MissedSkip, lastSlot: at(10, 0, 0), now: at(10, 59, 59),
			want: Decision{Next: at(11, 0, 0)}},
		{name: "1 missed, run-once runs it late", spec: hourly, policy: MissedRunOnce, lastSlot: at(10, 0, 0), now: at(11, 30, 0),
			want: Decision{Run: true, Slot: at(11, 0, 0), Missed: 1, Next: at(12, 0, 0)}},
		{name: "1 missed, skip settles it", spec: hourly, policy: MissedSkip, lastSlot: at(10, 0, 0), now: at(11, 30, 0),
			want: Decision{Slot: at(11, 0, 0), Missed: 1, Next: at(12, 0, 0)}},
		{name: "exactly the grace late is missed", spec: hourly, policy: MissedSkip, lastSlot: at(10, 0, 0), now: at(11, 1, 0),
			want: Decision{Slot: at(11, 0, 0), Missed: 1, Next: at(12, 0, 0)}},
		{name: "a longer grace keeps it on time", spec: hourly, policy: MissedSkip, lastSlot: at(10, 0, 0), now: at(11, 5, 0), grace: 10 * time.Minute,
			want: Decision{Run: true, Slot: at(11, 0, 0), Next: at(12, 0, 0)}},
		{name: "many missed, run-once runs once", spec: hourly, policy: MissedRunOnce, lastSlot: at(10, 0, 0), now: at(15, 30, 0),
			want: Decision{Run: true, Slot: at(15, 0, 0), Missed: 5, Next: at(16, 0, 0)}},
		{name: "many missed, skip runs none", spec: hourly, policy: MissedSkip, lastSlot: at(10, 0, 0), now: at(15, 30, 0),
			want: Decision{Slot: at(15, 0, 0), Missed: 5, Next: at(16, 0, 0)}},
		{name: "many missed and one due now, run-once", spec: hourly, policy: MissedRunOnce, lastSlot: at(10, 0, 0), now: at(15, 0, 30),
			want: Decision{Run: true, Slot: at(15, 0, 0), Missed: 4, Next: at(16, 0, 0)}},
		{name: "many missed and one due now, skip runs the one due now", spec: hourly, policy: MissedSkip, lastSlot: at(10, 0, 0), now: at(15, 0, 30),
			want: Decision{Run: true, Slot: at(15, 0, 0), Missed: 4, Next: at(16, 0, 0)}},
		{name: "never ran, missed since creation", spec: hourly, policy: MissedRunOnce, now: at(12, 30, 0),
			want: Decision{Run: true, Slot: at(12, 0, 0), Missed: 3, Next: at(13, 0, 0)}},
		{name: "several slots within the grace: the latest runs", spec: Spec{Cron: "* * * * *"}, policy: MissedRunOnce,
			lastSlot: at(10, 0, 0), now: at(10, 3, 30), grace: 5 * time.Minute,
			want: Decision{Run: true, Slot: at(10, 3, 0), Missed: 2, Next: at(10, 4, 0)}},
		{name: "clock went back: nothing runs before the last slot", spec: hourly, lastSlot: at(12, 0, 0), now: at(10, 30, 0),
			want: Decision{Next: at(13, 0, 0)}},
		{name: "across the year end", spec: Spec{Cron: "@daily"}, policy: MissedSkip,
			lastSlot: utc(2026, 12, 30, 0, 0), now: time.Date(2027, 1, 1, 0, 0, 10, 0, time.UTC),
			want: Decision{Run: true, Slot: utc(2027, 1, 1, 0, 0), Missed: 1, Next: utc(2027, 1, 2, 0, 0)}},

		{name: "one-shot, not yet", spec: oneShot, now: at(9, 59, 0),
			want: Decision{Next: at(10, 0, 0)}},
		{name: "one-shot, due now", spec: oneShot, policy: MissedSkip, now: at(10, 0, 10),
			want: Decision{Run: true, Slot: at(10, 0, 0), Next: zero}},
		{name: "one-shot, ran", spec: oneShot, lastSlot: at(10, 0, 0), now: at(10, 0, 20),
			want: Decision{}},
		{name: "one-shot missed while down, run-once", spec: oneShot, policy: MissedRunOnce, now: at(14, 0, 0),
			want: Decision{Run: true, Slot: at(10, 0, 0), Missed: 1}},
		{name: "one-shot missed while down, skip", spec: oneShot, policy: MissedSkip, now: at(14, 0, 0),
			want: Decision{Slot: at(10, 0, 0), Missed: 1}},
		{name: "one-shot skipped stays done", spec: oneShot, policy: MissedSkip, lastSlot: at(10, 0, 0), now: at(14, 0, 1),
			want: Decision{}},
		{name: "one-shot whose time is before its creation still runs", spec: oneShot, created: at(10, 0, 1), now: at(10, 0, 5),
			want: Decision{Run: true, Slot: at(10, 0, 0)}},
	} {
		cr := created
		if !c.created.IsZero() {
			cr = c.created
		}
		got, err := Due(c.spec, c.policy, c.lastSlot, cr, c.now, c.grace)
		if err != nil {
			t.Errorf("%s: %v", c.name, err)
			continue
		}
		if got.Run != c.want.Run || !got.Slot.Equal(c.want.Slot) || got.Missed != c.want.Missed || !got.Next.Equal(c.want.Next) {
			t.Errorf("%s:\n got %+v\nwant %+v", c.name, got, c.want)
		}
	}
}

func TestDueRefuses(t *testing.T) {
	now := utc(2026, 1, 1, 0, 0)
	if _, err := Due(Spec{Cron: "@daily"}, "twice", now, now, now, 0); err == nil || !strings.Contains(err.Error(), `"twice"`) {
		t.Errorf("unknown policy: %v", err)
	}
	if _, err := Due(Spec{Cron: "0 25 * * *"}, "", now, now, now, 0); err == nil || !strings.Contains(err.Error(), "hour") {
		t.Errorf("bad cron: %v", err)
	}
	if _, err := Due(Spec{}, "", now, now, now, 0); err == nil {
		t.Error("empty spec accepted")
	}
}

// TestDueTicking drives Due as the center does: a tick every 20 seconds over two days,
// with the center down from 05:00:05 to 09:07, persisting each settled slot. Every slot
// must run at most once, on time outside the outage, and the outage must be reported
// once, as 16 missed slots (05:15 to 09:00).
func TestDueTicking(t *testing.T) {
	start := utc(2026, 12, 31, 0, 0) // the two days cross the year end
	spec := Spec{Cron: "*/15 * * * *"}
	downFrom, downTo := start.Add(5*time.Hour+5*time.Second), start.Add(9*time.Hour+7*time.Minute)
	for _, policy := range []string{MissedRunOnce, MissedSkip} {
		var last time.Time
		ran := map[time.Time]int{}
		var runs []time.Time
		var reports []int
		for now := start; now.Before(start.Add(48 * time.Hour)); now = now.Add(20 * time.Second) {
			if !now.Before(downFrom) && now.Before(downTo) {
				continue // the center is down
			}
			d, err := Due(spec, policy, last, start.Add(-time.Second), now, 0)
			if err != nil {
				t.Fatal(err)
			}
			if !d.Slot.IsZero() {
				if !d.Slot.After(last) {
					t.Fatalf("%s: at %v, slot %v is not after the last one, %v", policy, now, d.Slot, last)
				}
				last = d.Slot
			}
			if d.Run {
				ran[d.Slot]++
				runs = append(runs, d.Slot)
			}
			if d.Missed > 0 {
				reports = append(reports, d.Missed)
			}
			if d.Next.IsZero() || !d.Next.After(now) || d.Next.Sub(now) > 15*time.Minute {
				t.Fatalf("%s: at %v, next slot %v", policy, now, d.Next)
			}
		}
		for s, n := range ran {
			if n != 1 {
				t.Fatalf("%s: slot %v ran %d times", policy, s, n)
			}
		}
		if len(reports) != 1 || reports[0] != 16 {
			t.Fatalf("%s: missed reports %v; want one report of 16", policy, reports)
		}
		// 4 slots an hour for 48 hours, less the 16 missed; run-once runs one of them late.
		want := 48*4 - 16
		if policy == MissedRunOnce {
			want++
			if ran[start.Add(9*time.Hour)] != 1 {
				t.Fatalf("run-once did not run the 09:00 slot after the outage")
			}
		} else if ran[start.Add(9*time.Hour)] != 0 {
			t.Fatalf("skip ran the missed 09:00 slot")
		}
		if len(runs) != want {
			t.Fatalf("%s: %d runs; want %d", policy, len(runs), want)
		}
	}
}

func TestDueCountsALongOutageQuickly(t *testing.T) {
	// Every minute for a year: the count is exact and the catch-up runs once.
	from := utc(2026, 1, 1, 0, 0)
	now := utc(2027, 1, 1, 0, 0).Add(30 * time.Second)
	d, err := Due(Spec{Cron: "* * * * *"}, MissedRunOnce, from, from, now, 0)
	if err != nil {
		t.Fatal(err)
	}
	if !d.Run || !d.Slot.Equal(utc(2027, 1, 1, 0, 0)) || d.Missed != 365*24*60-1 || !d.Next.Equal(utc(2027, 1, 1, 0, 1)) {
		t.Fatalf("got %+v", d)
	}
}
