package store

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/godwit/godwit/internal/api"
)

// TaskFilter selects tasks. Empty fields select everything.
type TaskFilter struct {
	State  string
	Kind   string
	Target string
	// Active keeps only queued and running tasks.
	Active bool
	// Limit bounds the number of tasks; 0 means 200.
	Limit int
}

// InsertTask stores a new task. An id already taken is a *DuplicateError (Field
// "task"): a task's history is never overwritten by another's. Task writes run no hooks
// (WithTxHook): a task is the journal of a request, written for refused requests too,
// not a change the audit trail vouches for.
func (s *Store) InsertTask(ctx context.Context, t api.Task) error {
	err := s.exec(withoutTxHooks(ctx), "store task "+t.ID, `INSERT INTO tasks
		(id, kind, target, initiator, state, percent, phase, queued, started, finished, result, error)
		VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`,
		t.ID, t.Kind, t.Target, t.Initiator, t.State, t.Progress.Percent, t.Progress.Phase,
		ts(t.Queued), optTS(t.Started), optTS(t.Finished), string(t.Result), t.Error)
	if err != nil && strings.Contains(err.Error(), "UNIQUE") {
		return &DuplicateError{Field: "task", Value: t.ID}
	}
	return err
}

// UpdateTask records the new state of a stored task of the same kind and target;
// ErrNotFound when there is none, so an update never creates a task.
func (s *Store) UpdateTask(ctx context.Context, t api.Task) error {
	err := s.exec1(withoutTxHooks(ctx), "update task "+t.ID, `UPDATE tasks SET initiator = ?, state = ?, percent = ?, phase = ?,
		queued = ?, started = ?, finished = ?, result = ?, error = ? WHERE id = ? AND kind = ? AND target = ?`,
		t.Initiator, t.State, t.Progress.Percent, t.Progress.Phase,
		ts(t.Queued), optTS(t.Started), optTS(t.Finished), string(t.Result), t.Error, t.ID, t.Kind, t.Target)
	if errors.Is(err, ErrNotFound) {
		return fmt.Errorf("update task %s (%s of %s): %w", t.ID, t.Kind, t.Target, ErrNotFound)
	}
	return err
}

// Task returns one task, or ErrNotFound.
func (s *Store) Task(ctx context.Context, id string) (api.Task, error) {
	t, err := scanTask(s.rdb.QueryRowContext(ctx, `SELECT `+taskCols+` FROM tasks WHERE id = ?`, id))
	if errors.Is(err, sql.ErrNoRows) {
		return api.Task{}, ErrNotFound
	}
	if err != nil {
		return api.Task{}, fmt.Errorf("read task %s: %w", id, err)
	}
	return t, nil
}

// Tasks returns the tasks f selects, newest first.
func (s *Store) Tasks(ctx context.Context, f TaskFilter) ([]api.Task, error) {
	var where []string
	var args []any
	for _, c := range []struct{ col, v string }{{"state", f.State}, {"kind", f.Kind}, {"target", f.Target}} {
		if c.v != "" {
			where = append(where, c.col+" = ?")
			args = append(args, c.v)
		}
	}
	if f.Active {
		where = append(where, `state IN ('`+api.TaskQueued+`', '`+api.TaskRunning+`')`)
	}
	q := `SELECT ` + taskCols + ` FROM tasks`
	if len(where) > 0 {
		q += ` WHERE ` + strings.Join(where, " AND ")
	}
	if f.Limit <= 0 {
		f.Limit = 200
	}
	q += ` ORDER BY queued DESC, rowid DESC LIMIT ?`
	args = append(args, f.Limit)
	rows, err := s.rdb.QueryContext(ctx, q, args...)
	if err != nil {
		return nil, fmt.Errorf("list tasks: %w", err)
	}
	defer rows.Close()
	out := []api.Task{}
	for rows.Next() {
		t, err := scanTask(rows)
		if err != nil {
			return nil, fmt.Errorf("list tasks: %w", err)
		}
		out = append(out, t)
	}
	return out, rows.Err()
}

const taskCols = `id, kind, target, initiator, state, percent, phase, queued, started, finished, result, error`

func scanTask(sc interface{ Scan(...any) error }) (api.Task, error) {
	var t api.Task
	var queued, started, finished, result string
	if err := sc.Scan(&t.ID, &t.Kind, &t.Target, &t.Initiator, &t.State, &t.Progress.Percent, &t.Progress.Phase,
		&queued, &started, &finished, &result, &t.Error); err != nil {
		return api.Task{}, err
	}
	t.Queued, t.Started, t.Finished = parseTS(queued), optParseTS(started), optParseTS(finished)
	if result != "" {
		t.Result = []byte(result)
	}
	return t, nil
}

func optTS(t *time.Time) string {
	if t == nil || t.IsZero() {
		return ""
	}
	return ts(*t)
}

func optParseTS(s string) *time.Time {
	if s == "" {
		return nil
	}
	t := parseTS(s)
	return &t
}
