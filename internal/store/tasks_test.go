package store

import (
	"context"
	"encoding/json"
	"errors"
	"testing"
	"time"

	"github.com/godwit/godwit/internal/api"
)

func TestTasksSaveListAndSurviveReopen(t *testing.T) {
	s, path := openTemp(t)
	ctx := context.Background()
	base := time.Date(2030, 1, 2, 3, 4, 5, 0, time.UTC)
	started := base.Add(time.Second)
	create := api.Task{ID: "t1", Kind: "vm.create", Target: "web-1", Initiator: "alice", State: api.TaskRunning,
		Queued: base, Started: &started}
	mig := api.Task{ID: "m1", Kind: "vm.migrate", Target: "web-1", Initiator: "bob", State: api.TaskRunning,
		Progress: api.TaskProgress{Percent: 42.5, Phase: "precopy"}, Queued: base.Add(time.Minute), Started: &started}
	for _, tk := range []api.Task{create, mig} {
		if err := s.InsertTask(ctx, tk); err != nil {
			t.Fatal(err)
		}
	}
	fin := base.Add(2 * time.Second)
	create.State, create.Finished, create.Result = api.TaskSucceeded, &fin, json.RawMessage(`{"vm":"web-1"}`)
	create.Progress = api.TaskProgress{Percent: 100}
	if err := s.UpdateTask(ctx, create); err != nil {
		t.Fatal(err)
	}

	got, err := s.Task(ctx, "t1")
	if err != nil {
		t.Fatal(err)
	}
	if got.State != api.TaskSucceeded || got.Initiator != "alice" || got.Progress.Percent != 100 ||
		!got.Queued.Equal(base) || got.Started == nil || !got.Started.Equal(started) || got.Finished == nil ||
		!got.Finished.Equal(fin) || string(got.Result) != `{"vm":"web-1"}` {
		t.Fatalf("task t1 read back as %+v", got)
	}
	if _, err := s.Task(ctx, "nope"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("missing task: %v; want ErrNotFound", err)
	}

	all, err := s.Tasks(ctx, TaskFilter{})
	if err != nil || len(all) != 2 || all[0].ID != "m1" || all[1].ID != "t1" {
		t.Fatalf("all tasks, newest first: %+v, %v", all, err)
	}
	for _, c := range []struct {
		f    TaskFilter
		want []string
	}{
		{TaskFilter{State: api.TaskSucceeded}, []string{"t1"}},
		{TaskFilter{Kind: "vm.migrate"}, []string{"m1"}},
		{TaskFilter{Target: "web-1"}, []string{"m1", "t1"}},
		{TaskFilter{Target: "web-2"}, nil},
		{TaskFilter{Active: true}, []string{"m1"}},
		{TaskFilter{Limit: 1}, []string{"m1"}},
	} {
		ts, err := s.Tasks(ctx, c.f)
		if err != nil {
			t.Fatal(err)
		}
		var ids []string
		for _, tk := range ts {
			ids = append(ids, tk.ID)
		}
		if len(ids) != len(c.want) || (len(ids) > 0 && ids[0] != c.want[0]) {
			t.Errorf("filter %+v: %v; want %v", c.f, ids, c.want)
		}
	}

	// Tasks survive a restart of the center (a reopen of the database).
	s.Close()
	s2, err := Open(ctx, path)
	if err != nil {
		t.Fatal(err)
	}
	defer s2.Close()
	m, err := s2.Task(ctx, "m1")
	if err != nil || m.Progress.Phase != "precopy" || m.Progress.Percent != 42.5 || m.Finished != nil {
		t.Fatalf("after reopen: %+v, %v", m, err)
	}
}
