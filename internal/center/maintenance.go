package center

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"time"

	"github.com/godwit/godwit/internal/api"
	"github.com/godwit/godwit/internal/audit"
	"github.com/godwit/godwit/internal/migration"
	"github.com/godwit/godwit/internal/store"
)

// Maintenance mode is desired state: a host in maintenance should run no VM. Entering
// it stores the mode and an evacuation plan (api.Plan) in one transaction; the
// maintenance loop (runPlans) converges each open plan towards it, level-triggered from
// the store: every round it reads the VMs the store has on the host and the migrations
// the plan started (which name the plan in their own records), moves what is still
// there through the migration loop (queue, limits and priorities as for any
// migration), and ends the plan once the host's own heartbeat shows its last QEMU gone.
// Because the plan's migrations are the record of what it did, a center that restarts
// mid-evacuation resumes the plan without moving any VM twice.

// planRound is how often the maintenance loop looks at the open plans when nothing
// wakes it earlier (a plan entered or cancelled, a migration ended).
const planRound = 2 * time.Second

// maxMoveFailures is how many failed attempts leave a move blocked: two that failed
// the same way, or this many in all.
const maxMoveFailures = 3

// plansOf is the maintenance loop's state: the center owns it, the loop and the
// maintenance requests share it under mu (a request never races a round).
type plansOf struct {
	mu   chanMutex
	wake chan struct{}
}

// chanMutex is a mutex whose Lock can give up when a context ends.
type chanMutex chan struct{}

func (m chanMutex) lock(ctx context.Context) error {
	select {
	case m <- struct{}{}:
		return nil
	case <-ctx.Done():
		return fmt.Errorf("wait for the maintenance loop: %w", ctx.Err())
	}
}

func (m chanMutex) unlock() { <-m }

func newPlansOf() *plansOf {
	return &plansOf{mu: make(chanMutex, 1), wake: make(chan struct{}, 1)}
}

// wakePlans has the maintenance loop look at the plans now.
func (c *Center) wakePlans() {
	select {
	case c.plans.wake <- struct{}{}:
	default:
	}
}

// runPlans is the maintenance loop: it runs until ctx ends.
func (c *Center) runPlans(ctx context.Context) {
	t := time.NewTicker(planRound)
	defer t.Stop()
	for {
		if err := c.plans.mu.lock(ctx); err != nil {
			return
		}
		c.planRound(ctx)
		c.plans.mu.unlock()
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		case <-c.plans.wake:
		}
	}
}

// planRound brings every open plan one step closer to its goal.
func (c *Center) planRound(ctx context.Context) {
	c.ensurePlans(ctx)
	open, err := c.store.Plans(ctx, "", true, 1000)
	if err != nil {
		c.log.Error("could not read the open plans", "err", err)
		return
	}
	for _, p := range open {
		if ctx.Err() != nil {
			return
		}
		var next api.Plan
		if p.Kind == api.PlanReturn || p.Kind == api.PlanBalance {
			next = c.advanceMoves(ctx, p)
		} else {
			next = c.advancePlan(ctx, p)
		}
		if samePlan(next, p) {
			continue
		}
		if err := c.store.UpdatePlan(ctx, next); err != nil {
			c.log.Error("could not record a plan's progress", "plan", p.ID, "err", err)
			continue
		}
		if next.State != p.State {
			c.log.Info("plan state", "plan", p.ID, "host", p.Host, "state", next.State, "note", next.Note)
		}
	}
}

