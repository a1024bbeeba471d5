package center

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"time"

	"github.com/google/uuid"

	"github.com/godwit/godwit/internal/api"
	"github.com/godwit/godwit/internal/audit"
	"github.com/godwit/godwit/internal/store"
)

// Tasks. Every operation that takes time is a task: vm.create, vm.start, vm.stop and
// vm.delete are recorded around their (synchronous) requests; vm.migrate is the
// migration itself, under the migration's id, its state and progress mapped from the
// migration as the center follows it. Every change is stored (progress of a migration
// only when its phase changes; the live view is kept in memory) and published to the
// subscribers of GET /api/v1/tasks/stream.

// keepAliveEvery is how often an idle task stream sends a comment, so that proxies and
// clients see the connection alive.
const keepAliveEvery = 15 * time.Second

// restartedError is the error of a task that ran when the center stopped.
const restartedError = "the center restarted while it ran"

const kindMigrate = "vm.migrate"

// randomID is a new task or migration id: a random UUID, so that ids do not repeat by
// chance; the store refuses one that does rather than overwrite history.
func randomID() string { return uuid.NewString() }

// beginTask records that the request r starts an operation of kind on target, run by
// the request itself, and names the task in the answer's X-Godwit-Task header. If the
// task cannot be recorded the operation must not run (409 for an id already taken).
func (c *Center) beginTask(w http.ResponseWriter, r *http.Request, kind, target string) (api.Task, error) {
	now := c.now().UTC()
	t := api.Task{ID: c.newID(), Kind: kind, Target: target, Initiator: audit.ActorOf(r).Name,
		State: api.TaskRunning, Queued: now, Started: &now}
	if err := c.createTask(context.WithoutCancel(r.Context()), t); err != nil {
		return t, err
	}
	w.Header().Set(api.TaskHeader, t.ID)
	return t, nil
}

// createTask records a new task and publishes it. An id that is already taken is a 409
// and changes nothing: the other task's history stays as it is.
func (c *Center) createTask(ctx context.Context, t api.Task) error {
	if err := c.store.InsertTask(ctx, t); err != nil {
		var dup *store.DuplicateError
		if errors.As(err, &dup) {
			return api.Conflict("task id %s is already taken by another task, whose record is kept; nothing was done: ask again", t.ID)
		}
		return fmt.Errorf("record task %s (%s of %s): %w", t.ID, t.Kind, t.Target, err)
	}
	if !api.TaskEnded(t.State) {
		c.activeTasks.Store(t.ID, t)
	}
	c.tasks.publish(t)
	return nil
}

// endTask records how the operation of task t ended: with result, or with err.
func (c *Center) endTask(ctx context.Context, t api.Task, result any, err error) {
	now := c.now().UTC()
	t.Finished = &now
	if err != nil {
		t.State, t.Error = api.TaskFailed, err.Error()
	} else {
		t.State, t.Progress.Percent = api.TaskSucceeded, 100
		if result != nil {
			if b, jerr := json.Marshal(result); jerr == nil {
				t.Result = b
			}
		}
	}
	c.updateTask(context.WithoutCancel(ctx), t, true)
}

// vmResult is the result of a VM task.
func vmResult(vm api.VM) map[string]any {
	return map[string]any{"vm": vm.Name, "host": vm.Host, "state": vm.State}
}

// updateTask publishes the new state of a recorded task, keeping the live view of an
// active task in memory and storing it if persist (a final state is always stored).
func (c *Center) updateTask(ctx context.Context, t api.Task, persist bool) {
	ended := api.TaskEnded(t.State)
	if !ended {
		c.activeTasks.Store(t.ID, t)
	}
	if persist || ended {
		if err := c.store.UpdateTask(ctx, t); err != nil {
			c.log.Error("could not record a task", "task", t.ID, "kind", t.Kind, "target", t.Target, "state", t.State, "err", err)
		}
	}
	if ended {
		c.activeTasks.Delete(t.ID)
	}
	c.tasks.publish(t)
}

