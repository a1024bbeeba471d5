package center

import (
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/godwit/godwit/internal/api"
	"github.com/godwit/godwit/internal/store"
)

func newTestCenter(t *testing.T) *Center {
	t.Helper()
	dir := t.TempDir()
	c, err := New(context.Background(), Config{DataDir: dir, Socket: filepath.Join(dir, "center.sock"),
		Log: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.store.Close() })
	return c
}

// A task that ran when the center stopped fails with the reason; a migration's task
// takes the outcome its migration has.
func TestRecoverTasksAfterRestart(t *testing.T) {
	c := newTestCenter(t)
	ctx := context.Background()
	start := time.Now().UTC().Add(-time.Minute)
	fin := start.Add(10 * time.Second)
	for _, tk := range []api.Task{
		{ID: "s1", Kind: "vm.start", Target: "web-1", Initiator: "alice", State: api.TaskRunning, Queued: start, Started: &start},
		{ID: "m1", Kind: kindMigrate, Target: "web-1", Initiator: "bob", State: api.TaskRunning, Queued: start, Started: &start},
	} {
		if err := c.store.InsertTask(ctx, tk); err != nil {
			t.Fatal(err)
		}
	}
	if err := c.store.InsertMigration(ctx, api.Migration{ID: "m1", VM: "web-1", Source: "host-1", Destination: "host-2",
		State: api.MigrationSucceeded, Started: start, Finished: &fin, TotalMS: 10000}); err != nil {
		t.Fatal(err)
	}
	if err := c.recoverTasks(ctx); err != nil {
		t.Fatal(err)
	}
	s1, err := c.getTask(ctx, "s1")
	if err != nil || s1.State != api.TaskFailed || s1.Error != restartedError || s1.Finished == nil {
		t.Fatalf("interrupted start task after a restart: %+v, %v; want failed: %s", s1, err, restartedError)
	}
	m1, err := c.store.Task(ctx, "m1")
	if err != nil || m1.State != api.TaskSucceeded || m1.Initiator != "bob" || m1.Finished == nil || !m1.Finished.Equal(fin) ||
		!strings.Contains(string(m1.Result), `"destination":"host-2"`) {
		t.Fatalf("migration task after a restart: %+v, %v; want the migration's success", m1, err)
	}
	if active, _ := c.store.Tasks(ctx, store.TaskFilter{Active: true}); len(active) != 0 {
		t.Fatalf("active tasks after recovery: %+v", active)
	}
}

// The REST API lists, shows and refuses to cancel tasks, and streams their changes.
func TestTaskAPIAndStream(t *testing.T) {
	c := newTestCenter(t)
	srv := httptest.NewServer(c.Handler())
	defer srv.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	cl, err := api.NewClient(srv.URL, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}

	// A failed start (no such VM) is a failed task, named in the answer's header.
	resp, err := http.Post(srv.URL+"/api/v1/vms/ghost/start", "application/json", nil)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	id := resp.Header.Get(api.TaskHeader)
	if resp.StatusCode != http.StatusNotFound || id == "" {
		t.Fatalf("start of a VM that does not exist: %s, task %q; want 404 with a task", resp.Status, id)
	}
	var tk api.Task
	if err := cl.Do(ctx, http.MethodGet, "/api/v1/tasks/"+id, nil, &tk); err != nil {
		t.Fatal(err)
	}
	if tk.Kind != "vm.start" || tk.Target != "ghost" || tk.State != api.TaskFailed || tk.Initiator != "anonymous" || tk.Error == "" {
		t.Fatalf("task %s: %+v; want a failed vm.start of ghost by anonymous", id, tk)
	}
	var ts []api.Task
	if err := cl.Do(ctx, http.MethodGet, "/api/v1/tasks?state=failed&kind=vm.start", nil, &ts); err != nil || len(ts) != 1 {
		t.Fatalf("list failed vm.start tasks: %+v, %v", ts, err)
	}
	if err := cl.Do(ctx, http.MethodGet, "/api/v1/tasks?state=bogus", nil, &ts); err == nil {
		t.Fatal("a bogus state filter was accepted")
	}
	err = cl.Do(ctx, http.MethodPost, "/api/v1/tasks/"+id+"/cancel", nil, nil)
	if se, ok := err.(*api.StatusError); !ok || se.Status != http.StatusConflict || !strings.Contains(se.Msg, "has already failed") {
		t.Fatalf("cancel of an ended task: %v; want 409 saying it has already failed", err)
	}

	// The stream delivers each change of the tasks it selects.
	stream, err := cl.Stream(ctx, "/api/v1/tasks/stream?kind=vm.migrate")
	if err != nil {
		t.Fatal(err)
	}
	defer stream.Body.Close()
	got := make(chan api.Task, 10)
	go func() {
		defer close(got)
		_ = api.ReadEvents(stream.Body, func(data []byte) error {
			var tk api.Task
			if err := json.Unmarshal(data, &tk); err != nil {
				return err
			}
			got <- tk
			return nil
		})
	}()
	for c.tasks.subscribers() == 0 {
		time.Sleep(time.Millisecond)
	}
	m := api.Migration{ID: "mig1", VM: "web-1", State: api.MigrationPreparing, Started: time.Now()}
	if err := c.recordNewMigration(ctx, m, "carol"); err != nil {
		t.Fatal(err)
	}
	if err := c.createTask(ctx, api.Task{ID: "other", Kind: "vm.stop", State: api.TaskRunning}); err != nil { // filtered out
		t.Fatal(err)
	}
	m.State, m.Progress = api.MigrationRunning, api.MigrationProgress{Phase: "precopy", PercentSent: 50}
	c.migrationChanged(ctx, m)
	c.migrationChanged(ctx, m) // no change: no event
	m.State, m.Progress.PercentSent = api.MigrationSucceeded, 100
	c.migrationChanged(ctx, m)
	var seen []string
	for tk := range got {
		seen = append(seen, tk.State+"/"+tk.Progress.Phase)
		if tk.ID != "mig1" || tk.Initiator != "carol" {
			t.Fatalf("stream event %+v; want only migration mig1's task, by carol", tk)
		}
		if api.TaskEnded(tk.State) {
			break
		}
	}
	// Updates may merge for a slow reader, but the end is always delivered.
	if len(seen) == 0 || seen[len(seen)-1] != "succeeded/precopy" {
		t.Fatalf("stream events %v; want to end with succeeded", seen)
	}
	cancel()
	for range got {
	}
	deadline := time.Now().Add(5 * time.Second)
	for c.tasks.subscribers() != 0 && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	if n := c.tasks.subscribers(); n != 0 {
		t.Fatalf("%d subscribers left after the client went away", n)
	}
}
