package center

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/godwit/godwit/internal/api"
	"github.com/godwit/godwit/internal/store"
)

// observeMoves, case by case: what the store says of each VM decides its move.
func TestObserveMoves(t *testing.T) {
	now := time.Now().UTC()
	fin := now
	running := func(name string, mib int) store.VMRecord {
		return store.VMRecord{Spec: api.VMSpec{Name: name, MemoryMiB: mib}, Host: "h1", State: api.VMRunning}
	}
	mig := func(id, vm, state, errText string) api.Migration {
		m := api.Migration{ID: id, VM: vm, Source: "h1", Destination: "h2", State: state, Error: errText, Plan: "p1"}
		if terminal(state) {
			m.Finished, m.TotalMS, m.DowntimeMS = &fin, 900, 12
		}
		return m
	}
	plan := api.Plan{ID: "p1", Host: "h1", State: api.PlanRunning, Moves: []api.PlanMove{
		{VM: "moving", From: "h1", MemoryMiB: 256, State: api.MoveMigrating},
		{VM: "moved", From: "h1", MemoryMiB: 256, State: api.MoveMigrating},
		{VM: "gone", From: "h1", MemoryMiB: 256, State: api.MovePending},
		{VM: "off", From: "h1", MemoryMiB: 256, State: api.MovePending},
		{VM: "twice", From: "h1", MemoryMiB: 256, State: api.MoveMigrating},
		{VM: "differs", From: "h1", MemoryMiB: 256, State: api.MoveMigrating},
		{VM: "thrice", From: "h1", MemoryMiB: 256, State: api.MoveMigrating},
		{VM: "busy", From: "h1", MemoryMiB: 256, State: api.MovePending},
		{VM: "back", From: "h1", MemoryMiB: 256, State: api.MoveDone},
		{VM: "nohost", From: "h1", MemoryMiB: 256, State: api.MoveBlocked, Code: "no_destination", Error: "no host"},
	}}
	off := running("off", 256)
	off.State = api.VMStopped
	v := planView{
		vms: map[string]store.VMRecord{
			"moving": running("moving", 256), "off": off, "twice": running("twice", 256), "differs": running("differs", 256),
			"thrice": running("thrice", 256), "busy": running("busy", 256), "back": running("back", 256),
			"nohost": running("nohost", 256), "new": running("new", 1024),
		},
		migs: map[string][]api.Migration{
			"moving":  {mig("a1", "moving", api.MigrationRunning, "")},
			"moved":   {mig("b1", "moved", api.MigrationSucceeded, "")},
			"twice":   {mig("c2", "twice", api.MigrationFailed, "link down"), mig("c1", "twice", api.MigrationFailed, "link down")},
			"differs": {mig("d2", "differs", api.MigrationFailed, "link down"), mig("d1", "differs", api.MigrationCancelled, "cancelled by alice")},
			"thrice": {mig("e3", "thrice", api.MigrationFailed, "x"), mig("e2", "thrice", api.MigrationFailed, "y"),
				mig("e1", "thrice", api.MigrationFailed, "z")},
			// Moved away by the plan, then brought back by someone, then failed once,
			// then twice more the same way: the success before does not count.
			"back": {mig("f3", "back", api.MigrationFailed, "slow"), mig("f2", "back", api.MigrationFailed, "slow2"),
				mig("f1", "back", api.MigrationSucceeded, "")},
		},
		others: map[string]api.Migration{"busy": {ID: "o1", VM: "busy", State: api.MigrationRunning}},
	}
	got := observeMoves(plan, v)
	want := map[string]string{
		"moving": api.MoveMigrating, "moved": api.MoveDone, "gone": api.MoveLeft, "off": api.MoveStopped,
		"twice": api.MoveBlocked, "differs": api.MovePending, "thrice": api.MoveBlocked, "busy": api.MovePending,
		"back": api.MovePending, "nohost": api.MoveBlocked, "new": api.MovePending,
	}
	if len(got.Moves) != len(want) {
		t.Fatalf("moves: %+v; want %d (the VM the plan did not know added)", got.Moves, len(want))
	}
	for _, mv := range got.Moves {
		if mv.State != want[mv.VM] {
			t.Errorf("move of %s: %s (%s %s); want %s", mv.VM, mv.State, mv.Code, mv.Error, want[mv.VM])
		}
	}
	byVM := map[string]api.PlanMove{}
	for _, mv := range got.Moves {
		byVM[mv.VM] = mv
	}
	if mv := byVM["moved"]; mv.ActualTotalMS != 900 || mv.ActualDowntimeMS != 12 || mv.Migration != "b1" || mv.To != "h2" {
		t.Errorf("done move: %+v; want its migration's actual time and downtime", mv)
	}
	if mv := byVM["twice"]; mv.Code != "migration_failed" || !strings.Contains(mv.Error, "link down") || mv.Attempts != 2 {
		t.Errorf("move that failed twice the same way: %+v; want blocked, migration_failed, naming the failure", mv)
	}
	if mv := byVM["busy"]; !strings.Contains(mv.Error, "o1") {
		t.Errorf("move of a VM another migration moves: %+v; want it to wait, naming that migration", mv)
	}
	if mv := byVM["nohost"]; mv.Code != "no_destination" {
		t.Errorf("blocked move: %+v; want it to keep its reason until a round finds a destination", mv)
	}
	if mv := byVM["new"]; mv.MemoryMiB != 1024 || mv.From != "h1" {
		t.Errorf("added move: %+v", mv)
	}
	if plan.Moves[0].State != api.MoveMigrating || len(plan.Moves) != 10 {
		t.Error("observeMoves changed the plan it was given")
	}
	// Biggest first.
	if order := movesByMemory(got.Moves); got.Moves[order[0]].VM != "new" {
		t.Errorf("first move: %s; want the biggest VM", got.Moves[order[0]].VM)
	}
}

