package admission

import (
	"context"
	"fmt"
	"maps"
	"slices"
	"sync"
)

// Request asks for the admission of one migration.
type Request struct {
	// ID names the migration; no two requests in flight (waiting or admitted) may share
	// one.
	ID string
	// Priority is High, Normal or Low.
	Priority Priority
	// Costs is what the migration costs, by resource; every cost is at least 1. See
	// MigrationCosts.
	Costs map[string]int
}

// Ticket is an admitted migration's hold on its resources, until Release.
type Ticket struct {
	l        *Limiter
	id       string
	priority Priority
	costs    map[string]int
	released bool // guarded by l.mu
}

// ID returns the admitted migration's ID.
func (t *Ticket) ID() string { return t.id }

// Release gives the migration's slots back and admits the waiting requests that now fit.
// Calls after the first do nothing, even once another request has taken the same ID.
func (t *Ticket) Release() {
	t.l.mu.Lock()
	defer t.l.mu.Unlock()
	if t.released {
		return
	}
	t.released = true
	delete(t.l.admitted, t.id)
	for r, c := range t.costs {
		t.l.inUse[r] -= c
		if t.l.inUse[r] == 0 {
			delete(t.l.inUse, r)
		}
		delete(t.l.holders[r], t.id)
		if len(t.l.holders[r]) == 0 {
			delete(t.l.holders, r)
		}
	}
	t.l.signalLocked()
	t.l.walkLocked()
}

// waiter is a queued normal or low request.
type waiter struct {
	id        string
	priority  Priority
	costs     map[string]int
	resources []string // the keys of costs, sorted

	done   chan struct{} // closed once ticket or err is set
	ticket *Ticket
	err    error

	wait    Wait          // the latest wait
	changed chan struct{} // has a value when wait changed since the waiter last looked
}

// Limiter admits migrations within the limits of the resources they use. It is safe for
// concurrent use.
type Limiter struct {
	mu       sync.Mutex
	limits   Limits                        // a copy of New's, plus SetLimit's changes
	inUse    map[string]int                // slots held, by resource; no zero entries
	holders  map[string]map[string]*Ticket // admitted migrations by resource, then by ID; no empty maps
	admitted map[string]*Ticket            // by ID
	queue    []*waiter                     // in admission order
	waiting  map[string]*waiter            // the queue, by ID
	changes  chan struct{}                 // closed at the next change of admitted
}

// New returns a limiter with the given limits (copied, so later changes to l's maps do
// not reach it).
func New(l Limits) (*Limiter, error) {
	if err := l.Validate(); err != nil {
		return nil, err
	}
	return &Limiter{
		limits:   l.clone(),
		inUse:    map[string]int{},
		holders:  map[string]map[string]*Ticket{},
		admitted: map[string]*Ticket{},
		waiting:  map[string]*waiter{},
		changes:  make(chan struct{}),
	}, nil
}

// Acquire admits r and returns its ticket, waiting in the queue if r is normal or low and
// does not fit yet; a high request that does not fit is refused with a *BusyError (see the
// package documentation for the order of admission). While r waits, Acquire calls
// waiting (if not nil) in the caller's goroutine each time what r waits for changes, first
// as soon as r is queued. If ctx ends before r is admitted, Acquire returns ctx.Err()
// wrapped, and r leaves the queue and holds nothing.
//
// A request with an empty ID, an invalid priority, no costs, a malformed resource, a cost
// below 1, a resource without a limit, or an ID already waiting or admitted is refused,
// and so is one that costs more on some resource than its limit, since it could never
// run.
func (l *Limiter) Acquire(ctx context.Context, r Request, waiting func(Wait)) (*Ticket, error) {
	costs, resources, err := r.check()
	if err != nil {
		return nil, err
	}
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("migration %s was not admitted: %w", r.ID, err)
	}

	l.mu.Lock()
	if err := l.checkLocked(r.ID, costs, resources); err != nil {
		l.mu.Unlock()
		return nil, err
	}
	if r.Priority == High {
		defer l.mu.Unlock()
		var blocked []Blocker
		for _, res := range resources {
			if l.room(res) < costs[res] {
				blocked = append(blocked, l.blockerLocked(res, costs[res], nil))
			}
		}
		if len(blocked) > 0 {
			return nil, &BusyError{ID: r.ID, Blocked: blocked}
		}
		t := l.admitLocked(r.ID, r.Priority, costs)
		l.walkLocked() // the waiters' blockers may have a new holder
		return t, nil
	}
	w := &waiter{
		id: r.ID, priority: r.Priority, costs: costs, resources: resources,
		done: make(chan struct{}), changed: make(chan struct{}, 1),
	}
	i := len(l.queue)
	for i > 0 && l.queue[i-1].priority.rank() > w.priority.rank() {
		i--
	}
	l.queue = slices.Insert(l.queue, i, w)
	l.waiting[w.id] = w
	l.walkLocked()
	l.mu.Unlock()

	for {
		select {
		case <-w.done:
			return w.ticket, w.err
		case <-ctx.Done():
			return nil, l.leave(w, ctx.Err())
		case <-w.changed:
			l.mu.Lock()
			wt, queued := w.wait.clone(), l.waiting[w.id] == w
			l.mu.Unlock()
			if queued && waiting != nil {
				waiting(wt)
			}
		}
	}
}

