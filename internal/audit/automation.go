package audit

import (
	"context"
	"database/sql"
	"errors"
	"time"

	"github.com/godwit/godwit/internal/api"
)

// MigrationEnded returns the record of the outcome of a migration the center followed to
// its end (migration.finish): an action of the center, on behalf of whoever asked for
// the migration, with its total time, downtime and bytes sent. A cancelled migration's
// outcome is failed; its params say "state": "cancelled". The center appends it in the
// transaction that stores the outcome (AppendHook), so that neither is written alone.
func (l *Log) MigrationEnded(ctx context.Context, m api.Migration) Record {
	outcome := Failed
	if m.State == api.MigrationSucceeded {
		outcome = Succeeded
	}
	total, down, sent := m.TotalMS, m.DowntimeMS, m.Bytes
	extra := map[string]any{"state": m.State, "passes": m.Passes, "pause_ms": m.PauseMS}
	if m.Pause != nil {
		extra["pause"] = m.Pause
	}
	if p := m.Prediction; p != nil {
		extra["predicted_total_ms"], extra["predicted_downtime_ms"], extra["predicted_converges"] = p.TotalMS, p.DowntimeMS, p.Converges
	}
	r := migrationRecord(m, "migration.finish", outcome, extra)
	r.Error = m.Error
	r.DurationMS, r.DowntimeMS, r.Bytes = &total, &down, &sent
	r.OnBehalfOf = l.onBehalfOf(ctx, r.Target)
	return r
}

// MigrationResumed records that the center follows an unfinished migration again after
// a restart (migration.resume).
func (l *Log) MigrationResumed(ctx context.Context, m api.Migration) {
	l.automation(ctx, migrationRecord(m, "migration.resume", Succeeded, map[string]any{"state": m.State}))
}

func migrationRecord(m api.Migration, action, outcome string, extra map[string]any) Record {
	p := map[string]any{"vm": m.VM, "source": m.Source, "destination": m.Destination, "policy": m.Policy,
		"priority": orNormal(m.Priority), "encrypted": m.Encrypted}
	if m.Plan != "" {
		p["plan"], p["reason"] = m.Plan, m.Reason
	}
	for k, v := range extra {
		p[k] = v
	}
	params, _ := encodeParams(p) // strings and numbers always encode
	return Record{Actor: CenterActor, ActorKind: KindAutomation, Action: action, Target: m.ID, Outcome: outcome, Params: params}
}

// automation appends a record of the center's own, on behalf of whoever asked for the
// migration it concerns.
func (l *Log) automation(ctx context.Context, r Record) {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
	defer cancel()
	r.OnBehalfOf = l.onBehalfOf(ctx, r.Target)
	if _, err := l.Append(ctx, r); err != nil {
		l.log.Error("an action of the center could not be recorded in the audit trail", "action", r.Action,
			"target", r.Target, "err", err)
	}
}

// onBehalfOf is who asked for a migration, or "" (logged) when that is not known.
func (l *Log) onBehalfOf(ctx context.Context, migration string) string {
	by, err := l.requester(ctx, migration)
	if err != nil {
		l.log.Warn("the requester of a migration is not known", "migration", migration, "err", err)
	}
	return by
}

// requester returns who asked for a migration: the actor of its vm.migrate record.
func (l *Log) requester(ctx context.Context, migration string) (string, error) {
	var by string
	err := l.db.QueryRowContext(ctx, `SELECT actor FROM audit_log
		WHERE action = 'vm.migrate' AND json_valid(params) AND json_extract(params, '$.migration') = ?
		ORDER BY id DESC LIMIT 1`, migration).Scan(&by)
	if errors.Is(err, sql.ErrNoRows) {
		return "", nil
	}
	return by, err
}

// orNormal is a migration's priority, normal when unset.
func orNormal(p string) string {
	if p == "" {
		return "normal"
	}
	return p
}
