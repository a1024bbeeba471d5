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

// submit records a planned migration and hands it to the migration loop. A
// high-priority one is admitted at once or refused (nothing recorded); a normal or low
// one waits its turn, and submit returns as soon as it has started or is known to wait.
func (c *Center) submit(ctx context.Context, p plan, initiator string) (api.Migration, error) {
	req := admission.Request{ID: p.m.ID, Priority: p.priority, Costs: p.costs}
	p.m.Initiator = initiator
	admitted := false
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
		c.tickets.Store(p.m.ID, t)
		admitted = true
	} else {
		audit.Params(ctx, map[string]any{"migration": p.m.ID})
		if err := c.recordNewMigration(ctx, p.m, initiator); err != nil {
			return api.Migration{}, err
		}
	}
	first := make(chan submitted, 1)
	loop := c.migrations()
	loop.send(loopMsg{adopt: []adoption{{m: p.m, plan: &p, admitted: admitted, reply: first}}})
	select {
	case s := <-first:
		return s.m, s.err
	case <-ctx.Done():
	case <-loop.ctx.Done():
	}
	return c.getMigration(context.WithoutCancel(ctx), p.m.ID)
}

// launch starts an admitted migration on its source host: its prediction, its ticket
// (the center's signed word), and the source's start. It returns the migration as
// started, with its prediction.
func (c *Center) launch(ctx context.Context, p plan, m api.Migration) (api.Migration, error) {
	srcClient, err := c.agent(p.src, time.Minute)
	if err != nil {
		return m, err
	}
	if m.Prediction = c.predictAdmitted(ctx, m, p.src); m.Prediction != nil {
		if err := c.store.SetMigrationPrediction(ctx, m.ID, *m.Prediction); err != nil {
			c.log.Warn("could not store the migration's prediction", "migration", m.ID, "err", err)
		}
	}
	tk, err := c.issueTicket(ctx, m)
	if err != nil {
		return m, err
	}
	areq := api.AgentMigrateRequest{ID: m.ID, Destination: p.dst.Facts.Name, DestinationURL: p.dst.Facts.AgentURL,
		DestinationAddr: p.dst.Facts.Address, Policy: m.Policy, Encryption: m.Encryption, Priority: m.Priority, Postcopy: m.PostcopyAllowed,
		MaxBandwidth: c.bandwidthShare(m.ID), Ticket: tk, Prediction: m.Prediction}
	var started api.Migration
	if err := srcClient.Do(ctx, http.MethodPost, "/agent/v1/vms/"+m.VM+"/migrate", areq, &started); err != nil {
		return m, hostError(p.src.Facts.Name, "start the migration of "+m.VM, err)
	}
	c.caps.Store(m.ID, areq.MaxBandwidth)
	c.log.Info("migration started", "migration", m.ID, "vm", m.VM, "from", m.Source, "to", m.Destination,
		"policy", m.Policy, "priority", m.Priority, "bandwidth_cap", areq.MaxBandwidth)
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
