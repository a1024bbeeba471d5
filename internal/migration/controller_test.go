package migration

import (
	"math"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/godwit/godwit/internal/qmp"
)

const (
	mb  = 1e6
	mib = 1 << 20
)

func mustPolicy(t *testing.T, name string) Policy {
	t.Helper()
	p, err := LookupPolicy(name)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// logRun logs a simulated run's decisions and result.
func logRun(t *testing.T, r simRun) {
	t.Helper()
	for _, d := range r.decisions {
		t.Logf("%8v %s", d.at.Round(time.Millisecond), d.Reason)
	}
	t.Logf("result: %+v", r.result)
}

func TestControllerIdleGuestConvergesWithoutThrottling(t *testing.T) {
	for _, name := range PolicyNames() {
		t.Run(name, func(t *testing.T) {
			// 512 MiB, 1 GB/s, a guest rewriting 4 MiB at 5 MB/s.
			r := simulate(mustPolicy(t, name), newSim(512, 1000*mb, 5*mb, 4*mib), time.Minute)
			logRun(t, r)
			if r.result.Status != PhaseCompleted {
				t.Fatalf("status %s, want completed", r.result.Status)
			}
			if len(r.decisions) != 0 || r.result.MaxThrottle != 0 {
				t.Errorf("the controller intervened in an idle migration: %+v", r.decisions)
			}
			p := mustPolicy(t, name)
			// (The model adds 2 ms to every switch-over.)
			if r.result.Downtime > p.DowntimeTarget+2*time.Millisecond || r.result.Downtime <= 0 {
				t.Errorf("downtime %v, want within the target %v", r.result.Downtime, p.DowntimeTarget)
			}
			if r.result.Total > 700*time.Millisecond || r.result.Passes > 5 {
				t.Errorf("total %v in %d passes; an idle 512 MiB guest on 1 GB/s needs about 0.6 s and a few passes",
					r.result.Total, r.result.Passes)
			}
			last := r.progress[len(r.progress)-1]
			if last.Phase != PhaseCompleted || last.PercentSent != 100 || !strings.HasPrefix(last.Note, "completed in") {
				t.Errorf("last progress %+v", last)
			}
		})
	}
}

func TestControllerThrottlesWriteHeavyGuestStepwiseThenConverges(t *testing.T) {
	// 200 MB/s link, a guest rewriting 64 MiB at up to 400 MB/s: it only
	// converges once throttled to about 60%.
	p := mustPolicy(t, PolicyBalanced)
	r := simulate(p, newSim(1024, 200*mb, 400*mb, 64*mib), 5*time.Minute)
	logRun(t, r)
	if r.result.Status != PhaseCompleted {
		t.Fatalf("status %s, want completed", r.result.Status)
	}
	steps := r.throttles()
	if len(steps) < 3 || steps[0] != p.ThrottleInitial {
		t.Fatalf("throttle steps %v: want several, starting at %d%%", steps, p.ThrottleInitial)
	}
	for i := 1; i < len(steps); i++ {
		if steps[i] != steps[i-1]+p.ThrottleStep {
			t.Errorf("throttle steps %v do not go up by %d%% at a time", steps, p.ThrottleStep)
		}
	}
	if last := steps[len(steps)-1]; last > p.ThrottleMax || last < 50 {
		t.Errorf("last throttle step %d%%; this guest needs 50–60%% and the policy allows %d%%", last, p.ThrottleMax)
	}
	if r.result.MaxThrottle != steps[len(steps)-1] {
		t.Errorf("MaxThrottle %d, want the last step %d", r.result.MaxThrottle, steps[len(steps)-1])
	}
	if r.result.Downtime > p.DowntimeMax {
		t.Errorf("downtime %v above the policy's maximum %v", r.result.Downtime, p.DowntimeMax)
	}
	for _, d := range r.decisions {
		if d.Throttle != nil && !strings.Contains(d.Reason, "throttling vCPUs to") {
			t.Errorf("a throttle decision does not explain itself: %q", d.Reason)
		}
	}
	// Each step is judged only once QEMU applied the previous one.
	for i := 1; i < len(r.decisions); i++ {
		if gap := r.decisions[i].at - r.decisions[i-1].at; gap < time.Second {
			t.Errorf("decisions %v apart; each needs QEMU to apply it and passes to judge it", gap)
		}
	}
}

func TestControllerCancelsHopelessGuestAtBudget(t *testing.T) {
	p := mustPolicy(t, PolicyBalanced)
	p.TimeBudget = time.Minute
	// A guest rewriting 64 MiB at 2 GB/s over 100 MB/s: hopeless even at 80%.
	r := simulate(p, newSim(1024, 100*mb, 2000*mb, 64*mib), 2*time.Minute)
	logRun(t, r)
	if r.result.Status != PhaseCancelled {
		t.Fatalf("status %s, want cancelled", r.result.Status)
	}
	var cancel *simDecision
	for i := range r.decisions {
		if r.decisions[i].Cancel {
			cancel = &r.decisions[i]
		}
	}
	if cancel == nil {
		t.Fatal("no cancel decision")
	}
	if cancel.at < p.TimeBudget || cancel.at >= p.TimeBudget+DefaultPollInterval {
		t.Errorf("cancelled at %v, want at the first poll after the %v budget", cancel.at, p.TimeBudget)
	}
	for _, want := range []string{"time budget of 1m0s ran out", "throttled to 80%", "downtime limit of 100ms", "keeps running on the source"} {
		if !strings.Contains(r.result.Reason, want) {
			t.Errorf("reason %q does not say %q", r.result.Reason, want)
		}
	}
	if steps := r.throttles(); !slices.Equal(steps, []int{20, 30, 40, 50, 60, 70, 80}) {
		t.Errorf("throttle steps %v, want 20 to 80 by 10", steps)
	}
	if ds := r.downtimes(); !slices.Equal(ds, []time.Duration{100 * time.Millisecond}) {
		t.Errorf("downtime limits %v: want only the policy's maximum, as a last resort", ds)
	}
	if r.result.Bytes == 0 || r.result.Passes < 10 {
		t.Errorf("the result lost the statistics: %+v", r.result)
	}
	last := r.progress[len(r.progress)-1]
	if last.Phase != PhaseCancelled || last.Note != r.result.Reason {
		t.Errorf("last progress %+v", last)
	}
}

func TestControllerRaisesDowntimeBeforeThrottling(t *testing.T) {
	// 100 MB/s, a guest rewriting 6 MiB fast: a 20 ms limit never converges,
	// about 80 ms does, within balanced's 100 ms: no throttling needed.
	p := mustPolicy(t, PolicyBalanced)
	r := simulate(p, newSim(512, 100*mb, 500*mb, 6*mib), time.Minute)
	logRun(t, r)
	if r.result.Status != PhaseCompleted {
		t.Fatalf("status %s, want completed", r.result.Status)
	}
	if steps := r.throttles(); len(steps) != 0 {
		t.Errorf("throttled %v although more downtime within the policy sufficed", steps)
	}
	ds := r.downtimes()
	if len(ds) != 1 || ds[0] <= p.DowntimeTarget || ds[0] > p.DowntimeMax {
		t.Fatalf("downtime limits %v: want one between %v and %v", ds, p.DowntimeTarget, p.DowntimeMax)
	}
	if !strings.Contains(r.decisions[0].Reason, "allowing a downtime of") {
		t.Errorf("reason %q", r.decisions[0].Reason)
	}
	if r.result.Downtime > ds[0] {
		t.Errorf("downtime %v above the limit %v", r.result.Downtime, ds[0])
	}
}

func TestControllerWithoutThrottlingAllowsMaxDowntimeThenWaits(t *testing.T) {
	p := mustPolicy(t, PolicySafe)
	p.ThrottleMax, p.ThrottleInitial, p.ThrottleStep = 0, 0, 0
	p.TimeBudget = 20 * time.Second
	r := simulate(p, newSim(512, 100*mb, 500*mb, 64*mib), time.Minute)
	logRun(t, r)
	if r.result.Status != PhaseCancelled || r.result.MaxThrottle != 0 || len(r.throttles()) != 0 {
		t.Fatalf("want cancelled without throttling, got %+v", r.result)
	}
	if ds := r.downtimes(); !slices.Equal(ds, []time.Duration{p.DowntimeMax}) {
		t.Errorf("downtime limits %v, want just the maximum %v", ds, p.DowntimeMax)
	}
	var waited bool
	for _, d := range r.decisions {
		waited = waited || strings.Contains(d.Reason, "at the policy's limits")
	}
	if !waited {
		t.Error("no decision says the policy's limits were reached")
	}
	if !strings.Contains(r.result.Reason, "time budget") {
		t.Errorf("reason %q", r.result.Reason)
	}
}

// obs builds an active observation.
func obs(at time.Duration, transferred, remaining, sync int64) Observation {
	return Observation{Elapsed: at, Info: qmp.MigrationInfo{Status: qmp.MigrationActive, RAM: &qmp.MigrationRAMStats{
		Transferred: transferred, Remaining: remaining, Total: 1 << 30, DirtySyncCount: sync, PageSize: 4096}}}
}

func TestControllerEstimatesRates(t *testing.T) {
	c := NewController(mustPolicy(t, PolicyBalanced))
	// A link of 100 MB/s seen through 50 ms polls with jitter (alternately
	// 4 MB and 6 MB per poll); passes of 0.5 s, each finding 20 MB dirty
	// (the guest dirties 40 MB/s).
	const poll = 50 * time.Millisecond
	var transferred, remaining int64 = 0, 100e6
	sync := int64(1)
	var p Progress
	for i := 1; i <= 80; i++ {
		at := time.Duration(i) * poll
		sent := int64(4e6)
		if i%2 == 0 {
			sent = 6e6
		}
		transferred += sent
		remaining = max(remaining-sent, 0)
		if i >= 30 && i%10 == 0 {
			sync++
			remaining = 20e6 - sent // the dirty set, less what went since the sync
		}
		_, p = c.Observe(obs(at, transferred, remaining, sync))
	}
	if math.Abs(p.TransferRate-100e6) > 5e6 {
		t.Errorf("transfer rate %.1f MB/s, want 100 MB/s ±5", p.TransferRate/1e6)
	}
	if math.Abs(p.DirtyRate-40e6) > 4e6 {
		t.Errorf("dirty rate %.1f MB/s, want 40 MB/s ±4", p.DirtyRate/1e6)
	}
	if p.Pass != 7 || p.Phase != PhasePrecopy || p.TotalBytes != 1<<30 {
		t.Errorf("progress %+v", p)
	}
}

func TestControllerUsesQEMUDirtyRateBeforeItsOwn(t *testing.T) {
	c := NewController(mustPolicy(t, PolicyBalanced))
	o := obs(time.Second, 1e6, 1e6, 1)
	o.Info.RAM.DirtyPagesRate = 1000
	_, p := c.Observe(o)
	if p.DirtyRate != 1000*4096 {
		t.Errorf("dirty rate %v, want QEMU's 1000 pages/s × 4096", p.DirtyRate)
	}
}

func TestControllerPhasesAndReasons(t *testing.T) {
	for _, tc := range []struct {
		status string
		want   Phase
	}{
		{"", PhaseSetup}, {qmp.MigrationNone, PhaseSetup}, {qmp.MigrationSetup, PhaseSetup},
		{qmp.MigrationActive, PhasePrecopy}, {qmp.MigrationPreSwitchover, PhasePrecopy},
		{qmp.MigrationDevice, PhaseSwitchover}, {qmp.MigrationCancelling, PhaseCancelling},
		{qmp.MigrationCancelled, PhaseCancelled}, {qmp.MigrationCompleted, PhaseCompleted},
		{qmp.MigrationFailed, PhaseFailed}, {"colo", PhasePrecopy},
	} {
		if got := phaseOf(tc.status, PhasePrecopy); got != tc.want {
			t.Errorf("phaseOf(%q) = %s, want %s", tc.status, got, tc.want)
		}
	}

	c := NewController(mustPolicy(t, PolicyBalanced))
	c.Observe(obs(100*time.Millisecond, 50e6, 500e6, 1))
	_, p := c.Observe(Observation{Elapsed: 200 * time.Millisecond, Info: qmp.MigrationInfo{
		Status: qmp.MigrationFailed, ErrorDesc: "Unable to write to socket: Connection reset by peer"}})
	r := c.Result()
	if r.Status != PhaseFailed || !strings.Contains(r.Reason, "Connection reset by peer") || p.Note != r.Reason {
		t.Errorf("failed: result %+v, note %q", r, p.Note)
	}
	if r.Bytes != 50e6 {
		t.Errorf("bytes %d, want the last seen 50e6", r.Bytes)
	}

	c = NewController(mustPolicy(t, PolicyBalanced))
	c.Observe(obs(100*time.Millisecond, 50e6, 500e6, 1))
	c.Observe(Observation{Elapsed: 200 * time.Millisecond, Info: qmp.MigrationInfo{Status: qmp.MigrationCancelled}})
	if r := c.Result(); r.Status != PhaseCancelled || !strings.Contains(r.Reason, "outside") {
		t.Errorf("cancelled from outside: %+v", r)
	}

	c = NewController(mustPolicy(t, PolicyBalanced))
	c.NoteCancel("the caller cancelled")
	c.NoteCancel("a second reason is ignored")
	c.Observe(Observation{Elapsed: 200 * time.Millisecond, Info: qmp.MigrationInfo{Status: qmp.MigrationCancelled}})
	if r := c.Result(); r.Reason != "the caller cancelled" {
		t.Errorf("reason %q", r.Reason)
	}
}

func TestDecisionParameters(t *testing.T) {
	if _, ok := DecisionParameters(Decision{Reason: "nothing"}); ok {
		t.Error("an empty decision has parameters")
	}
	mp, ok := DecisionParameters(Decision{Throttle: ptr(40), DowntimeLimit: ptr(1500 * time.Microsecond)})
	if !ok || *mp.CPUThrottleInitial != 40 || *mp.MaxCPUThrottle != 40 || *mp.CPUThrottleIncrement != 99 ||
		*mp.ThrottleTriggerThreshold != 1 || *mp.DowntimeLimit != 2 || mp.MaxBandwidth != nil {
		t.Errorf("parameters %+v", mp)
	}
	sp := SourceParameters(mustPolicy(t, PolicyBalanced))
	if *sp.MaxBandwidth != UnlimitedBandwidth || *sp.DowntimeLimit != 5 || *sp.MaxCPUThrottle != 1 || sp.MultifdChannels != nil {
		t.Errorf("source parameters %+v", sp)
	}
	caps := SourceCapabilities(Policy{Channels: 4})
	if !caps[qmp.CapMultifd] || caps[qmp.CapAutoConverge] || !caps[qmp.CapReturnPath] {
		t.Errorf("capabilities %v", caps)
	}
	dp := DestinationParameters(Policy{Channels: 4})
	if *dp.MultifdChannels != 4 || *dp.AnnounceInitial != 1 || *dp.AnnounceStep != 10 || *dp.AnnounceRounds != AnnounceRounds {
		t.Errorf("destination parameters %+v", dp)
	}
}

func TestFmtBytes(t *testing.T) {
	for in, want := range map[float64]string{0: "0 B", 999: "999 B", 1500: "2 kB", 2.5e6: "2.5 MB", 1.25e9: "1.2 GB"} {
		if got := fmtBytes(in); got != want {
			t.Errorf("fmtBytes(%v) = %q, want %q", in, got, want)
		}
	}
}

func TestWatchdogCancelsAStalledStream(t *testing.T) {
	c := NewController(mustPolicy(t, PolicyBalanced))
	obs := func(at time.Duration, sent int64) Decision {
		d, _ := c.Observe(Observation{Elapsed: at, Info: qmp.MigrationInfo{
			Status: qmp.MigrationActive,
			RAM:    &qmp.MigrationRAMStats{Transferred: sent, Total: 1 << 30, Remaining: 1<<30 - sent, PageSize: 4096},
		}})
		return d
	}
	// Data moves for a second, then nothing moves.
	for i := 0; i <= 20; i++ {
		if d := obs(time.Duration(i)*50*time.Millisecond, int64(i)<<20); d.Cancel {
			t.Fatalf("cancelled while data moved, at %d", i)
		}
	}
	if d := obs(time.Second+NoProgressTimeout-time.Millisecond, 20<<20); d.Cancel {
		t.Fatal("cancelled before the no-progress timeout")
	}
	d := obs(time.Second+NoProgressTimeout, 20<<20)
	if !d.Cancel || !strings.Contains(d.Reason, "no data reached the destination") {
		t.Fatalf("a stream stalled for %v: %+v; want a cancel saying why", NoProgressTimeout, d)
	}
}

func TestControllerSwitchesToPostcopyOnlyAtMaxThrottle(t *testing.T) {
	// A guest rewriting 64 MiB at 2 GB/s over 100 MB/s: hopeless even at 80%.
	p := mustPolicy(t, PolicyBalanced)
	p.AllowPostcopy = true
	if err := p.Validate(); err != nil {
		t.Fatalf("a policy allowing post-copy: %v", err)
	}
	caps, dcaps := SourceCapabilities(p), DestinationCapabilities(p)
	if !caps[qmp.CapPostcopyRAM] || !dcaps[qmp.CapPostcopyRAM] || !caps[qmp.CapReturnPath] {
		t.Errorf("capabilities: source %v, destination %v; want postcopy-ram and return-path on both", caps, dcaps)
	}
	r := simulate(p, newSim(1024, 100*mb, 2000*mb, 64*mib), 2*time.Minute)
	logRun(t, r)
	last := r.decisions[len(r.decisions)-1]
	if !last.StartPostcopy || !strings.Contains(last.Reason, "switching to post-copy") || !strings.Contains(last.Reason, "can no longer return to the source") {
		t.Fatalf("last decision %+v; want the switch to post-copy, saying the VM cannot return", last.Decision)
	}
	if last.at >= p.TimeBudget {
		t.Errorf("switched at %v, after the budget of %v", last.at, p.TimeBudget)
	}
	// Only once the throttle is at the policy's maximum, and judged there.
	if steps := r.throttles(); !slices.Equal(steps, []int{20, 30, 40, 50, 60, 70, 80}) {
		t.Errorf("throttle steps %v before post-copy, want 20 to 80 by 10", steps)
	}
	prev := r.decisions[len(r.decisions)-2]
	if prev.Throttle == nil || *prev.Throttle != p.ThrottleMax || last.at-prev.at < 2*time.Second {
		t.Errorf("the switch came %v after %+v; want it after the maximum throttle was applied and judged", last.at-prev.at, prev.Decision)
	}
	for _, d := range r.decisions[:len(r.decisions)-1] {
		if d.StartPostcopy || d.Cancel {
			t.Errorf("decision before the switch: %+v", d.Decision)
		}
	}

	// Without post-copy the same migration waits at the limits (see
	// TestControllerCancelsHopelessGuestAtBudget); a guest that converges once
	// throttled never switches.
	p.TimeBudget = time.Minute
	r = simulate(p, newSim(1024, 200*mb, 400*mb, 64*mib), 5*time.Minute)
	if r.result.Status != PhaseCompleted || r.result.Postcopy {
		t.Errorf("a guest that converges when throttled: %+v; want completed in pre-copy", r.result)
	}
	for _, d := range r.decisions {
		if d.StartPostcopy {
			t.Errorf("switched to post-copy although throttling converges: %+v", d.Decision)
		}
	}
}

// postcopyObs is an observation of a migration in a post-copy status.
func postcopyObs(at time.Duration, status string, sent int64) Observation {
	return Observation{Elapsed: at, Info: qmp.MigrationInfo{Status: status, RAM: &qmp.MigrationRAMStats{
		Transferred: sent, Remaining: 1<<30 - sent, Total: 1 << 30, PageSize: 4096, DirtySyncCount: 5}}}
}

func TestControllerPostcopyStallRecoverAndGiveUp(t *testing.T) {
	for _, tc := range []struct {
		status string
		want   Phase
	}{
		{qmp.MigrationPostcopyActive, PhasePostcopy}, {qmp.MigrationPostcopyPaused, PhasePostcopyPaused},
		{qmp.MigrationPostcopyRecoverSetup, PhasePostcopyRecover}, {qmp.MigrationPostcopyRecover, PhasePostcopyRecover},
	} {
		if got := phaseOf(tc.status, PhasePrecopy); got != tc.want || !got.Postcopy() || got.Final() {
			t.Errorf("phaseOf(%q) = %s, want %s, a post-copy phase", tc.status, got, tc.want)
		}
	}

	p := mustPolicy(t, PolicyBalanced)
	p.AllowPostcopy = true
	c := NewController(p)
	c.Observe(obs(time.Second, 100e6, 500e6, 5))
	if c.Postcopy() {
		t.Fatal("post-copy before the switch")
	}
	at, sent := time.Second, int64(100e6)
	step := func(status string, moved int64) (Decision, Progress) {
		at += DefaultPollInterval
		sent += moved
		return c.Observe(postcopyObs(at, status, sent))
	}
	// recoveries returns when recoveries were asked for while status lasted d,
	// counted from the last observation before.
	recoveries := func(status string, d time.Duration) []time.Duration {
		var tries []time.Duration
		from := at
		for at+DefaultPollInterval-from <= d {
			dec, _ := step(status, 0)
			if dec.PausePostcopy {
				t.Fatalf("%s: the source's end is broken before the destination's (%+v)", status, dec)
			}
			if dec.RecoverPostcopy {
				tries = append(tries, at-from)
			}
		}
		return tries
	}
	// Flowing: nothing to do, whatever the time budget says.
	for i := 0; i < 40; i++ {
		if d, p := step(qmp.MigrationPostcopyActive, 1e6); d.Changes() || p.Phase != PhasePostcopy {
			t.Fatalf("post-copy flowing: %+v, phase %s", d, p.Phase)
		}
	}
	if !c.Postcopy() {
		t.Fatal("the controller does not know it is in post-copy")
	}
	// Stalled: reconnecting once nothing moved for PostcopyStallTimeout, then every
	// RecoverRetry; the source's end is left alone (the recovery breaks it once the
	// destination listens again).
	tries := recoveries(qmp.MigrationPostcopyActive, PostcopyStallTimeout+2*time.Second)
	if len(tries) < 2 || tries[0] < PostcopyStallTimeout || tries[0] > PostcopyStallTimeout+DefaultPollInterval ||
		tries[1]-tries[0] < RecoverRetry || tries[1]-tries[0] > RecoverRetry+DefaultPollInterval {
		t.Fatalf("recovery attempts at %v into the stall; want the first after %v, then every %v", tries, PostcopyStallTimeout, RecoverRetry)
	}
	// Paused: a recovery at once, then one every RecoverRetry.
	tries = recoveries(qmp.MigrationPostcopyPaused, 2500*time.Millisecond)
	if len(tries) < 2 || tries[0] != DefaultPollInterval || tries[1]-tries[0] < RecoverRetry || tries[1]-tries[0] > RecoverRetry+DefaultPollInterval {
		t.Fatalf("recovery attempts at %v after the pause; want one at once, then every %v", tries, RecoverRetry)
	}
	// Recovered: the source was resumed, the stream moves again: one recovery.
	c.Resumed()
	step(qmp.MigrationPostcopyRecover, 0)
	for i := 0; i < 10; i++ {
		if d, _ := step(qmp.MigrationPostcopyActive, 1e6); d.Changes() {
			t.Fatalf("after the recovery: %+v", d)
		}
	}
	// A recovery so quick that no poll saw the stream paused counts too.
	c.Resumed()
	step(qmp.MigrationPostcopyActive, 1e6)
	if r := c.Result(); r.PostcopyRecoveries != 2 || !r.Postcopy {
		t.Errorf("result %+v; want post-copy with two recoveries", r)
	}

	// Given up while flowing: it goes on; stalled, its end is broken; paused, it is
	// not recovered: lost.
	c.GiveUp("the caller cancelled the migration (context canceled)")
	if d, p := step(qmp.MigrationPostcopyActive, 1e6); d.Changes() || !strings.Contains(p.Note, "cannot return to the source") {
		t.Errorf("given up while flowing: %+v, note %q", d, p.Note)
	}
	var pause Decision
	for stalled := at; at-stalled < PostcopyStallTimeout+time.Second; {
		d, _ := step(qmp.MigrationPostcopyActive, 0)
		switch {
		case d.RecoverPostcopy:
			t.Fatalf("a recovery of a migration given up: %+v", d)
		case d.PausePostcopy && pause.PausePostcopy:
			t.Fatal("broke the stream twice")
		case d.PausePostcopy:
			pause = d
		}
	}
	if !pause.PausePostcopy || !strings.Contains(pause.Reason, "given up") {
		t.Fatalf("a stalled stream given up is not broken: %+v", pause)
	}
	if c.Lost() {
		t.Fatal("lost before the stream paused")
	}
	if d, _ := step(qmp.MigrationPostcopyPaused, 0); d.RecoverPostcopy || !c.Lost() {
		t.Fatalf("given up and paused: %+v, lost %v; want no recovery, lost", d, c.Lost())
	}
	r := c.Result()
	if r.Status != PhaseFailed || !r.Postcopy || !strings.Contains(r.Reason, "the caller cancelled") ||
		!strings.Contains(r.Reason, "cannot run on the source again") || !strings.Contains(r.Reason, "it is lost") {
		t.Errorf("lost result %+v", r)
	}
}
