package center

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/godwit/godwit/internal/admission"
	"github.com/godwit/godwit/internal/api"
	"github.com/godwit/godwit/internal/audit"
	"github.com/godwit/godwit/internal/migration"
	"github.com/godwit/godwit/internal/store"
	"github.com/godwit/godwit/internal/ticket"
)

func terminal(state string) bool {
	return state == api.MigrationSucceeded || state == api.MigrationFailed || state == api.MigrationCancelled
}

// migrateVM checks a live migration with the destination, asks the source to start it,
// and follows it in the background until it ends. The migration is a task of
// initiator's, under the migration's id.
// plan is a migration checked and ready to queue: its record (state queued), what it
// costs against the limits, and the source's client.
type plan struct {
	m        api.Migration
	costs    map[string]int
	priority admission.Priority
	src      store.HostRecord
	dst      store.HostRecord
	// memoryMiB is the VM's memory, which the move adds to the destination.
	memoryMiB int
}

// planMigration checks a migration request without changing anything: the VM, the
// policy, the encryption and the priority; the destination's compatibility (the
// wizard's checks); and the destination agent's own preflight.
func (c *Center) planMigration(ctx context.Context, name string, req api.MigrateRequest) (plan, error) {
	r, err := c.record(ctx, name)
	if err != nil {
		return plan{}, err
	}
	if req.To == "" {
		return plan{}, api.BadRequest("give the destination host (`--to HOST`), or let the wizard choose (`godwit vm migrate %s` without --to)", name)
	}
	if req.Policy == "" {
		req.Policy = r.Spec.MigrationPolicy
	}
	policy, err := migration.LookupPolicy(req.Policy)
	if err != nil {
		return plan{}, invalid("%v", err)
	}
	encryption := policy.EncryptionMode()
	if req.Encryption != "" {
		if encryption, err = migration.ParseEncryption(req.Encryption); err != nil {
			return plan{}, invalid("%v", err)
		}
	}
	priority := admission.Normal
	if req.Priority != "" {
		if priority, err = admission.ParsePriority(req.Priority); err != nil {
			return plan{}, invalid("%v", err)
		}
	}
	// Post-copy is the policy's choice or the request's; a policy cannot forbid what
	// the user asks for, since no built-in policy allows it.
	postcopy := policy.AllowPostcopy || req.Postcopy
	audit.Params(ctx, map[string]any{"source": r.Host, "destination": req.To, "policy": policy.Name,
		"encryption": encryption, "priority": string(priority), "postcopy": postcopy})
	if r.Host == req.To {
		return plan{}, invalid("VM %s already runs on %s; choose another destination", name, req.To)
	}
	if r.State != api.VMRunning {
		return plan{}, api.Conflict("VM %s is %s; only a running VM can be live-migrated", name, r.State)
	}
	active, err := c.store.Migrations(ctx, name, true, 1)
	if err != nil {
		return plan{}, err
	}
	if len(active) > 0 {
		return plan{}, api.Conflict("VM %s is already being migrated (migration %s, %s); wait for it or cancel it", name, active[0].ID, active[0].State)
	}
	src, _, err := c.hostOf(ctx, r, "be migrated")
	if err != nil {
		return plan{}, err
	}
	dst, err := c.store.Host(ctx, req.To)
	if errors.Is(err, store.ErrNotFound) {
		return plan{}, invalid("there is no host named %q; `godwit host list` shows the hosts", req.To)
	}
	if err != nil {
		return plan{}, err
	}
	if !c.connected(dst) {
		return plan{}, api.Errorf(http.StatusConflict, "host_disconnected", "destination %s is disconnected; choose another host", req.To)
	}
	if _, err := c.destinationFindings(ctx, name, req.To); err != nil {
		return plan{}, err
	}
	dstClient, err := c.agent(dst, time.Minute)
	if err != nil {
		return plan{}, err
	}
	pre := api.IncomingRequest{Source: src.Facts.Name, Spec: r.Spec, QEMUVersion: src.Facts.QEMUVersion, Policy: policy.Name, Address: dst.Facts.Address}
	if err := dstClient.Do(ctx, http.MethodPost, "/agent/v1/preflight", pre, nil); err != nil {
		return plan{}, hostError(dst.Facts.Name, "check the migration of "+name, err)
	}
	m := api.Migration{
		ID: c.newID(), VM: name, Source: src.Facts.Name, Destination: dst.Facts.Name,
		Policy: policy.Name, State: api.MigrationQueued, Started: c.now().UTC(), Encryption: encryption,
		Priority: string(priority), PostcopyAllowed: postcopy,
	}
	costs := admission.MigrationCosts(m.Source, m.Destination, []string{c.cfg.MigrationNetwork}, vmDatastores(r.Spec))
	return plan{m: m, costs: costs, priority: priority, src: src, dst: dst, memoryMiB: r.Spec.MemoryMiB}, nil
}