// ensurePlans gives every host in maintenance mode an open plan when VMs run on it
// that no plan moves: a host put in maintenance by an older center (no plan), or one
// whose plan finished and on which a VM was powered on since. The desired state is the
// maintenance mode; the plan is only the way there.
func (c *Center) ensurePlans(ctx context.Context) {
	maint, err := c.store.Maintenances(ctx)
	if err != nil {
		c.log.Error("could not read the hosts in maintenance mode", "err", err)
		return
	}
	for host, m := range maint {
		last, err := c.store.LatestPlan(ctx, host, api.PlanMaintenance)
		var ps []api.Plan
		switch {
		case err == nil:
			ps = []api.Plan{last}
		case !errors.Is(err, store.ErrNotFound):
			c.log.Error("could not read the plans of a host in maintenance", "host", host, "err", err)
			continue
		}
		if len(ps) > 0 && ps[0].State != api.PlanDone && ps[0].State != api.PlanCancelled && !ps[0].Created.Before(m.Since.Add(-time.Second)) {
			continue // an open plan of this maintenance
		}
		vms, err := c.store.VMStatesOn(ctx, host)
		if err != nil || !slices.ContainsFunc(vms, func(r store.VMRecord) bool { return r.State == api.VMRunning }) {
			continue
		}
		if len(ps) > 0 && ps[0].State == api.PlanDone && !ps[0].Created.Before(m.Since.Add(-time.Second)) {
			p := ps[0]
			p.State, p.Finished, p.ActualMakespanMS = api.PlanRunning, nil, 0
			p.Note = "a VM runs on the host again; the plan moves it"
			if err := c.store.UpdatePlan(ctx, p); err != nil {
				c.log.Error("could not reopen a plan", "plan", p.ID, "err", err)
			}
			continue
		}
		p, err := c.proposeEvacuation(ctx, host, m.Reason, audit.CenterActor)
		if err != nil {
			c.log.Error("could not plan the evacuation of a host in maintenance", "host", host, "err", err)
			continue
		}
		p.State = api.PlanRunning
		if err := c.store.InsertPlan(ctx, p); err != nil {
			c.log.Error("could not store the evacuation plan of a host in maintenance", "host", host, "err", err)
		}
	}
}

func samePlan(a, b api.Plan) bool {
	x, _ := json.Marshal(a)
	y, _ := json.Marshal(b)
	return string(x) == string(y)
}

// planView is what a round knows of a plan's host: the VMs the store has there, and the
// migrations the plan started, newest first, by VM.
type planView struct {
	vms  map[string]store.VMRecord
	migs map[string][]api.Migration
	// others are the VMs with an unfinished migration that is not the plan's.
	others map[string]api.Migration
}

// observeMoves brings each move of p up to date with what the store says (a pure
// function of its inputs): VMs on the host the plan does not know yet are added,
// moves whose VM left the host or stopped are settled, and the rest are pending,
// migrating or blocked. It does not start anything.
func observeMoves(p api.Plan, v planView) api.Plan {
	p.Moves = slices.Clone(p.Moves)
	known := map[string]bool{}
	for _, mv := range p.Moves {
		known[mv.VM] = true
	}
	names := make([]string, 0, len(v.vms))
	for name := range v.vms {
		names = append(names, name)
	}
	slices.Sort(names)
	for _, name := range names {
		if !known[name] {
			r := v.vms[name]
			p.Moves = append(p.Moves, api.PlanMove{VM: name, From: p.Host, MemoryMiB: r.Spec.MemoryMiB, State: api.MovePending})
		}
	}
	for i := range p.Moves {
		mv := &p.Moves[i]
		if mv.State == api.MoveCancelled {
			continue
		}
		ms := v.migs[mv.VM]
		mv.Attempts = len(ms)
		if len(ms) > 0 {
			mv.Migration, mv.To = ms[0].ID, ms[0].Destination
		}
		r, onHost := v.vms[mv.VM]
		switch {
		case len(ms) > 0 && !terminal(ms[0].State):
			mv.State, mv.Code, mv.Error = api.MoveMigrating, "", ""
			mv.Prediction = ms[0].Prediction
		case !onHost:
			if len(ms) > 0 && ms[0].State == api.MigrationSucceeded {
				mv.State, mv.Code, mv.Error = api.MoveDone, "", ""
				mv.ActualTotalMS, mv.ActualDowntimeMS = ms[0].TotalMS, ms[0].DowntimeMS
				if ms[0].Prediction != nil {
					mv.Prediction = ms[0].Prediction
				}
			} else {
				mv.State, mv.Code, mv.Error = api.MoveLeft, "", ""
			}
		case r.State != api.VMRunning:
			mv.State, mv.Code, mv.Error = api.MoveStopped, "", ""
		case failedOut(ms):
			mv.State, mv.Code = api.MoveBlocked, "migration_failed"
			mv.Error = fmt.Sprintf("its migration failed %d times (last: %s); the plan does not try again — power the VM off, move it yourself, or take the host out of maintenance", len(ms), ms[0].Error)
		case v.others[mv.VM].ID != "":
			o := v.others[mv.VM]
			mv.State, mv.Code = api.MovePending, ""
			mv.Error = fmt.Sprintf("waits for migration %s of the VM (%s), not the plan's, to end", o.ID, o.State)
		default:
			// Pending; a blocked move stays blocked, with its reason, until a round
			// finds it a destination.
			if mv.State != api.MoveBlocked {
				mv.State = api.MovePending
			}
			if len(ms) > 0 && mv.State == api.MovePending {
				mv.Code, mv.Error = "migration_failed", "its last migration failed ("+ms[0].Error+"); it is tried again"
			}
		}
	}
	return p
}