// migrationTask maps a migration onto its task, keeping the task's initiator and queue
// time from base.
func migrationTask(base api.Task, m api.Migration, now time.Time) api.Task {
	t := base
	t.ID, t.Kind, t.Target = m.ID, kindMigrate, m.VM
	if t.Queued.IsZero() {
		t.Queued = m.Started.UTC()
	}
	switch {
	case m.State == api.MigrationQueued:
		t.State = api.TaskQueued
	case terminal(m.State):
		t.State = m.State // the migration's final states are the task's
	default:
		t.State = api.TaskRunning
	}
	if t.State != api.TaskQueued && t.Started == nil {
		s := m.Started.UTC()
		t.Started = &s
	}
	t.Progress = api.TaskProgress{Percent: m.Progress.PercentSent, Phase: m.Progress.Phase}
	if t.Progress.Phase == "" && !terminal(m.State) {
		t.Progress.Phase = m.State
	}
	switch {
	case m.Waiting == "" || terminal(m.State):
	case m.State == api.MigrationQueued:
		t.Progress.Phase = "queued: " + m.Waiting
	default:
		t.Progress.Phase = "waiting: " + m.Waiting
	}
	t.Error = m.Error
	if terminal(m.State) {
		f := now.UTC()
		if m.Finished != nil {
			f = m.Finished.UTC()
		}
		t.Finished = &f
		if m.State == api.MigrationSucceeded {
			t.Progress.Percent = 100
			t.Result, _ = json.Marshal(map[string]any{"vm": m.VM, "source": m.Source, "destination": m.Destination,
				"policy": m.Policy, "total_ms": m.TotalMS, "downtime_ms": m.DowntimeMS, "pause_ms": m.PauseMS,
				"pause": m.Pause, "bytes": m.Bytes, "passes": m.Passes})
		}
	}
	return t
}

// migrationChanged maps a migration's latest view onto its task and publishes the task
// if anything changed; it is stored when its state or phase changed.
func (c *Center) migrationChanged(ctx context.Context, m api.Migration) {
	var base api.Task
	if v, ok := c.activeTasks.Load(m.ID); ok {
		base = v.(api.Task)
	} else if t, err := c.store.Task(ctx, m.ID); err == nil {
		base = t
	}
	if api.TaskEnded(base.State) {
		return
	}
	t := migrationTask(base, m, c.now())
	if base.ID == "" {
		// A migration stored without its task (by an older center): record it now.
		if err := c.createTask(ctx, t); err != nil {
			c.log.Error("could not record the task of a migration", "migration", m.ID, "err", err)
		}
		return
	}
	if t.State == base.State && t.Progress == base.Progress && t.Error == base.Error {
		return
	}
	persist := t.State != base.State || t.Progress.Phase != base.Progress.Phase
	c.updateTask(ctx, t, persist)
}

// recordNewMigration records a new migration and its task, under the migration's id;
// an id already taken by either is a 409 and changes nothing of the other's record.
func (c *Center) recordNewMigration(ctx context.Context, m api.Migration, initiator string) error {
	ctx = context.WithoutCancel(ctx)
	t := migrationTask(api.Task{Initiator: initiator, Queued: m.Started.UTC()}, m, c.now())
	if err := c.createTask(ctx, t); err != nil {
		return err
	}
	if err := c.store.InsertMigration(ctx, m); err != nil {
		var dup *store.DuplicateError
		if errors.As(err, &dup) {
			err = api.Conflict("migration id %s is already taken by a migration of VM %s, whose record is kept; nothing was started: ask again", m.ID, dup.Owner)
		}
		now := c.now().UTC()
		t.State, t.Error, t.Finished = api.TaskFailed, err.Error(), &now
		c.updateTask(ctx, t, true)
		return err
	}
	return nil
}

// recoverTasks settles the tasks that were active when the center stopped: a
// migration's task goes on with the migration (or takes its outcome, if it ended), any
// other fails, for its request died with the center.
func (c *Center) recoverTasks(ctx context.Context) error {
	active, err := c.store.Tasks(ctx, store.TaskFilter{Active: true, Limit: 100000})
	if err != nil {
		return fmt.Errorf("read the tasks that were active when the center stopped: %w", err)
	}
	for _, t := range active {
		if t.Kind == kindMigrate {
			m, err := c.store.Migration(ctx, t.ID)
			if err == nil {
				c.activeTasks.Store(t.ID, t)
				c.migrationChanged(ctx, m)
				continue
			}
		}
		now := c.now().UTC()
		t.State, t.Error, t.Finished = api.TaskFailed, restartedError, &now
		c.log.Warn("a task ran when the center stopped; it is marked failed", "task", t.ID, "kind", t.Kind, "target", t.Target)
		c.updateTask(ctx, t, true)
	}
	return nil
}

func (c *Center) getTask(ctx context.Context, id string) (api.Task, error) {
	if v, ok := c.activeTasks.Load(id); ok {
		return v.(api.Task), nil
	}
	t, err := c.store.Task(ctx, id)
	if errors.Is(err, store.ErrNotFound) {
		return t, api.NotFound("no task %s; `godwit task list` shows them", id)
	}
	return t, err
}

