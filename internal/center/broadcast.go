package center

import (
	"context"
	"errors"
	"sync"

	"github.com/godwit/godwit/internal/api"
)

// errUnsubscribed is what Next returns once its subscription has been closed.
var errUnsubscribed = errors.New("the subscription to task updates has ended")

// broadcaster publishes every change of a task to its subscribers. Publishing never
// waits for a subscriber: each one holds the latest state of every task that changed
// since it last read, so a slow subscriber skips intermediate progress of a task but
// never misses its latest state (and so never misses how it ended). It starts no
// goroutines.
type broadcaster struct {
	mu   sync.Mutex
	subs map[*subscription]struct{}
}

func newBroadcaster() *broadcaster {
	return &broadcaster{subs: map[*subscription]struct{}{}}
}

// subscription is one subscriber's view: the tasks changed since its last Next, in the
// order they first changed.
type subscription struct {
	b      *broadcaster
	mu     sync.Mutex
	latest map[string]api.Task
	order  []string
	wake   chan struct{} // capacity 1: "something is pending"
	done   chan struct{} // closed by Close
	closed bool
}

// subscribe returns a subscription that receives every task change published from now
// on. The caller closes it.
func (b *broadcaster) subscribe() *subscription {
	s := &subscription{b: b, latest: map[string]api.Task{}, wake: make(chan struct{}, 1), done: make(chan struct{})}
	b.mu.Lock()
	b.subs[s] = struct{}{}
	b.mu.Unlock()
	return s
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

func (s *subscription) offer(t api.Task) {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return
	}
	if _, ok := s.latest[t.ID]; !ok {
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
			s.mu.Unlock()
			return api.Task{}, errUnsubscribed
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

// close ends the subscription: it receives nothing more, and a waiting next returns.
func (s *subscription) close() {
	s.b.mu.Lock()
	delete(s.b.subs, s)
	s.b.mu.Unlock()
	s.mu.Lock()
	defer s.mu.Unlock()
	if !s.closed {
		s.closed = true
		s.latest, s.order = nil, nil
		close(s.done)
	}
}
