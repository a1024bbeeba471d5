package center

import (
	"context"
	"errors"
	"fmt"
	"math"
	"net/http"
	"sort"
	"time"

	"github.com/godwit/godwit/internal/admission"
	"github.com/godwit/godwit/internal/api"
	"github.com/godwit/godwit/internal/audit"
	"github.com/godwit/godwit/internal/store"
)

// Concurrent migrations under limits (internal/admission): every migration costs a slot
// on its source host, its destination host, the migration network and each datastore of
// its disks; limits default to vCenter's (4 per host, 8 per network, 128 per datastore).
// Work beyond a limit is queued, not failed, and its task says what it waits for. High
// priority is never queued: it starts at once or is refused with the reason. Admitted
// migrations share the migration network's rate by priority weight (high 4, normal 2,
// low 1): each source agent caps its stream at its share, and the center updates the
// caps whenever a migration is admitted or released.

// submitted is the outcome submit waits for: the migration started, queued, or failed
// to start.
type submitted struct {
	m   api.Migration
	err error
}

// submit records a planned migration and hands it to the limiter. A high-priority one is
// admitted at once or refused (nothing recorded); a normal or low one waits its turn,
// and submit returns as soon as it has started or is known to wait.
func (c *Center) submit(ctx context.Context, p plan, initiator string) (api.Migration, error) {
	req := admission.Request{ID: p.m.ID, Priority: p.priority, Costs: p.costs}
	p.m.Initiator = initiator
	if p.priority == admission.High {
		t, err := c.limiter.Acquire(ctx, req, nil)
		var busy *admission.BusyError
		if errors.As(err, &busy) {
			return api.Migration{}, api.Errorf(http.StatusConflict, "no_resources", "%v; try later, or ask with normal priority to wait in the queue", err)
		}
		if err != nil {
			return api.Migration{}, err
		}
		// Named before it is stored, so that the request's audit record, written with
		// the migration, names it.
		audit.Params(ctx, map[string]any{"migration": p.m.ID})
		if err := c.recordNewMigration(ctx, p.m, initiator); err != nil {
			t.Release()
			return api.Migration{}, err
		}
		return c.launch(ctx, p, t, false)
	}
	audit.Params(ctx, map[string]any{"migration": p.m.ID})
	if err := c.recordNewMigration(ctx, p.m, initiator); err != nil {
		return api.Migration{}, err
	}
	first := make(chan submitted, 1)
	c.enqueue(p, first)
	select {
	case s := <-first:
		return s.m, s.err
	case <-ctx.Done():
		return c.getMigration(context.WithoutCancel(ctx), p.m.ID)
	}
}

// enqueue waits for p's admission in a goroutine the center owns, then launches it. The
// first outcome (started, queued, failed) goes to first, which must have room for one.
func (c *Center) enqueue(p plan, first chan<- submitted) {
	qctx, cancel := context.WithCancel(c.runCtx)
	c.waiting.Store(p.m.ID, cancel)
	c.live.Store(p.m.ID, p.m)
	c.wg.Add(1)
	go func() {
		defer c.wg.Done()
		defer cancel()
		sent := false
		send := func(m api.Migration, err error) {
			if !sent {
				sent = true
				first <- submitted{m, err}
			}
		}
		ctx := c.runCtx
		req := admission.Request{ID: p.m.ID, Priority: p.priority, Costs: p.costs}
		t, err := c.limiter.Acquire(qctx, req, func(w admission.Wait) {
			p.m.Waiting = w.String()
			c.live.Store(p.m.ID, p.m)
			c.migrationChanged(ctx, p.m)
			send(p.m, nil)
		})
		c.waiting.Delete(p.m.ID)
		if err != nil {
			if ctx.Err() != nil {
				// The center stops: the migration stays queued in the store and is
				// queued again when the center starts.
				c.live.Delete(p.m.ID)
				send(p.m, nil)
				return
			}
			m := p.m
			now := c.now().UTC()
			m.State, m.Finished = api.MigrationCancelled, &now
			m.Error = "cancelled while it waited in the queue"
			if p.m.Waiting != "" {
				m.Error += " (" + p.m.Waiting + ")"
			}
			if !errors.Is(err, context.Canceled) {
				m.State, m.Error = api.MigrationFailed, "not admitted: "+err.Error()
			}
			c.record1(ctx, m)
			c.live.Delete(p.m.ID)
			send(m, nil)
			return
		}
		m, err := c.launch(ctx, p, t, sent)
		send(m, err)
	}()
}

