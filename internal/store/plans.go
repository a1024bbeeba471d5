package store

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/godwit/godwit/internal/api"
)

// Plans are the center's automatic actions (api.Plan), kept whole as JSON: a plan is
// read and rewritten as one, by one loop. The migrations a plan started name it in their
// own records (api.Migration.Plan), and those, not the plan's copy, say what happened.
const plansSchema = `
CREATE TABLE IF NOT EXISTS plans (
	id TEXT PRIMARY KEY,
	kind TEXT NOT NULL,
	host TEXT NOT NULL,
	state TEXT NOT NULL,
	record TEXT NOT NULL,
	created TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS plans_host ON plans (host, created);
CREATE INDEX IF NOT EXISTS migrations_plan ON migrations (json_extract(record, '$.plan'));
CREATE TABLE IF NOT EXISTS settings (
	name TEXT PRIMARY KEY,
	value TEXT NOT NULL
);
`

// BalancerSettings returns the balancer's settings: off at level 3 until set.
func (s *Store) BalancerSettings(ctx context.Context) (api.BalancerSettings, error) {
	out := api.BalancerSettings{Mode: api.BalancerOff, Level: 3}
	var v string
	err := s.rdb.QueryRowContext(ctx, `SELECT value FROM settings WHERE name = 'balancer'`).Scan(&v)
	if errors.Is(err, sql.ErrNoRows) {
		return out, nil
	}
	if err != nil {
		return out, fmt.Errorf("read the balancer's settings: %w", err)
	}
	if err := json.Unmarshal([]byte(v), &out); err != nil {
		return out, fmt.Errorf("decode the balancer's settings: %w", err)
	}
	return out, nil
}

// SetBalancerSettings stores the balancer's settings.
func (s *Store) SetBalancerSettings(ctx context.Context, b api.BalancerSettings) error {
	v, err := json.Marshal(b)
	if err != nil {
		return fmt.Errorf("encode the balancer's settings: %w", err)
	}
	return s.exec(ctx, "store the balancer's settings", `INSERT INTO settings (name, value) VALUES ('balancer', ?) ON CONFLICT (name) DO UPDATE SET value = excluded.value`, string(v))
}

// UpdatePlanFrom rewrites a stored plan only if it is still in state from; it returns
// ErrNotFound when it is not (someone changed it first).
func (s *Store) UpdatePlanFrom(ctx context.Context, from string, p api.Plan) error {
	rec, err := json.Marshal(p)
	if err != nil {
		return fmt.Errorf("encode plan %s: %w", p.ID, err)
	}
	return s.exec1(ctx, "update plan "+p.ID, `UPDATE plans SET state = ?, record = ? WHERE id = ? AND state = ?`, p.State, string(rec), p.ID, from)
}

// ErrInMaintenance means a host is already in maintenance mode.
var ErrInMaintenance = errors.New("the host is already in maintenance mode")

// EnterMaintenance puts host in maintenance mode with plan p, its evacuation, in one
// transaction. It fails with ErrInMaintenance, changing nothing, when the host is in
// maintenance mode already.
func (s *Store) EnterMaintenance(ctx context.Context, host, reason string, now time.Time, p api.Plan) error {
	rec, err := json.Marshal(p)
	if err != nil {
		return fmt.Errorf("encode plan %s: %w", p.ID, err)
	}
	return s.write(ctx, "put host "+host+" in maintenance mode", func(tx *sql.Tx) error {
		res, err := tx.ExecContext(ctx, `INSERT INTO host_maintenance (name, reason, since) VALUES (?, ?, ?) ON CONFLICT (name) DO NOTHING`,
			host, reason, ts(now))
		if err != nil {
			return fmt.Errorf("put host %s in maintenance mode: %w", host, err)
		}
		if n, _ := res.RowsAffected(); n == 0 {
			return ErrInMaintenance
		}
		if _, err := tx.ExecContext(ctx, `INSERT INTO plans (id, kind, host, state, record, created) VALUES (?, ?, ?, ?, ?, ?)`,
			p.ID, p.Kind, p.Host, p.State, string(rec), ts(p.Created)); err != nil {
			return fmt.Errorf("store plan %s: %w", p.ID, err)
		}
		return nil
	})
}

