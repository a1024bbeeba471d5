package admission

import (
	"context"
	"errors"
	"fmt"
	"math"
	"runtime"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"
)

// guard bounds every wait in these tests; it only turns a deadlock into a failure and
// never decides whether a test passes.
const guard = 30 * time.Second

// result is what Acquire returned.
type result struct {
	t   *Ticket
	err error
}

// pending is a call of Acquire running in a goroutine the test owns.
type pending struct {
	id     string
	waits  chan Wait   // what the waiting function was handed, in order
	done   chan result // Acquire's return
	cancel context.CancelFunc
}

// start calls Acquire for r in a new goroutine; the test's cleanup cancels it and waits
// for it to end.
func start(t *testing.T, l *Limiter, r Request) *pending {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	p := &pending{id: r.ID, waits: make(chan Wait, 256), done: make(chan result, 1), cancel: cancel}
	exited := make(chan struct{})
	go func() {
		defer close(exited)
		tk, err := l.Acquire(ctx, r, func(w Wait) { p.waits <- w })
		p.done <- result{tk, err}
	}()
	t.Cleanup(func() {
		cancel()
		select {
		case <-exited:
		case <-time.After(guard):
			t.Errorf("Acquire(%s) did not return after its context was cancelled", r.ID)
		}
	})
	return p
}

// queue starts r and returns once it waits in the queue, with its first Wait.
func queue(t *testing.T, l *Limiter, r Request) (*pending, Wait) {
	t.Helper()
	p := start(t, l, r)
	select {
	case w := <-p.waits:
		if w.ID != r.ID {
			t.Fatalf("the wait of %s names %s", r.ID, w.ID)
		}
		return p, w
	case res := <-p.done:
		t.Fatalf("%s was expected to wait, but Acquire returned (%v, %v)", r.ID, res.t, res.err)
	case <-time.After(guard):
		t.Fatalf("%s neither waited nor returned", r.ID)
	}
	panic("unreachable")
}

// admitted returns p's ticket once Acquire returns it.
func (p *pending) admitted(t *testing.T) *Ticket {
	t.Helper()
	res := p.result(t)
	if res.err != nil {
		t.Fatalf("%s was refused: %v", p.id, res.err)
	}
	if res.t.ID() != p.id {
		t.Fatalf("the ticket of %s has ID %s", p.id, res.t.ID())
	}
	return res.t
}

// result returns what Acquire returned for p.
func (p *pending) result(t *testing.T) result {
	t.Helper()
	select {
	case res := <-p.done:
		return res
	case <-time.After(guard):
		t.Fatalf("Acquire(%s) did not return", p.id)
	}
	panic("unreachable")
}

// waitFor returns the first Wait handed to p's waiting function that satisfies ok.
func (p *pending) waitFor(t *testing.T, what string, ok func(Wait) bool) Wait {
	t.Helper()
	for {
		select {
		case w := <-p.waits:
			if ok(w) {
				return w
			}
		case res := <-p.done:
			t.Fatalf("%s returned (%v, %v) while waiting for %s", p.id, res.t, res.err, what)
		case <-time.After(guard):
			t.Fatalf("%s was never told %s", p.id, what)
		}
	}
}

// now acquires r, which must be admitted without waiting.
func now(t *testing.T, l *Limiter, r Request) *Ticket {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	tk, err := l.Acquire(ctx, r, func(w Wait) {
		t.Errorf("%s was expected to be admitted at once, but waits: %v", r.ID, w)
		cancel()
	})
	if err != nil {
		t.Fatalf("%s was not admitted at once: %v", r.ID, err)
	}
	return tk
}

// req builds a request costing 1 on each resource.
func req(id string, p Priority, resources ...string) Request {
	costs := map[string]int{}
	for _, r := range resources {
		costs[r] = 1
	}
	return Request{ID: id, Priority: p, Costs: costs}
}

// newLimiter returns a limiter with the default limits, hosts limited to hostLimit, and
// the given per-resource limits as "resource", limit pairs.
func newLimiter(t *testing.T, hostLimit int, overrides ...any) *Limiter {
	t.Helper()
	lim := DefaultLimits()
	lim.Kinds[KindHost] = hostLimit
	for i := 0; i < len(overrides); i += 2 {
		lim.Resources[overrides[i].(string)] = overrides[i+1].(int)
	}
	l, err := New(lim)
	if err != nil {
		t.Fatal(err)
	}
	return l
}