// launch starts an admitted migration on its source host and follows it; the ticket is
// released when it ends (record1). A start that fails is an ended migration in the
// audit trail when queued (async); otherwise the refused request's own record says it.
func (c *Center) launch(ctx context.Context, p plan, t *admission.Ticket, async bool) (api.Migration, error) {
	c.tickets.Store(p.m.ID, t)
	m := p.m
	m.State, m.Waiting = api.MigrationPreparing, ""
	c.live.Store(m.ID, m)
	if err := c.store.UpdateMigration(ctx, m); err != nil {
		c.release(m.ID)
		c.live.Delete(m.ID)
		return api.Migration{}, err
	}
	c.migrationChanged(ctx, m)
	fail := func(err error) (api.Migration, error) {
		now := c.now().UTC()
		m.State, m.Error, m.Finished = api.MigrationFailed, err.Error(), &now
		if async {
			c.record1(context.WithoutCancel(ctx), m)
		} else {
			c.release(m.ID)
			_ = c.store.UpdateMigration(context.WithoutCancel(ctx), m)
			c.migrationChanged(context.WithoutCancel(ctx), m)
			c.metrics.RecordMigration(m)
		}
		c.live.Delete(m.ID)
		return api.Migration{}, err
	}
	srcClient, err := c.agent(p.src, time.Minute)
	if err != nil {
		return fail(err)
	}
	if m.Prediction = c.predictAdmitted(ctx, m, p.src); m.Prediction != nil {
		if err := c.store.SetMigrationPrediction(ctx, m.ID, *m.Prediction); err != nil {
			c.log.Warn("could not store the migration's prediction", "migration", m.ID, "err", err)
		}
		c.live.Store(m.ID, m)
	}
	tk, err := c.issueTicket(ctx, m)
	if err != nil {
		return fail(err)
	}
	areq := api.AgentMigrateRequest{ID: m.ID, Destination: p.dst.Facts.Name, DestinationURL: p.dst.Facts.AgentURL,
		DestinationAddr: p.dst.Facts.Address, Policy: m.Policy, Encryption: m.Encryption, Priority: m.Priority, Postcopy: m.PostcopyAllowed,
		MaxBandwidth: c.bandwidthShare(m.ID), Ticket: tk, Prediction: m.Prediction}
	var started api.Migration
	if err := srcClient.Do(ctx, http.MethodPost, "/agent/v1/vms/"+m.VM+"/migrate", areq, &started); err != nil {
		return fail(hostError(p.src.Facts.Name, "start the migration of "+m.VM, err))
	}
	c.caps.Store(m.ID, areq.MaxBandwidth)
	c.log.Info("migration started", "migration", m.ID, "vm", m.VM, "from", m.Source, "to", m.Destination,
		"policy", m.Policy, "priority", m.Priority, "bandwidth_cap", areq.MaxBandwidth)
	c.follow(m)
	return m, nil
}

// release gives a migration's slots back, if it holds any.
func (c *Center) release(id string) {
	if t, ok := c.tickets.LoadAndDelete(id); ok {
		t.(*admission.Ticket).Release()
	}
	c.caps.Delete(id)
}

// cancelQueued cancels a migration that waits in the queue and returns its end.
func (c *Center) cancelQueued(ctx context.Context, id string) (api.Migration, bool, error) {
	v, ok := c.waiting.Load(id)
	if !ok {
		return api.Migration{}, false, nil
	}
	v.(context.CancelFunc)()
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		m, err := c.getMigration(ctx, id)
		if err != nil || terminal(m.State) || m.State != api.MigrationQueued {
			return m, true, err
		}
		time.Sleep(20 * time.Millisecond)
	}
	m, err := c.getMigration(ctx, id)
	return m, true, err
}

// bandwidthShare is a migration's cap on the migration network: its priority-weighted
// share of LinkRate among the admitted migrations.
func (c *Center) bandwidthShare(id string) int64 {
	share, ok := c.limiter.Shares(admission.Network(c.cfg.MigrationNetwork))[id]
	if !ok {
		return 0
	}
	return int64(math.Round(share * float64(c.cfg.LinkRate)))
}

