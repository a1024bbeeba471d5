package migration

import (
	"context"
	"fmt"
	"time"

	"github.com/godwit/godwit/internal/qmp"
)

// A guest's dirty rate is measured by QEMU's page sampling (calc-dirty-rate), which
// works under TCG as under KVM: QEMU hashes a sample of the guest's pages, waits, and
// counts the sampled pages that changed. That counts distinct pages, so a guest that
// rewrites a working set faster than the period shows the set's size per period, not
// its write speed. A measurement therefore takes two periods, BurstWindow then
// RateWindow: a guest whose rate over the long period is well below its rate over the
// short one rewrites a working set of about Rate × RateWindow (see MemoryActivity).
const (
	BurstWindow = 250 * time.Millisecond
	RateWindow  = time.Second
	// dirtySamplePages is the pages sampled per GiB of guest memory: 8 times QEMU's
	// default, for a rate of a few MiB/s to show in a large guest; hashing them takes
	// QEMU a few milliseconds.
	dirtySamplePages = 4096
)

// MemoryActivity is what a host measured of a running guest's memory, the inputs of a
// migration's prediction (Predict).
type MemoryActivity struct {
	// DirtyRate is how much memory the guest dirtied over RateWindow, per second, in
	// bytes/s (distinct pages).
	DirtyRate float64 `json:"dirty_rate"`
	// BurstDirtyRate is the same over BurstWindow. Well above DirtyRate, the guest
	// rewrites a working set of about DirtyRate × RateWindow faster than RateWindow.
	BurstDirtyRate float64 `json:"burst_dirty_rate"`
	// ResidentBytes is how much of the guest's memory is resident in its QEMU process:
	// pages the guest has written. A first copy sends these whole and every other page
	// as a zero-page marker. 0 when unknown.
	ResidentBytes float64 `json:"resident_bytes,omitempty"`
	// Measured is when the measurement ended.
	Measured time.Time `json:"measured"`
}

// workingSet is the memory the guest keeps rewriting, when the measurement shows one
// (see MemoryActivity), else 0: no bound below the guest's memory is known.
func (a MemoryActivity) workingSet() float64 {
	if a.DirtyRate > 0 && a.DirtyRate < saturatedRatio*a.BurstDirtyRate {
		return a.DirtyRate * RateWindow.Seconds()
	}
	return 0
}

// saturatedRatio: a guest whose dirty rate over RateWindow is below this share of its
// rate over BurstWindow rewrites a working set. A guest dirtying steadily shows the same
// rate over both, within the sampling's noise (a steady 32 MiB/s measured 21–42 MiB/s
// over BurstWindow and 21–38 MiB/s over RateWindow in a 512 MiB guest under TCG).
const saturatedRatio = 0.5

// dirtied is how much distinct memory the guest dirties in d with its vCPUs throttled
// by throttle percent, at most memory bytes: the burst rate (the guest's write speed,
// or a lower bound of it) up to the working set.
func (a MemoryActivity) dirtied(d time.Duration, throttle int, memory float64) float64 {
	rate := max(a.BurstDirtyRate, a.DirtyRate) * (1 - float64(throttle)/100)
	bytes := rate * d.Seconds()
	if ws := a.workingSet(); ws > 0 {
		bytes = min(bytes, ws)
	}
	return min(bytes, memory)
}

// MeasureDirtyRate measures how fast the guest behind mon dirties its memory, over
// BurstWindow and then over RateWindow (about 1.3 s in all), and returns the rates with
// the time it ended; ResidentBytes is left for the caller, which knows the process. QEMU
// measures one guest's rate at a time, so the caller must not start another
// measurement on the same QEMU meanwhile.
func MeasureDirtyRate(ctx context.Context, mon *qmp.Monitor) (MemoryActivity, error) {
	var a MemoryActivity
	var err error
	if a.BurstDirtyRate, err = measureOnce(ctx, mon, BurstWindow); err != nil {
		return a, err
	}
	if a.DirtyRate, err = measureOnce(ctx, mon, RateWindow); err != nil {
		return a, err
	}
	a.Measured = time.Now().UTC()
	return a, nil
}

// measureOnce runs one calc-dirty-rate over d and returns the rate in bytes/s.
func measureOnce(ctx context.Context, mon *qmp.Monitor, d time.Duration) (float64, error) {
	args := qmp.DirtyRateArgs{CalcTime: d.Milliseconds(), CalcTimeUnit: qmp.TimeUnitMillisecond,
		SamplePages: dirtySamplePages, Mode: qmp.DirtyRatePageSampling}
	if err := mon.CalcDirtyRate(ctx, args); err != nil {
		return 0, fmt.Errorf("start measuring the guest's dirty rate: %w", err)
	}
	// QEMU has been measuring since the command returned; it takes a little longer than
	// d, and much longer only when it is starved of CPU.
	ctx, cancel := context.WithTimeout(ctx, d+10*time.Second)
	defer cancel()
	wait := d
	for {
		select {
		case <-ctx.Done():
			return 0, fmt.Errorf("QEMU did not finish measuring the guest's dirty rate over %v: %w", d, ctx.Err())
		case <-time.After(wait):
		}
		info, err := mon.QueryDirtyRate(ctx, qmp.TimeUnitMillisecond)
		if err != nil {
			return 0, fmt.Errorf("read the guest's dirty rate: %w", err)
		}
		if info.Status == qmp.DirtyRateMeasured && info.DirtyRate != nil {
			return float64(*info.DirtyRate) * (1 << 20), nil
		}
		if info.Status != qmp.DirtyRateMeasuring {
			return 0, fmt.Errorf("QEMU's dirty-rate measurement is %q, not measuring or measured", info.Status)
		}
		wait = 20 * time.Millisecond
	}
}