// state returns the snapshot's entry for res.
func state(t *testing.T, l *Limiter, res string) ResourceState {
	t.Helper()
	for _, s := range l.Snapshot().Resources {
		if s.Resource == res {
			return s
		}
	}
	return ResourceState{Resource: res}
}

// wantQueue fails unless the queue holds exactly ids, in that order.
func wantQueue(t *testing.T, l *Limiter, ids ...string) {
	t.Helper()
	if got := l.Snapshot().Queue; !slices.Equal(got, ids) {
		t.Fatalf("queue = %v, want %v", got, ids)
	}
}

// wantHolders fails unless exactly ids (sorted) hold res.
func wantHolders(t *testing.T, l *Limiter, res string, ids ...string) {
	t.Helper()
	if got := state(t, l, res).Holders; !slices.Equal(got, ids) {
		t.Fatalf("holders of %s = %v, want %v", res, got, ids)
	}
}

var (
	h1, h2, h3, h4 = Host("host-1"), Host("host-2"), Host("host-3"), Host("host-4")
	lab            = Network("lab")
)

func TestLimitsHoldUnderConcurrency(t *testing.T) {
	const hostLimit, workers, rounds = 2, 6, 20
	l := newLimiter(t, hostLimit)
	hosts := []string{"host-1", "host-2", "host-3"}

	var mu sync.Mutex
	running := map[string]int{} // migrations between Acquire's return and Release, by host
	var refused int
	var wg sync.WaitGroup
	for w := range workers {
		wg.Go(func() {
			for i := range rounds {
				src, dst := hosts[(w+i)%3], hosts[(w+i+1)%3]
				p := []Priority{Normal, Low, Normal, High}[(w+i)%4]
				r := Request{ID: fmt.Sprintf("m%d-%d", w, i), Priority: p, Costs: MigrationCosts(src, dst, []string{"lab"}, []string{"shared"})}
				tk, err := l.Acquire(context.Background(), r, nil)
				if err != nil {
					if be := (*BusyError)(nil); p == High && errors.As(err, &be) {
						mu.Lock()
						refused++
						mu.Unlock()
						continue
					}
					t.Errorf("Acquire(%s): %v", r.ID, err)
					return
				}
				mu.Lock()
				for _, h := range []string{src, dst} {
					running[h]++
					if running[h] > hostLimit {
						t.Errorf("%d migrations run on %s at once, limit %d", running[h], h, hostLimit)
					}
				}
				mu.Unlock()
				for _, s := range l.Snapshot().Resources {
					if s.InUse > s.Limit || len(s.Holders) != s.InUse {
						t.Errorf("snapshot: %s has %d of %d slots in use, holders %v", s.Resource, s.InUse, s.Limit, s.Holders)
					}
				}
				runtime.Gosched()
				mu.Lock()
				running[src]--
				running[dst]--
				mu.Unlock()
				tk.Release()
			}
		})
	}
	finished := make(chan struct{})
	go func() { wg.Wait(); close(finished) }()
	select {
	case <-finished:
	case <-time.After(guard):
		t.Fatal("the migrations did not all finish: the limiter deadlocked or lost a wake-up")
	}

	s := l.Snapshot()
	if len(s.Admitted) != 0 || len(s.Queue) != 0 || len(s.Resources) != 0 || s.Queued[Normal] != 0 || s.Queued[Low] != 0 {
		t.Fatalf("after every migration ended the limiter still holds %+v", s)
	}
	for _, h := range hosts {
		if f := l.Free(Host(h)); f != hostLimit {
			t.Errorf("Free(%s) = %d after the queue drained, want %d", h, f, hostLimit)
		}
	}
	t.Logf("%d high-priority attempts were refused because their hosts were full", refused)
}

