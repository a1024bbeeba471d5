package center

import (
	"context"
	"fmt"
	"strings"
	"time"

	"github.com/godwit/godwit/internal/api"
	"github.com/godwit/godwit/internal/audit"
	"github.com/godwit/godwit/internal/store"
)

// The power loop converges each VM's power state to the one the store wants (desired,
// set by `vm start` and `vm stop`), level-triggered: every round it reads the VMs wanted
// running whose record says stopped or error, and asks their hosts why the QEMU ended
// (api.VMStatus.Exit). A guest that powered itself off (or a QEMU stopped on the host
// itself, not through the center) made a choice the center takes as the new desired
// state: stopped, recorded in the audit trail. A QEMU that crashed, was killed or was
// lost with its host is started again where it was (HA restart in place), at most
// maxRestarts times in restartWindow; after that the center gives up, sets the VM's
// desired state to stopped, and says so, rather than restart it in a loop (a restart
// that fails counts as one). A VM being migrated, or on a host in maintenance or
// disconnected, is left alone.

// powerRound is how often the power loop looks.
const powerRound = 3 * time.Second

// maxRestarts restarts of one VM within restartWindow, at most.
const (
	maxRestarts   = 3
	restartWindow = 10 * time.Minute
)

// powerAction is what the power loop does for one VM.
type powerAction int

const (
	powerNone    powerAction = iota
	powerRestart             // start it again where it was
	powerAccept              // its desired state becomes stopped: the guest's (or host's) choice
	powerGiveUp              // too many restarts: desired stopped, and said
)

// powerDecision decides for a VM wanted running whose QEMU ended for reason exit (an
// api.Exit* reason), with its restarts within the window so far. It is a pure function.
func powerDecision(exit string, restarts int) (powerAction, string) {
	switch exit {
	case api.ExitGuestPoweroff:
		return powerAccept, "the guest powered itself off"
	case api.ExitRequested:
		return powerAccept, "its QEMU was stopped on its host, not through the center"
	case api.ExitCrashed, api.ExitKilled, api.ExitLost, api.ExitUnknown:
		why := map[string]string{
			api.ExitCrashed: "its QEMU ended without a shutdown (crash, SIGKILL or the OOM killer)",
			api.ExitKilled:  "a signal on its host ended its QEMU",
			api.ExitLost:    "its QEMU was gone when its host's agent started (the host restarted, or QEMU ended while the agent was down)",
			api.ExitUnknown: "its QEMU ended while its host could not follow it",
		}[exit]
		if restarts >= maxRestarts {
			return powerGiveUp, fmt.Sprintf("%s, and it was restarted %d times in %v already; the center stopped restarting it", why, restarts, restartWindow)
		}
		return powerRestart, why
	}
	// Never ran here, or a start that failed: nothing the loop should retry.
	return powerNone, ""
}

// powerLoop is the loop's memory: the recent restarts of each VM. Only the loop's
// goroutine touches it.
type powerLoop struct {
	restarts map[string][]time.Time
}