// leave takes w out of the queue after its context ended with cause, or gives its slots
// back if it was admitted meanwhile, and returns the error Acquire reports.
func (l *Limiter) leave(w *waiter, cause error) error {
	err := fmt.Errorf("migration %s left the admission queue before it was admitted: %w", w.id, cause)
	l.mu.Lock()
	select {
	case <-w.done:
		l.mu.Unlock()
		if w.ticket == nil {
			return w.err // refused meanwhile: that is the better reason
		}
		w.ticket.Release()
		return err
	default:
	}
	defer l.mu.Unlock()
	delete(l.waiting, w.id)
	l.queue = slices.DeleteFunc(l.queue, func(x *waiter) bool { return x == w })
	l.walkLocked() // w's claims are gone: the requests behind it may fit now
	return err
}

// check validates r and returns a copy of its costs and their resources, sorted.
func (r Request) check() (map[string]int, []string, error) {
	if r.ID == "" {
		return nil, nil, fmt.Errorf("a migration request needs an ID")
	}
	if !r.Priority.Valid() {
		return nil, nil, fmt.Errorf("migration %s: priority %q is not one of high, normal, low", r.ID, r.Priority)
	}
	if len(r.Costs) == 0 {
		return nil, nil, fmt.Errorf("migration %s names no resources to charge", r.ID)
	}
	resources := slices.Sorted(maps.Keys(r.Costs))
	for _, res := range resources {
		if _, _, err := ParseResource(res); err != nil {
			return nil, nil, fmt.Errorf("migration %s: %w", r.ID, err)
		}
		if c := r.Costs[res]; c < 1 {
			return nil, nil, fmt.Errorf("migration %s: its cost on %s is %d, but a cost must be at least 1", r.ID, res, c)
		}
	}
	return maps.Clone(r.Costs), resources, nil
}

// checkLocked refuses a request whose ID is in flight or that can never fit.
func (l *Limiter) checkLocked(id string, costs map[string]int, resources []string) error {
	if _, ok := l.admitted[id]; ok {
		return fmt.Errorf("migration %s is already admitted; IDs in flight must be unique", id)
	}
	if _, ok := l.waiting[id]; ok {
		return fmt.Errorf("migration %s is already waiting for admission; IDs in flight must be unique", id)
	}
	return l.fitsLocked(id, costs, resources)
}

// fitsLocked refuses costs that exceed a resource's limit, or name a resource without one.
func (l *Limiter) fitsLocked(id string, costs map[string]int, resources []string) error {
	for _, res := range resources {
		limit, err := l.limits.Limit(res)
		if err != nil {
			return fmt.Errorf("migration %s: %w", id, err)
		}
		if c := costs[res]; c > limit {
			return fmt.Errorf("migration %s can never run: it costs %d on %s, whose limit is %d", id, c, res, limit)
		}
	}
	return nil
}

// room returns the slots of res that nobody holds (negative if its limit was lowered
// under its holders); a resource without a limit has none.
func (l *Limiter) room(res string) int {
	limit, _ := l.limits.Limit(res)
	return limit - l.inUse[res]
}

// admitLocked gives id the slots costs asks for.
func (l *Limiter) admitLocked(id string, p Priority, costs map[string]int) *Ticket {
	t := &Ticket{l: l, id: id, priority: p, costs: costs}
	l.admitted[id] = t
	for res, c := range costs {
		l.inUse[res] += c
		if l.holders[res] == nil {
			l.holders[res] = map[string]*Ticket{}
		}
		l.holders[res][id] = t
	}
	l.signalLocked()
	return t
}

// blockerLocked describes res as a blocker of a request that needs need slots on it
// behind the claims of ahead.
func (l *Limiter) blockerLocked(res string, need int, ahead []string) Blocker {
	limit, _ := l.limits.Limit(res)
	return Blocker{
		Resource: res,
		Limit:    limit,
		InUse:    l.inUse[res],
		Holders:  slices.Sorted(maps.Keys(l.holders[res])),
		Need:     need,
		Ahead:    slices.Clone(ahead),
	}
}