func TestFIFOWithinPriority(t *testing.T) {
	l := newLimiter(t, 1)
	x := now(t, l, req("x", Normal, h1))
	a, _ := queue(t, l, req("a", Normal, h1))
	b, wb := queue(t, l, req("b", Normal, h1))
	c, wc := queue(t, l, req("c", Normal, h1))
	if wb.Position != 2 || wc.Position != 3 {
		t.Fatalf("positions of b and c = %d, %d, want 2, 3", wb.Position, wc.Position)
	}
	wantQueue(t, l, "a", "b", "c")

	x.Release()
	ta := a.admitted(t)
	wantHolders(t, l, h1, "a")
	wantQueue(t, l, "b", "c")
	b.waitFor(t, "position 1", func(w Wait) bool { return w.Position == 1 })

	ta.Release()
	tb := b.admitted(t)
	wantHolders(t, l, h1, "b")
	wantQueue(t, l, "c")

	tb.Release()
	c.admitted(t).Release()
	wantQueue(t, l)
}

func TestNormalBeforeLow(t *testing.T) {
	l := newLimiter(t, 1)
	x := now(t, l, req("x", Normal, h1))
	l1, w := queue(t, l, req("l1", Low, h1))
	if w.Position != 1 {
		t.Fatalf("l1 alone in the queue is at position %d", w.Position)
	}
	queue(t, l, req("l2", Low, h1))
	n1, _ := queue(t, l, req("n1", Normal, h1))
	queue(t, l, req("n2", Normal, h1))
	wantQueue(t, l, "n1", "n2", "l1", "l2")
	if q := l.Snapshot().Queued; q[Normal] != 2 || q[Low] != 2 || q[High] != 0 {
		t.Fatalf("queued by priority = %v, want 2 normal and 2 low", q)
	}
	l1.waitFor(t, "position 3 once two normal requests came", func(w Wait) bool { return w.Position == 3 })

	x.Release()
	n1.admitted(t)
	wantHolders(t, l, h1, "n1")
	wantQueue(t, l, "n2", "l1", "l2")
}

func TestNormalBeforeLowAdmissionOrder(t *testing.T) {
	l := newLimiter(t, 1)
	x := now(t, l, req("x", Normal, h1))
	var ps []*pending
	for _, r := range []Request{req("l1", Low, h1), req("n1", Normal, h1), req("l2", Low, h1), req("n2", Normal, h1)} {
		p, _ := queue(t, l, r)
		ps = append(ps, p)
	}
	byID := map[string]*pending{}
	for _, p := range ps {
		byID[p.id] = p
	}
	prev := x
	for _, id := range []string{"n1", "n2", "l1", "l2"} {
		prev.Release()
		prev = byID[id].admitted(t)
		wantHolders(t, l, h1, id)
	}
	prev.Release()
	wantQueue(t, l)
}

func TestNoStarvationByLaterRequests(t *testing.T) {
	// host-2 has a free slot, but a, which waits for host-1, needs it too.
	l := newLimiter(t, 1)
	x := now(t, l, req("x", Normal, h1))
	a, wa := queue(t, l, req("a", Normal, h1, h2))
	if len(wa.Blocked) != 1 || wa.Blocked[0].Resource != h1 {
		t.Fatalf("a waits for %v, want host:host-1 alone", wa)
	}
	if f := l.Free(h2); f != 1 {
		t.Fatalf("Free(host-2) = %d, want 1: nobody holds it", f)
	}
	b, wb := queue(t, l, req("b", Normal, h2))
	if len(wb.Blocked) != 1 || wb.Blocked[0].Resource != h2 || wb.Blocked[0].InUse != 0 || !slices.Equal(wb.Blocked[0].Ahead, []string{"a"}) {
		t.Fatalf("b waits for %+v, want host:host-2 claimed by a", wb)
	}
	if !strings.Contains(wb.String(), "earlier waiting requests first (a)") {
		t.Fatalf("b's wait %q does not say a comes first", wb)
	}
	queue(t, l, req("c", Low, h2))
	wantQueue(t, l, "a", "b", "c")

	x.Release()
	ta := a.admitted(t)
	wantQueue(t, l, "b", "c")
	wantHolders(t, l, h2, "a")
	b.waitFor(t, "that a holds host-2", func(w Wait) bool {
		return len(w.Blocked) == 1 && slices.Equal(w.Blocked[0].Holders, []string{"a"}) && len(w.Blocked[0].Ahead) == 0
	})
	ta.Release()
	b.admitted(t)
	wantQueue(t, l, "c")
}

