package center

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/godwit/godwit/internal/api"
)

func TestBroadcasterSubscribePublishUnsubscribe(t *testing.T) {
	b := newBroadcaster()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	b.publish(api.Task{ID: "before"}) // nobody listens: dropped
	s1, s2 := b.subscribe(), b.subscribe()
	if n := b.subscribers(); n != 2 {
		t.Fatalf("%d subscribers; want 2", n)
	}
	b.publish(api.Task{ID: "a", State: api.TaskRunning})
	b.publish(api.Task{ID: "b", State: api.TaskRunning})
	for _, s := range []*subscription{s1, s2} {
		for _, want := range []string{"a", "b"} {
			got, err := s.next(ctx)
			if err != nil || got.ID != want {
				t.Fatalf("next: %+v, %v; want task %s", got, err, want)
			}
		}
	}
	s1.close()
	s1.close() // closing twice is harmless
	if n := b.subscribers(); n != 1 {
		t.Fatalf("%d subscribers after one closed; want 1", n)
	}
	b.publish(api.Task{ID: "c"})
	if _, err := s1.next(ctx); !errors.Is(err, errUnsubscribed) {
		t.Fatalf("next on a closed subscription: %v; want errUnsubscribed", err)
	}
	if got, err := s2.next(ctx); err != nil || got.ID != "c" {
		t.Fatalf("the open subscription got %+v, %v; want task c", got, err)
	}

	// A waiting next returns when its context ends or its subscription closes.
	short, cancelShort := context.WithTimeout(ctx, 50*time.Millisecond)
	defer cancelShort()
	if _, err := s2.next(short); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("next with nothing to read: %v; want the context's deadline", err)
	}
	errc := make(chan error, 1)
	go func() {
		_, err := s2.next(ctx)
		errc <- err
	}()
	time.Sleep(20 * time.Millisecond)
	s2.close()
	select {
	case err := <-errc:
		if !errors.Is(err, errUnsubscribed) {
			t.Fatalf("next after close: %v", err)
		}
	case <-ctx.Done():
		t.Fatal("close did not wake a waiting next")
	}
}

// A subscriber that never reads does not hold up publishers, and when it reads at last
// it finds the latest state of every task, in the order they first changed.
func TestBroadcasterSlowSubscriberDoesNotBlock(t *testing.T) {
	b := newBroadcaster()
	slow := b.subscribe()
	defer slow.close()
	done := make(chan struct{})
	go func() {
		defer close(done)
		for i := 0; i <= 100_000; i++ {
			b.publish(api.Task{ID: fmt.Sprintf("t%d", i%3), Progress: api.TaskProgress{Percent: float64(i) / 1000}})
		}
	}()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		t.Fatal("publishing blocked on a subscriber that does not read")
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	want := map[string]float64{"t0": 99.999, "t1": 100, "t2": 99.998}
	for _, id := range []string{"t0", "t1", "t2"} {
		got, err := slow.next(ctx)
		if err != nil || got.ID != id || got.Progress.Percent != want[id] {
			t.Fatalf("slow subscriber read %+v, %v; want %s at %.3f%%", got, err, id, want[id])
		}
	}
	short, cancelShort := context.WithTimeout(ctx, 20*time.Millisecond)
	defer cancelShort()
	if got, err := slow.next(short); err == nil {
		t.Fatalf("slow subscriber read a fourth update %+v; each task's states were to be merged", got)
	}
}
