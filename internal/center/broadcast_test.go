package center

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/godwit/godwit/internal/api"
)

func mustSubscribe(t *testing.T, b *broadcaster, owner string) *subscription {
	t.Helper()
	s, err := b.subscribe(owner, nil)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func TestBroadcasterSubscribePublishUnsubscribe(t *testing.T) {
	b := newBroadcaster()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	b.publish(api.Task{ID: "before"}) // nobody listens: dropped
	s1, s2 := mustSubscribe(t, b, "alice"), mustSubscribe(t, b, "bob")
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
	slow := mustSubscribe(t, b, "alice")
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

// Subscriptions are bounded in number, per owner (429) and in all (503), and a closed one
// gives its place back.
func TestBroadcasterCapsSubscribers(t *testing.T) {
	b := newBroadcaster()
	var held []*subscription
	for range maxStreamsPerPrincipal {
		held = append(held, mustSubscribe(t, b, "alice"))
	}
	_, err := b.subscribe("alice", nil)
	var se *api.StatusError
	if !errors.As(err, &se) || se.Status != 429 || !strings.Contains(se.Msg, "alice already holds") {
		t.Fatalf("alice's stream %d: %v; want a 429 naming her limit", maxStreamsPerPrincipal+1, err)
	}
	for i := 0; len(held) < maxStreams; i++ {
		held = append(held, mustSubscribe(t, b, fmt.Sprintf("user-%d", i/maxStreamsPerPrincipal)))
	}
	_, err = b.subscribe("newcomer", nil)
	if !errors.As(err, &se) || se.Status != 503 || !strings.Contains(se.Msg, "limit") {
		t.Fatalf("stream %d in all: %v; want a 503 naming the center's limit", maxStreams+1, err)
	}
	held[0].close()
	held[0].close() // closing twice gives back one place only
	if _, err := b.subscribe("newcomer", nil); err != nil {
		t.Fatalf("a stream after one closed: %v", err)
	}
	if _, err := b.subscribe("other", nil); err == nil {
		t.Fatal("closing one stream made room for two")
	}
	held[1].close()
	if _, err := b.subscribe("alice", nil); err != nil {
		t.Fatalf("alice's stream after two of hers closed: %v", err)
	}
}

// A subscriber that stops reading while tasks keep changing is dropped once it holds
// maxPendingTasks tasks; publishing stays fast, it frees what it held, and subscribers
// that read, or that select few tasks, are not affected.
func TestBroadcasterDropsSubscriberThatFallsBehind(t *testing.T) {
	b := newBroadcaster()
	stuck := mustSubscribe(t, b, "alice")
	defer stuck.close()
	one, err := b.subscribe("bob", func(tk api.Task) bool { return tk.ID == "t7" })
	if err != nil {
		t.Fatal(err)
	}
	defer one.close()
	reader := mustSubscribe(t, b, "carol")
	defer reader.close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	start := time.Now()
	const tasks = 4 * maxPendingTasks
	read := 0
	for i := range tasks {
		b.publish(api.Task{ID: fmt.Sprintf("t%d", i), Error: strings.Repeat("e", 512)})
		if i%256 == 255 { // the reader keeps up, a few hundred tasks at a time
			for range 256 {
				if _, err := reader.next(ctx); err != nil {
					t.Fatalf("the subscriber that reads: %v after %d tasks", err, read)
				}
				read++
			}
		}
	}
	if took := time.Since(start); took > 2*time.Second {
		t.Errorf("publishing %d changes took %s", tasks, took)
	}
	if _, err := stuck.next(ctx); !errors.Is(err, errDropped) {
		t.Fatalf("the subscriber that never read: %v; want it dropped", err)
	}
	stuck.mu.Lock()
	if stuck.latest != nil || stuck.order != nil {
		t.Error("a dropped subscription still holds its tasks")
	}
	stuck.mu.Unlock()
	if got, err := one.next(ctx); err != nil || got.ID != "t7" {
		t.Fatalf("the subscriber of one task: %+v, %v; want t7", got, err)
	}
}