// failedOut says whether a VM's attempts (newest first, all ended) are enough to give
// up: the last two failed the same way, or maxMoveFailures failed.
func failedOut(ms []api.Migration) bool {
	n := 0
	for n < len(ms) && ms[n].State != api.MigrationSucceeded {
		n++
	}
	if n >= maxMoveFailures {
		return true
	}
	return n >= 2 && ms[0].Error == ms[1].Error
}

// settle says what state a plan is in once its moves are observed, and why: running
// while a move is pending or migrating, blocked when only blocked moves are left, done
// when nothing is left to move and the host's heartbeat (after the last move ended)
// shows no QEMU.
func settle(p api.Plan, h store.HostRecord, hostKnown bool, lastEnd time.Time, now time.Time) api.Plan {
	var pending, migrating, blocked []string
	for _, mv := range p.Moves {
		switch mv.State {
		case api.MovePending:
			pending = append(pending, mv.VM)
		case api.MoveMigrating:
			migrating = append(migrating, mv.VM)
		case api.MoveBlocked:
			blocked = append(blocked, mv.VM)
		}
	}
	p.Note = ""
	switch {
	case len(pending)+len(migrating) > 0:
		p.State = api.PlanRunning
		p.Note = fmt.Sprintf("%d of %d moves to go", len(pending)+len(migrating), len(p.Moves))
	case len(blocked) > 0:
		p.State = api.PlanBlocked
		p.Note = "blocked by " + strings.Join(blocked, ", ") + ": power them off, move them yourself, or take the host out of maintenance"
	default:
		if running := qemusOn(h); !hostKnown || running > 0 || !h.LastHeartbeat.After(lastEnd) {
			p.State = api.PlanRunning
			p.Note = fmt.Sprintf("waits for host %s to report that its last QEMU has exited", p.Host)
			if running > 0 {
				p.Note = fmt.Sprintf("waits for the %d QEMU processes host %s still reports to exit", running, p.Host)
			}
			return p
		}
		p.State = api.PlanDone
		fin := now.UTC()
		p.Finished = &fin
		p.ActualMakespanMS = float64(fin.Sub(p.Created).Milliseconds())
	}
	return p
}

// qemusOn counts the VMs a host reports with a QEMU process.
func qemusOn(h store.HostRecord) int {
	n := 0
	for _, v := range h.Facts.VMs {
		if v.PID != 0 || v.State == api.VMRunning {
			n++
		}
	}
	return n
}

