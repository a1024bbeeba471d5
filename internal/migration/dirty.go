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
// its write speed. A measurement therefore takes three periods one after the other,
// BurstWindow, RateWindow and LongWindow: how much the guest dirties in each is a curve
// that rises with the guest's write speed and flattens at its working set, and Predict
// reads the memory a pass of any length finds dirty off that curve.
const (
	BurstWindow = 100 * time.Millisecond
	RateWindow  = time.Second
	LongWindow  = 4 * time.Second
	// dirtySamplePages is the pages sampled per GiB of guest memory: 8 times QEMU's
	// default, for a rate of a few MiB/s to show in a large guest; hashing them takes
	// QEMU a few milliseconds.
	dirtySamplePages = 4096
)

// dirtyWindows are the periods a measurement samples, shortest first.
func dirtyWindows() [3]time.Duration { return [3]time.Duration{BurstWindow, RateWindow, LongWindow} }

// MemoryActivity is what a host measured of a running guest's memory, the inputs of a
// migration's prediction (Predict).
type MemoryActivity struct {
	// Dirtied is how much memory the guest dirtied (distinct pages) over each period
	// measured, shortest first.
	Dirtied []DirtySample `json:"dirtied"`
	// NonzeroBytes is how much of the guest's memory is not all zeros: a first copy
	// sends these pages whole and every other page as a zero-page marker. 0 when
	// unknown.
	NonzeroBytes float64 `json:"nonzero_bytes,omitempty"`
	// Measured is when the measurement ended, and Host the host that made it (a VM's
	// latest measurement moves with it).
	Measured time.Time `json:"measured"`
	Host     string    `json:"host,omitempty"`
}

// DirtySample is the memory a guest dirtied over one period.
type DirtySample struct {
	PeriodMS float64 `json:"period_ms"`
	Bytes    float64 `json:"bytes"`
}

// Rate is the guest's dirty rate: the highest over the periods measured, in bytes/s (the
// guest's write speed, or, when even the shortest period saw a working set rewritten,
// less than it).
func (a MemoryActivity) Rate() float64 {
	r := 0.0
	for _, s := range a.Dirtied {
		if s.PeriodMS > 0 {
			r = max(r, s.Bytes/(s.PeriodMS/1000))
		}
	}
	return r
}

// dirtied is how much distinct memory the guest dirties in d with its vCPUs throttled by
// throttle percent, at most memory bytes: the measured curve, through the origin and
// between its points a straight line, beyond the last continued at its last slope. A
// throttled guest does in d what it would unthrottled in the rest of d.
func (a MemoryActivity) dirtied(d time.Duration, throttle int, memory float64) float64 {
	t := d.Seconds() * 1000 * (1 - float64(throttle)/100) // ms of unthrottled guest time
	prevT, prevB, slope := 0.0, 0.0, 0.0
	for _, s := range a.Dirtied {
		if s.PeriodMS <= prevT {
			continue
		}
		b := max(s.Bytes, prevB) // distinct pages never fewer over a longer period
		slope = (b - prevB) / (s.PeriodMS - prevT)
		if t <= s.PeriodMS {
			return min(prevB+slope*(t-prevT), memory)
		}
		prevT, prevB = s.PeriodMS, b
	}
	return min(prevB+slope*(t-prevT), memory)
}

// maxDirtySamples bounds the samples a prediction reads (a measurement takes three).
const maxDirtySamples = 8

// clean keeps of a measurement, which a host reports, what one can hold: up to
// maxDirtySamples samples of 1 ms to an hour, each longer than the one before, of 0 to
// memory bytes; and data of 0 to memory bytes.
func (a MemoryActivity) clean(memory float64) MemoryActivity {
	out := MemoryActivity{NonzeroBytes: min(max(a.NonzeroBytes, 0), memory), Measured: a.Measured, Host: a.Host}
	last := 0.0
	for _, s := range a.Dirtied {
		if len(out.Dirtied) == maxDirtySamples {
			break
		}
		if s.PeriodMS >= 1 && s.PeriodMS <= millis(time.Hour) && s.PeriodMS > last {
			out.Dirtied = append(out.Dirtied, DirtySample{PeriodMS: s.PeriodMS, Bytes: min(max(s.Bytes, 0), memory)})
			last = s.PeriodMS
		}
	}
	return out
}

// longest is the longest period measured and the most memory dirtied over it (no
// fewer than over a shorter one); zero when nothing was measured.
func (a MemoryActivity) longest() DirtySample {
	var l DirtySample
	for _, s := range a.Dirtied {
		l.PeriodMS, l.Bytes = max(l.PeriodMS, s.PeriodMS), max(l.Bytes, s.Bytes)
	}
	return l
}

// MeasureDirtyRate measures how much memory the guest behind mon dirties over each of
// BurstWindow, RateWindow and LongWindow, one after the other (about 5.1 s in all), and
// returns the samples with the time it ended; NonzeroBytes is left to the caller, which
// knows the process. QEMU measures one guest's rate at a time, so the caller must not
// start another measurement on the same QEMU meanwhile.
func MeasureDirtyRate(ctx context.Context, mon *qmp.Monitor) (MemoryActivity, error) {
	var a MemoryActivity
	for _, w := range dirtyWindows() {
		rate, err := measureOnce(ctx, mon, w)
		if err != nil {
			return a, err
		}
		a.Dirtied = append(a.Dirtied, DirtySample{PeriodMS: millis(w), Bytes: rate * w.Seconds()})
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