// rebalance keeps every running migration's bandwidth cap at its share: whenever a
// migration is admitted or released, the caps that changed are sent to the source
// agents. It runs until ctx ends.
func (c *Center) rebalance(ctx context.Context) {
	for {
		changed := c.limiter.Changes()
		shares := c.limiter.Shares(admission.Network(c.cfg.MigrationNetwork))
		ids := make([]string, 0, len(shares))
		for id := range shares {
			ids = append(ids, id)
		}
		sort.Strings(ids)
		for _, id := range ids {
			cap := int64(math.Round(shares[id] * float64(c.cfg.LinkRate)))
			if old, ok := c.caps.Load(id); !ok || old.(int64) == cap {
				continue // not started yet (launch sends its cap), or unchanged
			}
			if err := c.sendCap(ctx, id, cap); err != nil {
				c.log.Warn("could not update a migration's bandwidth cap", "migration", id, "cap", cap, "err", err)
				continue
			}
			c.caps.Store(id, cap)
		}
		select {
		case <-ctx.Done():
			return
		case <-changed:
		}
	}
}

// sendCap asks a migration's source agent to cap its stream.
func (c *Center) sendCap(ctx context.Context, id string, cap int64) error {
	v, ok := c.live.Load(id)
	if !ok {
		return fmt.Errorf("migration %s is not followed", id)
	}
	m := v.(api.Migration)
	h, err := c.store.Host(ctx, m.Source)
	if err != nil {
		return err
	}
	cl, err := c.agent(h, 5*time.Second)
	if err != nil {
		return err
	}
	return cl.Do(ctx, http.MethodPost, "/agent/v1/migrations/"+id+"/bandwidth", api.BandwidthRequest{MaxBandwidth: cap}, nil)
}

// requeue admits again, after a restart, the migrations the store holds as unfinished:
// the running ones first (they hold their slots; they are admitted whatever the limits),
// then the queued ones in the order they were asked for.
func (c *Center) requeue(ctx context.Context, ms []api.Migration) {
	sort.Slice(ms, func(i, j int) bool { return ms[i].Started.Before(ms[j].Started) })
	for _, m := range ms {
		if m.State == api.MigrationQueued {
			continue
		}
		costs := c.costsOf(ctx, m)
		t, err := c.limiter.Acquire(ctx, admission.Request{ID: m.ID, Priority: admission.High, Costs: costs}, nil)
		if err != nil {
			c.log.Warn("an unfinished migration does not fit the limits; it runs on outside them", "migration", m.ID, "err", err)
			continue
		}
		c.tickets.Store(m.ID, t)
		c.caps.Store(m.ID, m.BandwidthCap)
	}
	for _, m := range ms {
		if m.State != api.MigrationQueued {
			continue
		}
		p, err := c.replan(ctx, m)
		if err != nil {
			now := c.now().UTC()
			m.State, m.Error, m.Finished = api.MigrationFailed, "could not be queued again after the center restarted: "+err.Error(), &now
			c.record1(ctx, m)
			continue
		}
		c.log.Info("queueing an unfinished migration again", "migration", m.ID, "vm", m.VM)
		c.enqueue(p, make(chan submitted, 1))
	}
}

// costsOf is what a stored migration costs against the limits.
func (c *Center) costsOf(ctx context.Context, m api.Migration) map[string]int {
	var ds []string
	if r, err := c.store.VM(ctx, m.VM); err == nil {
		ds = vmDatastores(r.Spec)
	}
	return admission.MigrationCosts(m.Source, m.Destination, []string{c.cfg.MigrationNetwork}, ds)
}

// replan rebuilds the plan of a stored queued migration.
func (c *Center) replan(ctx context.Context, m api.Migration) (plan, error) {
	src, err := c.store.Host(ctx, m.Source)
	if err != nil {
		return plan{}, fmt.Errorf("source %s: %w", m.Source, err)
	}
	dst, err := c.store.Host(ctx, m.Destination)
	if err != nil {
		return plan{}, fmt.Errorf("destination %s: %w", m.Destination, err)
	}
	if _, err := c.store.VM(ctx, m.VM); errors.Is(err, store.ErrNotFound) {
		return plan{}, fmt.Errorf("VM %s no longer exists", m.VM)
	}
	pr := admission.Normal
	if m.Priority != "" {
		if pr, err = admission.ParsePriority(m.Priority); err != nil {
			return plan{}, err
		}
	}
	return plan{m: m, costs: c.costsOf(ctx, m), priority: pr, src: src, dst: dst}, nil
}

// slots is the state of the migration limits: every resource in use or waited for,
// the admitted migrations and the queue.
func (c *Center) slots() api.MigrationSlots {
	snap := c.limiter.Snapshot()
	out := api.MigrationSlots{Admitted: snap.Admitted, Queue: snap.Queue, Resources: []api.SlotState{}}
	for _, r := range snap.Resources {
		out.Resources = append(out.Resources, api.SlotState{Resource: r.Resource, Limit: r.Limit, InUse: r.InUse,
			Holders: r.Holders, Waiting: r.Waiting})
	}
	return out
}