// advancePlan observes plan p, starts its pending moves, and says where it stands.
func (c *Center) advancePlan(ctx context.Context, p api.Plan) api.Plan {
	v, err := c.viewPlan(ctx, p)
	if err != nil {
		c.log.Warn("could not read a plan's host and migrations; tried again next round", "plan", p.ID, "err", err)
		return p
	}
	p = observeMoves(p, v)
	// The destinations' memory taken by the moves under way and those started now.
	plannedMiB, plannedMoves := map[string]int{}, map[string]int{}
	for _, mv := range p.Moves {
		if mv.State == api.MoveMigrating {
			plannedMiB[mv.To] += mv.MemoryMiB
			plannedMoves[mv.To]++
		}
	}
	// Longest first: the biggest VMs queue first, so the last to finish is a small one.
	order := movesByMemory(p.Moves)
	for _, i := range order {
		mv := &p.Moves[i]
		if (mv.State != api.MovePending && mv.State != api.MoveBlocked) || v.others[mv.VM].ID != "" || mv.Code == "migration_failed" && mv.State == api.MoveBlocked {
			continue
		}
		m, err := c.startMove(ctx, p, *mv, plannedMiB, plannedMoves)
		if err != nil {
			mv.State, mv.Code, mv.Error = api.MoveBlocked, errCode(err), err.Error()
			continue
		}
		mv.State, mv.Code, mv.Error = api.MoveMigrating, "", ""
		mv.Migration, mv.To, mv.Attempts, mv.Prediction = m.ID, m.Destination, mv.Attempts+1, m.Prediction
		plannedMiB[m.Destination] += mv.MemoryMiB
		plannedMoves[m.Destination]++
	}
	h, herr := c.store.Host(ctx, p.Host)
	return settle(p, h, herr == nil, lastEnded(v.migs), c.now())
}

// viewPlan reads what a round needs of a plan.
func (c *Center) viewPlan(ctx context.Context, p api.Plan) (planView, error) {
	v := planView{vms: map[string]store.VMRecord{}, migs: map[string][]api.Migration{}, others: map[string]api.Migration{}}
	recs, _, err := c.store.VMsPage(ctx, store.VMFilter{Host: p.Host}, "", maxPlanVMs)
	if err != nil {
		return v, err
	}
	for _, r := range recs {
		v.vms[r.Spec.Name] = r
	}
	ms, err := c.store.PlanMigrations(ctx, p.ID)
	if err != nil {
		return v, err
	}
	for _, m := range ms {
		v.migs[m.VM] = append(v.migs[m.VM], withLiveView(m, c))
	}
	for name := range v.vms {
		active, err := c.store.Migrations(ctx, name, true, 1)
		if err != nil {
			return v, err
		}
		if len(active) > 0 && active[0].Plan != p.ID {
			v.others[name] = active[0]
		}
	}
	return v, nil
}

// maxPlanVMs bounds the VMs one plan moves (a host runs far fewer).
const maxPlanVMs = 10000

// withLiveView is m as the migration loop sees it now, if it follows it.
func withLiveView(m api.Migration, c *Center) api.Migration {
	if v, ok := c.live.Load(m.ID); ok {
		return v.(api.Migration)
	}
	return m
}

// lastEnded is when the newest of the migrations ended.
func lastEnded(migs map[string][]api.Migration) time.Time {
	var last time.Time
	for _, ms := range migs {
		for _, m := range ms {
			if m.Finished != nil && m.Finished.After(last) {
				last = *m.Finished
			}
		}
	}
	return last
}

// movesByMemory returns the indices of moves, biggest VM first, then by name.
func movesByMemory(moves []api.PlanMove) []int {
	order := make([]int, len(moves))
	for i := range order {
		order[i] = i
	}
	slices.SortStableFunc(order, func(a, b int) int {
		if d := moves[b].MemoryMiB - moves[a].MemoryMiB; d != 0 {
			return d
		}
		return strings.Compare(moves[a].VM, moves[b].VM)
	})
	return order
}

// errCode is the typed code of an error the center answers with, or "error".
func errCode(err error) string {
	var se *api.StatusError
	if errors.As(err, &se) && se.Code != "" {
		return se.Code
	}
	return "error"
}