// issueTicket is the center's signed word for a migration that is about to start
// (internal/ticket): the VM as stored now (its spec's hash), the two hosts, the
// encryption, whether it may switch to post-copy, and the stream's own key. The hosts act on it and on nothing else.
func (c *Center) issueTicket(ctx context.Context, m api.Migration) (string, error) {
	r, err := c.store.VM(ctx, m.VM)
	if err != nil {
		return "", fmt.Errorf("the VM of migration %s: %w", m.ID, err)
	}
	key, err := ticket.NewKey()
	if err != nil {
		return "", err
	}
	now := c.now().UTC()
	return ticket.Sign(ticket.Ticket{Migration: m.ID, VM: m.VM, VMUUID: r.Spec.UUID, Source: m.Source, Destination: m.Destination,
		SpecSHA256: ticket.SpecHash(r.Spec), Encryption: m.Encryption, Postcopy: m.PostcopyAllowed, Key: key, Issued: now, Expires: now.Add(ticket.Lifetime)}, c.ca.Signer())
}

// migrateVM checks and then starts or queues a migration (see submit).
func (c *Center) migrateVM(ctx context.Context, name string, req api.MigrateRequest, initiator string) (api.Migration, error) {
	p, err := c.planMigration(ctx, name, req)
	if err != nil {
		return api.Migration{}, err
	}
	return c.submit(ctx, p, initiator)
}

// Following a migration. The source agent owns a migration once it started it, so its
// record is the truth: the migration loop (reconcile.go) takes the views its source
// pushes on the host's progress stream (feed.go), or asks for them while the stream
// cannot tell, and records what they say. When the source cannot be reached, or no
// longer knows the migration, the outcome is never guessed from a timeout: the
// migration keeps its last known state, its task says what the center waits for, and
// the outcome is recorded when a host that knows answers — the source's record, or the
// hosts' heartbeats (settleByEvidence).

// withOrigin is the source's view cur of migration m, with when and how the migration
// began as the center's own record knows it, should the source have had to rebuild its
// record after a restart.
func withOrigin(cur, m api.Migration) api.Migration {
	if cur.Started.IsZero() || m.Started.Before(cur.Started) {
		cur.Started = m.Started
	}
	if cur.Policy == "" {
		cur.Policy = m.Policy
	}
	if cur.Prediction == nil {
		cur.Prediction = m.Prediction
	}
	// Who asked, and the plan it belongs to, are the center's to know, not the source's.
	if cur.Initiator == "" {
		cur.Initiator = m.Initiator
	}
	if cur.Plan == "" {
		cur.Plan, cur.Reason = m.Plan, m.Reason
	}
	return cur
}

// waitingFor says, for a migration's task, why its outcome is not known yet.
func waitingFor(m api.Migration, unknown bool, err error) string {
	if unknown {
		return fmt.Sprintf("source host %s has no record of this migration; the outcome is recorded when the hosts' heartbeats show where the VM runs", m.Source)
	}
	return fmt.Sprintf("the center cannot reach source host %s (%v); the outcome is recorded when %s answers or the hosts' heartbeats show where the VM runs",
		m.Source, err, m.Source)
}

func (c *Center) pollSource(ctx context.Context, m api.Migration) (api.Migration, error) {
	h, err := c.store.Host(ctx, m.Source)
	if err != nil {
		return m, err
	}
	cl, err := c.agent(h, 5*time.Second)
	if err != nil {
		return m, err
	}
	var cur api.Migration
	err = cl.Do(ctx, http.MethodGet, "/agent/v1/migrations/"+m.ID, nil, &cur)
	return cur, err
}

// record1 stores a finished migration, moves the VM on success, and gives the
// migration's slots back. Outcome, move and the outcome's audit record are one
// transaction: when the record cannot be written, nothing is, and the error says so.
func (c *Center) record1(ctx context.Context, m api.Migration) error {
	defer c.release(m.ID)
	m.Waiting = ""
	var moved *api.VMStatus
	if m.State == api.MigrationSucceeded {
		// Host and state change together, so no reader sees the new host with the
		// source's process.
		st := c.observe(ctx, m.Destination, m.VM)
		moved = &st
	}
	rec := c.trail.MigrationEnded(ctx, m)
	if err := c.store.EndMigration(store.WithTxHook(ctx, c.trail.AppendHook(rec)), m, moved, c.now()); err != nil {
		c.log.Error("could not record the migration's outcome; it stays unsettled", "migration", m.ID, "vm", m.VM,
			"state", m.State, "err", err)
		return err
	}
	c.migrationChanged(ctx, m)
	if m.Plan != "" {
		c.wakePlans()
	}
	c.metrics.RecordMigration(m)
	c.links.learn(m)
	c.log.Info("migration ended", "migration", m.ID, "vm", m.VM, "state", m.State, "total_ms", m.TotalMS,
		"downtime_ms", m.DowntimeMS, "bytes", m.Bytes, "passes", m.Passes, "error", m.Error)
	return nil
}