// walkLocked walks the queue in admission order: it refuses the requests that can no
// longer fit (a limit was lowered), admits those that fit in the room left by the holders
// and the claims of the requests ahead of them, lets every other one claim its costs,
// and tells the waiters whose wait changed.
func (l *Limiter) walkLocked() {
	room := map[string]int{}
	claims := map[string][]string{}
	roomOf := func(res string) int {
		n, ok := room[res]
		if !ok {
			n = l.room(res)
			room[res] = n
		}
		return n
	}
	kept := l.queue[:0]
	var blocked [][]Blocker
	for _, w := range l.queue {
		if err := l.fitsLocked(w.id, w.costs, w.resources); err != nil {
			delete(l.waiting, w.id)
			w.err = err
			close(w.done)
			continue
		}
		var bs []Blocker
		for _, res := range w.resources {
			if roomOf(res) < w.costs[res] {
				bs = append(bs, l.blockerLocked(res, w.costs[res], claims[res]))
			}
		}
		for _, res := range w.resources {
			room[res] = roomOf(res) - w.costs[res]
		}
		if len(bs) == 0 {
			delete(l.waiting, w.id)
			w.ticket = l.admitLocked(w.id, w.priority, w.costs)
			close(w.done)
			continue
		}
		for _, res := range w.resources {
			claims[res] = append(claims[res], w.id)
		}
		kept = append(kept, w)
		blocked = append(blocked, bs)
	}
	clear(l.queue[len(kept):])
	l.queue = kept
	for i, w := range l.queue {
		wt := Wait{ID: w.id, Position: i + 1, Blocked: blocked[i]}
		if !wt.equal(w.wait) {
			w.wait = wt
			select {
			case w.changed <- struct{}{}:
			default: // the waiter has yet to look at an earlier change; it will see this one
			}
		}
	}
}

// signalLocked wakes whoever waits on Changes.
func (l *Limiter) signalLocked() {
	close(l.changes)
	l.changes = make(chan struct{})
}

// Changes returns a channel that is closed the next time a migration is admitted or
// released: the moment to recompute Shares. Take the channel before reading the shares,
// so that no change falls between the two.
func (l *Limiter) Changes() <-chan struct{} {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.changes
}

// SetLimit sets the limit of one resource, overriding its kind's. Raising it admits the
// waiting requests that now fit; lowering it preempts no admitted migration, but refuses
// at once the waiting requests that cost more on resource than the new limit.
func (l *Limiter) SetLimit(resource string, limit int) error {
	if _, _, err := ParseResource(resource); err != nil {
		return err
	}
	if limit < 0 {
		return fmt.Errorf("the limit of %s cannot be %d: a limit cannot be negative", resource, limit)
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	l.limits.Resources[resource] = limit
	l.walkLocked()
	return nil
}

// Free returns how many slots of resource nobody holds: 0 if it is full (or over a
// lowered limit) or has no limit.
func (l *Limiter) Free(resource string) int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return max(0, l.room(resource))
}

// Shares returns the share of resource that each migration holding it should get, by ID:
// its priority's weight times its cost on resource, over the sum of these products for all
// holders. The shares add up to 1; the map is empty if nobody holds resource. A caller
// caps each migration on a network at share × link rate.
func (l *Limiter) Shares(resource string) map[string]float64 {
	l.mu.Lock()
	defer l.mu.Unlock()
	shares := map[string]float64{}
	var sum float64
	for id, t := range l.holders[resource] {
		w := t.priority.Weight() * float64(t.costs[resource])
		shares[id] = w
		sum += w
	}
	for id := range shares {
		shares[id] /= sum
	}
	return shares
}

// Snapshot is the limiter's state at one moment, for metrics, the API and warnings that
// migration slots are full.
type Snapshot struct {
	// Resources lists, by name, every resource that is held, waited for or has a limit
	// of its own.
	Resources []ResourceState
	// Admitted lists the IDs of the admitted migrations, sorted.
	Admitted []string
	// Queue lists the IDs of the waiting requests, in admission order.
	Queue []string
	// Queued counts the waiting requests by priority; it always has Normal and Low (High
	// is never queued).
	Queued map[Priority]int
}

// ResourceState is one resource in a Snapshot.
type ResourceState struct {
	// Resource is the resource, e.g. "host:host-1".
	Resource string
	// Limit is its limit, 0 if it has none.
	Limit int
	// InUse is how many of its slots are held.
	InUse int
	// Holders are the IDs of the admitted migrations that hold it, sorted.
	Holders []string
	// Waiting are the IDs of the waiting requests that need it, in admission order.
	Waiting []string
}

// Full reports whether the resource has no free slot.
func (s ResourceState) Full() bool { return s.InUse >= s.Limit }

// Snapshot returns the limiter's state.
func (l *Limiter) Snapshot() Snapshot {
	l.mu.Lock()
	defer l.mu.Unlock()
	s := Snapshot{
		Admitted: slices.Sorted(maps.Keys(l.admitted)),
		Queue:    []string{},
		Queued:   map[Priority]int{Normal: 0, Low: 0},
	}
	waiting := map[string][]string{}
	for _, w := range l.queue {
		s.Queue = append(s.Queue, w.id)
		s.Queued[w.priority]++
		for _, res := range w.resources {
			waiting[res] = append(waiting[res], w.id)
		}
	}
	names := map[string]bool{}
	for res := range l.holders {
		names[res] = true
	}
	for res := range waiting {
		names[res] = true
	}
	for res := range l.limits.Resources {
		names[res] = true
	}
	for _, res := range slices.Sorted(maps.Keys(names)) {
		limit, _ := l.limits.Limit(res)
		s.Resources = append(s.Resources, ResourceState{
			Resource: res,
			Limit:    limit,
			InUse:    l.inUse[res],
			Holders:  slices.Sorted(maps.Keys(l.holders[res])),
			Waiting:  waiting[res],
		})
	}
	return s
}
