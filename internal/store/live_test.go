package store

import (
	"context"
	"encoding/json"
	"testing"
	"time"

	"github.com/godwit/godwit/internal/api"
)

// Live load: a heartbeat that changes only a host's live figures is read back at once
// but written at most every liveFlush; one that changes anything else (a VM's state) is
// written at once; liveness is what the newest heartbeat says, in every reader.
func TestLiveLoadIsReadAtOnceAndWrittenLater(t *testing.T) {
	s, _ := openTemp(t)
	ctx := context.Background()
	t0 := time.Date(2026, 12, 6, 12, 0, 0, 0, time.UTC)
	f := api.HostFacts{Name: "h1", Load: 0.5, FreeMemoryMiB: 1000,
		Datastores: []api.Datastore{{Name: "shared", FreeByte: 1 << 30}},
		VMs:        []api.VMStatus{{Name: "web-1", UUID: "u1", State: api.VMRunning, PID: 7}}}
	if reg, err := s.SaveHeartbeat(ctx, f, t0); err != nil || !reg {
		t.Fatalf("first heartbeat: %v %v; want registered", reg, err)
	}
	written := func() api.HostFacts {
		t.Helper()
		var raw string
		if err := s.db.QueryRowContext(ctx, `SELECT facts FROM hosts WHERE name = 'h1'`).Scan(&raw); err != nil {
			t.Fatal(err)
		}
		var w api.HostFacts
		if err := json.Unmarshal([]byte(raw), &w); err != nil {
			t.Fatal(err)
		}
		return w
	}

	// Only live figures change: read back at once, not written.
	g := f
	g.Load, g.FreeMemoryMiB = 1.5, 900
	g.Datastores = []api.Datastore{{Name: "shared", FreeByte: 2 << 30}}
	if _, err := s.SaveHeartbeat(ctx, g, t0.Add(2*time.Second)); err != nil {
		t.Fatal(err)
	}
	h, err := s.Host(ctx, "h1")
	if err != nil || h.Facts.Load != 1.5 || h.Facts.FreeMemoryMiB != 900 || !h.LastHeartbeat.Equal(t0.Add(2*time.Second)) {
		t.Fatalf("Host after a live-only heartbeat: %+v %v; want the new load, free memory and time", h, err)
	}
	hs, _ := s.Hosts(ctx)
	beats, _ := s.LastHeartbeats(ctx)
	if len(hs) != 1 || hs[0].Facts.Load != 1.5 || !beats["h1"].Equal(t0.Add(2*time.Second)) {
		t.Fatalf("Hosts and LastHeartbeats after a live-only heartbeat: %+v %v", hs, beats)
	}
	if w := written(); w.Load != 0.5 {
		t.Fatalf("a live-only heartbeat was written: load %v", w.Load)
	}

	// A VM's state changes: written at once.
	g2 := g
	g2.VMs = []api.VMStatus{{Name: "web-1", UUID: "u1", State: api.VMStopped}}
	if _, err := s.SaveHeartbeat(ctx, g2, t0.Add(4*time.Second)); err != nil {
		t.Fatal(err)
	}
	if w := written(); len(w.VMs) != 1 || w.VMs[0].State != api.VMStopped || w.Load != 1.5 {
		t.Fatalf("after a VM's state changed, the written facts are %+v; want it stopped, with the live load", w)
	}

	// Live-only again, but liveFlush after the last write: written.
	g3 := g2
	g3.Load = 3
	if _, err := s.SaveHeartbeat(ctx, g3, t0.Add(4*time.Second+liveFlush)); err != nil {
		t.Fatal(err)
	}
	if w := written(); w.Load != 3 {
		t.Fatalf("live load %v written after liveFlush; want 3", w.Load)
	}

	// A reopened store (a restarted center) reads what was written.
	g4 := g3
	g4.Load = 4
	if _, err := s.SaveHeartbeat(ctx, g4, t0.Add(6*time.Second+liveFlush)); err != nil {
		t.Fatal(err)
	}
	if w := written(); w.Load != 3 {
		t.Fatalf("load %v written; want the live 4 held in memory", w.Load)
	}
}
