package center

import (
	"context"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/godwit/godwit/internal/api"
	"github.com/godwit/godwit/internal/audit"
	"github.com/godwit/godwit/internal/store"
)

// evidenceFixture is a center with host-1 and host-2 and a running VM web-1 recorded on
// host-1. The hosts' agents do not answer: their URLs name a port nobody listens on.
type evidenceFixture struct {
	c    *Center
	now  time.Time
	uuid string
	dead string // an agent URL that refuses connections
}

func newEvidenceFixture(t *testing.T) *evidenceFixture {
	t.Helper()
	f := &evidenceFixture{c: newTestCenter(t), now: time.Now().UTC(), uuid: uuid.NewString()}
	f.c.now = func() time.Time { return f.now }
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	f.dead = "https://" + ln.Addr().String()
	ln.Close()
	ctx := context.Background()
	if err := f.c.store.InsertVM(ctx, store.VMRecord{Spec: api.VMSpec{Name: "web-1", UUID: f.uuid, MemoryMiB: 64},
		Host: "host-1", Desired: api.VMRunning, State: api.VMRunning, PID: 100, Created: f.now, Updated: f.now}); err != nil {
		t.Fatal(err)
	}
	f.beat(t, "host-1", api.VMRunning)
	f.beat(t, "host-2", "")
	return f
}

// beat sends host's heartbeat a second after the last one, reporting web-1 in state
// (none when "").
func (f *evidenceFixture) beat(t *testing.T, host, state string) {
	t.Helper()
	f.now = f.now.Add(time.Second)
	facts := api.HostFacts{Name: host, AgentURL: f.dead}
	if state != "" {
		facts.VMs = []api.VMStatus{{Name: "web-1", UUID: f.uuid, State: state, PID: 200}}
	}
	if _, err := f.c.heartbeat(context.Background(), facts); err != nil {
		t.Fatalf("heartbeat of %s: %v", host, err)
	}
}

// running runs the center until the test ends and records migration id of web-1,
// host-1 → host-2, as running since started, with its task; nothing follows it yet.
func (f *evidenceFixture) running(t *testing.T, id string, started time.Time) (context.Context, api.Migration) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(func() { cancel(); f.c.wg.Wait() })
	f.c.runCtx = ctx
	m := api.Migration{ID: id, VM: "web-1", Source: "host-1", Destination: "host-2", State: api.MigrationRunning, Started: started}
	if err := f.c.recordNewMigration(ctx, m, "alice"); err != nil {
		t.Fatal(err)
	}
	return ctx, m
}

// waitEnded waits (up to 10 s) for migration id to end, and returns it as last read.
func (f *evidenceFixture) waitEnded(t *testing.T, id string) api.Migration {
	t.Helper()
	var cur api.Migration
	for end := time.Now().Add(10 * time.Second); time.Now().Before(end); time.Sleep(50 * time.Millisecond) {
		if cur, _ = f.c.getMigration(context.Background(), id); terminal(cur.State) {
			break
		}
	}
	return cur
}

// waitUnreachable waits (up to 20 s) for migration id's task to say that the center cannot
// reach host-1, and returns the task as it last read it.
func (f *evidenceFixture) waitUnreachable(t *testing.T, id string) api.Task {
	t.Helper()
	var task api.Task
	for end := time.Now().Add(20 * time.Second); time.Now().Before(end); time.Sleep(50 * time.Millisecond) {
		if task, _ = f.c.getTask(context.Background(), id); strings.Contains(task.Progress.Phase, "cannot reach source host host-1") {
			break
		}
	}
	return task
}

func (f *evidenceFixture) host(t *testing.T) string {
	t.Helper()
	r, err := f.c.store.VM(context.Background(), "web-1")
	if err != nil {
		t.Fatal(err)
	}
	return r.Host
}

// A migration's outcome is decided by the hosts' reports, never by how long the source
// has been silent, and only when they leave no doubt.
func TestSettleByEvidence(t *testing.T) {
	f := newEvidenceFixture(t)
	ctx := context.Background()
	m := api.Migration{ID: "m-1", VM: "web-1", Source: "host-1", Destination: "host-2", State: api.MigrationRunning}
	cause := context.DeadlineExceeded
	pending := func(what string, unknown bool) {
		t.Helper()
		if got, ok := f.c.settleByEvidence(ctx, m, unknown, cause); ok {
			t.Errorf("%s: settled as %s (%s); want pending", what, got.State, got.Error)
		}
	}
	pending("source runs it, destination has nothing, the source just does not answer", false)
	f.beat(t, "host-2", api.VMIncoming)
	pending("a copy still incoming", true)
	f.beat(t, "host-2", api.VMRunning)
	pending("both run it", true)

	// The source falls silent: its last report is stale, so nothing is concluded.
	f.now = f.now.Add(time.Minute)
	f.beat(t, "host-2", api.VMRunning)
	pending("the destination runs it, the source is disconnected", false)

	f.beat(t, "host-1", "")
	if got, ok := f.c.settleByEvidence(ctx, m, false, cause); !ok || got.State != api.MigrationSucceeded || got.Finished == nil {
		t.Errorf("destination runs it, source has it no more: %+v, %v; want succeeded", got, ok)
	}

	f.beat(t, "host-1", api.VMRunning)
	f.beat(t, "host-2", "")
	pending("the source runs it and only does not answer", false)
	got, ok := f.c.settleByEvidence(ctx, m, true, cause)
	if !ok || got.State != api.MigrationFailed || !strings.Contains(got.Error, "source host host-1 has no record of the migration") {
		t.Errorf("source runs it and has no record, destination has nothing: %+v, %v; want failed with the reason", got, ok)
	}
}