func TestLaterRequestUsesOnlyRoomBeyondEarlierClaim(t *testing.T) {
	// The network has 2 slots: a, waiting for host-1, claims one; b may take the other;
	// c may not take a's.
	l := newLimiter(t, 1, lab, 2)
	x := now(t, l, req("x", Normal, h1))
	a, _ := queue(t, l, req("a", Normal, h1, lab))
	now(t, l, req("b", Normal, h3, lab))
	_, wc := queue(t, l, req("c", Normal, h4, lab))
	if len(wc.Blocked) != 1 || wc.Blocked[0].Resource != lab || !slices.Equal(wc.Blocked[0].Holders, []string{"b"}) || !slices.Equal(wc.Blocked[0].Ahead, []string{"a"}) {
		t.Fatalf("c waits for %+v, want network:lab held by b and claimed by a", wc)
	}
	x.Release()
	a.admitted(t)
	wantHolders(t, l, lab, "a", "b")
	wantQueue(t, l, "c")
}

func TestNoHeadOfLineBlocking(t *testing.T) {
	l := newLimiter(t, 1)
	now(t, l, req("x", Normal, h1))
	queue(t, l, req("a", Normal, h1, h2, lab))
	queue(t, l, req("b", Low, h1, lab))
	// c shares only the network with the waiting requests, which has room for all.
	now(t, l, req("c", Low, h3, h4, lab))
	wantQueue(t, l, "a", "b")
	wantHolders(t, l, lab, "c")
}

func TestHighAdmittedAheadOfWaiting(t *testing.T) {
	// host-1 has 2 slots: x holds one, a (waiting for host-2) claims the other.
	l := newLimiter(t, 2, h2, 1)
	x := now(t, l, req("x", Normal, h1))
	y := now(t, l, req("y", Normal, h2))
	a, _ := queue(t, l, req("a", Normal, h1, h2))
	queue(t, l, req("n", Normal, h1))
	h := now(t, l, req("h", High, h1))
	wantHolders(t, l, h1, "h", "x")
	wantQueue(t, l, "a", "n")
	a.waitFor(t, "that h and x fill host-1", func(w Wait) bool {
		return len(w.Blocked) == 2 && w.Blocked[0].Resource == h1 && slices.Equal(w.Blocked[0].Holders, []string{"h", "x"})
	})

	y.Release()
	wantQueue(t, l, "a", "n")
	h.Release()
	a.admitted(t)
	wantHolders(t, l, h1, "a", "x")
	x.Release()
}

func TestHighRefusedWhenFull(t *testing.T) {
	l := newLimiter(t, 1)
	x := now(t, l, req("x", Normal, h1))
	queue(t, l, req("w", Low, h1))
	_, err := l.Acquire(context.Background(), req("h", High, h1, h2), func(w Wait) { t.Errorf("high priority waited: %v", w) })
	var be *BusyError
	if !errors.As(err, &be) {
		t.Fatalf("high priority on a full host: err = %v, want a *BusyError", err)
	}
	if be.ID != "h" || len(be.Blocked) != 1 || be.Blocked[0].Resource != h1 || !slices.Equal(be.Blocked[0].Holders, []string{"x"}) {
		t.Fatalf("refusal %+v, want host:host-1 held by x", be)
	}
	for _, want := range []string{"high-priority migration h refused", "host:host-1: 1 of 1 slots in use (x)"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q does not say %q", err, want)
		}
	}
	if s := l.Snapshot(); !slices.Equal(s.Admitted, []string{"x"}) || !slices.Equal(s.Queue, []string{"w"}) {
		t.Fatalf("the refusal left a trace: %+v", s)
	}
	if f := l.Free(h2); f != 1 {
		t.Fatalf("Free(host-2) = %d after the refusal, want 1", f)
	}
	x.Release()
	if _, err := l.Acquire(context.Background(), req("h2", High, h1), nil); err == nil {
		t.Fatal("high priority took host-1 although the waiting w was admitted first")
	}
}

