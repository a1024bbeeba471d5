package guest

import (
	"context"
	"testing"
	"time"
)

func TestPauseMeterObserve(t *testing.T) {
	p := NewPauseMeter(time.Millisecond)
	wall := int64(1_000_000_000)
	mono := time.Duration(0)
	step := func(d time.Duration, wallStep int64) {
		mono += d
		wall += wallStep
		p.observe(mono, wall)
	}
	step(0, 0)
	step(time.Millisecond, 1e6)
	step(50*time.Millisecond, 50e6) // the pause
	step(2*time.Millisecond, 2e6)
	s := p.Stats()
	if s.MaxPause != 50*time.Millisecond || s.MaxPauseAt != 51*time.Millisecond {
		t.Errorf("MaxPause = %v at %v, want 50ms at 51ms", s.MaxPause, s.MaxPauseAt)
	}
	if s.Samples != 4 || s.WallBackwards != 0 || s.MonoBackwards != 0 {
		t.Errorf("stats = %+v", s)
	}

	step(time.Millisecond, -5e6) // wall clock stepped back
	step(-time.Microsecond, 1e6) // monotonic clock went back
	s = p.Stats()
	if s.WallBackwards != 1 || s.MonoBackwards != 1 {
		t.Errorf("backwards = wall %d mono %d, want 1 and 1", s.WallBackwards, s.MonoBackwards)
	}

	before := p.ResetMax()
	if before.MaxPause != 50*time.Millisecond {
		t.Errorf("ResetMax returned %v, want the old 50ms", before.MaxPause)
	}
	if s := p.Stats(); s.MaxPause != 0 || s.WallBackwards != 1 {
		t.Errorf("after reset: %+v, want MaxPause 0 and the clock counters kept", s)
	}
	step(3*time.Millisecond, 3e6)
	if s := p.Stats(); s.MaxPause != 3*time.Millisecond {
		t.Errorf("after reset and a 3ms gap: MaxPause = %v", s.MaxPause)
	}
}

func TestPauseMeterRun(t *testing.T) {
	p := NewPauseMeter(time.Millisecond)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		p.Run(ctx)
	}()
	time.Sleep(100 * time.Millisecond)
	cancel()
	select {
	case <-done:
	case <-time.After(2 * time.Second):
		t.Fatal("Run did not return after cancel")
	}
	s := p.Stats()
	if s.Samples < 10 {
		t.Errorf("only %d wake-ups in 100ms", s.Samples)
	}
	if s.MaxPause < time.Millisecond || s.MaxPause > 100*time.Millisecond {
		t.Errorf("MaxPause = %v, want between the 1ms interval and the 100ms run", s.MaxPause)
	}
	if s.WallBackwards+s.MonoBackwards != 0 {
		t.Errorf("clock went backwards on the host: %+v", s)
	}
}