var taskStates = map[string]bool{api.TaskQueued: true, api.TaskRunning: true, api.TaskSucceeded: true,
	api.TaskFailed: true, api.TaskCancelled: true}

func taskFilter(r *http.Request) (store.TaskFilter, error) {
	q := r.URL.Query()
	f := store.TaskFilter{State: q.Get("state"), Kind: q.Get("kind"), Target: q.Get("target")}
	if f.State != "" && !taskStates[f.State] {
		return f, api.BadRequest("state %q is not a task state; use queued, running, succeeded, failed or cancelled", f.State)
	}
	return f, nil
}

func (c *Center) listTasks(ctx context.Context, f store.TaskFilter) ([]api.Task, error) {
	ts, err := c.store.Tasks(ctx, f)
	if err != nil {
		return nil, err
	}
	return withLive(ts, func(t api.Task) string { return t.ID }, &c.activeTasks), nil
}

// cancelTask cancels an active task: a migration through its safe cancel (the VM stays
// on its source); other tasks are single requests to a host and cannot be cancelled.
func (c *Center) cancelTask(ctx context.Context, id string) (api.Task, error) {
	t, err := c.getTask(ctx, id)
	if err != nil {
		return t, err
	}
	audit.Params(ctx, map[string]any{"kind": t.Kind, "vm": t.Target})
	if api.TaskEnded(t.State) {
		return t, api.Conflict("task %s (%s of %s) has already %s; only a queued or running task can be cancelled", id, t.Kind, t.Target, t.State)
	}
	if t.Kind != kindMigrate {
		return t, api.Conflict("task %s (%s of %s) cannot be cancelled: it is one request to the VM's host and ends on its own; follow it with `godwit task watch %s`", id, t.Kind, t.Target, id)
	}
	if _, err := c.cancelMigration(ctx, id); err != nil {
		return t, err
	}
	return c.getTask(ctx, id)
}

// streamTasks answers GET /api/v1/tasks/stream with Server-Sent Events: one
// `data: {task}` event per change of a task the query selects (id, kind, target), from
// the task's current state when an id is given. It ends when the client goes away, stops
// reading (a write blocks beyond api.WriteTimeout, or it falls maxPendingTasks tasks
// behind), or the center stops. The streams open at once are bounded (see subscribe).
func (c *Center) streamTasks(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	id, kind, target := q.Get("id"), q.Get("kind"), q.Get("target")
	ctx, cancel := context.WithCancel(r.Context())
	defer cancel()
	if c.runCtx != nil {
		stop := context.AfterFunc(c.runCtx, cancel)
		defer stop()
	}
	sub, err := c.tasks.subscribe(principalOf(ctx).name, func(t api.Task) bool {
		return (id == "" || t.ID == id) && (kind == "" || t.Kind == kind) && (target == "" || t.Target == target)
	})
	if err != nil {
		api.WriteError(w, err)
		return
	}
	defer sub.close()
	var first *api.Task
	if id != "" {
		t, err := c.getTask(ctx, id)
		if err != nil {
			api.WriteError(w, err)
			return
		}
		first = &t
	}
	rc := http.NewResponseController(w)
	h := w.Header()
	h.Set("Content-Type", "text/event-stream")
	h.Set("Cache-Control", "no-cache")
	h.Set("X-Accel-Buffering", "no")
	w.WriteHeader(http.StatusOK)
	if _, err := fmt.Fprint(w, ": task updates\n\n"); err != nil {
		return
	}
	send := func(t api.Task) error {
		b, err := json.Marshal(t)
		if err != nil {
			return err
		}
		if _, err := fmt.Fprintf(w, "data: %s\n\n", b); err != nil {
			return err
		}
		return rc.Flush()
	}
	if first != nil {
		if send(*first) != nil || api.TaskEnded(first.State) {
			return
		}
	} else if rc.Flush() != nil {
		return
	}
	for {
		wait, cancelWait := context.WithTimeout(ctx, keepAliveEvery)
		t, err := sub.next(wait)
		cancelWait()
		switch {
		case ctx.Err() != nil:
			return
		case errors.Is(err, context.DeadlineExceeded):
			if _, err := fmt.Fprint(w, ": keep-alive\n\n"); err != nil || rc.Flush() != nil {
				return
			}
			continue
		case errors.Is(err, errDropped):
			c.log.Info("a task stream's client fell behind; the stream is ended", "from", r.RemoteAddr, "user", principalOf(ctx).name)
			return
		case err != nil:
			return
		}
		if send(t) != nil {
			return
		}
		if id != "" && api.TaskEnded(t.State) {
			return // the one task followed has ended
		}
	}
}
