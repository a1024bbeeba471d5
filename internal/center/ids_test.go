package center

import (
	"context"
	"encoding/json"
	"io/fs"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/godwit/godwit/internal/admission"
	"github.com/godwit/godwit/internal/api"
)

// Task and migration ids are whole random UUIDs; one that is taken anyway is a 409 that
// changes nothing, never an overwrite of the other's history.
func TestTakenIDsAreRefused(t *testing.T) {
	c := newTestCenter(t)
	ctx := context.Background()
	if id := c.newID(); uuid.Validate(id) != nil || len(id) != 36 {
		t.Fatalf("new id %q; want a whole UUID", id)
	}
	srv := httptest.NewServer(c.Handler())
	defer srv.Close()

	// A VM stop records a task (it fails: there is no such VM, which is history too).
	taken := uuid.NewString()
	c.newID = func() string { return taken }
	resp, err := http.Post(srv.URL+"/api/v1/vms/ghost/stop", "application/json", nil)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	first, err := c.store.Task(ctx, taken)
	if err != nil || first.Kind != "vm.stop" || first.Target != "ghost" || first.State != api.TaskFailed {
		t.Fatalf("first task: %+v, %v", first, err)
	}
	// The next request draws the same id: refused, and the first task is as it was.
	resp, err = http.Post(srv.URL+"/api/v1/vms/other/start", "application/json", nil)
	if err != nil {
		t.Fatal(err)
	}
	var e api.Error
	_ = json.NewDecoder(resp.Body).Decode(&e)
	resp.Body.Close()
	if resp.StatusCode != http.StatusConflict || !strings.Contains(e.Error, "task id "+taken+" is already taken") {
		t.Fatalf("request whose task id is taken: %d %+v; want 409 saying so", resp.StatusCode, e)
	}
	if again, err := c.store.Task(ctx, taken); err != nil || again.Kind != first.Kind || again.Target != first.Target ||
		again.State != first.State || again.Error != first.Error {
		t.Fatalf("the first task after the refused one: %+v, %v; want it unchanged: %+v", again, err, first)
	}

	// A migration whose id another migration has: refused before anything starts.
	now := time.Now().UTC()
	old := api.Migration{ID: uuid.NewString(), VM: "web-1", Source: "host-1", Destination: "host-2",
		State: api.MigrationSucceeded, Started: now.Add(-time.Hour), Finished: &now, TotalMS: 1234}
	if err := c.recordNewMigration(ctx, old, "alice"); err != nil {
		t.Fatal(err)
	}
	dup := api.Migration{ID: old.ID, VM: "db-1", Source: "host-2", Destination: "host-1", State: api.MigrationQueued, Started: now}
	p := plan{m: dup, priority: admission.Normal, costs: map[string]int{}}
	_, err = c.submit(ctx, p, "bob")
	var se *api.StatusError
	if !asStatus(err, &se) || se.Status != http.StatusConflict || !strings.Contains(err.Error(), "already taken") {
		t.Fatalf("migration whose id is taken: %v; want a 409", err)
	}
	if m, err := c.store.Migration(ctx, old.ID); err != nil || m.VM != "web-1" || m.State != api.MigrationSucceeded || m.TotalMS != 1234 {
		t.Fatalf("the first migration after the refused one: %+v, %v; want it unchanged", m, err)
	}
	if tk, err := c.store.Task(ctx, old.ID); err != nil || tk.Target != "web-1" || tk.Initiator != "alice" {
		t.Fatalf("the first migration's task after the refused one: %+v, %v; want it unchanged", tk, err)
	}
	// Updates never create a record.
	if err := c.store.UpdateMigration(ctx, api.Migration{ID: "nosuch", VM: "web-1"}); err == nil {
		t.Fatal("UpdateMigration created a migration")
	}
	if err := c.store.UpdateTask(ctx, api.Task{ID: "nosuch", Kind: "vm.stop", Target: "web-1"}); err == nil {
		t.Fatal("UpdateTask created a task")
	}
}

func asStatus(err error, se **api.StatusError) bool {
	s, ok := err.(*api.StatusError)
	*se = s
	return ok
}

// The center's database (with its -wal and -shm files) and every secret it keeps are
// readable by their owner only, whatever the umask, and a database left readable by an
// older center is made private when it opens.
func TestCenterFilesArePrivate(t *testing.T) {
	dir := t.TempDir()
	db := filepath.Join(dir, "godwit.db")
	if err := os.WriteFile(db, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(db+"-shm", nil, 0o644); err != nil {
		t.Fatal(err)
	}
	c, err := New(context.Background(), Config{DataDir: dir, Socket: filepath.Join(dir, "center.sock")})
	if err != nil {
		t.Fatal(err)
	}
	defer c.store.Close()
	// Write something, so that SQLite has its -wal and -shm files open.
	if err := c.store.InsertTask(context.Background(), api.Task{ID: "t", Kind: "vm.stop", Target: "x", State: api.TaskRunning,
		Queued: time.Now()}); err != nil {
		t.Fatal(err)
	}
	secret := map[string]bool{"godwit.db": true, "godwit.db-wal": true, "godwit.db-shm": true, AdminCredentialsFile: true}
	seen := map[string]bool{}
	err = filepath.WalkDir(dir, func(path string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		st, err := d.Info()
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(dir, path)
		seen[rel] = true
		// Certificates are public; everything else is a secret or the database.
		if !strings.HasSuffix(rel, ".crt") && st.Mode().Perm() != 0o600 {
			t.Errorf("%s has mode %v; want 0600", rel, st.Mode().Perm())
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	for f := range secret {
		if !seen[f] {
			t.Errorf("%s was not made (files: %v)", f, seen)
		}
	}
	var keys int
	for f := range seen {
		if strings.Contains(f, "key") {
			keys++
		}
	}
	if keys == 0 {
		t.Errorf("no key file among %v", seen)
	}
}
