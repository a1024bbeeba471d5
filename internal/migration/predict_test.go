package migration

import (
	"math"
	"strings"
	"testing"
	"time"
)

const gib = 1 << 30

var (
	measuredAt = time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	testLink   = Link{Rate: 100e6, Source: "test", Fixed: 700 * time.Millisecond, Switchover: 50 * time.Millisecond}
)

// curve is a guest's measurement: bytes dirtied in 100 ms, 1 s and 4 s, and its data.
func curve(tenth, second, four, data float64) MemoryActivity {
	return MemoryActivity{Dirtied: []DirtySample{{100, tenth}, {1000, second}, {4000, four}}, NonzeroBytes: data, Measured: measuredAt}
}

// steady is a guest that dirties rate bytes/s without a working set.
func steady(rate, data float64) MemoryActivity { return curve(rate/10, rate, 4*rate, data) }

func near(got, want float64) bool { return math.Abs(got-want) <= 1e-6*math.Max(1, math.Abs(want)) }

// An idle guest is one pass: its written pages at the link's rate, its zero pages at
// QEMU's cost per page, the fixed costs, and a pause of the switch-over's fixed part.
func TestPredictIdle(t *testing.T) {
	pr := Predict(PredictInput{Policy: mustPolicy(t, PolicyBalanced), MemoryBytes: gib, Activity: steady(0, 160*mib), Link: testLink})
	zeros := float64(gib-160*mib) / 4096
	wantCopy := 160*mib/4096*pageBytes/100e6 + zeros*zeroPageCost.Seconds()
	if !pr.Converges || pr.GivesUp || pr.ThrottlePercent != 0 || pr.Passes != 3 {
		t.Errorf("idle guest: %+v; want one copy pass (3 syncs), converging without throttling", pr)
	}
	if !near(pr.DowntimeMS, 50) || !near(pr.TotalMS, 700+1000*wantCopy+50) {
		t.Errorf("idle guest: total %.3f ms, downtime %.3f ms; want %.3f and 50", pr.TotalMS, pr.DowntimeMS, 700+1000*wantCopy+50)
	}
	if !near(pr.Bytes, 160*mib/4096*pageBytes+zeros*zeroPageBytes) || pr.LinkBps != 100e6 || pr.LinkSource != "test" || pr.FixedMS != 700 || pr.SwitchoverMS != 50 {
		t.Errorf("idle guest: %+v", pr)
	}
	if !strings.Contains(pr.Note, "converges without throttling in 1 pass") {
		t.Errorf("note %q", pr.Note)
	}
}

// A guest that dirties moderately takes more passes and sends more, and still
// converges; its pause stays within the target.
func TestPredictModerate(t *testing.T) {
	idle := Predict(PredictInput{Policy: mustPolicy(t, PolicyBalanced), MemoryBytes: 512 * mib, Activity: steady(0, 200*mib), Link: testLink})
	busy := Predict(PredictInput{Policy: mustPolicy(t, PolicyBalanced), MemoryBytes: 512 * mib, Activity: steady(30e6, 200*mib), Link: testLink})
	if !busy.Converges || busy.Passes <= idle.Passes || busy.Bytes <= idle.Bytes || busy.TotalMS <= idle.TotalMS {
		t.Errorf("dirtying guest %+v; want it to converge after more passes, more bytes and more time than idle %+v", busy, idle)
	}
	if busy.DowntimeMS <= 50 || busy.DowntimeMS > 50+20 {
		t.Errorf("downtime %.1f ms; want the switch-over's 50 ms and at most the 20 ms target", busy.DowntimeMS)
	}
	if busy.DirtyRateBps != 30e6 {
		t.Errorf("dirty rate %v", busy.DirtyRateBps)
	}
}

