package store

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/godwit/godwit/internal/schedule"
)

// schedulesSchema holds the tables of scheduled migrations. Times are RFC 3339 text in
// UTC, empty when unset; at is set for a one-shot schedule (kind 'at') and cron for a
// recurring one (kind 'cron'), never both.
const schedulesSchema = `
CREATE TABLE IF NOT EXISTS schedules (
	name TEXT PRIMARY KEY,
	kind TEXT NOT NULL,
	at TEXT NOT NULL DEFAULT '',
	cron TEXT NOT NULL DEFAULT '',
	command TEXT NOT NULL,
	missed_policy TEXT NOT NULL DEFAULT '',
	enabled INTEGER NOT NULL DEFAULT 1,
	created_by TEXT NOT NULL DEFAULT '',
	creator_local INTEGER NOT NULL DEFAULT 0,
	created TEXT NOT NULL,
	last_run TEXT NOT NULL DEFAULT '',
	last_run_at TEXT NOT NULL DEFAULT '',
	last_task TEXT NOT NULL DEFAULT '',
	last_outcome TEXT NOT NULL DEFAULT '',
	last_error TEXT NOT NULL DEFAULT '',
	next_run TEXT NOT NULL DEFAULT '',
	CHECK ((kind = 'at' AND at <> '' AND cron = '') OR (kind = 'cron' AND cron <> '' AND at = ''))
);
`

// ErrScheduleSlotDone is returned (wrapped) by RecordScheduleRun and SkipScheduleSlots
// when the slot is not after the schedule's last settled slot: an earlier tick or
// another runner has already run or skipped it, and it must not run again.
var ErrScheduleSlotDone = errors.New("the slot is already settled")

// ErrScheduleStaleTask is returned (wrapped) by RecordScheduleOutcome when the task is
// not the schedule's last run: a newer run's outcome is not overwritten by an older one.
var ErrScheduleStaleTask = errors.New("the task is not the schedule's last run")

// ScheduleRecord is a stored schedule. Zero times are unset.
type ScheduleRecord struct {
	Name string
	// Kind is schedule.KindAt (one-shot, At set) or schedule.KindCron (recurring, Cron set).
	Kind string
	At   time.Time
	Cron string
	// Command is what the schedule runs, as JSON; the store keeps it as it is.
	Command json.RawMessage
	// MissedPolicy is schedule.MissedRunOnce or schedule.MissedSkip ("" is the default).
	MissedPolicy string
	Enabled      bool
	CreatedBy    string
	// CreatorLocal says the creator is the center's local administrator (root on its
	// unix socket, or the in-process caller), whose rights no user management can take
	// away; otherwise CreatedBy is a stored user, whose current role each run checks.
	CreatorLocal bool
	Created      time.Time
	// LastRun is the last slot settled: the slot LastTask ran for, or a later one skipped
	// under the skip policy (SkipScheduleSlots). No slot at or before it runs again.
	LastRun time.Time
	// LastRunAt is when LastTask was started (a slot may run late).
	LastRunAt   time.Time
	LastTask    string
	LastOutcome string
	LastError   string
	// NextRun is the next slot, as last computed by the scheduler; zero when none is left.
	NextRun time.Time
}

// Spec returns when the schedule fires.
func (r ScheduleRecord) Spec() schedule.Spec {
	return schedule.Spec{At: r.At, Cron: r.Cron}
}

// InsertSchedule stores a new schedule; one of the same name is a *DuplicateError with
// Field "schedule". The run fields (LastRun to LastError) are stored too, so a record
// read elsewhere can be copied as it is.
func (s *Store) InsertSchedule(ctx context.Context, r ScheduleRecord) error {
	if err := checkScheduleRecord(r); err != nil {
		return err
	}
	return s.write(ctx, "store schedule "+r.Name, func(tx *sql.Tx) error {
		_, err := tx.ExecContext(ctx, `INSERT INTO schedules (name, kind, at, cron, command, missed_policy, enabled,
		created_by, creator_local, created, last_run, last_run_at, last_task, last_outcome, last_error, next_run)
		VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`,
			r.Name, r.Kind, scheduleTS(r.At), r.Cron, string(r.Command), r.MissedPolicy, r.Enabled,
			r.CreatedBy, r.CreatorLocal, ts(r.Created), scheduleTS(r.LastRun), scheduleTS(r.LastRunAt), r.LastTask, r.LastOutcome,
			r.LastError, scheduleTS(r.NextRun))
		if err != nil && strings.Contains(err.Error(), "UNIQUE") {
			return &DuplicateError{Field: "schedule", Value: r.Name}
		}
		if err != nil {
			return fmt.Errorf("store schedule %s: %w", r.Name, err)
		}
		return nil
	})
}