// settleByEvidence decides a migration whose source does not answer, or answers that
// it has no record of it (unknown), from what the hosts report in their heartbeats —
// only from hosts that are connected and have reported since the migration started,
// and only when the evidence leaves no doubt:
//
//   - the destination runs the VM and the source no longer has it: succeeded;
//   - the source has no record of the migration and runs the VM, and the destination
//     does not have it: failed, the VM stays on the source.
//
// Anything else (a host disconnected, a copy still incoming, both running it) leaves
// the outcome pending (ok false).
func (c *Center) settleByEvidence(ctx context.Context, m api.Migration, unknown bool, cause error) (api.Migration, bool) {
	r, err := c.store.VM(ctx, m.VM)
	if err != nil {
		return m, false
	}
	src, srcOK := c.reports(ctx, m.Source, r.Spec.UUID, m.Started)
	dst, dstOK := c.reports(ctx, m.Destination, r.Spec.UUID, m.Started)
	if !srcOK || !dstOK {
		return m, false
	}
	now := c.now().UTC()
	m.Finished = &now
	switch {
	case dst != nil && dst.State == api.VMRunning && src == nil:
		m.State, m.Error = api.MigrationSucceeded, ""
		c.log.Info("migration settled by the hosts' heartbeats: the destination runs the VM and the source no longer has it",
			"migration", m.ID, "vm", m.VM, "source_error", cause)
		return m, true
	case unknown && src != nil && src.State == api.VMRunning && dst == nil:
		m.State = api.MigrationFailed
		m.Error = fmt.Sprintf("source host %s has no record of the migration (%v); the VM runs on %s and %s does not have it",
			m.Source, cause, m.Source, m.Destination)
		return m, true
	}
	return m, false
}

// reports returns what a connected host last reported of the VM with uuid (nil when it
// does not have it); ok is false when the host is unknown, disconnected, or has not
// reported since since, so that its report may be stale.
func (c *Center) reports(ctx context.Context, host, uuid string, since time.Time) (st *api.VMStatus, ok bool) {
	h, err := c.store.Host(ctx, host)
	if err != nil || !c.connected(h) || !h.LastHeartbeat.After(since) {
		return nil, false
	}
	for _, v := range h.Facts.VMs {
		if strings.EqualFold(v.UUID, uuid) {
			return &v, true
		}
	}
	return nil, true
}

func (c *Center) getMigration(ctx context.Context, id string) (api.Migration, error) {
	if v, ok := c.live.Load(id); ok {
		return v.(api.Migration), nil
	}
	m, err := c.store.Migration(ctx, id)
	if errors.Is(err, store.ErrNotFound) {
		return m, api.NotFound("no migration %s; `godwit migration list` shows them", id)
	}
	return m, err
}

func (c *Center) listMigrations(ctx context.Context, vm string) ([]api.Migration, error) {
	ms, err := c.store.Migrations(ctx, vm, false, 200)
	if err != nil {
		return nil, err
	}
	return withLive(ms, func(m api.Migration) string { return m.ID }, &c.live), nil
}

// withLive replaces stored records by the newer views kept in live, keyed by id.
func withLive[T any](recs []T, id func(T) string, live *sync.Map) []T {
	for i := range recs {
		if v, ok := live.Load(id(recs[i])); ok {
			recs[i] = v.(T)
		}
	}
	return recs
}

func (c *Center) cancelMigration(ctx context.Context, id string) (api.Migration, error) {
	m, err := c.getMigration(ctx, id)
	if err != nil {
		return m, err
	}
	audit.Params(ctx, map[string]any{"vm": m.VM})
	if terminal(m.State) {
		return m, api.Conflict("migration %s has already %s", id, m.State)
	}
	if ended, ok, err := c.cancelQueued(ctx, id); ok {
		c.log.Info("queued migration cancelled", "migration", id, "vm", m.VM)
		return ended, err
	}
	h, err := c.store.Host(ctx, m.Source)
	if err != nil {
		return m, err
	}
	cl, err := c.agent(h, 10*time.Second)
	if err != nil {
		return m, err
	}
	if err := cl.Do(ctx, http.MethodPost, "/agent/v1/migrations/"+id+"/cancel", nil, nil); err != nil {
		return m, hostError(m.Source, "cancel migration "+id, err)
	}
	c.log.Info("migration cancel requested", "migration", id, "vm", m.VM)
	return c.getMigration(ctx, id)
}

// migrating reports whether a VM has a migration being followed.
func (c *Center) migrating(vm string) bool {
	found := false
	c.live.Range(func(_, v any) bool {
		if v.(api.Migration).VM == vm {
			found = true
		}
		return !found
	})
	return found
}

// observe asks a host for its view of one VM now, rather than waiting for its next
// heartbeat; if the host cannot say, the VM is taken to be running.
func (c *Center) observe(ctx context.Context, host, vm string) api.VMStatus {
	fallback := api.VMStatus{Name: vm, State: api.VMRunning}
	h, err := c.store.Host(ctx, host)
	if err != nil {
		return fallback
	}
	cl, err := c.agent(h, 5*time.Second)
	if err != nil {
		return fallback
	}
	var sts []api.VMStatus
	if err := cl.Do(ctx, http.MethodGet, "/agent/v1/vms", nil, &sts); err != nil {
		return fallback
	}
	for _, s := range sts {
		if s.Name == vm {
			return s
		}
	}
	return fallback
}
