package center

import (
	"context"
	"errors"
	"fmt"
	"math"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/godwit/godwit/internal/api"
	"github.com/godwit/godwit/internal/audit"
	"github.com/godwit/godwit/internal/balance"
	"github.com/godwit/godwit/internal/migration"
	"github.com/godwit/godwit/internal/store"
)

// The balancer loop evens out the hosts' loads (internal/balance decides; this loop
// gathers its inputs and carries its word out). Its mode and level are desired state in
// the store (`godwit cluster balancer`). Every BalanceInterval it models each connected
// host that is healthy and not in maintenance with the VMs it reports (each VM's CPU use,
// averaged by its host over a minute, and its memory) and measures the imbalance. Only
// after holdRounds rounds in a row over the level's target does it look for a move, and
// only one at a time: while a balance plan is under way it waits. In recommend mode the
// move is stored as a recommended plan, with its explanation, for an operator to apply
// (`godwit cluster apply ID`); in automatic mode the plan runs at once through the plan
// loop (maintenance.go), as any migration does (queue, limits, audit). A VM the
// balancer moved is left alone for moveCooldown, and does not go back to the host it
// left for noReturn.

// Balancer timing.
const (
	holdRounds   = 3
	moveCooldown = 30 * time.Minute
	noReturn     = 2 * time.Hour
)

// balancerState is what the loop remembers between rounds, and its last status for the
// API; the loop writes it, the API reads it, under mu.
type balancerState struct {
	mu       sync.Mutex
	rounds   int
	cooldown map[string]time.Time
	left     map[string]map[string]time.Time
	status   api.BalancerStatus
}

func newBalancerState() *balancerState {
	return &balancerState{cooldown: map[string]time.Time{}, left: map[string]map[string]time.Time{}}
}

// runBalancer is the balancer loop: it runs until ctx ends.
func (c *Center) runBalancer(ctx context.Context) {
	c.seedBalancer(ctx)
	t := time.NewTicker(c.cfg.BalanceInterval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		c.balanceRound(ctx)
	}
}

// seedBalancer restores the cooldowns and recent departures from the balance plans of
// the last noReturn, so that a restarted center does not move a VM straight back.
func (c *Center) seedBalancer(ctx context.Context) {
	ps, err := c.store.Plans(ctx, "", false, 1000)
	if err != nil {
		return
	}
	b := c.balancer
	b.mu.Lock()
	defer b.mu.Unlock()
	for _, p := range ps {
		if p.Kind != api.PlanBalance || p.State == api.PlanRecommended || p.State == api.PlanCancelled || c.now().Sub(p.Created) > noReturn {
			continue
		}
		for _, mv := range p.Moves {
			b.remember(mv, p.Created)
		}
	}
}

// remember notes that the balancer moves mv at t.
func (b *balancerState) remember(mv api.PlanMove, t time.Time) {
	if until := t.Add(moveCooldown); until.After(b.cooldown[mv.VM]) {
		b.cooldown[mv.VM] = until
	}
	if b.left[mv.VM] == nil {
		b.left[mv.VM] = map[string]time.Time{}
	}
	b.left[mv.VM][mv.From] = t.Add(noReturn)
}

// balancerStatus is the balancer's settings and its last round.
func (c *Center) balancerStatus(ctx context.Context) (api.BalancerStatus, error) {
	set, err := c.store.BalancerSettings(ctx)
	if err != nil {
		return api.BalancerStatus{}, err
	}
	c.balancer.mu.Lock()
	st := c.balancer.status
	c.balancer.mu.Unlock()
	st.BalancerSettings, st.HoldRounds = set, holdRounds
	if st.Hosts == nil {
		st.Hosts = []api.HostLoad{}
	}
	return st, nil
}