// A guest that dirties faster than the link does not converge without throttling; the
// balanced policy's throttle (up to 80%) makes it converge, the safe one's (40%) does
// not, and a policy without throttling gives up.
func TestPredictFasterThanLink(t *testing.T) {
	act := steady(200e6, 512*mib)
	bal := Predict(PredictInput{Policy: mustPolicy(t, PolicyBalanced), MemoryBytes: gib, Activity: act, Link: testLink})
	if bal.Converges || bal.GivesUp || bal.ThrottlePercent < 20 || bal.ThrottlePercent > 80 {
		t.Errorf("balanced: %+v; want not converging without throttling, converging throttled to 20..80%%", bal)
	}
	for _, want := range []string{"does not converge without throttling", "faster than the link carries it", "makes it converge"} {
		if !strings.Contains(bal.Note, want) {
			t.Errorf("balanced note %q lacks %q", bal.Note, want)
		}
	}
	if bal.TotalMS <= bal.FixedMS+bal.DowntimeMS || bal.DowntimeMS < bal.SwitchoverMS {
		t.Errorf("balanced: total %.0f ms, downtime %.0f ms", bal.TotalMS, bal.DowntimeMS)
	}

	safe := mustPolicy(t, PolicySafe)
	hard := Predict(PredictInput{Policy: safe, MemoryBytes: gib, Activity: steady(300e6, 512*mib), Link: testLink})
	if hard.Converges || !hard.GivesUp || hard.ThrottlePercent != safe.ThrottleMax || hard.TotalMS != millis(safe.TimeBudget) {
		t.Errorf("safe: %+v; want giving up at the budget with the vCPUs at 40%%", hard)
	}
	if !strings.Contains(hard.Note, "even with the vCPUs throttled to policy safe's maximum of 40%") || !strings.Contains(hard.Note, "time budget of 30m0s") {
		t.Errorf("safe note %q", hard.Note)
	}

	none := Predict(PredictInput{Policy: QEMUDefaultsPolicy(), MemoryBytes: gib, Activity: steady(300e6, 512*mib), Link: testLink})
	if none.Converges || !none.GivesUp || none.ThrottlePercent != 0 || !strings.Contains(none.Note, "does not throttle vCPUs") {
		t.Errorf("qemu-defaults: %+v", none)
	}
	t.Logf("balanced: %s\nsafe: %s\nqemu-defaults: %s", bal.Note, hard.Note, none.Note)
	// Its 128 MiB/s bandwidth is the stream's rate when the link is faster.
	fast := testLink
	fast.Rate = 10e9
	if pr := Predict(PredictInput{Policy: QEMUDefaultsPolicy(), MemoryBytes: gib, Activity: steady(0, 100*mib), Link: fast}); pr.LinkBps != float64(QEMUDefaultMaxBandwidth) {
		t.Errorf("stream rate %v on a 10 GB/s link; want qemu-defaults' %d", pr.LinkBps, QEMUDefaultMaxBandwidth)
	}
}

// A guest that rewrites a small working set faster than the link converges anyway: the
// set fits the pause, at the target or with the limit raised within the policy's
// maximum. A large one does not.
func TestPredictWorkingSet(t *testing.T) {
	small := curve(1*mib, 1*mib, 1*mib, 300*mib) // 10 MiB/s over a tenth of a second, then flat
	pr := Predict(PredictInput{Policy: mustPolicy(t, PolicyBalanced), MemoryBytes: gib, Activity: small, Link: testLink})
	if !pr.Converges || pr.DirtyRateBps != 10*mib || pr.DowntimeMS > 50+20 {
		t.Errorf("1 MiB working set: %+v; want converging with a pause within the target", pr)
	}
	slow := testLink
	slow.Rate = 40e6
	mid := curve(6e6, 6e6, 6e6, 300*mib) // 150 ms to send at 40 MB/s: above safe's 50 ms target, within its 300 ms
	pr = Predict(PredictInput{Policy: mustPolicy(t, PolicySafe), MemoryBytes: gib, Activity: mid, Link: slow})
	if !pr.Converges || !near(pr.DowntimeMS, 50+150) || !strings.Contains(pr.Note, "downtime limit is raised to 188ms (target 50ms)") {
		t.Errorf("6 MB working set over 40 MB/s under safe: %+v; want converging with the limit raised to 188 ms", pr)
	}
	big := curve(250e6, 256*mib, 256*mib, 300*mib)
	pr = Predict(PredictInput{Policy: mustPolicy(t, PolicyBalanced), MemoryBytes: gib, Activity: big, Link: testLink})
	if pr.Converges || !strings.Contains(pr.Note, "(2.5 GB/s, 268.4 MB in 4s) faster than the link carries it") {
		t.Errorf("256 MiB working set rewritten at 2.5 GB/s over 100 MB/s: %+v; want no convergence without throttling", pr)
	}
}

// The curve of memory dirtied over time: straight between the measured points, flat at
// a working set, continued at its last slope, never more than the guest's memory, and
// stretched by a throttle.
func TestDirtied(t *testing.T) {
	a := curve(10*mib, 40*mib, 100*mib, 0)
	for _, c := range []struct {
		d        time.Duration
		throttle int
		want     float64
	}{
		{50 * time.Millisecond, 0, 5 * mib},
		{550 * time.Millisecond, 0, 25 * mib},
		{time.Second, 0, 40 * mib},
		{2500 * time.Millisecond, 0, 70 * mib},
		{10 * time.Second, 0, 220 * mib},
		{time.Minute, 0, 512 * mib},
		{2 * time.Second, 50, 40 * mib},
	} {
		if got := a.dirtied(c.d, c.throttle, 512*mib); !near(got, c.want) {
			t.Errorf("dirtied(%v, %d%%) = %.2f MiB; want %.2f", c.d, c.throttle, got/mib, c.want/mib)
		}
	}
	// A longer period that saw fewer pages (QEMU rounds rates down) counts as many.
	odd := curve(10*mib, 8*mib, 8*mib, 0)
	if got := odd.dirtied(4*time.Second, 0, gib); got != 10*mib {
		t.Errorf("a curve that falls: dirtied(4s) = %.2f MiB; want it flat at 10", got/mib)
	}
	if got := (MemoryActivity{}).dirtied(time.Second, 0, gib); got != 0 {
		t.Errorf("nothing measured: dirtied = %v", got)
	}
}