// ExitMaintenance takes host out of maintenance mode and ends its unfinished plans as
// cancelled (at now), in one transaction. It returns the plans it cancelled.
func (s *Store) ExitMaintenance(ctx context.Context, host string, now time.Time) ([]api.Plan, error) {
	var cancelled []api.Plan
	err := s.write(ctx, "take host "+host+" out of maintenance mode", func(tx *sql.Tx) error {
		cancelled = nil
		if _, err := tx.ExecContext(ctx, `DELETE FROM host_maintenance WHERE name = ?`, host); err != nil {
			return fmt.Errorf("take host %s out of maintenance mode: %w", host, err)
		}
		rows, err := tx.QueryContext(ctx, `SELECT record FROM plans WHERE host = ? AND kind IN ('maintenance', 'return') AND state IN ('running', 'blocked')`, host)
		if err != nil {
			return fmt.Errorf("read the plans of host %s: %w", host, err)
		}
		var open []api.Plan
		for rows.Next() {
			var rec string
			if err := rows.Scan(&rec); err != nil {
				rows.Close()
				return fmt.Errorf("read the plans of host %s: %w", host, err)
			}
			var p api.Plan
			if err := json.Unmarshal([]byte(rec), &p); err != nil {
				rows.Close()
				return fmt.Errorf("decode a plan of host %s: %w", host, err)
			}
			open = append(open, p)
		}
		if err := rows.Close(); err != nil {
			return fmt.Errorf("read the plans of host %s: %w", host, err)
		}
		for _, p := range open {
			p.State = api.PlanCancelled
			fin := now.UTC()
			p.Finished = &fin
			for i := range p.Moves {
				if p.Moves[i].State == api.MovePending || p.Moves[i].State == api.MoveBlocked {
					p.Moves[i].State = api.MoveCancelled
				}
			}
			if err := updatePlan(ctx, tx, p); err != nil {
				return err
			}
			cancelled = append(cancelled, p)
		}
		return nil
	})
	return cancelled, err
}

// InsertPlan stores a new plan.
func (s *Store) InsertPlan(ctx context.Context, p api.Plan) error {
	rec, err := json.Marshal(p)
	if err != nil {
		return fmt.Errorf("encode plan %s: %w", p.ID, err)
	}
	return s.exec(ctx, "store plan "+p.ID, `INSERT INTO plans (id, kind, host, state, record, created) VALUES (?, ?, ?, ?, ?, ?)`,
		p.ID, p.Kind, p.Host, p.State, string(rec), ts(p.Created))
}

// UpdatePlan rewrites a stored plan.
func (s *Store) UpdatePlan(ctx context.Context, p api.Plan) error {
	return s.write(ctx, "update plan "+p.ID, func(tx *sql.Tx) error { return updatePlan(ctx, tx, p) })
}

func updatePlan(ctx context.Context, e execer, p api.Plan) error {
	rec, err := json.Marshal(p)
	if err != nil {
		return fmt.Errorf("encode plan %s: %w", p.ID, err)
	}
	return execOne(ctx, e, "update plan "+p.ID, `UPDATE plans SET state = ?, record = ? WHERE id = ?`, p.State, string(rec), p.ID)
}

func scanPlan(sc scanner) (api.Plan, error) {
	var rec string
	if err := sc.Scan(&rec); err != nil {
		return api.Plan{}, err
	}
	var p api.Plan
	if err := json.Unmarshal([]byte(rec), &p); err != nil {
		return api.Plan{}, fmt.Errorf("decode plan: %w", err)
	}
	return p, nil
}

// Plan returns one plan.
func (s *Store) Plan(ctx context.Context, id string) (api.Plan, error) {
	return queryOne(ctx, s.rdb, scanPlan, "plan "+id, `SELECT record FROM plans WHERE id = ?`, id)
}

// Plans returns the newest plans first, at most limit: of one host, or of every host
// when host is empty; only unfinished ones (running or blocked) when open.
func (s *Store) Plans(ctx context.Context, host string, open bool, limit int) ([]api.Plan, error) {
	q := `SELECT record FROM plans WHERE (? = '' OR host = ?)`
	if open {
		q += ` AND state IN ('running', 'blocked')`
	}
	q += ` ORDER BY created DESC, id DESC LIMIT ?`
	return queryAll(ctx, s.rdb, scanPlan, "plans", q, host, host, limit)
}

// LatestPlan returns the newest plan of host of the given kind; ErrNotFound if none.
func (s *Store) LatestPlan(ctx context.Context, host, kind string) (api.Plan, error) {
	return queryOne(ctx, s.rdb, scanPlan, "the newest "+kind+" plan of "+host,
		`SELECT record FROM plans WHERE host = ? AND kind = ? ORDER BY created DESC, id DESC LIMIT 1`, host, kind)
}

// PlanMigrations returns the migrations plan id started, newest first.
func (s *Store) PlanMigrations(ctx context.Context, id string) ([]api.Migration, error) {
	rows, err := s.rdb.QueryContext(ctx, `SELECT `+migrationColumns+` FROM migrations WHERE json_extract(record, '$.plan') = ? ORDER BY started DESC`, id)
	if err != nil {
		return nil, fmt.Errorf("list the migrations of plan %s: %w", id, err)
	}
	defer rows.Close()
	out := []api.Migration{}
	for rows.Next() {
		var rec, prediction string
		if err := rows.Scan(&rec, &prediction); err != nil {
			return nil, fmt.Errorf("list the migrations of plan %s: %w", id, err)
		}
		m, err := decodeMigration(rec, prediction)
		if err != nil {
			return nil, fmt.Errorf("list the migrations of plan %s: %w", id, err)
		}
		out = append(out, m)
	}
	return out, rows.Err()
}
