package center

import (
	"context"
	"errors"
	"net/http"
	"sync"

	"github.com/godwit/godwit/internal/api"
)

// Bounds on the task stream, so that its subscribers cannot exhaust the center.
const (
	// maxStreams bounds the task streams open at once; beyond it a new one is 503.
	maxStreams = 64
	// maxStreamsPerPrincipal bounds the streams one user (or host) holds; beyond it a
	// new one is 429.
	maxStreamsPerPrincipal = 8
	// maxPendingTasks bounds the tasks a subscription holds for its reader: one that
	// falls this many tasks behind has stopped reading, and is dropped.
	maxPendingTasks = 1024
)

var (
	// errUnsubscribed is what next returns once its subscription has been closed.
	errUnsubscribed = errors.New("the subscription to task updates has ended")
	// errDropped is what next returns once its subscription fell too far behind.
	errDropped = errors.New("the subscriber fell too far behind the task updates and was dropped")
)

// broadcaster publishes every change of a task to its subscribers. Publishing never
// waits for a subscriber: each one holds the latest state of every task that changed
// since it last read, so a slow subscriber skips intermediate progress of a task but
// never misses its latest state (and so never misses how it ended); one that falls
// maxPendingTasks tasks behind is dropped. It starts no goroutines.
type broadcaster struct {
	mu    sync.Mutex
	subs  map[*subscription]struct{}
	owned map[string]int // open subscriptions per owner
}

func newBroadcaster() *broadcaster {
	return &broadcaster{subs: map[*subscription]struct{}{}, owned: map[string]int{}}
}

// subscription is one subscriber's view: the tasks changed since its last Next, in the
// order they first changed.
type subscription struct {
	b     *broadcaster
	owner string
	match func(api.Task) bool

	mu      sync.Mutex
	latest  map[string]api.Task
	order   []string
	wake    chan struct{} // capacity 1: "something is pending"
	done    chan struct{} // closed by close or drop
	closed  bool
	dropped bool
}

// subscribe returns a subscription, held by owner (a user's or host's name), that
// receives every task change published from now on for which match (nil: any) holds.
// Beyond maxStreams subscriptions, or maxStreamsPerPrincipal of one owner, it refuses
// with a 503 or a 429 that says so. The caller closes it.
func (b *broadcaster) subscribe(owner string, match func(api.Task) bool) (*subscription, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if len(b.subs) >= maxStreams {
		return nil, api.Errorf(http.StatusServiceUnavailable, "too_many_streams",
			"the center already serves %d task streams, its limit; try again when one has closed, or poll GET /api/v1/tasks", maxStreams)
	}
	if b.owned[owner] >= maxStreamsPerPrincipal {
		return nil, api.Errorf(http.StatusTooManyRequests, "too_many_streams",
			"%s already holds %d task streams, the limit for one user; close one and try again", ownerText(owner), maxStreamsPerPrincipal)
	}
	s := &subscription{b: b, owner: owner, match: match, latest: map[string]api.Task{}, wake: make(chan struct{}, 1), done: make(chan struct{})}
	b.subs[s] = struct{}{}
	b.owned[owner]++
	return s, nil
}

func ownerText(owner string) string {
	if owner == "" {
		return "the in-process caller"
	}
	return owner
}

// publish hands a task's new state to every subscriber, without waiting for any.
func (b *broadcaster) publish(t api.Task) {
	b.mu.Lock()
	defer b.mu.Unlock()
	for s := range b.subs {
		s.offer(t)
	}
}

// subscribers returns how many subscriptions are open.
func (b *broadcaster) subscribers() int {
	b.mu.Lock()
	defer b.mu.Unlock()
	return len(b.subs)
}

// offer hands t to the subscription if it wants it; a subscription that already holds
// maxPendingTasks other tasks is dropped instead.
func (s *subscription) offer(t api.Task) {
	if s.match != nil && !s.match(t) {
		return
	}
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return
	}
	if _, ok := s.latest[t.ID]; !ok {
		if len(s.order) >= maxPendingTasks {
			s.dropped = true
			s.endLocked()
			s.mu.Unlock()
			return
		}
		s.order = append(s.order, t.ID)
	}
	s.latest[t.ID] = t
	s.mu.Unlock()
	select {
	case s.wake <- struct{}{}:
	default:
	}
}

// next returns the next changed task, waiting until there is one, ctx ends or the
// subscription is closed.
func (s *subscription) next(ctx context.Context) (api.Task, error) {
	for {
		s.mu.Lock()
		if s.closed {
			err := errUnsubscribed
			if s.dropped {
				err = errDropped
			}
			s.mu.Unlock()
			return api.Task{}, err
		}
		if len(s.order) > 0 {
			id := s.order[0]
			s.order = s.order[1:]
			t := s.latest[id]
			delete(s.latest, id)
			s.mu.Unlock()
			return t, nil
		}
		s.mu.Unlock()
		select {
		case <-ctx.Done():
			return api.Task{}, ctx.Err()
		case <-s.done:
		case <-s.wake:
		}
	}
}

// close ends the subscription and gives back its place: it receives nothing more, and a
// waiting next returns.
func (s *subscription) close() {
	s.b.mu.Lock()
	if _, ok := s.b.subs[s]; ok {
		delete(s.b.subs, s)
		if s.b.owned[s.owner]--; s.b.owned[s.owner] <= 0 {
			delete(s.b.owned, s.owner)
		}
	}
	s.b.mu.Unlock()
	s.mu.Lock()
	defer s.mu.Unlock()
	s.endLocked()
}

// endLocked stops the subscription receiving and frees what it held. A dropped
// subscription keeps its place until its reader closes it.
func (s *subscription) endLocked() {
	if !s.closed {
		s.closed = true
		s.latest, s.order = nil, nil
		close(s.done)
	}
}
