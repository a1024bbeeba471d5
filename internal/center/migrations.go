package center

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"sync"
	"time"

	"github.com/google/uuid"

	"github.com/godwit/godwit/internal/api"
	"github.com/godwit/godwit/internal/audit"
	"github.com/godwit/godwit/internal/migration"
	"github.com/godwit/godwit/internal/store"
)

func terminal(state string) bool {
	return state == api.MigrationSucceeded || state == api.MigrationFailed || state == api.MigrationCancelled
}

// migrateVM checks a live migration with the destination, asks the source to start it,
// and follows it in the background until it ends. The migration is a task of
// initiator's, under the migration's id.
func (c *Center) migrateVM(ctx context.Context, name string, req api.MigrateRequest, initiator string) (api.Migration, error) {
	r, err := c.record(ctx, name)
	if err != nil {
		return api.Migration{}, err
	}
	if req.To == "" {
		return api.Migration{}, api.BadRequest("give the destination host (`--to HOST`)")
	}
	if req.Policy == "" {
		req.Policy = r.Spec.MigrationPolicy
	}
	policy, err := migration.LookupPolicy(req.Policy)
	if err != nil {
		return api.Migration{}, invalid("%v", err)
	}
	encryption := policy.EncryptionMode()
	if req.Encryption != "" {
		if encryption, err = migration.ParseEncryption(req.Encryption); err != nil {
			return api.Migration{}, invalid("%v", err)
		}
	}
	audit.Params(ctx, map[string]any{"source": r.Host, "destination": req.To, "policy": policy.Name, "encryption": encryption})
	if r.Host == req.To {
		return api.Migration{}, invalid("VM %s already runs on %s; choose another destination", name, req.To)
	}
	if r.State != api.VMRunning {
		return api.Migration{}, api.Conflict("VM %s is %s; only a running VM can be live-migrated", name, r.State)
	}
	active, err := c.store.Migrations(ctx, name, true, 1)
	if err != nil {
		return api.Migration{}, err
	}
	if len(active) > 0 {
		// The future task queue goes here: store the new migration as
		// api.MigrationQueued instead of refusing it, and godwit_tasks_queued counts it.
		return api.Migration{}, api.Conflict("VM %s is already being migrated (migration %s); wait for it or cancel it", name, active[0].ID)
	}
	src, srcClient, err := c.hostOf(ctx, r, "be migrated")
	if err != nil {
		return api.Migration{}, err
	}
	dst, err := c.store.Host(ctx, req.To)
	if errors.Is(err, store.ErrNotFound) {
		return api.Migration{}, invalid("there is no host named %q; `godwit host list` shows the hosts", req.To)
	}
	if err != nil {
		return api.Migration{}, err
	}
	if !c.connected(dst) {
		return api.Migration{}, api.Errorf(http.StatusConflict, "host_disconnected", "destination %s is disconnected; choose another host", req.To)
	}
	dstClient, err := c.agent(dst, time.Minute)
	if err != nil {
		return api.Migration{}, err
	}
	pre := api.IncomingRequest{Source: src.Facts.Name, Spec: r.Spec, QEMUVersion: src.Facts.QEMUVersion, Policy: policy.Name, Address: dst.Facts.Address}
	if err := dstClient.Do(ctx, http.MethodPost, "/agent/v1/preflight", pre, nil); err != nil {
		return api.Migration{}, hostError(dst.Facts.Name, "check the migration of "+name, err)
	}

	m := api.Migration{
		ID: uuid.NewString()[:8], VM: name, Source: src.Facts.Name, Destination: dst.Facts.Name,
		Policy: policy.Name, State: api.MigrationPreparing, Started: c.now().UTC(), Encryption: encryption,
	}
	if err := c.store.SaveMigration(ctx, m); err != nil {
		return api.Migration{}, err
	}
	audit.Params(ctx, map[string]any{"migration": m.ID})
	c.startMigrationTask(ctx, m, initiator)
	areq := api.AgentMigrateRequest{ID: m.ID, Destination: dst.Facts.Name, DestinationURL: dst.Facts.AgentURL,
		DestinationAddr: dst.Facts.Address, Policy: policy.Name, Encryption: encryption}
	var started api.Migration
	if err := srcClient.Do(ctx, http.MethodPost, "/agent/v1/vms/"+name+"/migrate", areq, &started); err != nil {
		now := c.now().UTC()
		m.State, m.Error, m.Finished = api.MigrationFailed, err.Error(), &now
		_ = c.store.SaveMigration(context.WithoutCancel(ctx), m)
		c.migrationChanged(context.WithoutCancel(ctx), m)
		c.metrics.RecordMigration(m)
		return api.Migration{}, hostError(src.Facts.Name, "start the migration of "+name, err)
	}
	c.log.Info("migration started", "migration", m.ID, "vm", name, "from", m.Source, "to", m.Destination, "policy", m.Policy)
	c.follow(m)
	return m, nil
}