// settle: running while something moves, blocked when only blocked moves are left, done
// only once the host has reported, after the last move ended, that no QEMU runs.
func TestSettlePlan(t *testing.T) {
	now := time.Now().UTC()
	lastEnd := now.Add(-time.Second)
	host := func(beat time.Time, vms ...api.VMStatus) store.HostRecord {
		return store.HostRecord{Facts: api.HostFacts{Name: "h1", VMs: vms}, LastHeartbeat: beat}
	}
	p := api.Plan{ID: "p1", Host: "h1", Created: now.Add(-time.Minute)}
	with := func(states ...string) api.Plan {
		q := p
		q.Moves = nil
		for i, s := range states {
			q.Moves = append(q.Moves, api.PlanMove{VM: string(rune('a' + i)), State: s})
		}
		return q
	}
	for _, tc := range []struct {
		name  string
		plan  api.Plan
		host  store.HostRecord
		known bool
		want  string
		note  string
	}{
		{"a move under way", with(api.MoveDone, api.MoveMigrating), host(now), true, api.PlanRunning, "1 of 2"},
		{"a pending move and a blocked one", with(api.MovePending, api.MoveBlocked), host(now), true, api.PlanRunning, "1 of 2"},
		{"only blocked left", with(api.MoveDone, api.MoveBlocked), host(now), true, api.PlanBlocked, "blocked by b"},
		{"all moved, QEMU still reported", with(api.MoveDone), host(now, api.VMStatus{Name: "a", State: api.VMRunning, PID: 7}), true, api.PlanRunning, "1 QEMU"},
		{"all moved, no heartbeat since", with(api.MoveDone), host(lastEnd.Add(-time.Millisecond)), true, api.PlanRunning, "report"},
		{"host unknown", with(api.MoveDone), store.HostRecord{}, false, api.PlanRunning, "report"},
		{"all moved, host empty", with(api.MoveDone, api.MoveStopped, api.MoveLeft), host(now, api.VMStatus{Name: "b", State: api.VMStopped}), true, api.PlanDone, ""},
		{"nothing to move", with(), host(now), true, api.PlanDone, ""},
	} {
		got := settle(tc.plan, tc.host, tc.known, lastEnd, now)
		if got.State != tc.want || !strings.Contains(got.Note, tc.note) {
			t.Errorf("%s: %s (%q); want %s saying %q", tc.name, got.State, got.Note, tc.want, tc.note)
		}
		if tc.want == api.PlanDone && (got.Finished == nil || got.ActualMakespanMS < 59000) {
			t.Errorf("%s: done without its end or makespan: %+v", tc.name, got)
		}
	}
}

