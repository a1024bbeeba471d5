package center

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"sort"
	"time"

	"github.com/godwit/godwit/internal/admission"
	"github.com/godwit/godwit/internal/api"
)

// The migration loop. One goroutine drives every unfinished migration: it takes their
// events — a migration asked for, its admission, the views its source pushes on the
// host's progress stream, the answers to its own requests, the clock — applies each to
// the migration's state with step (lifecycle.go), and carries out the effects. What
// waits (a slot, a host, the store's outcome write) runs in goroutines the loop starts
// and the center owns, and comes back as an event, so the loop never waits on a host.
//
// The loop is level-triggered from the store: at start it takes every migration the
// store holds as unfinished (a restarted center loses none), and every storeScanEvery it
// takes any unfinished migration the store holds that it does not drive, so that a
// migration is never left without a driver whatever happened to the request that made
// it. The outcome of a started migration comes from its source's record or, when the
// source cannot say, from what the hosts report in their heartbeats (settleByEvidence).
const (
	// retryEvery is how often the loop asks a source for a migration its progress stream
	// does not speak of.
	retryEvery = time.Second
	// recordRetry is how long the loop waits before it records again an outcome the
	// store (or the audit trail) refused.
	recordRetry = 2 * time.Second
	// storeScanEvery is how often the loop looks in the store for unfinished migrations
	// nothing drives; storeScanGrace is how old such a migration must be, so that one
	// whose request is still being answered is not taken twice.
	storeScanEvery = 10 * time.Second
	storeScanGrace = 10 * time.Second
	// loopBacklog bounds the events waiting for the loop; a sender waits beyond it.
	loopBacklog = 256
)

// tracked is a migration the loop drives: its state and what the loop keeps for it.
type tracked struct {
	migState
	// plan is what starting it needs (source, destination, costs, priority); it is
	// zero for a migration adopted after it started.
	plan plan
	// reply receives the first outcome for whoever asked for the migration.
	reply chan<- submitted
	// f is its subscription to the source's progress stream while followed.
	f *follower
}

// loopMsg is what reaches the loop: an event of a migration it drives, or migrations to
// drive (adopt, or a new one with its plan).
type loopMsg struct {
	ev    migEvent
	adopt []adoption
	// scan asks for a look in the store now (scanStore).
	scan bool
}

// adoption is a migration handed to the loop: a new one (plan, reply, and whether it was
// admitted already) or one the store holds as unfinished.
type adoption struct {
	m        api.Migration
	plan     *plan
	admitted bool
	reply    chan<- submitted
}

// migLoop is the loop and its inbox.
type migLoop struct {
	c    *Center
	ctx  context.Context
	in   chan loopMsg
	wake chan struct{} // a progress stream left a view for a follower
	migs map[string]*tracked
}

// migrations returns the center's migration loop, started on first use; it runs until
// the center's run context ends.
func (c *Center) migrations() *migLoop {
	c.loopOnce.Do(func() {
		l := &migLoop{c: c, ctx: c.runCtx, in: make(chan loopMsg, loopBacklog), wake: make(chan struct{}, 1),
			migs: map[string]*tracked{}}
		c.loop = l
		c.wg.Add(1)
		go func() {
			defer c.wg.Done()
			l.run()
		}()
	})
	return c.loop
}

// send hands msg to the loop, unless the center stops.
func (l *migLoop) send(msg loopMsg) {
	select {
	case l.in <- msg:
	case <-l.ctx.Done():
	}
}

// event sends one migration's event.
func (l *migLoop) event(ev migEvent) { l.send(loopMsg{ev: ev}) }

func (l *migLoop) run() {
	tick := time.NewTicker(retryEvery)
	defer tick.Stop()
	scan := time.NewTicker(storeScanEvery)
	defer scan.Stop()
	for {
		select {
		case <-l.ctx.Done():
			return
		case msg := <-l.in:
			if msg.scan {
				l.scanStore()
				continue
			}
			if msg.adopt != nil {
				for _, a := range msg.adopt {
					l.take(a)
				}
				continue
			}
			if t := l.migs[msg.ev.id]; t != nil {
				l.apply(t, msg.ev)
			}
		case <-l.wake:
			for id, t := range l.migs {
				if t.f == nil {
					continue
				}
				if v, ok := t.f.take(); ok {
					l.apply(t, migEvent{kind: evView, id: id, view: v})
				}
			}
		case <-tick.C:
			for id, t := range l.migs {
				l.apply(t, migEvent{kind: evTick, id: id, covered: t.f != nil && t.f.isCovered()})
			}
		case <-scan.C:
			l.scanStore()
		}
	}
}

