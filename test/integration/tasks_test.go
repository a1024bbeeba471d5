package integration

import (
	"context"
	"encoding/json"
	"os/user"
	"strings"
	"testing"
	"time"

	"github.com/godwit/godwit/internal/api"
)

// TestTasks creates a VM and live-migrates it on a 2-host lab, follows the migration's
// task on the center's event stream from running through its progress to success, and
// checks that the tasks are listed with their initiator and times, and that cancelling a
// finished task is refused with a reason.
func TestTasks(t *testing.T) {
	l := newLab(t, 2)
	me, err := user.Current()
	if err != nil {
		t.Fatal(err)
	}

	var vm api.VM
	l.RunJSON(&vm, "vm", "create", "tsk-1", "--host", "host-1")
	var creates []api.Task
	l.RunJSON(&creates, "task", "list", "--kind", "vm.create", "--target", "tsk-1")
	if len(creates) != 1 {
		t.Fatalf("task list --kind vm.create --target tsk-1: %+v; want one task", creates)
	}
	create := creates[0]
	if create.State != api.TaskSucceeded || create.Initiator != me.Username || create.Queued.IsZero() ||
		create.Started == nil || create.Finished == nil || create.Finished.Before(*create.Started) ||
		create.Progress.Percent != 100 || resultOf(t, create)["host"] != "host-1" {
		t.Fatalf("the create task: %+v (result %s); want succeeded by %s with queued, started and finished times", create, create.Result, me.Username)
	}
	l.WaitHTTP("client", "http://"+vm.IP+"/healthz", 90*time.Second)

	// Follow the stream of task updates over the center's unix socket from before the
	// migration starts.
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	resp, err := l.API().Stream(ctx, "/api/v1/tasks/stream?kind=vm.migrate")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if ct := resp.Header.Get("Content-Type"); ct != "text/event-stream" {
		t.Fatalf("the task stream's Content-Type is %q; want text/event-stream", ct)
	}
	events := make(chan api.Task, 1000)
	go func() {
		defer close(events)
		_ = api.ReadEvents(resp.Body, func(data []byte) error {
			var tk api.Task
			if err := json.Unmarshal(data, &tk); err != nil {
				t.Errorf("a task event is not a task: %v: %s", err, data)
				return err
			}
			events <- tk
			return nil
		})
	}()

	var m api.Migration
	l.RunJSON(&m, "vm", "migrate", "tsk-1", "--to", "host-2", "--detach")
	if m.ID == "" {
		t.Fatalf("vm migrate --detach: %+v; want the migration's id", m)
	}
	var seen []api.Task
	var final api.Task
	for final.ID == "" {
		select {
		case tk, ok := <-events:
			if !ok {
				t.Fatalf("the task stream ended before the migration did; saw %+v", seen)
			}
			if tk.ID != m.ID {
				continue
			}
			seen = append(seen, tk)
			if api.TaskEnded(tk.State) {
				final = tk
			}
		case <-ctx.Done():
			t.Fatalf("the migration's task did not end within 5 minutes; saw %+v", seen)
		}
	}
	cancel()
	running, progressed := 0, false
	for i, tk := range seen {
		t.Logf("event %d: %s %s %s %.1f%% %s", i, tk.ID, tk.Kind, tk.State, tk.Progress.Percent, tk.Progress.Phase)
		if tk.Kind != "vm.migrate" || tk.Target != "tsk-1" || tk.Initiator != me.Username {
			t.Errorf("event %d: %+v; want vm.migrate of tsk-1 by %s", i, tk, me.Username)
		}
		if tk.State == api.TaskRunning {
			running++
			if tk.Progress.Percent > 0 && tk.Progress.Phase != "" && tk.Progress.Phase != api.MigrationPreparing {
				progressed = true
			}
		}
		if i > 0 && tk.State == api.TaskRunning && seen[i-1].State != api.TaskRunning && seen[i-1].State != api.TaskQueued {
			t.Errorf("event %d: running again after %s", i, seen[i-1].State)
		}
	}
	// A migration is queued until the limiter admits it (at once when slots are free).
	if seen[0].State != api.TaskRunning && seen[0].State != api.TaskQueued || running < 2 || !progressed {
		t.Errorf("the migration's task went %d times through running (progress seen: %v), first %s; want it running with progress updates", running, progressed, seen[0].State)
	}
	if final.State != api.TaskSucceeded || final.Progress.Percent != 100 || final.Started == nil || final.Finished == nil ||
		resultOf(t, final)["destination"] != "host-2" {
		t.Fatalf("the migration's final task: %+v (result %s); want succeeded to host-2 with times", final, final.Result)
	}

	var shown api.Task
	l.RunJSON(&shown, "task", "show", m.ID)
	if shown.ID != m.ID || shown.Kind != "vm.migrate" || shown.State != api.TaskSucceeded {
		t.Errorf("task show %s: %+v", m.ID, shown)
	}
	var all []api.Task
	l.RunJSON(&all, "task", "list")
	got := map[string]api.Task{}
	for _, tk := range all {
		got[tk.ID] = tk
	}
	for _, id := range []string{create.ID, m.ID} {
		if tk, ok := got[id]; !ok || tk.Initiator != me.Username || tk.State != api.TaskSucceeded {
			t.Errorf("task list -o json: task %s is %+v; want it succeeded with initiator %s", id, tk, me.Username)
		}
	}
	if len(all) < 2 || all[0].ID != m.ID {
		t.Errorf("task list is not newest first: %+v", all)
	}
	t.Logf("godwit task list:\n%s", l.MustRun("task", "list", "-o", "table"))
	t.Logf("godwit task watch %s:\n%s", m.ID, l.MustRun("task", "watch", m.ID, "-o", "table"))

	_, errOut, err := l.Run("task", "cancel", m.ID)
	if err == nil || !strings.Contains(errOut, "has already succeeded") {
		t.Errorf("task cancel of a finished migration: err=%v stderr=%q; want a refusal saying it has already succeeded", err, errOut)
	}
	if _, errOut, err := l.Run("task", "show", "nosuch"); err == nil || !strings.Contains(errOut, "no task nosuch") {
		t.Errorf("task show nosuch: err=%v stderr=%q", err, errOut)
	}

	l.MustRun("vm", "stop", "tsk-1", "--force")
	l.MustRun("vm", "delete", "tsk-1")
	var rest []api.Task
	l.RunJSON(&rest, "task", "list", "--target", "tsk-1", "--state", "succeeded")
	kinds := map[string]bool{}
	for _, tk := range rest {
		kinds[tk.Kind] = true
	}
	for _, k := range []string{"vm.create", "vm.migrate", "vm.stop", "vm.delete"} {
		if !kinds[k] {
			t.Errorf("no succeeded %s task of tsk-1 in %+v", k, rest)
		}
	}
}

// resultOf decodes a task's result.
func resultOf(t *testing.T, tk api.Task) map[string]any {
	t.Helper()
	var r map[string]any
	if err := json.Unmarshal(tk.Result, &r); err != nil {
		t.Fatalf("task %s: result %q is not a JSON object: %v", tk.ID, tk.Result, err)
	}
	return r
}
