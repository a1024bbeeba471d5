package center

import (
	"context"
	"crypto"
	"errors"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/godwit/godwit/internal/api"
	"github.com/godwit/godwit/internal/audit"
	"github.com/godwit/godwit/internal/store"
)

// failAudit makes every audit append fail, as a full disk or a damaged table would, by a
// trigger on the real database; the returned function lifts it.
func failAudit(t *testing.T, c *Center) func() {
	t.Helper()
	ctx := context.Background()
	if _, err := c.store.DB().ExecContext(ctx, `CREATE TRIGGER audit_fails BEFORE INSERT ON audit_log
		BEGIN SELECT RAISE(ABORT, 'the audit trail cannot be written'); END`); err != nil {
		t.Fatal(err)
	}
	return func() {
		t.Helper()
		if _, err := c.store.DB().ExecContext(ctx, `DROP TRIGGER audit_fails`); err != nil {
			t.Fatal(err)
		}
	}
}

// When the audit trail cannot take a request's record, the request fails with a 5xx and
// changes nothing; once it can, the same requests succeed, each with its record.
func TestStateChangesFailWithoutTheirAuditRecord(t *testing.T) {
	f := newScheduleFixture(t)
	ctx := context.Background()
	cases := []struct {
		method, path, body, action string
		changed                    func() bool
	}{
		{http.MethodPost, "/api/v1/users", `{"name":"bob","role":"viewer","password":"correct horse"}`, "user.create", func() bool {
			_, err := f.c.store.User(ctx, "bob")
			return !errors.Is(err, store.ErrNotFound)
		}},
		{http.MethodPost, "/api/v1/hosts/host-1/maintenance", `{"enter":true,"reason":"new disks"}`, "host.maintenance", func() bool {
			m, err := f.c.store.Maintenances(ctx)
			if err != nil {
				t.Fatal(err)
			}
			_, in := m["host-1"]
			return in
		}},
		{http.MethodPost, "/api/v1/schedules", `{"name":"later","at":"+90m","migrate":{"vms":["web-1"],"to":"host-2"}}`, "schedule.create", func() bool {
			_, err := f.c.store.Schedule(ctx, "later")
			return !errors.Is(err, store.ErrNotFound)
		}},
		{http.MethodPost, "/api/v1/join-tokens", `{"host":"host-3"}`, "host.join-token.create", func() bool {
			ts, err := f.c.store.JoinTokens(ctx)
			if err != nil {
				t.Fatal(err)
			}
			return len(ts) > 0
		}},
	}

	lift := failAudit(t, f.c)
	for _, tc := range cases {
		status, body := f.do(t, tc.method, tc.path, tc.body)
		if status < 500 || !strings.Contains(body, "audit trail") {
			t.Errorf("%s %s with the audit trail failing: %d %s; want a 5xx that names the audit trail", tc.method, tc.path, status, body)
		}
		if tc.changed() {
			t.Errorf("%s %s with the audit trail failing changed the center's state", tc.method, tc.path)
		}
	}
	if recs := f.records(t, ""); len(recs) != 0 {
		t.Fatalf("the failing trail holds %d records", len(recs))
	}

	lift()
	for _, tc := range cases {
		if status, body := f.do(t, tc.method, tc.path, tc.body); status >= 300 {
			t.Fatalf("%s %s: %d %s", tc.method, tc.path, status, body)
		}
		if !tc.changed() {
			t.Errorf("%s %s succeeded but changed nothing", tc.method, tc.path)
		}
		if recs := f.records(t, tc.action); len(recs) != 1 || recs[0].Outcome != audit.Succeeded {
			t.Errorf("%s %s: records %+v; want one, succeeded", tc.method, tc.path, recs)
		}
	}
	if v, err := f.c.trail.Verify(ctx); err != nil || !v.OK {
		t.Fatalf("verify: %+v %v", v, err)
	}
}

// A migration's outcome, the VM's move and the outcome's audit record are one
// transaction: with the trail failing, none is written (and the center says so); once it
// works, all three are.
func TestMigrationOutcomeCommitsWithItsRecord(t *testing.T) {
	f := newScheduleFixture(t)
	ctx := context.Background()
	m := api.Migration{ID: "m1", VM: "web-1", Source: "host-1", Destination: "host-2", Policy: "balanced",
		State: api.MigrationRunning, Started: f.now}
	if err := f.c.store.InsertMigration(ctx, m); err != nil {
		t.Fatal(err)
	}
	m.State, m.TotalMS, m.Bytes = api.MigrationSucceeded, 1500, 64<<20

	lift := failAudit(t, f.c)
	if err := f.c.record1(ctx, m); err == nil || !strings.Contains(err.Error(), "audit") {
		t.Fatalf("record1 with the audit trail failing: %v; want an error naming the audit trail", err)
	}
	vm, err := f.c.store.VM(ctx, "web-1")
	if err != nil {
		t.Fatal(err)
	}
	stored, err := f.c.store.Migration(ctx, "m1")
	if err != nil {
		t.Fatal(err)
	}
	if vm.Host != "host-1" || stored.State != api.MigrationRunning {
		t.Fatalf("with the outcome's record refused, the VM is on %s and the migration %s; want host-1 and running (nothing written)",
			vm.Host, stored.State)
	}

	lift()
	if err := f.c.record1(ctx, m); err != nil {
		t.Fatal(err)
	}
	vm, _ = f.c.store.VM(ctx, "web-1")
	stored, _ = f.c.store.Migration(ctx, "m1")
	fin := f.records(t, "migration.finish")
	if vm.Host != "host-2" || stored.State != api.MigrationSucceeded || len(fin) != 1 || fin[0].Target != "m1" ||
		fin[0].Outcome != audit.Succeeded {
		t.Fatalf("after the outcome was recorded: VM on %s, migration %s, records %+v; want host-2, succeeded and one record",
			vm.Host, stored.State, fin)
	}
}