// startMove chooses a destination for a move (the placement engine, with the plan's
// moves under way counted against the hosts) and submits its migration, which names
// the plan. Its vm.migrate record commits with it: the center's act, on behalf of whoever
// entered maintenance.
func (c *Center) startMove(ctx context.Context, p api.Plan, mv api.PlanMove, plannedMiB, plannedMoves map[string]int) (api.Migration, error) {
	to, err := c.autoDestination(ctx, mv.VM, plannedMiB, plannedMoves)
	if err != nil {
		return api.Migration{}, err
	}
	pl, err := c.planMigration(ctx, mv.VM, api.MigrateRequest{To: to})
	if err != nil {
		return api.Migration{}, err
	}
	return c.submitMove(ctx, p, pl, moveReason(p), fmt.Sprintf("plan %s: maintenance of %s (by %s)", p.ID, p.Host, p.Initiator))
}

// submitMove submits a plan's migration, which names the plan and why; its vm.migrate
// record, the center's act on behalf of whoever made the plan, commits with it.
func (c *Center) submitMove(ctx context.Context, p api.Plan, pl plan, reason, initiator string) (api.Migration, error) {
	pl.m.Plan, pl.m.Reason = p.ID, reason
	rec := audit.Record{Actor: audit.CenterActor, ActorKind: audit.KindAutomation, OnBehalfOf: p.Initiator,
		Action: "vm.migrate", Target: pl.m.VM, Outcome: audit.Succeeded}
	rec.Params, _ = audit.EncodeParams(map[string]any{"migration": pl.m.ID, "source": pl.m.Source, "destination": pl.m.Destination,
		"policy": pl.m.Policy, "priority": pl.m.Priority, "encryption": pl.m.Encryption, "plan": p.ID, "reason": reason})
	m, err := c.submit(store.WithTxHook(ctx, c.trail.AppendOnceHook(rec)), pl, initiator)
	if err != nil {
		return m, err
	}
	c.log.Info("plan move started", "plan", p.ID, "vm", m.VM, "to", m.Destination, "migration", m.ID, "state", m.State)
	return m, nil
}

// moveReason is why a plan moves a VM, in words.
func moveReason(p api.Plan) string {
	s := "host " + p.Host + " enters maintenance"
	if p.Reason != "" {
		s += ": " + p.Reason
	}
	return s
}

// proposeEvacuation is the plan that would empty host now: each running VM, biggest
// first, with the destination the placement engine gives it (the moves before it
// counted against the hosts), its prediction, and the plan's predicted makespan. A VM no
// host can take is a blocked move with the reason. Nothing changes.
func (c *Center) proposeEvacuation(ctx context.Context, host, reason, initiator string) (api.Plan, error) {
	if err := api.CheckReason(reason); err != nil {
		return api.Plan{}, err
	}
	if _, err := c.store.Host(ctx, host); errors.Is(err, store.ErrNotFound) {
		return api.Plan{}, api.NotFound("there is no host named %q; `godwit host list` shows the hosts", host)
	} else if err != nil {
		return api.Plan{}, err
	}
	p := api.Plan{ID: c.newID(), Kind: api.PlanMaintenance, Host: host, Reason: reason, State: api.PlanProposed,
		Initiator: initiator, Created: c.now().UTC(), Moves: []api.PlanMove{}}
	recs, _, err := c.store.VMsPage(ctx, store.VMFilter{Host: host}, "", maxPlanVMs)
	if err != nil {
		return p, err
	}
	for _, r := range recs {
		mv := api.PlanMove{VM: r.Spec.Name, From: host, MemoryMiB: r.Spec.MemoryMiB, State: api.MovePending}
		if r.State != api.VMRunning {
			mv.State = api.MoveStopped
		}
		p.Moves = append(p.Moves, mv)
	}
	plannedMiB, plannedMoves := map[string]int{}, map[string]int{}
	src, _ := c.store.Host(ctx, host)
	for _, i := range movesByMemory(p.Moves) {
		mv := &p.Moves[i]
		if mv.State != api.MovePending {
			continue
		}
		to, err := c.autoDestination(ctx, mv.VM, plannedMiB, plannedMoves)
		if err != nil {
			mv.State, mv.Code, mv.Error = api.MoveBlocked, errCode(err), err.Error()
			continue
		}
		mv.To = to
		plannedMiB[to] += mv.MemoryMiB
		plannedMoves[to]++
		if r, err := c.store.VM(ctx, mv.VM); err == nil {
			if pol, err := migration.LookupPolicy(r.Spec.MigrationPolicy); err == nil {
				act, actSource := c.memoryOf(ctx, r, src, checkMaxAge)
				mv.Prediction = c.predict(r, act, actSource, host, to, pol, pol.EncryptionMode(), 0)
			}
		}
	}
	p.PredictedMakespanMS = makespan(p.Moves)
	return p, nil
}