func TestHighNotHeldBackByClaims(t *testing.T) {
	// Waiting requests claim every free slot of host-1; a high request still gets one.
	l := newLimiter(t, 2, h2, 1)
	now(t, l, req("y", Normal, h2))
	queue(t, l, req("a", Normal, h1, h2))
	queue(t, l, req("b", Low, h1, h2))
	if f := l.Free(h1); f != 2 {
		t.Fatalf("Free(host-1) = %d, want 2", f)
	}
	now(t, l, req("h", High, h1))
	wantHolders(t, l, h1, "h")
}

func TestCancellationLeavesNoTrace(t *testing.T) {
	l := newLimiter(t, 1)
	x := now(t, l, req("x", Normal, h1))
	a, _ := queue(t, l, req("a", Normal, h1))
	b, _ := queue(t, l, req("b", Normal, h1))
	a.cancel()
	res := a.result(t)
	if res.t != nil || !errors.Is(res.err, context.Canceled) {
		t.Fatalf("cancelled a: Acquire returned (%v, %v), want no ticket and context.Canceled", res.t, res.err)
	}
	if !strings.Contains(res.err.Error(), "migration a left the admission queue") {
		t.Errorf("error %q does not say a left the queue", res.err)
	}
	wantQueue(t, l, "b")
	if w := state(t, l, h1).Waiting; !slices.Equal(w, []string{"b"}) {
		t.Fatalf("host-1 waiters = %v, want [b]", w)
	}
	b.waitFor(t, "position 1", func(w Wait) bool { return w.Position == 1 })
	x.Release()
	b.admitted(t)
	wantHolders(t, l, h1, "b")

	// The ID is free again.
	queue(t, l, req("a", Normal, h1))
}

func TestCancellationAdmitsTheNext(t *testing.T) {
	// a waits for host-1 and claims host-2; c waits behind that claim.
	l := newLimiter(t, 1)
	now(t, l, req("x", Normal, h1))
	a, _ := queue(t, l, req("a", Normal, h1, h2))
	c, _ := queue(t, l, req("c", Normal, h2))
	a.cancel()
	if err := a.result(t).err; !errors.Is(err, context.Canceled) {
		t.Fatalf("cancelled a: err = %v", err)
	}
	c.admitted(t)
	wantQueue(t, l)
}

func TestCancelledBeforeAcquire(t *testing.T) {
	l := newLimiter(t, 1)
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := l.Acquire(ctx, req("a", Normal, h1), nil); !errors.Is(err, context.Canceled) {
		t.Fatalf("Acquire with a cancelled context: err = %v", err)
	}
	if s := l.Snapshot(); len(s.Admitted)+len(s.Queue) != 0 {
		t.Fatalf("a cancelled Acquire left %+v", s)
	}
}

func TestReleaseIdempotent(t *testing.T) {
	l := newLimiter(t, 2)
	a := now(t, l, req("a", Normal, h1))
	now(t, l, req("b", Normal, h1))
	a.Release()
	a.Release()
	if f := l.Free(h1); f != 1 {
		t.Fatalf("Free(host-1) = %d after releasing a twice, want 1", f)
	}
	a2 := now(t, l, req("a", Normal, h1))
	queue(t, l, req("w", Normal, h1))
	a.Release() // the old ticket must not release the new a
	if s := l.Snapshot(); !slices.Equal(s.Admitted, []string{"a", "b"}) || !slices.Equal(s.Queue, []string{"w"}) {
		t.Fatalf("an old ticket's Release changed %+v", s)
	}
	a2.Release()
	wantHolders(t, l, h1, "b", "w")
}

func TestShares(t *testing.T) {
	l := newLimiter(t, 4)
	ch := l.Changes()
	h := now(t, l, Request{ID: "h", Priority: High, Costs: MigrationCosts("host-1", "host-2", []string{"lab"}, nil)})
	select {
	case <-ch:
	default:
		t.Fatal("Changes was not closed when h was admitted")
	}
	now(t, l, Request{ID: "n", Priority: Normal, Costs: MigrationCosts("host-1", "host-3", []string{"lab"}, nil)})
	now(t, l, Request{ID: "lo", Priority: Low, Costs: MigrationCosts("host-2", "host-3", []string{"lab"}, nil)})
	wantShares(t, l.Shares(lab), map[string]float64{"h": 4.0 / 7, "n": 2.0 / 7, "lo": 1.0 / 7})
	wantShares(t, l.Shares(h1), map[string]float64{"h": 4.0 / 6, "n": 2.0 / 6})

	ch = l.Changes()
	select {
	case <-ch:
		t.Fatal("Changes was closed with no change")
	default:
	}
	h.Release()
	select {
	case <-ch:
	default:
		t.Fatal("Changes was not closed when h was released")
	}
	wantShares(t, l.Shares(lab), map[string]float64{"n": 2.0 / 3, "lo": 1.0 / 3})
	if s := l.Shares(Network("idle")); len(s) != 0 {
		t.Fatalf("shares of a network nobody uses = %v", s)
	}
}