// apply steps t with ev and carries out the effects.
func (l *migLoop) apply(t *tracked, ev migEvent) {
	for _, e := range t.step(ev, l.c.now()) {
		l.do(t, e)
	}
}

// take starts driving a migration handed to the loop.
func (l *migLoop) take(a adoption) {
	c := l.c
	if l.migs[a.m.ID] != nil {
		return
	}
	t := &tracked{migState: migState{m: a.m}, reply: a.reply}
	l.migs[a.m.ID] = t
	switch {
	case a.plan != nil && a.admitted:
		t.plan = *a.plan
		l.apply(t, migEvent{kind: evAdmittedNow, id: a.m.ID})
	case a.plan != nil:
		t.plan = *a.plan
		l.apply(t, migEvent{kind: evQueued, id: a.m.ID})
	case a.m.State == api.MigrationQueued:
		// Stored as queued: queued again in the order it was asked for.
		t.replied = true
		p, err := c.replan(l.ctx, a.m)
		if err != nil {
			t.phase = phaseAdmitting
			l.apply(t, migEvent{kind: evRefused, id: a.m.ID, err: fmt.Errorf("it could not be queued again: %w", err)})
			return
		}
		c.log.Info("queueing an unfinished migration again", "migration", a.m.ID, "vm", a.m.VM)
		t.plan = p
		l.apply(t, migEvent{kind: evQueued, id: a.m.ID})
	default:
		// Started: it holds its slots whatever the limits, and is followed again.
		tk, err := c.limiter.Acquire(l.ctx, admission.Request{ID: a.m.ID, Priority: admission.High, Costs: c.costsOf(l.ctx, a.m)}, nil)
		if err != nil {
			c.log.Warn("an unfinished migration does not fit the limits; it runs on outside them", "migration", a.m.ID, "err", err)
		} else {
			c.tickets.Store(a.m.ID, tk)
			c.caps.Store(a.m.ID, a.m.BandwidthCap)
		}
		c.log.Info("following an unfinished migration again", "migration", a.m.ID, "vm", a.m.VM, "state", a.m.State)
		l.apply(t, migEvent{kind: evAdopted, id: a.m.ID})
	}
}

// do carries out one effect for t.
func (l *migLoop) do(t *tracked, e effect) {
	c, ctx, id := l.c, l.ctx, e.m.ID
	switch e.kind {
	case effPublish:
		c.live.Store(id, e.m)
		c.migrationChanged(ctx, e.m)
	case effLive:
		c.live.Store(id, e.m)
	case effStore:
		if err := c.store.UpdateMigration(ctx, e.m); err != nil {
			c.log.Warn("could not store a migration's state; the next change stores it", "migration", id, "state", e.m.State, "err", err)
		}
	case effAdmit:
		l.admit(t.plan)
	case effLaunch:
		p, m := t.plan, e.m
		l.background(func(ctx context.Context) {
			started, err := c.launch(ctx, p, m)
			if err != nil {
				l.event(migEvent{kind: evStartFailed, id: id, err: err})
				return
			}
			l.event(migEvent{kind: evStarted, id: id, view: started})
		})
	case effFollow:
		if t.f == nil {
			t.f = c.joinFeed(e.m, l.wake)
		}
	case effUnfollow:
		if t.f != nil {
			c.leaveFeed(e.m.Source, t.f)
			t.f = nil
		}
	case effPoll:
		m := e.m
		l.background(func(ctx context.Context) { l.event(l.poll(ctx, m)) })
	case effRecord:
		m := e.m
		l.background(func(ctx context.Context) {
			if err := c.record1(ctx, m); err != nil {
				l.event(migEvent{kind: evRecordFailed, id: id, err: err})
				return
			}
			l.event(migEvent{kind: evRecorded, id: id})
		})
	case effFailNow:
		c.release(id)
		if err := c.store.UpdateMigration(ctx, e.m); err != nil {
			c.log.Warn("could not store a migration that failed to start", "migration", id, "err", err)
		}
		c.migrationChanged(ctx, e.m)
		c.metrics.RecordMigration(e.m)
	case effReply:
		if t.reply != nil {
			s := submitted{m: e.m}
			if e.err != nil {
				s = submitted{err: e.err}
			}
			t.reply <- s
			t.reply = nil
		}
	case effForget:
		if t.f != nil {
			c.leaveFeed(e.m.Source, t.f)
			t.f = nil
		}
		delete(l.migs, id)
		c.live.Delete(id)
	case effNoteWaiting:
		c.log.Warn("migration outcome pending: waiting for a host that knows it", "migration", id, "vm", e.m.VM,
			"source", e.m.Source, "err", e.err)
	case effNoteBack:
		c.log.Info("the source answers again", "migration", id, "vm", e.m.VM, "source", e.m.Source)
	}
}

