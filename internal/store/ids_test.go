package store

import (
	"context"
	"database/sql"
	"errors"
	"path/filepath"
	"testing"
	"time"

	"github.com/godwit/godwit/internal/api"
)

// Creating a task or a migration never overwrites another's record: an id already
// taken is a *DuplicateError and changes nothing; updating one that does not exist is
// ErrNotFound and creates nothing.
func TestTaskAndMigrationIDsAreInsertOnly(t *testing.T) {
	s, _ := openTemp(t)
	ctx := context.Background()
	now := time.Now().UTC()
	m := api.Migration{ID: "m1", VM: "web-1", Source: "host-1", Destination: "host-2", State: api.MigrationSucceeded, Started: now, TotalMS: 42}
	if err := s.InsertMigration(ctx, m); err != nil {
		t.Fatal(err)
	}
	var dup *DuplicateError
	other := api.Migration{ID: "m1", VM: "db-1", Source: "host-2", Destination: "host-1", State: api.MigrationQueued, Started: now}
	if err := s.InsertMigration(ctx, other); !errors.As(err, &dup) || dup.Field != "migration" || dup.Owner != "web-1" {
		t.Fatalf("a second migration m1: %v; want a DuplicateError naming web-1", err)
	}
	// An update names the migration and its VM; another VM's record is not touched.
	if err := s.UpdateMigration(ctx, other); !errors.Is(err, ErrNotFound) {
		t.Fatalf("update of m1 as db-1's: %v; want ErrNotFound", err)
	}
	if got, err := s.Migration(ctx, "m1"); err != nil || got.VM != "web-1" || got.TotalMS != 42 {
		t.Fatalf("m1 after the refused writes: %+v, %v", got, err)
	}

	tk := api.Task{ID: "t1", Kind: "vm.create", Target: "web-1", Initiator: "alice", State: api.TaskSucceeded, Queued: now}
	if err := s.InsertTask(ctx, tk); err != nil {
		t.Fatal(err)
	}
	again := api.Task{ID: "t1", Kind: "vm.delete", Target: "web-2", Initiator: "mallory", State: api.TaskRunning, Queued: now}
	if err := s.InsertTask(ctx, again); !errors.As(err, &dup) || dup.Field != "task" {
		t.Fatalf("a second task t1: %v; want a DuplicateError", err)
	}
	if err := s.UpdateTask(ctx, again); !errors.Is(err, ErrNotFound) {
		t.Fatalf("update of t1 as another kind and target: %v; want ErrNotFound", err)
	}
	if err := s.UpdateTask(ctx, api.Task{ID: "t9", Kind: "vm.create", Target: "web-1"}); !errors.Is(err, ErrNotFound) {
		t.Fatalf("update of a task that does not exist: %v; want ErrNotFound", err)
	}
	if got, err := s.Task(ctx, "t1"); err != nil || got.Initiator != "alice" || got.State != api.TaskSucceeded {
		t.Fatalf("t1 after the refused writes: %+v, %v", got, err)
	}
}

// A database made before schedules recorded whether their creator is the local
// administrator gets the column when it opens; its schedules read as made by a user.
func TestOpenAddsScheduleCreatorColumn(t *testing.T) {
	path := filepath.Join(t.TempDir(), "godwit.db")
	db, err := sql.Open("sqlite", "file:"+path)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := db.Exec(`CREATE TABLE schedules (name TEXT PRIMARY KEY, kind TEXT NOT NULL, at TEXT NOT NULL DEFAULT '',
		cron TEXT NOT NULL DEFAULT '', command TEXT NOT NULL, missed_policy TEXT NOT NULL DEFAULT '', enabled INTEGER NOT NULL DEFAULT 1,
		created_by TEXT NOT NULL DEFAULT '', created TEXT NOT NULL, last_run TEXT NOT NULL DEFAULT '', last_run_at TEXT NOT NULL DEFAULT '',
		last_task TEXT NOT NULL DEFAULT '', last_outcome TEXT NOT NULL DEFAULT '', last_error TEXT NOT NULL DEFAULT '',
		next_run TEXT NOT NULL DEFAULT '');
		INSERT INTO schedules (name, kind, cron, command, created_by, created) VALUES ('old', 'cron', '@daily', '{}', 'root', '2026-01-01T00:00:00Z')`); err != nil {
		t.Fatal(err)
	}
	db.Close()
	s, err := Open(context.Background(), path)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	r, err := s.Schedule(context.Background(), "old")
	if err != nil || r.CreatedBy != "root" || r.CreatorLocal {
		t.Fatalf("old schedule: %+v, %v; want root's, not marked local", r, err)
	}
}