func TestSharesWeighCost(t *testing.T) {
	l := newLimiter(t, 4)
	now(t, l, Request{ID: "a", Priority: Normal, Costs: map[string]int{lab: 2}})
	now(t, l, Request{ID: "b", Priority: Normal, Costs: map[string]int{lab: 1}})
	wantShares(t, l.Shares(lab), map[string]float64{"a": 2.0 / 3, "b": 1.0 / 3})
}

// wantShares fails unless got matches want and adds up to 1.
func wantShares(t *testing.T, got, want map[string]float64) {
	t.Helper()
	var sum float64
	for id, s := range got {
		sum += s
		if math.Abs(s-want[id]) > 1e-9 {
			t.Errorf("share of %s = %v, want %v", id, s, want[id])
		}
	}
	if len(got) != len(want) {
		t.Errorf("shares = %v, want %v", got, want)
	}
	if math.Abs(sum-1) > 1e-9 {
		t.Errorf("shares %v add up to %v, not 1", got, sum)
	}
}

func TestWaitNamesBlockingResource(t *testing.T) {
	l := newLimiter(t, DefaultHostLimit)
	var held []*Ticket
	for i := range 4 {
		held = append(held, now(t, l, Request{ID: fmt.Sprintf("m%d", i+1), Priority: Normal,
			Costs: MigrationCosts("host-1", fmt.Sprintf("host-%d", i+2), []string{"lab"}, nil)}))
	}
	m5, w := queue(t, l, Request{ID: "m5", Priority: Normal, Costs: MigrationCosts("host-1", "host-9", []string{"lab"}, nil)})
	if w.Position != 1 || len(w.Blocked) != 1 || w.Blocked[0].Resource != h1 {
		t.Fatalf("m5 waits for %+v, want host:host-1 alone", w)
	}
	want := "position 1 in the queue, waiting for host:host-1: 4 of 4 slots in use (m1, m2, m3, m4)"
	if w.String() != want {
		t.Fatalf("m5's wait reads %q, want %q", w, want)
	}
	m6, w6 := queue(t, l, Request{ID: "m6", Priority: Normal, Costs: map[string]int{h1: 2}})
	if w6.Position != 2 || !strings.Contains(w6.String(), "host:host-1: 4 of 4 slots in use (m1, m2, m3, m4), 2 needed, earlier waiting requests first (m5)") {
		t.Fatalf("m6's wait reads %q", w6)
	}
	held[1].Release()
	m5.admitted(t)
	m6.waitFor(t, "that m5 holds host-1", func(w Wait) bool {
		return w.String() == "position 1 in the queue, waiting for host:host-1: 4 of 4 slots in use (m1, m3, m4, m5), 2 needed"
	})
	if s := state(t, l, h1); !s.Full() || !slices.Equal(s.Waiting, []string{"m6"}) {
		t.Fatalf("host-1 in the snapshot: %+v", s)
	}
}