// checkScheduleRecord refuses what the table's constraints would, with a sentence.
func checkScheduleRecord(r ScheduleRecord) error {
	if r.Name == "" {
		return errors.New("store schedule: no name")
	}
	switch r.Kind {
	case schedule.KindAt:
		if r.At.IsZero() || r.Cron != "" {
			return fmt.Errorf("store schedule %s: a one-shot schedule needs a time and no cron expression", r.Name)
		}
	case schedule.KindCron:
		if r.Cron == "" || !r.At.IsZero() {
			return fmt.Errorf("store schedule %s: a recurring schedule needs a cron expression and no time", r.Name)
		}
	default:
		return fmt.Errorf("store schedule %s: kind %q is neither %q nor %q", r.Name, r.Kind, schedule.KindAt, schedule.KindCron)
	}
	if !json.Valid(r.Command) {
		return fmt.Errorf("store schedule %s: its command is not JSON", r.Name)
	}
	return nil
}

const scheduleCols = `name, kind, at, cron, command, missed_policy, enabled, created_by, creator_local, created,
	last_run, last_run_at, last_task, last_outcome, last_error, next_run`

func scanSchedule(sc scanner) (ScheduleRecord, error) {
	var r ScheduleRecord
	var at, command, created, lastRun, lastRunAt, nextRun string
	if err := sc.Scan(&r.Name, &r.Kind, &at, &r.Cron, &command, &r.MissedPolicy, &r.Enabled, &r.CreatedBy, &r.CreatorLocal, &created,
		&lastRun, &lastRunAt, &r.LastTask, &r.LastOutcome, &r.LastError, &nextRun); err != nil {
		return ScheduleRecord{}, err
	}
	r.Command = json.RawMessage(command)
	r.At, r.Created, r.LastRun = scheduleTime(at), parseTS(created), scheduleTime(lastRun)
	r.LastRunAt, r.NextRun = scheduleTime(lastRunAt), scheduleTime(nextRun)
	return r, nil
}

// Schedule returns the schedule called name, or ErrNotFound.
func (s *Store) Schedule(ctx context.Context, name string) (ScheduleRecord, error) {
	return queryOne(ctx, s.rdb, scanSchedule, "schedule "+name, `SELECT `+scheduleCols+` FROM schedules WHERE name = ?`, name)
}

// ListSchedules returns every schedule, by name.
func (s *Store) ListSchedules(ctx context.Context) ([]ScheduleRecord, error) {
	return queryAll(ctx, s.rdb, scanSchedule, "schedules", `SELECT `+scheduleCols+` FROM schedules ORDER BY name`)
}

// SetScheduleEnabled enables or disables a schedule; ErrNotFound when there is none.
func (s *Store) SetScheduleEnabled(ctx context.Context, name string, enabled bool) error {
	return s.execSchedule(ctx, name, "enable or disable", `UPDATE schedules SET enabled = ? WHERE name = ?`, enabled, name)
}

// DeleteSchedule removes a schedule; ErrNotFound when there is none.
func (s *Store) DeleteSchedule(ctx context.Context, name string) error {
	return s.execSchedule(ctx, name, "delete", `DELETE FROM schedules WHERE name = ?`, name)
}

// SetScheduleNext records the schedule's next slot; zero when none is left.
func (s *Store) SetScheduleNext(ctx context.Context, name string, next time.Time) error {
	return s.execSchedule(ctx, name, "set the next run of", `UPDATE schedules SET next_run = ? WHERE name = ?`,
		scheduleTS(next), name)
}

// RecordScheduleRun records that the schedule runs slot, started at at as task taskID,
// and that its next slot is nextRun (zero: none). It clears the outcome of the previous
// run. It refuses, with an error wrapping ErrScheduleSlotDone and changing nothing, when
// slot is not after the last slot settled, so that two runners (two ticks, or two
// centers on one database) can never both run one slot: the caller records the run
// before starting it, and starts it only when this returns nil.
func (s *Store) RecordScheduleRun(ctx context.Context, name string, slot, at time.Time, taskID string, nextRun time.Time) error {
	if taskID == "" {
		return fmt.Errorf("record a run of schedule %s: no task given", name)
	}
	return s.settleSlot(ctx, name, slot, "record a run of",
		`last_run_at = ?, last_task = ?, last_outcome = '', last_error = '', next_run = ?`,
		scheduleTS(at), taskID, scheduleTS(nextRun))
}