// makespan predicts how long a plan's moves take together. They all leave one host,
// whose link they share: however many run at once, the link carries their bytes one
// after another, so the makespan is the sum of their predicted times.
func makespan(moves []api.PlanMove) float64 {
	var sum float64
	for _, mv := range moves {
		if mv.Prediction != nil && (mv.State == api.MovePending || mv.State == api.MoveMigrating) {
			sum += mv.Prediction.TotalMS
		}
	}
	return sum
}

// enterMaintenance puts a host into maintenance mode and stores its evacuation plan; the
// maintenance loop carries the plan out. A host already in maintenance is refused.
func (c *Center) enterMaintenance(ctx context.Context, name string, req api.MaintenanceRequest, initiator string) (api.Host, error) {
	if req.Return {
		return api.Host{}, api.BadRequest("return moves VMs back when a host leaves maintenance: `host maintenance exit %s --return` (enter false, return true)", name)
	}
	if err := c.plans.mu.lock(ctx); err != nil {
		return api.Host{}, err
	}
	defer c.plans.mu.unlock()
	p, err := c.proposeEvacuation(ctx, name, req.Reason, initiator)
	if err != nil {
		return api.Host{}, err
	}
	// VMs still on their way back from an earlier maintenance stay where they are.
	if open, err := c.store.Plans(ctx, name, true, 20); err == nil {
		for _, o := range open {
			if o.Kind == api.PlanReturn {
				fin := c.now().UTC()
				o.State, o.Finished, o.Note = api.PlanCancelled, &fin, "the host entered maintenance again"
				if err := c.store.UpdatePlan(ctx, o); err != nil {
					return api.Host{}, err
				}
			}
		}
	}
	p.State, p.Created = api.PlanRunning, c.now().UTC()
	audit.Params(ctx, map[string]any{"plan": p.ID, "moves": len(p.Moves)})
	if err := c.store.EnterMaintenance(ctx, name, req.Reason, p.Created, p); errors.Is(err, store.ErrInMaintenance) {
		h, _ := c.getHost(ctx, name)
		plan := ""
		if h.Maintenance != nil && h.Maintenance.Plan != "" {
			plan = " (plan " + h.Maintenance.Plan + ")"
		}
		return api.Host{}, api.Errorf(http.StatusConflict, "in_maintenance", "host %s is already in maintenance mode%s; `godwit host maintenance exit %s` takes it out", name, plan, name)
	} else if err != nil {
		return api.Host{}, err
	}
	c.log.Info("host entering maintenance", "host", name, "plan", p.ID, "moves", len(p.Moves), "predicted_makespan_ms", p.PredictedMakespanMS)
	c.wakePlans()
	return c.getHost(ctx, name)
}

