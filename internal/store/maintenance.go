package store

import (
	"context"
	"fmt"
	"time"
)

// Maintenance is a host in maintenance mode: no VM is placed or migrated onto it.
type Maintenance struct {
	Host   string
	Reason string
	Since  time.Time
}

// SetMaintenance puts host in maintenance mode (keeping the first time and reason if it
// is already), or takes it out.
func (s *Store) SetMaintenance(ctx context.Context, host string, on bool, reason string, now time.Time) error {
	what := "set maintenance mode of host " + host
	if on {
		return s.exec(ctx, what, `INSERT INTO host_maintenance (name, reason, since) VALUES (?, ?, ?) ON CONFLICT (name) DO NOTHING`,
			host, reason, ts(now))
	}
	return s.exec(ctx, what, `DELETE FROM host_maintenance WHERE name = ?`, host)
}

// Maintenances returns the hosts in maintenance mode, by name.
func (s *Store) Maintenances(ctx context.Context) (map[string]Maintenance, error) {
	rows, err := s.rdb.QueryContext(ctx, `SELECT name, reason, since FROM host_maintenance`)
	if err != nil {
		return nil, fmt.Errorf("list hosts in maintenance mode: %w", err)
	}
	defer rows.Close()
	out := map[string]Maintenance{}
	for rows.Next() {
		var m Maintenance
		var since string
		if err := rows.Scan(&m.Host, &m.Reason, &since); err != nil {
			return nil, fmt.Errorf("list hosts in maintenance mode: %w", err)
		}
		m.Since = parseTS(since)
		out[m.Host] = m
	}
	return out, rows.Err()
}