// A followed migration whose source agent does not answer stays pending, and its task
// says why, for as long as it takes; the hosts' heartbeats then settle it.
func TestFollowWaitsForEvidence(t *testing.T) {
	f := newEvidenceFixture(t)
	ctx, m := f.running(t, "m-2", f.now)
	f.c.follow(m)

	task := f.waitUnreachable(t, m.ID)
	if task.State != api.TaskRunning || !strings.HasPrefix(task.Progress.Phase, "waiting: the center cannot reach source host host-1") {
		t.Fatalf("task while the source does not answer: %+v; want running, waiting for host-1", task)
	}
	// Much later than any timeout the center ever had: still pending.
	f.now = f.now.Add(time.Hour)
	f.beat(t, "host-1", api.VMRunning)
	f.beat(t, "host-2", api.VMIncoming)
	time.Sleep(2 * retryEvery)
	if cur, _ := f.c.getMigration(ctx, m.ID); terminal(cur.State) || f.host(t) != "host-1" {
		t.Fatalf("migration without evidence: %+v on %s; want pending", cur, f.host(t))
	}

	// The hosts report it done: the destination runs the VM, the source has it no more.
	f.beat(t, "host-2", api.VMRunning)
	f.beat(t, "host-1", "")
	cur := f.waitEnded(t, m.ID)
	if cur.State != api.MigrationSucceeded || cur.Waiting != "" || f.host(t) != "host-2" {
		t.Fatalf("migration after the hosts' reports: %+v, VM on %s; want succeeded, on host-2", cur, f.host(t))
	}
	if task, _ = f.c.getTask(ctx, m.ID); task.State != api.TaskSucceeded {
		t.Fatalf("task after the outcome: %+v", task)
	}
}

// A heartbeat that reports a VM running on another host than recorded corrects the
// record — with a log line and an audit record — when no migration of it is under way
// and the recorded host, connected, does not run it; on any doubt it changes nothing.
func TestHeartbeatCorrectsTheVMsHost(t *testing.T) {
	f := newEvidenceFixture(t)
	ctx := context.Background()

	f.beat(t, "host-2", api.VMRunning)
	if h := f.host(t); h != "host-1" {
		t.Fatalf("VM reported running on both hosts moved to %s; want it left on host-1", h)
	}
	f.beat(t, "host-1", "")
	if err := f.c.store.InsertMigration(ctx, api.Migration{ID: "m-3", VM: "web-1", Source: "host-1", Destination: "host-2",
		State: api.MigrationRunning, Started: f.now}); err != nil {
		t.Fatal(err)
	}
	f.beat(t, "host-2", api.VMRunning)
	if h := f.host(t); h != "host-1" {
		t.Fatalf("VM moved to %s while its migration is under way; its outcome moves it", h)
	}
	end := f.now
	if err := f.c.store.UpdateMigration(ctx, api.Migration{ID: "m-3", VM: "web-1", Source: "host-1", Destination: "host-2",
		State: api.MigrationFailed, Started: f.now, Finished: &end, Error: "lost"}); err != nil {
		t.Fatal(err)
	}
	f.now = f.now.Add(time.Minute) // host-1 is silent now
	f.beat(t, "host-2", api.VMRunning)
	if h := f.host(t); h != "host-1" {
		t.Fatalf("VM moved to %s while host-1 was disconnected", h)
	}
	if rs, _ := f.c.trail.List(ctx, audit.Filter{Action: "vm.reconcile"}); len(rs) != 0 {
		t.Fatalf("corrections recorded on doubt: %+v", rs)
	}

	// host-1 reports again without it (its first report only marks the VM in error,
	// which changes the record: a report must be newer than the record to count).
	f.beat(t, "host-1", "")
	f.beat(t, "host-2", api.VMRunning)
	if h := f.host(t); h != "host-1" {
		t.Fatalf("VM moved to %s on a report of host-1 no newer than the VM's record", h)
	}
	f.beat(t, "host-1", "")
	// The correction commits with its record or not at all.
	lift := failAudit(t, f.c)
	f.now = f.now.Add(time.Second)
	if _, err := f.c.heartbeat(ctx, api.HostFacts{Name: "host-2", AgentURL: f.dead,
		VMs: []api.VMStatus{{Name: "web-1", UUID: f.uuid, State: api.VMRunning, PID: 200}}}); err == nil || !strings.Contains(err.Error(), "audit") {
		t.Fatalf("a correction with the audit trail failing: %v; want an error naming the audit trail", err)
	}
	if h := f.host(t); h != "host-1" {
		t.Fatalf("the VM moved to %s though the correction's record could not be written", h)
	}
	lift()
	f.beat(t, "host-2", api.VMRunning)
	r, err := f.c.store.VM(ctx, "web-1")
	if err != nil || r.Host != "host-2" || r.State != api.VMRunning || r.PID != 200 {
		t.Fatalf("VM after host-2 reports it and host-1 does not: %+v, %v; want on host-2, pid 200", r, err)
	}
	rs, err := f.c.trail.List(ctx, audit.Filter{Action: "vm.reconcile"})
	if err != nil || len(rs) != 1 || rs[0].Target != "web-1" || rs[0].Actor != audit.CenterActor ||
		param(t, rs[0], "recorded_host") != "host-1" || param(t, rs[0], "runs_on") != "host-2" {
		t.Fatalf("audit records of the correction: %+v, %v", rs, err)
	}
}