// follow polls the source agent for a migration's progress until it ends, then records
// the outcome and, on success, the VM's new host. It runs until the center stops; a
// restarted center follows the unfinished migrations again.
func (c *Center) follow(m api.Migration) {
	c.live.Store(m.ID, m)
	c.wg.Add(1)
	go func() {
		defer c.wg.Done()
		defer c.live.Delete(m.ID)
		ctx := c.runCtx
		tick := time.NewTicker(100 * time.Millisecond)
		defer tick.Stop()
		misses := 0
		for {
			select {
			case <-ctx.Done():
				return
			case <-tick.C:
			}
			cur, err := c.pollSource(ctx, m)
			if err != nil {
				misses++
				var se *api.StatusError
				if errors.As(err, &se) && se.Status == http.StatusNotFound || misses > 600 {
					c.settleUnknown(ctx, m, err)
					return
				}
				continue
			}
			misses = 0
			// The center's own record knows when and how the migration began, should
			// the source have had to rebuild its record after a restart.
			if cur.Started.IsZero() || m.Started.Before(cur.Started) {
				cur.Started = m.Started
			}
			if cur.Policy == "" {
				cur.Policy = m.Policy
			}
			c.live.Store(m.ID, cur)
			if !terminal(cur.State) {
				c.migrationChanged(ctx, cur)
			}
			if terminal(cur.State) {
				c.record1(ctx, cur)
				return
			}
			if cur.State != m.State {
				m.State = cur.State
				_ = c.store.SaveMigration(ctx, cur)
			}
		}
	}()
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

// record1 stores a finished migration and moves the VM on success.
func (c *Center) record1(ctx context.Context, m api.Migration) {
	if m.State == api.MigrationSucceeded {
		// Host and state change together, so no reader sees the new host with the
		// source's process.
		if err := c.store.Move(ctx, m.VM, m.Destination, c.observe(ctx, m.Destination, m.VM), c.now()); err != nil {
			c.log.Error("could not record the VM's new host", "vm", m.VM, "host", m.Destination, "err", err)
		}
	}
	if err := c.store.SaveMigration(ctx, m); err != nil {
		c.log.Error("could not record the migration's outcome", "migration", m.ID, "err", err)
	}
	c.migrationChanged(ctx, m)
	c.trail.MigrationEnded(ctx, m)
	c.metrics.RecordMigration(m)
	c.log.Info("migration ended", "migration", m.ID, "vm", m.VM, "state", m.State, "total_ms", m.TotalMS,
		"downtime_ms", m.DowntimeMS, "bytes", m.Bytes, "passes", m.Passes, "error", m.Error)
}

// settleUnknown ends a migration whose source no longer knows it (its agent restarted
// after the end): the outcome is read from where the hosts report the VM running.
func (c *Center) settleUnknown(ctx context.Context, m api.Migration, cause error) {
	now := c.now().UTC()
	m.Finished = &now
	hosts, err := c.store.Hosts(ctx)
	if err == nil {
		for _, h := range hosts {
			for _, v := range h.Facts.VMs {
				if v.Name == m.VM && v.State == api.VMRunning && h.Facts.Name == m.Destination {
					m.State, m.Error = api.MigrationSucceeded, ""
					c.record1(ctx, m)
					return
				}
			}
		}
	}
	m.State = api.MigrationFailed
	m.Error = fmt.Sprintf("the source host lost track of the migration (%v); the VM stays on %s", cause, m.Source)
	c.record1(ctx, m)
}

// resumeFollowing follows again the migrations that were unfinished when the center
// stopped.
func (c *Center) resumeFollowing(ctx context.Context) error {
	active, err := c.store.Migrations(ctx, "", true, 1000)
	if err != nil {
		return err
	}
	for _, m := range active {
		c.log.Info("following an unfinished migration again", "migration", m.ID, "vm", m.VM)
		c.trail.MigrationResumed(ctx, m)
		c.follow(m)
	}
	return nil
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
