package store

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
)

// scanner is a row to scan: *sql.Row or *sql.Rows.
type scanner interface{ Scan(...any) error }

// queryOne reads one row with scan; no row is ErrNotFound. what names the row in errors
// ("VM web-1").
func queryOne[T any](ctx context.Context, db *sql.DB, scan func(scanner) (T, error), what, q string, args ...any) (T, error) {
	v, err := scan(db.QueryRowContext(ctx, q, args...))
	if errors.Is(err, sql.ErrNoRows) {
		return v, ErrNotFound
	}
	if err != nil {
		return v, fmt.Errorf("read %s: %w", what, err)
	}
	return v, nil
}

// queryAll reads every row with scan, in the query's order; never nil. what names the
// rows in errors ("VMs").
func queryAll[T any](ctx context.Context, db *sql.DB, scan func(scanner) (T, error), what, q string, args ...any) ([]T, error) {
	rows, err := db.QueryContext(ctx, q, args...)
	if err != nil {
		return nil, fmt.Errorf("list %s: %w", what, err)
	}
	defer rows.Close()
	out := []T{}
	for rows.Next() {
		v, err := scan(rows)
		if err != nil {
			return nil, fmt.Errorf("list %s: %w", what, err)
		}
		out = append(out, v)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("list %s: %w", what, err)
	}
	return out, nil
}