// TestHeartbeatAgreementSkipsOnlyWhatItMay: a host that reports again what agreed with
// the store reads nothing; a change in the store since, or in the report, is acted on.
func TestHeartbeatAgreementSkipsOnlyWhatItMay(t *testing.T) {
	f := newEvidenceFixture(t)
	ctx := context.Background()
	f.beat(t, "host-1", api.VMRunning) // agrees with what the first beat wrote
	if _, ok := f.c.agreed.Load("host-1"); !ok {
		t.Fatal("a report that agrees with the store was not remembered")
	}
	state := func() api.VMStatus {
		t.Helper()
		r, err := f.c.store.VM(ctx, "web-1")
		if err != nil {
			t.Fatal(err)
		}
		return api.VMStatus{State: r.State, PID: r.PID}
	}
	// The store changes behind the host's back: the same report must be compared again.
	if err := f.c.store.SetState(ctx, "web-1", api.VMStatus{State: api.VMStopped}, f.now); err != nil {
		t.Fatal(err)
	}
	f.beat(t, "host-1", api.VMRunning)
	if s := state(); s.State != api.VMRunning || s.PID != 200 {
		t.Errorf("after the store changed, the same report left the VM %+v; want running, PID 200", s)
	}
	f.beat(t, "host-1", api.VMRunning)
	if _, ok := f.c.agreed.Load("host-1"); !ok {
		t.Error("the report agreed again but was not remembered")
	}
	// The report changes.
	f.beat(t, "host-1", api.VMStopped)
	if s := state(); s.State != api.VMStopped {
		t.Errorf("a report of the VM stopped left it %+v", s)
	}
	// A host that stops reporting the VM has nothing remembered.
	f.beat(t, "host-1", "")
	if _, ok := f.c.agreed.Load("host-1"); ok {
		t.Error("a report without a VM recorded on the host was remembered as agreeing")
	}
}

// The migration loop is driven from the store: a migration the store holds as under way
// that nothing drives (its request died between its record and the loop) is found by the
// loop's look in the store, followed — its task says the center waits for the source,
// which does not answer — and settled when the hosts' heartbeats show where the VM runs.
func TestLoopTakesWhatTheStoreHolds(t *testing.T) {
	f := newEvidenceFixture(t)
	ctx, m := f.running(t, "m-orphan", f.now.Add(-time.Minute))
	loop := f.c.migrations()
	if _, ok := f.c.live.Load(m.ID); ok {
		t.Fatal("the loop drives the migration before it looked in the store")
	}
	loop.send(loopMsg{scan: true})
	task := f.waitUnreachable(t, m.ID)
	if _, ok := f.c.live.Load(m.ID); !ok || !strings.Contains(task.Progress.Phase, "cannot reach source host host-1") {
		t.Fatalf("after the loop's look in the store: followed %v, task %+v; want it followed, waiting for host-1", ok, task)
	}
	f.beat(t, "host-2", api.VMRunning)
	f.beat(t, "host-1", "")
	cur := f.waitEnded(t, m.ID)
	if cur.State != api.MigrationSucceeded {
		t.Fatalf("the adopted migration after the hosts' reports: %+v; want succeeded", cur)
	}
	if r, err := f.c.store.VM(ctx, "web-1"); err != nil || r.Host != "host-2" {
		t.Fatalf("VM web-1 after the outcome: %+v %v; want it on host-2", r.Host, err)
	}
}
