package guest

import (
	"context"
	"sync"
	"time"
)

// DefaultPauseInterval is how often the pause meter wakes up.
const DefaultPauseInterval = time.Millisecond

// PauseMeter measures how long the guest stood still: a goroutine wakes every Interval
// and records the longest gap between consecutive wake-ups on the monotonic clock. It
// also counts every wake-up at which the wall clock or the monotonic clock was earlier
// than at the previous one.
type PauseMeter struct {
	interval time.Duration
	start    time.Time // monotonic reference, set by NewPauseMeter

	mu       sync.Mutex // guards everything below
	havePrev bool
	prevMono time.Duration // monotonic time of the previous wake-up, since start
	prevWall int64         // wall clock of the previous wake-up, Unix ns
	maxGap   time.Duration
	maxAt    time.Duration // when (since start) the longest gap ended
	samples  uint64
	wallBack uint64
	monoBack uint64
}

// PauseStats is the pause meter's part of [Stats].
type PauseStats struct {
	MaxPause      time.Duration // longest gap since the last reset
	MaxPauseAt    time.Duration // when the longest gap ended, since the meter started
	Samples       uint64        // wake-ups observed
	WallBackwards uint64        // wake-ups at which the wall clock went backwards
	MonoBackwards uint64        // wake-ups at which the monotonic clock went backwards
}

// NewPauseMeter returns a meter waking every interval (DefaultPauseInterval if <= 0).
func NewPauseMeter(interval time.Duration) *PauseMeter {
	if interval <= 0 {
		interval = DefaultPauseInterval
	}
	return &PauseMeter{interval: interval, start: time.Now()}
}

// Run wakes every interval until ctx is done.
func (p *PauseMeter) Run(ctx context.Context) {
	for ctx.Err() == nil {
		time.Sleep(p.interval)
		now := time.Now()
		p.observe(now.Sub(p.start), now.UnixNano())
	}
}

// observe records one wake-up: mono is the monotonic time since the meter started,
// wall the wall clock in Unix nanoseconds.
func (p *PauseMeter) observe(mono time.Duration, wall int64) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.samples++
	if p.havePrev {
		gap := mono - p.prevMono
		if gap < 0 {
			p.monoBack++
		} else if gap > p.maxGap {
			p.maxGap, p.maxAt = gap, mono
		}
		if wall < p.prevWall {
			p.wallBack++
		}
	}
	p.havePrev, p.prevMono, p.prevWall = true, mono, wall
}

// Stats returns the current figures.
func (p *PauseMeter) Stats() PauseStats {
	p.mu.Lock()
	defer p.mu.Unlock()
	return PauseStats{
		MaxPause: p.maxGap, MaxPauseAt: p.maxAt, Samples: p.samples,
		WallBackwards: p.wallBack, MonoBackwards: p.monoBack,
	}
}

// ResetMax forgets the longest gap (the clock counters are kept) and returns the
// figures from just before the reset.
func (p *PauseMeter) ResetMax() PauseStats {
	p.mu.Lock()
	defer p.mu.Unlock()
	before := PauseStats{
		MaxPause: p.maxGap, MaxPauseAt: p.maxAt, Samples: p.samples,
		WallBackwards: p.wallBack, MonoBackwards: p.monoBack,
	}
	p.maxGap, p.maxAt = 0, 0
	return before
}