// runPower is the power loop: it runs until ctx ends.
func (c *Center) runPower(ctx context.Context) {
	pl := &powerLoop{restarts: map[string][]time.Time{}}
	t := time.NewTicker(powerRound)
	defer t.Stop()
	for {
		c.powerRound(ctx, pl)
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// powerRound looks at every VM that is down while wanted running.
func (c *Center) powerRound(ctx context.Context, pl *powerLoop) {
	down, err := c.store.VMsDown(ctx)
	if err != nil {
		c.log.Error("the power loop could not read the VMs", "err", err)
		return
	}
	if len(down) == 0 {
		return
	}
	maint, err := c.store.Maintenances(ctx)
	if err != nil {
		c.log.Error("the power loop could not read the hosts in maintenance", "err", err)
		return
	}
	now := c.now()
	for name, ts := range pl.restarts {
		for len(ts) > 0 && now.Sub(ts[0]) > restartWindow {
			ts = ts[1:]
		}
		if len(ts) == 0 {
			delete(pl.restarts, name)
		} else {
			pl.restarts[name] = ts
		}
	}
	for _, r := range down {
		if ctx.Err() != nil {
			return
		}
		if _, ok := maint[r.Host]; ok || c.migrating(r.Spec.Name) {
			continue
		}
		h, err := c.store.Host(ctx, r.Host)
		if err != nil || !c.connected(h) {
			continue
		}
		st := reportedStatus(h, r.Spec.UUID)
		if st == nil || st.State == api.VMRunning || st.ExitedAt == nil || !h.LastHeartbeat.After(r.Updated.Add(-time.Second)) {
			continue // the host does not have it, runs it, or has not reported since
		}
		if active, err := c.store.Migrations(ctx, r.Spec.Name, true, 1); err != nil || len(active) > 0 {
			continue
		}
		// What a user asked since the round began wins.
		if cur, err := c.store.VM(ctx, r.Spec.Name); err != nil || cur.Desired != api.VMRunning || cur.Host != r.Host {
			continue
		}
		act, why := powerDecision(st.Exit, len(pl.restarts[r.Spec.Name]))
		switch act {
		case powerAccept, powerGiveUp:
			c.acceptStopped(ctx, r, st, act, why)
		case powerRestart:
			pl.restarts[r.Spec.Name] = append(pl.restarts[r.Spec.Name], now)
			c.restartVM(ctx, r, st, why, len(pl.restarts[r.Spec.Name]))
		}
	}
}

// reportedStatus is what host h last reported of the VM with uuid, or nil.
func reportedStatus(h store.HostRecord, uuid string) *api.VMStatus {
	for _, v := range h.Facts.VMs {
		if strings.EqualFold(v.UUID, uuid) {
			return &v
		}
	}
	return nil
}

// acceptStopped makes stopped the VM's desired state, with its audit record in the same
// transaction.
func (c *Center) acceptStopped(ctx context.Context, r store.VMRecord, st *api.VMStatus, act powerAction, why string) {
	rec := audit.Record{Actor: audit.CenterActor, ActorKind: audit.KindAutomation, Action: "vm.stop", Target: r.Spec.Name,
		Outcome: audit.Succeeded}
	if act == powerGiveUp {
		rec.Outcome, rec.Error = audit.Failed, why
	}
	rec.Params, _ = audit.EncodeParams(map[string]any{"host": r.Host, "exit": st.Exit, "reason": why, "desired": api.VMStopped})
	if err := c.store.SetDesired(store.WithTxHook(ctx, c.trail.AppendHook(rec)), r.Spec.Name, api.VMStopped, c.now()); err != nil {
		c.log.Error("could not record a VM's new desired state", "vm", r.Spec.Name, "err", err)
		return
	}
	c.log.Info("VM left stopped", "vm", r.Spec.Name, "host", r.Host, "exit", st.Exit, "reason", why)
}

// restartVM starts a VM again on its host, and records why and how it went.
func (c *Center) restartVM(ctx context.Context, r store.VMRecord, st *api.VMStatus, why string, attempt int) {
	rec := audit.Record{Actor: audit.CenterActor, ActorKind: audit.KindAutomation, Action: "vm.start", Target: r.Spec.Name,
		Outcome: audit.Succeeded}
	start := time.Now()
	sctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
	_, err := c.startVM(sctx, r.Spec.Name)
	cancel()
	d := float64(time.Since(start).Milliseconds())
	rec.DurationMS = &d
	if err != nil {
		rec.Outcome, rec.Error = audit.Failed, err.Error()
	}
	rec.Params, _ = audit.EncodeParams(map[string]any{"host": r.Host, "exit": st.Exit, "reason": why, "restart": attempt, "max_restarts": maxRestarts})
	if _, aerr := c.trail.Append(context.WithoutCancel(ctx), rec); aerr != nil {
		c.log.Error("a restart could not be recorded in the audit trail", "vm", r.Spec.Name, "err", aerr)
	}
	if err != nil {
		c.log.Warn("VM restart failed", "vm", r.Spec.Name, "host", r.Host, "exit", st.Exit, "err", err)
		return
	}
	c.log.Info("VM restarted", "vm", r.Spec.Name, "host", r.Host, "exit", st.Exit, "reason", why, "restart", attempt)
}