func TestRefusals(t *testing.T) {
	l := newLimiter(t, 1, Host("maint"), 0)
	now(t, l, req("busy", Normal, h1))
	queue(t, l, req("queued", Normal, h1))
	for _, tc := range []struct {
		name string
		r    Request
		want string
	}{
		{"no ID", req("", Normal, h1), "a migration request needs an ID"},
		{"no priority", req("m", "", h1), `migration m: priority "" is not one of high, normal, low`},
		{"bad priority", req("m", "urgent", h1), `priority "urgent" is not one of high, normal, low`},
		{"no costs", Request{ID: "m", Priority: Normal}, "migration m names no resources to charge"},
		{"no kind", req("m", Normal, "host-1"), `resource "host-1" must look like KIND:NAME`},
		{"no name", req("m", Normal, "host:"), `resource "host:" must look like KIND:NAME`},
		{"space", req("m", Normal, "host:a b"), "must not contain spaces"},
		{"zero cost", Request{ID: "m", Priority: Normal, Costs: map[string]int{h1: 0}}, "its cost on host:host-1 is 0, but a cost must be at least 1"},
		{"unknown kind", req("m", Normal, "gpu:0"), `resource gpu:0 has no limit`},
		{"too large", Request{ID: "m", Priority: Normal, Costs: map[string]int{h2: 2}}, "migration m can never run: it costs 2 on host:host-2, whose limit is 1"},
		{"too large high", Request{ID: "m", Priority: High, Costs: map[string]int{h2: 2}}, "can never run"},
		{"limit 0", req("m", Low, Host("maint")), "it costs 1 on host:maint, whose limit is 0"},
		{"duplicate admitted", req("busy", Normal, h2), "migration busy is already admitted"},
		{"duplicate waiting", req("queued", High, h2), "migration queued is already waiting for admission"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tk, err := l.Acquire(context.Background(), tc.r, func(w Wait) { t.Errorf("waited: %v", w) })
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("Acquire(%+v) = (%v, %v), want an error saying %q", tc.r, tk, err, tc.want)
			}
		})
	}
	if s := l.Snapshot(); !slices.Equal(s.Admitted, []string{"busy"}) || !slices.Equal(s.Queue, []string{"queued"}) {
		t.Fatalf("refused requests left a trace: %+v", s)
	}
}

func TestSetLimit(t *testing.T) {
	l := newLimiter(t, 1)
	now(t, l, req("x", Normal, h1))
	a, _ := queue(t, l, req("a", Normal, h1))
	b, _ := queue(t, l, req("b", Low, h1))
	if err := l.SetLimit(h1, HostLimitForLink(25_000_000_000)); err != nil {
		t.Fatal(err)
	}
	a.admitted(t)
	b.admitted(t)
	if f := l.Free(h1); f != 5 {
		t.Fatalf("Free(host-1) = %d, want 5 of 8", f)
	}

	// Lowering a limit preempts nobody but refuses the waiters that can no longer fit.
	if err := l.SetLimit(h2, 2); err != nil {
		t.Fatal(err)
	}
	now(t, l, req("y", Normal, h2))
	c, _ := queue(t, l, Request{ID: "c", Priority: Normal, Costs: map[string]int{h2: 2}})
	d, _ := queue(t, l, req("d", Normal, h2))
	if err := l.SetLimit(h2, 1); err != nil {
		t.Fatal(err)
	}
	if err := c.result(t).err; err == nil || !strings.Contains(err.Error(), "migration c can never run: it costs 2 on host:host-2, whose limit is 1") {
		t.Fatalf("c after the limit fell below its cost: err = %v", err)
	}
	wantHolders(t, l, h2, "y")
	wantQueue(t, l, "d")
	d.waitFor(t, "position 1", func(w Wait) bool { return w.Position == 1 })
	if f := l.Free(h2); f != 0 {
		t.Fatalf("Free(host-2) = %d", f)
	}
	if s := state(t, l, h1); s.Limit != FastHostLimit || s.InUse != 3 {
		t.Fatalf("host-1 in the snapshot: %+v", s)
	}

	if err := l.SetLimit(h2, -1); err == nil {
		t.Error("SetLimit accepted a negative limit")
	}
	if err := l.SetLimit("host", 1); err == nil {
		t.Error("SetLimit accepted a resource without a kind")
	}
}

