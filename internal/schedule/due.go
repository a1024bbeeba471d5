package schedule

import (
	"fmt"
	"time"
)

// Missed-run policies: what to do, when the center comes back (or a tick comes late),
// with the slots that fell due while nobody was looking.
const (
	// MissedRunOnce runs the schedule once, now, however many slots were missed: the
	// catch-up of most schedulers (cron's anacron, systemd's Persistent=true). It is the
	// default.
	MissedRunOnce = "run-once"
	// MissedSkip runs none of the missed slots and waits for the next one.
	MissedSkip = "skip"
	// DefaultMissedPolicy is the policy of a schedule that names none.
	DefaultMissedPolicy = MissedRunOnce
)

// DefaultGrace is how late a tick may pick a slot up and still count it as on time, not
// missed. It suits a caller that ticks every few seconds; one that ticks less often
// should pass at least its tick interval to Due.
const DefaultGrace = time.Minute

// ParsePolicy checks a missed-run policy and returns it, or DefaultMissedPolicy for "".
func ParsePolicy(p string) (string, error) {
	switch p {
	case "":
		return DefaultMissedPolicy, nil
	case MissedRunOnce, MissedSkip:
		return p, nil
	}
	return "", fmt.Errorf("missed-run policy %q: use %q (run once when runs were missed, the default) or %q (run none of them)",
		p, MissedRunOnce, MissedSkip)
}

// Decision is what Due decides for one schedule at one moment.
type Decision struct {
	// Run says to start the schedule's command now, for Slot.
	Run bool
	// Slot is the slot this decision settles, which the caller persists as the last
	// slot (it then counts as done): the slot to run when Run is set; otherwise the
	// latest slot skipped under MissedSkip, or zero when nothing fell due.
	Slot time.Time
	// Missed counts the slots that fell due and were not run on time: those more than
	// the grace ago, and those within it but overtaken by a later one. Under
	// MissedRunOnce the latest of them is run now, late, unless a slot on time is run
	// instead; under MissedSkip none of them is run.
	Missed int
	// Next is the first slot strictly after both now and Slot (the time to wake up
	// for), or zero when the schedule has no slot left: a one-shot that ran or was
	// skipped.
	Next time.Time
}

// Due decides, on the center's start and on each tick, whether a schedule runs now.
//
// lastSlot is the slot last settled (run, or skipped), as persisted by the caller; zero
// when none was. Slots at or before it are done and never run again, so persisting
// Decision.Slot before starting the command makes a double run of a slot impossible.
// created is when the schedule was made: a cron schedule's slots start strictly after
// it (a one-shot's single slot, At, counts whenever it is). now is the current time and
// grace how late a slot may be picked up and still be on time (DefaultGrace when 0).
//
// The slots that fell due, after lastSlot and at or before now, are split in two: the
// latest of those within the grace is due now and is run whatever the policy; the
// others are missed. When slots were missed, MissedRunOnce runs exactly once (not once
// per missed slot) and MissedSkip runs none and settles them, so that they are
// reported once. Either way Missed says how many there were. An empty policy is
// DefaultMissedPolicy.
//
// The caller persists the decision before acting on it: with Run, it records the run
// of Slot (the store's RecordScheduleRun, which refuses a slot already settled) and
// starts the command only if that succeeded; without Run but with a Slot, it records
// the slots as skipped (SkipScheduleSlots). Either way it keeps Next.
//
// Missed slots are counted one by one: a schedule firing every minute that was down for
// a year costs half a million steps, once.
func Due(s Spec, policy string, lastSlot, created, now time.Time, grace time.Duration) (Decision, error) {
	policy, err := ParsePolicy(policy)
	if err != nil {
		return Decision{}, err
	}
	next, err := s.compile()
	if err != nil {
		return Decision{}, err
	}
	if grace <= 0 {
		grace = DefaultGrace
	}
	now = now.UTC()
	base := lastSlot.UTC()
	if s.Kind() == KindCron && created.After(base) {
		base = created.UTC()
	}
	onTimeFrom := now.Add(-grace) // slots after this are due now, not missed

	var d Decision
	var latestMissed, onTime time.Time
	for t := next(base); !t.IsZero() && !t.After(now); t = next(t) {
		if t.After(onTimeFrom) {
			if !onTime.IsZero() { // two slots within the grace: the later one wins
				latestMissed = onTime
				d.Missed++
			}
			onTime = t
		} else {
			latestMissed = t
			d.Missed++
		}
	}
	switch {
	case !onTime.IsZero():
		d.Run, d.Slot = true, onTime
	case d.Missed > 0 && policy == MissedRunOnce:
		d.Run, d.Slot = true, latestMissed
	case d.Missed > 0:
		d.Slot = latestMissed
	}
	after := now
	if base.After(after) { // the clock went back: what ran stays done
		after = base
	}
	d.Next = next(after)
	return d, nil
}
