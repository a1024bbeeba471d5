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

// steady is a guest that dirties rate bytes/s without a working set.
func steady(rate, resident float64) MemoryActivity {
	return MemoryActivity{DirtyRate: rate, BurstDirtyRate: rate, ResidentBytes: resident, Measured: measuredAt}
}

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
	if busy.DirtyRateBps != 30e6 || busy.WorkingSetBytes != 0 {
		t.Errorf("dirty rate %v, working set %v", busy.DirtyRateBps, busy.WorkingSetBytes)
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
// set fits the pause, at the target or with the limit raised within the maximum.
func TestPredictWorkingSet(t *testing.T) {
	small := MemoryActivity{DirtyRate: 1 * mib, BurstDirtyRate: 1000e6, ResidentBytes: 300 * mib, Measured: measuredAt}
	pr := Predict(PredictInput{Policy: mustPolicy(t, PolicyBalanced), MemoryBytes: gib, Activity: small, Link: testLink})
	if !pr.Converges || pr.WorkingSetBytes != 1*mib || pr.DowntimeMS > 50+20 {
		t.Errorf("1 MiB working set: %+v; want converging with a pause within the target", pr)
	}
	mid := MemoryActivity{DirtyRate: 5e6, BurstDirtyRate: 1000e6, ResidentBytes: 300 * mib, Measured: measuredAt}
	pr = Predict(PredictInput{Policy: mustPolicy(t, PolicyBalanced), MemoryBytes: gib, Activity: mid, Link: testLink})
	if !pr.Converges || pr.DowntimeMS < 50+40 || pr.DowntimeMS > 50+100 || !strings.Contains(pr.Note, "downtime limit is raised to") {
		t.Errorf("5 MB working set: %+v; want converging with the limit raised (50 ms needed, at most 100)", pr)
	}
	big := MemoryActivity{DirtyRate: 256 * mib, BurstDirtyRate: 1000e6, ResidentBytes: 300 * mib, Measured: measuredAt}
	pr = Predict(PredictInput{Policy: mustPolicy(t, PolicyBalanced), MemoryBytes: gib, Activity: big, Link: testLink})
	if pr.Converges || !strings.Contains(pr.Note, "rewriting about 268.4 MB") {
		t.Errorf("256 MiB working set rewritten at 1 GB/s over 100 MB/s: %+v; want no convergence without throttling", pr)
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
			t.Errorf("dirty %v: observed %+v, %v; want the link %+v", act.DirtyRate, o, ok, testLink)
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