// exitMaintenance takes a host out of maintenance mode: its plan is cancelled, the
// plan's queued migrations with it (those already running finish). With ret, the VMs
// the host's last maintenance plan moved away are moved back, by a return plan.
func (c *Center) exitMaintenance(ctx context.Context, name string, ret bool, initiator string) (api.Host, error) {
	if _, err := c.store.Host(ctx, name); errors.Is(err, store.ErrNotFound) {
		return api.Host{}, api.NotFound("there is no host named %q; `godwit host list` shows the hosts", name)
	} else if err != nil {
		return api.Host{}, err
	}
	if err := c.plans.mu.lock(ctx); err != nil {
		return api.Host{}, err
	}
	defer c.plans.mu.unlock()
	cancelled, err := c.store.ExitMaintenance(ctx, name, c.now())
	if err != nil {
		return api.Host{}, err
	}
	for _, p := range cancelled {
		ms, err := c.store.PlanMigrations(ctx, p.ID)
		if err != nil {
			return api.Host{}, err
		}
		for _, m := range ms {
			if m.State == api.MigrationQueued {
				if _, _, err := c.cancelQueued(ctx, m.ID); err != nil {
					c.log.Warn("could not cancel a queued move of a cancelled plan", "plan", p.ID, "migration", m.ID, "err", err)
				}
			}
		}
		audit.Params(ctx, map[string]any{"plan": p.ID, "cancelled": true})
		c.log.Info("plan cancelled", "plan", p.ID, "host", name)
	}
	if ret {
		if err := c.planReturn(ctx, name, initiator); err != nil {
			return api.Host{}, err
		}
	}
	return c.getHost(ctx, name)
}

// planReturn stores the plan that moves back to host the VMs its last maintenance plan
// moved away; the maintenance loop carries it out.
func (c *Center) planReturn(ctx context.Context, host, initiator string) error {
	last, err := c.store.LatestPlan(ctx, host, api.PlanMaintenance)
	if errors.Is(err, store.ErrNotFound) {
		return api.Conflict("host %s has no maintenance plan whose VMs could go back; it is out of maintenance", host)
	} else if err != nil {
		return err
	}
	p := api.Plan{ID: c.newID(), Kind: api.PlanReturn, Host: host, Reason: "back to " + host + " after its maintenance (plan " + last.ID + ")",
		State: api.PlanRunning, Initiator: initiator, Created: c.now().UTC(), Moves: []api.PlanMove{}}
	for _, mv := range last.Moves {
		if mv.State == api.MoveDone && mv.To != "" {
			p.Moves = append(p.Moves, api.PlanMove{VM: mv.VM, From: mv.To, To: host, MemoryMiB: mv.MemoryMiB, State: api.MovePending})
		}
	}
	if len(p.Moves) == 0 {
		return nil
	}
	if err := c.store.InsertPlan(ctx, p); err != nil {
		return err
	}
	audit.Params(ctx, map[string]any{"return_plan": p.ID, "returning": len(p.Moves)})
	c.log.Info("VMs moving back after maintenance", "host", host, "plan", p.ID, "moves", len(p.Moves))
	c.wakePlans()
	return nil
}