// The refusals an agent reports are recorded within the trail's bounds, however long the
// paths and reasons the agent was sent.
func TestAgentRefusalsAreBounded(t *testing.T) {
	c := newTestCenter(t)
	ctx := context.Background()
	huge := strings.Repeat("/x", 300<<10)
	c.recordRefusals(ctx, "host-1", []api.AgentRefusal{{From: "198.18.0.9:4000" + huge, Method: "POST" + huge, Path: huge,
		Subject: "mallory" + huge, Reason: "no certificate" + huge}})
	recs, err := c.trail.List(ctx, audit.Filter{Action: "agent.request"})
	if err != nil || len(recs) != 1 {
		t.Fatalf("records %+v %v; want one", recs, err)
	}
	r := recs[0]
	size := len(r.Actor) + len(r.From) + len(r.Target) + len(r.Error) + len(r.Params)
	if len(r.Actor) > audit.MaxField || len(r.From) > audit.MaxField || len(r.Error) > audit.MaxError ||
		len(r.Params) > audit.MaxParams || size > 16<<10 || !strings.Contains(string(r.Params), "bytes)") {
		t.Fatalf("an agent's refusal of a 600 KiB request is recorded in %d bytes (actor %d, from %d, error %d, params %d): %.300s",
			size, len(r.Actor), len(r.From), len(r.Error), len(r.Params), r.Params)
	}
}

// A heartbeat's reply carries the center's signed checkpoint of the trail's head, which
// the host reports back; a host whose checkpoint the trail no longer holds gets none.
func TestHeartbeatCarriesAuditCheckpoint(t *testing.T) {
	f := newScheduleFixture(t)
	f.now = time.Now() // checkpoints are signed while the center's certificate is valid
	ctx := context.Background()
	if status, body := f.do(t, http.MethodPost, "/api/v1/hosts/host-1/maintenance", `{"enter":true}`); status != http.StatusOK {
		t.Fatalf("maintenance: %d %s", status, body)
	}
	facts := api.HostFacts{Name: "host-2", AgentURL: "https://198.18.0.12:7700"}
	rep, err := f.c.heartbeat(ctx, facts)
	if err != nil || rep.AuditCheckpoint == nil {
		t.Fatalf("heartbeat: %+v %v; want a checkpoint", rep, err)
	}
	v, err := f.c.trail.Verify(ctx)
	if err != nil {
		t.Fatal(err)
	}
	cp := rep.AuditCheckpoint
	if cp.ID != v.HeadID || cp.Hash != v.HeadHash || audit.VerifyCheckpoint(*cp, f.c.ca.Pool()) != nil {
		t.Fatalf("checkpoint %d %s; want the head %d %s, signed by the center", cp.ID, cp.Hash, v.HeadID, v.HeadHash)
	}
	facts.AuditCheckpoint = cp
	if _, err := f.c.heartbeat(ctx, facts); err != nil {
		t.Fatal(err)
	}
	if h, err := f.c.store.Host(ctx, "host-2"); err != nil || h.Facts.AuditCheckpoint != nil {
		t.Fatalf("the host's checkpoint was stored with its facts: %+v %v", h.Facts.AuditCheckpoint, err)
	}
	if v, _ := f.c.trail.Verify(ctx); !v.OK || len(v.Anchors) != 1 || v.Anchors[0].Host != "host-2" || v.Anchors[0].Status != audit.AnchorHolds {
		t.Fatalf("verify: %+v", v)
	}
	ahead, err := audit.SignCheckpoint(cp.ID+5, cp.Hash, f.now, f.c.identity.Cert.PrivateKey.(crypto.Signer), f.c.identity.Leaf)
	if err != nil {
		t.Fatal(err)
	}
	facts.AuditCheckpoint = &ahead
	if rep, err := f.c.heartbeat(ctx, facts); err != nil || rep.AuditCheckpoint != nil {
		t.Fatalf("a host holding a checkpoint past the head got %+v %v; want none, so that it keeps its evidence", rep.AuditCheckpoint, err)
	}
	if v, _ := f.c.trail.Verify(ctx); v.OK || v.Broken == nil || v.Broken.Problem != audit.ProblemCut {
		t.Fatalf("verify with a checkpoint past the head: %+v", v)
	}
}

// The center's own changes commit with their records too: a schedule's missed run is
// not skipped while the trail cannot say so, and is skipped, with its record, once it
// can.
func TestScheduleSkipCommitsWithItsRecord(t *testing.T) {
	f := newScheduleFixture(t)
	ctx := context.Background()
	at, start := f.missBriefly(t)

	lift := failAudit(t, f.c)
	f.c.scheduleTick(ctx, start, f.now)
	if s := f.show(t, "brief"); s.Skipped != nil || s.LastTask != "" {
		t.Fatalf("with the trail failing the missed run was settled: %+v", s)
	}
	lift()
	f.c.scheduleTick(ctx, start, f.now)
	if s := f.show(t, "brief"); s.Skipped == nil || !s.Skipped.Equal(at) || len(f.records(t, "schedule.missed")) != 1 {
		t.Fatalf("once the trail works: %+v, %d schedule.missed records; want it skipped with one record", s, len(f.records(t, "schedule.missed")))
	}
}