// The stream's rate is the lowest of the link's, the policy's and the cap; without a
// measurement the guest is taken as idle with all its memory written, and says so.
func TestPredictInputs(t *testing.T) {
	pr := Predict(PredictInput{Policy: mustPolicy(t, PolicyBalanced), MemoryBytes: gib, Activity: steady(0, 0), Link: testLink, BandwidthCap: 10e6})
	if pr.LinkBps != 10e6 {
		t.Errorf("capped stream rate %v; want the cap", pr.LinkBps)
	}
	unknown := Predict(PredictInput{Policy: mustPolicy(t, PolicyBalanced), MemoryBytes: gib, Link: testLink})
	if !unknown.Converges || !strings.Contains(unknown.Note, "not measured") || !near(unknown.Bytes, gib/4096*pageBytes) {
		t.Errorf("unmeasured guest: %+v", unknown)
	}
	if pr := Predict(PredictInput{Policy: mustPolicy(t, PolicyBalanced), MemoryBytes: gib, Link: Link{}}); pr.TotalMS != 0 || !strings.Contains(pr.Note, "no prediction") {
		t.Errorf("no link rate: %+v", pr)
	}
}

// What a migration that went as predicted tells of its link is the link the prediction
// used: Observe reads back what Predict added up.
func TestObserveRoundTrip(t *testing.T) {
	for _, act := range []MemoryActivity{steady(0, 160*mib), steady(30e6, 400*mib)} {
		pr := Predict(PredictInput{Policy: mustPolicy(t, PolicyBalanced), MemoryBytes: gib, Activity: act, Link: testLink})
		total := time.Duration(pr.TotalMS * float64(time.Millisecond))
		stream := total - testLink.Fixed
		down := time.Duration(pr.DowntimeMS * float64(time.Millisecond))
		o, ok := Observe(total, stream, down, pr.Bytes, gib, &pr)
		if !ok || math.Abs(o.Rate/testLink.Rate-1) > 0.02 || o.Fixed != testLink.Fixed || (o.Switchover-testLink.Switchover).Abs() > time.Millisecond {
			t.Errorf("dirty %v: observed %+v, %v; want the link %+v", act.Rate(), o, ok, testLink)
		}
	}
	if o, ok := Observe(time.Second, time.Second, 0, 100*mib, gib, nil); !ok || o.Switchover != 0 || o.Fixed != 0 {
		t.Errorf("Observe without a prediction = %+v, %v", o, ok)
	}
	for _, bad := range [][5]float64{
		{1, 2, 0, 1e6, gib},     // total shorter than the stream
		{2, 1, 0, 0, gib},       // nothing sent
		{2, 1, 0, 1e6, 0},       // no memory
		{2, 1, 1, 1e6, gib},     // all of the stream was the pause
		{2, 1, 0, 1e3, 1 * mib}, // nothing but zero pages
	} {
		d := func(s float64) time.Duration { return time.Duration(s * float64(time.Second)) }
		if o, ok := Observe(d(bad[0]), d(bad[1]), d(bad[2]), bad[3], bad[4], nil); ok {
			t.Errorf("Observe%v = %+v; want no observation", bad, o)
		}
	}
}

// Whatever a host reports as a guest's memory activity, a prediction is made and its
// numbers are finite: samples out of order, negative, absurdly large, of no period.
func TestPredictOddActivity(t *testing.T) {
	for _, act := range []MemoryActivity{
		{Dirtied: []DirtySample{{-1, 1e308}, {100, -5}, {50, 1}, {0, 3}}, NonzeroBytes: -1, Measured: measuredAt},
		{Dirtied: []DirtySample{{1e308, 1e308}}, NonzeroBytes: 1e308, Measured: measuredAt},
		{Dirtied: []DirtySample{{1e-300, 1e308}}, Measured: measuredAt},
		{Dirtied: make([]DirtySample, 1000), Measured: measuredAt},
	} {
		for _, name := range []string{PolicyBalanced, PolicySafe, PolicyFastSwitchover, PolicyQEMUDefaults} {
			pr := Predict(PredictInput{Policy: mustPolicy(t, name), MemoryBytes: gib, Activity: act, Link: testLink})
			for _, v := range []float64{pr.TotalMS, pr.DowntimeMS, pr.Bytes, pr.DirtyRateBps} {
				if math.IsNaN(v) || math.IsInf(v, 0) || v < 0 {
					t.Errorf("%s, activity %+v: %+v", name, act, pr)
				}
			}
			if pr.TotalMS <= 0 || pr.Note == "" {
				t.Errorf("%s, activity %+v: %+v; want a prediction", name, act, pr)
			}
		}
	}
}