// background runs f in a goroutine the center owns.
func (l *migLoop) background(f func(context.Context)) {
	l.c.wg.Add(1)
	go func() {
		defer l.c.wg.Done()
		f(l.ctx)
	}()
}

// admit waits for p's slots in the background; a user's cancel of the queued migration
// (cancelQueued) ends the wait.
func (l *migLoop) admit(p plan) {
	c, id := l.c, p.m.ID
	qctx, cancel := context.WithCancel(l.ctx)
	c.waiting.Store(id, cancel)
	l.background(func(ctx context.Context) {
		defer cancel()
		req := admission.Request{ID: id, Priority: p.priority, Costs: p.costs}
		t, err := c.limiter.Acquire(qctx, req, func(w admission.Wait) {
			l.event(migEvent{kind: evWaiting, id: id, note: w.String()})
		})
		c.waiting.Delete(id)
		if err != nil {
			if ctx.Err() != nil {
				return // the center stops: the migration stays queued in the store
			}
			l.event(migEvent{kind: evRefused, id: id, err: err})
			return
		}
		c.tickets.Store(id, t)
		l.event(migEvent{kind: evAdmitted, id: id})
	})
}

// poll asks m's source for its view; when the source cannot say, the hosts' heartbeats
// may (settleByEvidence).
func (l *migLoop) poll(ctx context.Context, m api.Migration) migEvent {
	cur, err := l.c.pollSource(ctx, m)
	if err == nil {
		return migEvent{kind: evView, id: m.ID, view: cur, polled: true}
	}
	var se *api.StatusError
	unknown := errors.As(err, &se) && se.Status == http.StatusNotFound
	if end, ok := l.c.settleByEvidence(ctx, m, unknown, err); ok {
		return migEvent{kind: evView, id: m.ID, view: end, polled: true}
	}
	return migEvent{kind: evUnanswered, id: m.ID, err: err, unknown: unknown, polled: true}
}

// scanStore takes the unfinished migrations of the store that the loop does not drive.
func (l *migLoop) scanStore() {
	c := l.c
	active, err := c.store.Migrations(l.ctx, "", true, 1000)
	if err != nil {
		c.log.Warn("could not read the unfinished migrations", "err", err)
		return
	}
	var orphans []api.Migration
	for _, m := range active {
		if l.migs[m.ID] == nil && c.now().Sub(m.Started) >= storeScanGrace {
			orphans = append(orphans, m)
		}
	}
	for _, a := range adoptions(orphans) {
		c.log.Warn("an unfinished migration had no driver; driving it", "migration", a.m.ID, "vm", a.m.VM, "state", a.m.State)
		l.take(a)
	}
}

// adoptions orders stored unfinished migrations for the loop: the started ones first
// (they hold their slots), then the queued ones in the order they were asked for.
func adoptions(ms []api.Migration) []adoption {
	sort.SliceStable(ms, func(i, j int) bool {
		qi, qj := ms[i].State == api.MigrationQueued, ms[j].State == api.MigrationQueued
		if qi != qj {
			return !qi
		}
		return ms[i].Started.Before(ms[j].Started)
	})
	out := make([]adoption, len(ms))
	for i, m := range ms {
		out[i] = adoption{m: m}
	}
	return out
}

// resumeMigrations hands the loop every migration the store holds as unfinished, as a
// restarted center does before it serves.
func (c *Center) resumeMigrations(ctx context.Context) error {
	active, err := c.store.Migrations(ctx, "", true, 1000)
	if err != nil {
		return err
	}
	for _, m := range active {
		if m.State != api.MigrationQueued {
			c.trail.MigrationResumed(ctx, m)
		}
	}
	if len(active) > 0 {
		c.migrations().send(loopMsg{adopt: adoptions(active)})
	}
	return nil
}

// follow hands the loop a migration that its source runs already, to follow.
func (c *Center) follow(m api.Migration) {
	c.migrations().send(loopMsg{adopt: []adoption{{m: m}}})
}