func TestSnapshotAndOverloadedLimit(t *testing.T) {
	l := newLimiter(t, 2, Host("spare"), 3)
	now(t, l, req("a", Normal, h1))
	now(t, l, req("b", Normal, h1))
	if err := l.SetLimit(h1, 1); err != nil {
		t.Fatal(err)
	}
	queue(t, l, req("c", Low, h1, lab))
	queue(t, l, req("d", Normal, h1))
	s := l.Snapshot()
	if !slices.Equal(s.Admitted, []string{"a", "b"}) || !slices.Equal(s.Queue, []string{"d", "c"}) || s.Queued[Normal] != 1 || s.Queued[Low] != 1 {
		t.Fatalf("snapshot %+v", s)
	}
	var got []string
	for _, r := range s.Resources {
		got = append(got, fmt.Sprintf("%s %d/%d %v %v %v", r.Resource, r.InUse, r.Limit, r.Holders, r.Waiting, r.Full()))
	}
	want := []string{
		"host:host-1 2/1 [a b] [d c] true",
		"host:spare 0/3 [] [] false",
		"network:lab 0/8 [] [c] false",
	}
	if !slices.Equal(got, want) {
		t.Fatalf("snapshot resources:\n%s\nwant\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
	if f := l.Free(h1); f != 0 {
		t.Fatalf("Free of an over-full host = %d, want 0", f)
	}
}

func TestPriorities(t *testing.T) {
	for in, want := range map[string]Priority{"high": High, "normal": Normal, " Low ": Low} {
		if p, err := ParsePriority(in); err != nil || p != want {
			t.Errorf("ParsePriority(%q) = %q, %v", in, p, err)
		}
	}
	for _, in := range []string{"", "urgent", "hi"} {
		if _, err := ParsePriority(in); err == nil || !strings.Contains(err.Error(), fmt.Sprintf("priority %q is not one of high, normal, low", in)) {
			t.Errorf("ParsePriority(%q): err = %v", in, err)
		}
	}
	if High.Weight() != 4 || Normal.Weight() != 2 || Low.Weight() != 1 || Priority("x").Weight() != 0 {
		t.Error("weights are not 4, 2, 1 and 0 for an invalid priority")
	}
}

func TestLimits(t *testing.T) {
	d := DefaultLimits()
	for _, c := range []struct {
		res  string
		want int
	}{{h1, 4}, {lab, 8}, {Datastore("shared"), 128}} {
		if n, err := d.Limit(c.res); err != nil || n != c.want {
			t.Errorf("default limit of %s = %d, %v; want %d", c.res, n, err, c.want)
		}
	}
	if HostLimitForLink(1_000_000_000) != 4 || HostLimitForLink(9_999_999_999) != 4 || HostLimitForLink(10_000_000_000) != 8 {
		t.Error("HostLimitForLink does not switch from 4 to 8 at 10 Gbit/s")
	}
	d.Resources[h2] = 2
	if n, _ := d.Limit(h2); n != 2 {
		t.Errorf("an individual limit does not override its kind's: %d", n)
	}
	if _, err := d.Limit("gpu:0"); err == nil {
		t.Error("a resource of a kind without a limit has one")
	}

	l, err := New(d)
	if err != nil {
		t.Fatal(err)
	}
	d.Resources[h2] = 0 // New copied the limits
	now(t, l, req("a", Normal, h2))

	for _, bad := range []Limits{
		{Kinds: map[string]int{KindHost: -1}},
		{Kinds: map[string]int{"": 1}},
		{Kinds: map[string]int{"a:b": 1}},
		{Resources: map[string]int{"host-1": 1}},
		{Resources: map[string]int{h1: -2}},
	} {
		if _, err := New(bad); err == nil {
			t.Errorf("New(%+v) accepted invalid limits", bad)
		}
	}
	if _, err := New(Limits{}); err != nil {
		t.Errorf("New with no limits: %v", err)
	}
}

func TestMigrationCosts(t *testing.T) {
	got := MigrationCosts("host-1", "host-2", []string{"lab", "lab"}, []string{"shared", "local"})
	want := map[string]int{h1: 1, h2: 1, lab: 1, Datastore("shared"): 1, Datastore("local"): 1}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("MigrationCosts = %v, want %v", got, want)
	}
	if got := MigrationCosts("host-1", "host-1", nil, nil); got[h1] != 2 || len(got) != 1 {
		t.Fatalf("a migration within one host costs %v", got)
	}
	if k, n, err := ParseResource("datastore:shared"); err != nil || k != KindDatastore || n != "shared" {
		t.Fatalf("ParseResource = %q, %q, %v", k, n, err)
	}
}
