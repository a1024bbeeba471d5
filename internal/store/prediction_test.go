package store

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"path/filepath"
	"testing"
	"time"

	"github.com/godwit/godwit/internal/api"
)

// A migration's prediction has a column of its own: a database of an older center gets
// it, and the records the source reports, which replace the migration's record, keep it.
func TestMigrationPrediction(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "godwit.db")
	started := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	old := api.Migration{ID: "m-old", VM: "vm1", Source: "host-1", Destination: "host-2", State: api.MigrationSucceeded, Started: started}
	b, _ := json.Marshal(old)
	db, err := sql.Open("sqlite", "file:"+path)
	if err != nil {
		t.Fatal(err)
	}
	for _, q := range []string{
		`CREATE TABLE migrations (id TEXT PRIMARY KEY, vm TEXT NOT NULL, state TEXT NOT NULL, record TEXT NOT NULL, started TEXT NOT NULL)`,
		`INSERT INTO migrations (id, vm, state, record, started) VALUES ('m-old', 'vm1', 'succeeded', '` + string(b) + `', '` + ts(started) + `')`,
	} {
		if _, err := db.ExecContext(ctx, q); err != nil {
			t.Fatalf("an older center's database: %v", err)
		}
	}
	db.Close()

	s, err := Open(ctx, path)
	if err != nil {
		t.Fatalf("open an older center's database: %v", err)
	}
	defer s.Close()
	if m, err := s.Migration(ctx, "m-old"); err != nil || m.ID != "m-old" || m.Prediction != nil {
		t.Errorf("an older migration = %+v, %v; want it without a prediction", m, err)
	}

	m := api.Migration{ID: "m1", VM: "vm1", Source: "host-1", Destination: "host-2", State: api.MigrationQueued, Started: started.Add(time.Minute)}
	if err := s.InsertMigration(ctx, m); err != nil {
		t.Fatal(err)
	}
	pred := api.Prediction{TotalMS: 1500, DowntimeMS: 60, Converges: true, Note: "converges without throttling in 1 pass", LinkBps: 1e8, LinkSource: "test"}
	if err := s.SetMigrationPrediction(ctx, "m1", pred); err != nil {
		t.Fatalf("SetMigrationPrediction: %v", err)
	}
	if err := s.SetMigrationPrediction(ctx, "no-such", pred); !errors.Is(err, ErrNotFound) {
		t.Errorf("SetMigrationPrediction of an unknown migration: %v, want ErrNotFound", err)
	}
	// The source's record, without the prediction, replaces the record; the outcome too.
	m.State = api.MigrationRunning
	if err := s.UpdateMigration(ctx, m); err != nil {
		t.Fatal(err)
	}
	m.State, m.TotalMS, m.DowntimeMS = api.MigrationSucceeded, 1700, 55
	if err := s.EndMigration(ctx, m, nil, started); err != nil {
		t.Fatal(err)
	}
	got, err := s.Migration(ctx, "m1")
	if err != nil || got.Prediction == nil || *got.Prediction != pred || got.TotalMS != 1700 {
		t.Errorf("Migration = %+v (prediction %+v), %v; want the outcome with its prediction %+v", got, got.Prediction, err, pred)
	}
	list, err := s.Migrations(ctx, "vm1", false, 10)
	if err != nil || len(list) != 2 || list[0].ID != "m1" || list[0].Prediction == nil || *list[0].Prediction != pred || list[1].Prediction != nil {
		t.Errorf("Migrations = %+v, %v; want m1 with its prediction, then m-old without", list, err)
	}
}