// SkipScheduleSlots records that the schedule's slots up to through were skipped (the
// skip policy, after the center was down) and that its next slot is nextRun (zero:
// none). The last run's task and outcome stay. Like RecordScheduleRun, it refuses with
// ErrScheduleSlotDone when through is not after the last slot settled.
func (s *Store) SkipScheduleSlots(ctx context.Context, name string, through, nextRun time.Time) error {
	return s.settleSlot(ctx, name, through, "skip slots of", `next_run = ?`, scheduleTS(nextRun))
}

// settleSlot moves a schedule's last slot forward to slot and sets the other columns of
// set (an SQL assignment list, with its args). The guard is a compare-and-swap: the
// update applies only if last_run is still the value just read and checked, so it is
// atomic without holding a transaction between the read and the write, across
// processes too. When another writer got in between, it reads and checks again.
func (s *Store) settleSlot(ctx context.Context, name string, slot time.Time, what, set string, args ...any) error {
	if slot.IsZero() {
		return fmt.Errorf("%s schedule %s: no slot given", what, name)
	}
	for range 100 {
		var last string
		err := s.rdb.QueryRowContext(ctx, `SELECT last_run FROM schedules WHERE name = ?`, name).Scan(&last)
		if errors.Is(err, sql.ErrNoRows) {
			return ErrNotFound
		}
		if err != nil {
			return fmt.Errorf("%s schedule %s: %w", what, name, err)
		}
		if last != "" && !slot.After(parseTS(last)) {
			return fmt.Errorf("%s schedule %s: slot %s is not after its last settled slot, %s: %w",
				what, name, ts(slot), last, ErrScheduleSlotDone)
		}
		err = s.exec1(ctx, fmt.Sprintf("%s schedule %s", what, name), `UPDATE schedules SET last_run = ?, `+set+` WHERE name = ? AND last_run = ?`,
			append(append([]any{ts(slot)}, args...), name, last)...)
		if !errors.Is(err, ErrNotFound) {
			return err
		}
	}
	return fmt.Errorf("%s schedule %s: its last slot kept changing under other writers", what, name)
}

// RecordScheduleOutcome records how the schedule's run as task taskID ended: outcome
// (such as a task state) and errText ("" when none). It refuses, with an error wrapping
// ErrScheduleStaleTask and changing nothing, when taskID is not the schedule's last
// run; ErrNotFound when there is no schedule called name.
func (s *Store) RecordScheduleOutcome(ctx context.Context, name, taskID, outcome, errText string) error {
	const what = "record the outcome of"
	if taskID == "" {
		return fmt.Errorf("%s schedule %s: no task given", what, name)
	}
	err := s.exec1(ctx, fmt.Sprintf("%s schedule %s", what, name), `UPDATE schedules SET last_outcome = ?, last_error = ? WHERE name = ? AND last_task = ?`,
		outcome, errText, name, taskID)
	if !errors.Is(err, ErrNotFound) {
		return err
	}
	var last string
	err = s.rdb.QueryRowContext(ctx, `SELECT last_task FROM schedules WHERE name = ?`, name).Scan(&last)
	if errors.Is(err, sql.ErrNoRows) {
		return ErrNotFound
	}
	if err != nil {
		return fmt.Errorf("%s schedule %s: %w", what, name, err)
	}
	return fmt.Errorf("%s schedule %s: task %s is not its last run (%q is): %w", what, name, taskID, last, ErrScheduleStaleTask)
}

// execSchedule runs a statement on one schedule; ErrNotFound when it touches none.
func (s *Store) execSchedule(ctx context.Context, name, what, q string, args ...any) error {
	return s.exec1(ctx, fmt.Sprintf("%s schedule %s", what, name), q, args...)
}

// scheduleTS formats an optional time: empty when zero.
func scheduleTS(t time.Time) string { return optTS(nonZero(t)) }

// scheduleTime parses an optional time: zero when empty.
func scheduleTime(s string) time.Time {
	if s == "" {
		return time.Time{}
	}
	return parseTS(s)
}