// advanceMoves brings a plan whose moves name their destinations (a return plan, a
// balancer's move) one step closer: each VM from its move's From to its To. A VM that
// went elsewhere since, or was deleted, is left where it is; one stopped is not moved;
// one whose migration failed twice the same way blocks the plan.
func (c *Center) advanceMoves(ctx context.Context, p api.Plan) api.Plan {
	ms, err := c.store.PlanMigrations(ctx, p.ID)
	if err != nil {
		c.log.Warn("could not read a plan's migrations; tried again next round", "plan", p.ID, "err", err)
		return p
	}
	migs := map[string][]api.Migration{}
	for _, m := range ms {
		migs[m.VM] = append(migs[m.VM], withLiveView(m, c))
	}
	p.Moves = slices.Clone(p.Moves)
	for i := range p.Moves {
		mv := &p.Moves[i]
		vm := migs[mv.VM]
		mv.Attempts = len(vm)
		if len(vm) > 0 {
			mv.Migration = vm[0].ID
		}
		r, err := c.store.VM(ctx, mv.VM)
		switch {
		case errors.Is(err, store.ErrNotFound):
			mv.State, mv.Code, mv.Error = api.MoveLeft, "", ""
			continue
		case err != nil:
			continue
		case len(vm) > 0 && !terminal(vm[0].State):
			mv.State, mv.Code, mv.Error, mv.Prediction = api.MoveMigrating, "", "", vm[0].Prediction
			continue
		case r.Host == mv.To:
			mv.State, mv.Code, mv.Error = api.MoveDone, "", ""
			if len(vm) > 0 && vm[0].State == api.MigrationSucceeded {
				mv.ActualTotalMS, mv.ActualDowntimeMS, mv.Prediction = vm[0].TotalMS, vm[0].DowntimeMS, vm[0].Prediction
			}
			continue
		case r.Host != mv.From:
			mv.State, mv.Code, mv.Error = api.MoveLeft, "", ""
			continue
		case r.State != api.VMRunning:
			mv.State, mv.Code, mv.Error = api.MoveStopped, "", ""
			continue
		case failedOut(vm):
			mv.State, mv.Code = api.MoveBlocked, "migration_failed"
			mv.Error = fmt.Sprintf("its migration back failed %d times (last: %s); the plan does not try again", len(vm), vm[0].Error)
			continue
		}
		if active, err := c.store.Migrations(ctx, mv.VM, true, 1); err != nil || len(active) > 0 {
			continue // another migration of the VM: wait for it
		}
		pl, err := c.planMigration(ctx, mv.VM, api.MigrateRequest{To: mv.To})
		if err == nil {
			var m api.Migration
			if m, err = c.submitMove(ctx, p, pl, p.Reason, fmt.Sprintf("plan %s: %s to %s (by %s)", p.ID, p.Kind, mv.To, p.Initiator)); err == nil {
				mv.State, mv.Code, mv.Error = api.MoveMigrating, "", ""
				mv.Migration, mv.Attempts, mv.Prediction = m.ID, mv.Attempts+1, m.Prediction
				continue
			}
		}
		mv.State, mv.Code, mv.Error = api.MoveBlocked, errCode(err), err.Error()
	}
	return settleReturn(p, c.now())
}

// settleReturn says where a return plan stands once its moves are observed.
func settleReturn(p api.Plan, now time.Time) api.Plan {
	togo, blocked := 0, []string{}
	for _, mv := range p.Moves {
		switch mv.State {
		case api.MovePending, api.MoveMigrating:
			togo++
		case api.MoveBlocked:
			blocked = append(blocked, mv.VM)
		}
	}
	p.Note = ""
	switch {
	case togo > 0:
		p.State, p.Note = api.PlanRunning, fmt.Sprintf("%d of %d moves to go", togo, len(p.Moves))
	case len(blocked) > 0:
		p.State, p.Note = api.PlanBlocked, "blocked by "+strings.Join(blocked, ", ")
	default:
		fin := now.UTC()
		p.State, p.Finished, p.ActualMakespanMS = api.PlanDone, &fin, float64(fin.Sub(p.Created).Milliseconds())
	}
	return p
}

// maintenanceView is the maintenance mode of a host as users see it: its state comes
// from the host's newest plan.
func (c *Center) maintenanceView(ctx context.Context, host string, m store.Maintenance) *api.MaintenanceMode {
	out := &api.MaintenanceMode{Reason: m.Reason, Since: m.Since, State: api.MaintenanceEntering}
	p, err := c.store.LatestPlan(ctx, host, api.PlanMaintenance)
	if err != nil || p.Created.Before(m.Since.Add(-time.Second)) {
		return out
	}
	out.Plan = p.ID
	switch p.State {
	case api.PlanDone:
		out.State = api.MaintenanceIn
	case api.PlanBlocked:
		out.State = api.MaintenanceBlocked
	}
	for _, mv := range p.Moves {
		if mv.State == api.MoveBlocked {
			out.Blocked = append(out.Blocked, mv)
		}
	}
	return out
}

// getPlan returns one plan.
func (c *Center) getPlan(ctx context.Context, id string) (api.Plan, error) {
	p, err := c.store.Plan(ctx, id)
	if errors.Is(err, store.ErrNotFound) {
		return p, api.NotFound("no plan %s; `godwit plan list` shows them", id)
	}
	return p, err
}