// setBalancer stores the balancer's mode and level, checked.
func (c *Center) setBalancer(ctx context.Context, b api.BalancerSettings) (api.BalancerStatus, error) {
	switch b.Mode {
	case api.BalancerOff, api.BalancerRecommend, api.BalancerAutomatic:
	default:
		return api.BalancerStatus{}, api.BadRequest("the balancer's mode is off, recommend or automatic, not %q", api.Truncate(b.Mode, api.MaxShortName))
	}
	if b.Level < 1 || b.Level > 5 {
		return api.BalancerStatus{}, api.BadRequest("the balancer's level is 1 (only mandatory moves) to 5 (the most moves), not %d", b.Level)
	}
	audit.Params(ctx, map[string]any{"mode": b.Mode, "level": b.Level})
	if err := c.store.SetBalancerSettings(ctx, b); err != nil {
		return api.BalancerStatus{}, err
	}
	c.log.Info("balancer set", "mode", b.Mode, "level", b.Level)
	return c.balancerStatus(ctx)
}

// balanceRound is one round of the balancer.
func (c *Center) balanceRound(ctx context.Context) {
	set, err := c.store.BalancerSettings(ctx)
	if err != nil {
		c.log.Error("the balancer could not read its settings", "err", err)
		return
	}
	hosts, err := c.balanceModel(ctx)
	if err != nil {
		c.log.Error("the balancer could not read the hosts", "err", err)
		return
	}
	now := c.now()
	b := c.balancer
	b.mu.Lock()
	cool := make(map[string]time.Time, len(b.cooldown))
	for k, v := range b.cooldown {
		cool[k] = v
	}
	left := make(map[string]map[string]time.Time, len(b.left))
	for k, v := range b.left {
		left[k] = v
	}
	b.mu.Unlock()
	level := set.Level
	if set.Mode == api.BalancerOff {
		level = 1 // the loads and the imbalance only, for the status: no move is looked for
	}
	params := balance.Params{Level: level, Now: now, CooldownUntil: cool, Left: left,
		Allowed: func(vm, host string) (bool, string) { return c.balanceAllowed(ctx, vm, host) }}
	res := balance.Recommend(hosts, params)
	res.Target = balance.Target(set.Level, len(hosts))
	st := api.BalancerStatus{Imbalance: res.Imbalance, Target: res.Target, LastRound: &now, Hosts: []api.HostLoad{}}
	if math.IsInf(st.Target, 1) {
		st.Target = -1 // JSON has no infinity: level 1 or one host, nothing to even out
	}
	for _, h := range hosts {
		st.Hosts = append(st.Hosts, api.HostLoad{Host: h.Name, Load: res.Loads[h.Name], VMs: len(h.VMs)})
	}
	b.mu.Lock()
	switch {
	case set.Mode == api.BalancerOff:
		b.rounds = 0
		st.Note = "off"
	case res.Imbalance > res.Target:
		b.rounds++
	default:
		b.rounds = 0
	}
	st.RoundsOver = b.rounds
	rounds := b.rounds
	b.mu.Unlock()
	if set.Mode != api.BalancerOff {
		st.Note = res.Note
		if rounds > 0 && rounds < holdRounds {
			st.Note = fmt.Sprintf("imbalance %.3f over the target %.3f for %d of %d rounds", res.Imbalance, res.Target, rounds, holdRounds)
		}
		if rounds >= holdRounds && res.Move != nil {
			st.Note = c.proposeBalance(ctx, set, res, rounds, hosts, params)
		}
	}
	b.mu.Lock()
	b.status = st
	b.mu.Unlock()
}