// Entering maintenance through the API: the dry run changes nothing; entering stores the
// mode and the plan together; a second request is refused with the plan named, nothing
// changed; a round that cannot move the VM (its destination's agent does not answer)
// leaves the host blocked with the VM and a typed reason; exit cancels the plan and
// returns the host to normal; an unknown host is refused.
func TestMaintenanceThroughTheAPI(t *testing.T) {
	c := newTestCenter(t)
	ctx := context.Background()
	now := time.Now()
	for name, free := range map[string]int{"host-1": 32 << 10, "host-2": 32 << 10} {
		if _, err := c.store.SaveHeartbeat(ctx, placementFacts(name, free), now); err != nil {
			t.Fatal(err)
		}
	}
	if err := c.store.InsertVM(ctx, store.VMRecord{Spec: api.VMSpec{Name: "web-1", UUID: uuid.NewString(), CPUs: 1, MemoryMiB: 512,
		Boot: api.Boot{Kernel: "[shared] images/godwit-test/vmlinuz"}}, Host: "host-1",
		Desired: api.VMRunning, State: api.VMRunning, PID: 4242, Created: now, Updated: now}); err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(c.Handler())
	t.Cleanup(srv.Close)
	call := func(method, path, body string, out any) int {
		t.Helper()
		st, b := apiCall(t, srv.URL, method, path, body)
		if out != nil {
			_ = json.Unmarshal(b, out)
		}
		return st
	}

	var dry api.Plan
	if st := call("GET", "/api/v1/hosts/host-1/maintenance/plan", "", &dry); st != 200 || dry.State != api.PlanProposed ||
		len(dry.Moves) != 1 || dry.Moves[0].To != "host-2" || dry.Moves[0].State != api.MovePending {
		t.Fatalf("dry run: %d %+v; want one move of web-1 to host-2", st, dry)
	}
	if m, _ := c.store.Maintenances(ctx); len(m) != 0 {
		t.Fatalf("the dry run put a host in maintenance: %v", m)
	}
	if ps, _ := c.store.Plans(ctx, "", false, 10); len(ps) != 0 {
		t.Fatalf("the dry run stored a plan: %+v", ps)
	}

	var h api.Host
	if st := call("POST", "/api/v1/hosts/host-1/maintenance", `{"enter":true,"reason":"new disks"}`, &h); st != 200 ||
		h.Maintenance == nil || h.Maintenance.State != api.MaintenanceEntering || h.Maintenance.Plan == "" {
		t.Fatalf("enter: %d %+v; want entering, with a plan", st, h.Maintenance)
	}
	planID := h.Maintenance.Plan
	var e api.Error
	if st := call("POST", "/api/v1/hosts/host-1/maintenance", `{"enter":true}`, &e); st != http.StatusConflict ||
		e.Code != "in_maintenance" || !strings.Contains(e.Error, planID) {
		t.Fatalf("second enter: %d %+v; want 409 in_maintenance naming plan %s", st, e, planID)
	}
	if ps, _ := c.store.Plans(ctx, "host-1", false, 10); len(ps) != 1 {
		t.Fatalf("plans after a refused second enter: %d; want 1", len(ps))
	}

	// A round: host-2's agent does not answer its preflight, so the move is blocked.
	c.planRound(ctx)
	if st := call("GET", "/api/v1/hosts/host-1", "", &h); st != 200 || h.Maintenance == nil ||
		h.Maintenance.State != api.MaintenanceBlocked || len(h.Maintenance.Blocked) != 1 ||
		h.Maintenance.Blocked[0].VM != "web-1" || h.Maintenance.Blocked[0].Code == "" {
		t.Fatalf("after a round: %d %+v; want blocked by web-1 with a code", st, h.Maintenance)
	}
	if ms, _ := c.store.PlanMigrations(ctx, planID); len(ms) != 0 {
		t.Fatalf("a move that could not be checked left migrations: %+v", ms)
	}

	h = api.Host{}
	if st := call("POST", "/api/v1/hosts/host-1/maintenance", `{"enter":false}`, &h); st != 200 || h.Maintenance != nil {
		t.Fatalf("exit: %d %+v; want out of maintenance", st, h.Maintenance)
	}
	var p api.Plan
	if st := call("GET", "/api/v1/plans/"+planID, "", &p); st != 200 || p.State != api.PlanCancelled || p.Finished == nil ||
		p.Moves[0].State != api.MoveCancelled {
		t.Fatalf("plan after exit: %d %+v; want cancelled, its move too", st, p)
	}
	if r, _ := c.store.VM(ctx, "web-1"); r.Host != "host-1" {
		t.Fatalf("web-1 is on %s; want it untouched on host-1", r.Host)
	}
	if st := call("POST", "/api/v1/hosts/nohost/maintenance", `{"enter":true}`, &e); st != http.StatusNotFound {
		t.Fatalf("unknown host: %d %+v; want 404", st, e)
	}
	long := `{"enter":true,"reason":"` + strings.Repeat("x", api.MaxReason+1) + `"}`
	if st := call("POST", "/api/v1/hosts/host-1/maintenance", long, &e); st != http.StatusBadRequest || !strings.Contains(e.Error, "reason") {
		t.Fatalf("a reason over the limit: %d %+v; want 400 naming the reason", st, e)
	}
	if m, _ := c.store.Maintenances(ctx); len(m) != 0 {
		t.Fatalf("a refused enter left hosts in maintenance: %v", m)
	}
	if st := call("GET", "/api/v1/plans/nope", "", &e); st != http.StatusNotFound {
		t.Fatalf("unknown plan: %d %+v; want 404", st, e)
	}

	// An empty host goes straight to "in maintenance" once it has reported.
	if st := call("POST", "/api/v1/hosts/host-2/maintenance", `{"enter":true}`, &h); st != 200 {
		t.Fatalf("enter host-2: %d", st)
	}
	if _, err := c.store.SaveHeartbeat(ctx, placementFacts("host-2", 32<<10), time.Now()); err != nil {
		t.Fatal(err)
	}
	c.planRound(ctx)
	h = api.Host{}
	if call("GET", "/api/v1/hosts/host-2", "", &h); h.Maintenance == nil || h.Maintenance.State != api.MaintenanceIn {
		t.Fatalf("empty host after a round: %+v; want in maintenance", h.Maintenance)
	}
}

// apiCall sends a JSON request to the test server at base and returns the status and
// the body.
func apiCall(t *testing.T, base, method, path, body string) (int, []byte) {
	t.Helper()
	req, err := http.NewRequest(method, base+path, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/json")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp.StatusCode, b
}
