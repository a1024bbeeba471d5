package store

import (
	"context"
	"database/sql"
	"fmt"
)

// TxHook is work that must commit with a write or not at all: the audit trail uses it to
// write the record of a state change in the same transaction as the change (see
// WithTxHook). It runs inside the write's transaction, after the write's own statements
// and before the commit, and only when the write changed rows. It must use tx for every
// statement — the database has one connection, and the transaction holds it — and must
// not wait for anything that may itself wait for the database. An error rolls the whole
// write back and is returned by the write. committed, when not nil, is called once the
// transaction has committed.
type TxHook func(ctx context.Context, tx *sql.Tx) (committed func(), err error)

type hooksKey struct{}

// WithTxHook returns a context whose writes run h (after the hooks ctx already carries):
// every Store method that changes rows, called with that context, commits its change only
// together with what h writes.
func WithTxHook(ctx context.Context, h TxHook) context.Context {
	prev, _ := ctx.Value(hooksKey{}).([]TxHook)
	hooks := append(append(make([]TxHook, 0, len(prev)+1), prev...), h)
	return context.WithValue(ctx, hooksKey{}, hooks)
}

// withoutTxHooks returns ctx without hooks, for writes that are not part of what a
// request or an action changes (the task journal).
func withoutTxHooks(ctx context.Context) context.Context {
	if _, ok := ctx.Value(hooksKey{}).([]TxHook); !ok {
		return ctx
	}
	return context.WithValue(ctx, hooksKey{}, []TxHook(nil))
}

// write runs fn in a transaction and commits it together with the hooks of ctx, which
// run only when fn changed rows. Every change the store makes goes through it. fn's own
// errors are returned as they are (callers test for ErrNotFound and *DuplicateError);
// what names the write in the other errors.
//
// Each write but a heartbeat's changes Version.
func (s *Store) write(ctx context.Context, what string, fn func(tx *sql.Tx) error) error {
	defer s.version.Add(1) // after the commit (or the failure): a reader that saw the old version reads again
	return s.writeTx(ctx, what, fn)
}

// Version changes with every write the store makes other than heartbeats (facts and
// liveness of hosts): what was read at one version is still what the store holds while
// Version returns the same.
func (s *Store) Version() uint64 { return s.version.Load() }

func (s *Store) writeTx(ctx context.Context, what string, fn func(tx *sql.Tx) error) error {
	tx, err := s.db.BeginTx(ctx, nil)
	if err != nil {
		return fmt.Errorf("%s: %w", what, err)
	}
	defer tx.Rollback()
	hooks, _ := ctx.Value(hooksKey{}).([]TxHook)
	var before int64
	if len(hooks) > 0 {
		if err := tx.QueryRowContext(ctx, `SELECT total_changes()`).Scan(&before); err != nil {
			return fmt.Errorf("%s: %w", what, err)
		}
	}
	if err := fn(tx); err != nil {
		return err
	}
	var done []func()
	if len(hooks) > 0 {
		var after int64
		if err := tx.QueryRowContext(ctx, `SELECT total_changes()`).Scan(&after); err != nil {
			return fmt.Errorf("%s: %w", what, err)
		}
		if after == before {
			hooks = nil
		}
		for _, h := range hooks {
			committed, err := h(ctx, tx)
			if err != nil {
				return fmt.Errorf("%s: %w; nothing was changed", what, err)
			}
			if committed != nil {
				done = append(done, committed)
			}
		}
	}
	if err := tx.Commit(); err != nil {
		return fmt.Errorf("%s: %w", what, err)
	}
	for _, f := range done {
		f()
	}
	return nil
}

// execer is what statements run on: the database or a transaction.
type execer interface {
	ExecContext(ctx context.Context, query string, args ...any) (sql.Result, error)
}

// exec1 runs a statement that must change a row: ErrNotFound when it changes none.
// what names it in errors ("update VM web-1").
func (s *Store) exec1(ctx context.Context, what, q string, args ...any) error {
	return s.write(ctx, what, func(tx *sql.Tx) error {
		return execOne(ctx, tx, what, q, args...)
	})
}

func execOne(ctx context.Context, e execer, what, q string, args ...any) error {
	res, err := e.ExecContext(ctx, q, args...)
	if err != nil {
		return fmt.Errorf("%s: %w", what, err)
	}
	n, err := res.RowsAffected()
	if err != nil {
		return fmt.Errorf("%s: %w", what, err)
	}
	if n == 0 {
		return ErrNotFound
	}
	return nil
}

// exec runs one statement in a write.
func (s *Store) exec(ctx context.Context, what, q string, args ...any) error {
	return s.write(ctx, what, func(tx *sql.Tx) error {
		if _, err := tx.ExecContext(ctx, q, args...); err != nil {
			return fmt.Errorf("%s: %w", what, err)
		}
		return nil
	})
}