// balanceModel is the balancer's model of the cluster: each connected, healthy host
// not in maintenance, with the running VMs it reports (their CPU use, their memory).
func (c *Center) balanceModel(ctx context.Context) ([]balance.Host, error) {
	recs, err := c.store.Hosts(ctx)
	if err != nil {
		return nil, err
	}
	maint, err := c.store.Maintenances(ctx)
	if err != nil {
		return nil, err
	}
	mem := map[string]int{}
	for after := ""; ; {
		vms, _, err := c.store.VMsPage(ctx, store.VMFilter{}, after, 5000)
		if err != nil {
			return nil, err
		}
		for _, r := range vms {
			mem[strings.ToLower(r.Spec.UUID)] = r.Spec.MemoryMiB
		}
		if len(vms) < 5000 {
			break
		}
		after = vms[len(vms)-1].Spec.Name
	}
	var out []balance.Host
	for _, h := range recs {
		if _, in := maint[h.Facts.Name]; in || !c.connected(h) || h.Facts.Health != "ok" {
			continue
		}
		bh := balance.Host{Name: h.Facts.Name, Threads: max(h.Facts.CPU.Threads, h.Facts.CPU.Cores), MemoryMiB: h.Facts.MemoryMiB}
		for _, v := range h.Facts.VMs {
			if v.State == api.VMRunning {
				bh.VMs = append(bh.VMs, balance.VM{Name: v.Name, CPU: v.CPU, MemoryMiB: mem[strings.ToLower(v.UUID)]})
			}
		}
		out = append(out, bh)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out, nil
}

// balanceAllowed asks the placement engine whether vm may go to host.
func (c *Center) balanceAllowed(ctx context.Context, vm, host string) (bool, string) {
	if c.migrating(vm) {
		return false, "it is being migrated"
	}
	chk, err := c.checkMigration(ctx, vm, host)
	if err != nil {
		return false, err.Error()
	}
	for _, h := range chk.Hosts {
		if h.Host == host && !h.Compatible {
			msgs := make([]string, len(h.Errors))
			for i, f := range h.Errors {
				msgs[i] = f.Message
			}
			return false, joinSentences(msgs)
		}
	}
	return true, ""
}

// proposeBalance turns the round's move into a plan: recommended, or running in
// automatic mode. Nothing new is proposed while a balance plan is under way, or while
// the same move is already recommended. It says what it did.
func (c *Center) proposeBalance(ctx context.Context, set api.BalancerSettings, res balance.Result, rounds int, hosts []balance.Host, params balance.Params) string {
	if err := c.plans.mu.lock(ctx); err != nil {
		return "stopping"
	}
	defer c.plans.mu.unlock()
	mv := res.Move
	ps, err := c.store.Plans(ctx, "", false, 200)
	if err != nil {
		return "could not read the plans: " + err.Error()
	}
	for _, p := range ps {
		if p.Kind != api.PlanBalance {
			continue
		}
		switch p.State {
		case api.PlanRunning, api.PlanBlocked:
			return fmt.Sprintf("waits for balance plan %s to end (one move at a time)", p.ID)
		case api.PlanRecommended:
			// A recommendation stands while it still pays, rather than give way to one a
			// little better each round.
			if set.Mode == api.BalancerRecommend && len(p.Moves) == 1 {
				if _, why := balance.Check(hosts, params, p.Moves[0].VM, p.Moves[0].To); why == "" {
					return fmt.Sprintf("recommends plan %s: move %s from %s to %s", p.ID, p.Moves[0].VM, p.Moves[0].From, p.Moves[0].To)
				}
			}
			fin := c.now().UTC()
			p.State, p.Finished, p.Note = api.PlanCancelled, &fin, "superseded by a newer round of the balancer"
			if err := c.store.UpdatePlanFrom(ctx, api.PlanRecommended, p); err != nil && !errors.Is(err, store.ErrNotFound) {
				return "could not withdraw an older recommendation: " + err.Error()
			}
		}
	}
	exp := &api.BalanceExplanation{Level: set.Level, Imbalance: res.Imbalance, ImbalanceAfter: mv.After, Target: res.Target, RoundsOver: rounds,
		SourceLoad: mv.FromLoad, SourceLoadAfter: mv.FromAfter, DestinationLoad: mv.ToLoad, DestinationLoadAfter: mv.ToAfter}
	for _, r := range res.Rejected {
		exp.Rejected = append(exp.Rejected, api.RejectedMove{VM: r.VM, To: r.To, ImbalanceAfter: r.After, Reason: r.Reason})
	}
	move := api.PlanMove{VM: mv.VM, From: mv.From, To: mv.To, State: api.MovePending}
	if r, err := c.store.VM(ctx, mv.VM); err == nil {
		move.MemoryMiB = r.Spec.MemoryMiB
		if src, err := c.store.Host(ctx, mv.From); err == nil {
			if pol, err := migration.LookupPolicy(r.Spec.MigrationPolicy); err == nil {
				act, actSource := c.memoryOf(ctx, r, src, checkMaxAge)
				move.Prediction = c.predict(r, act, actSource, mv.From, mv.To, pol, pol.EncryptionMode(), 0)
			}
		}
	}
	p := api.Plan{ID: c.newID(), Kind: api.PlanBalance, Host: mv.From, State: api.PlanRecommended, Initiator: audit.CenterActor,
		Created: c.now().UTC(), Moves: []api.PlanMove{move}, Explanation: exp,
		Reason: fmt.Sprintf("balance: move %s from %s (load %.2f → %.2f) to %s (%.2f → %.2f); imbalance %.3f → %.3f, over the level-%d target %.3f for %d rounds",
			mv.VM, mv.From, mv.FromLoad, mv.FromAfter, mv.To, mv.ToLoad, mv.ToAfter, mv.Before, mv.After, set.Level, res.Target, rounds)}
	if move.Prediction != nil {
		p.PredictedMakespanMS = move.Prediction.TotalMS
	}
	if set.Mode == api.BalancerAutomatic {
		p.State = api.PlanRunning
	}
	if err := c.store.InsertPlan(ctx, p); err != nil {
		return "could not store the balancer's plan: " + err.Error()
	}
	rec := audit.Record{Actor: audit.CenterActor, ActorKind: audit.KindAutomation, Action: "cluster.balance", Target: p.ID, Outcome: audit.Succeeded}
	rec.Params, _ = audit.EncodeParams(map[string]any{"mode": set.Mode, "vm": mv.VM, "source": mv.From, "destination": mv.To, "reason": p.Reason})
	if _, err := c.trail.Append(context.WithoutCancel(ctx), rec); err != nil {
		c.log.Error("a balancer's plan could not be recorded in the audit trail", "plan", p.ID, "err", err)
	}
	if set.Mode == api.BalancerAutomatic {
		c.balancer.mu.Lock()
		c.balancer.remember(move, p.Created)
		c.balancer.rounds = 0
		c.balancer.mu.Unlock()
		c.wakePlans()
		c.log.Info("balancer moves a VM", "plan", p.ID, "vm", mv.VM, "from", mv.From, "to", mv.To, "imbalance", mv.Before, "after", mv.After)
		return fmt.Sprintf("moves %s from %s to %s (plan %s)", mv.VM, mv.From, mv.To, p.ID)
	}
	c.log.Info("balancer recommends a move", "plan", p.ID, "vm", mv.VM, "from", mv.From, "to", mv.To)
	return fmt.Sprintf("recommends plan %s: move %s from %s to %s", p.ID, mv.VM, mv.From, mv.To)
}

// applyPlan runs a recommended plan.
func (c *Center) applyPlan(ctx context.Context, id, who string) (api.Plan, error) {
	if err := c.plans.mu.lock(ctx); err != nil {
		return api.Plan{}, err
	}
	defer c.plans.mu.unlock()
	p, err := c.getPlan(ctx, id)
	if err != nil {
		return p, err
	}
	audit.Params(ctx, map[string]any{"kind": p.Kind, "host": p.Host})
	if p.State != api.PlanRecommended {
		return p, api.Conflict("plan %s is %s; only a recommended plan can be applied", id, p.State)
	}
	p.State, p.Initiator = api.PlanRunning, who
	if err := c.store.UpdatePlanFrom(ctx, api.PlanRecommended, p); errors.Is(err, store.ErrNotFound) {
		return p, api.Conflict("plan %s changed meanwhile; `godwit plan show %s`", id, id)
	} else if err != nil {
		return p, err
	}
	if p.Kind == api.PlanBalance {
		c.balancer.mu.Lock()
		for _, mv := range p.Moves {
			c.balancer.remember(mv, c.now())
		}
		c.balancer.rounds = 0
		c.balancer.mu.Unlock()
	}
	c.wakePlans()
	return p, nil
}
