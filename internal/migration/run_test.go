package migration

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/godwit/godwit/internal/qmp"
)

// logProgress returns an OnProgress that logs each change of pass, phase or
// note, and records every report.
func logProgress(t *testing.T, all *[]Progress) func(Progress) {
	var last Progress
	return func(p Progress) {
		*all = append(*all, p)
		if p.Pass != last.Pass || p.Phase != last.Phase || p.Note != last.Note {
			t.Logf("%6v %-10s pass %d %5.1f%% sent %s left, link %s/s, dirty %s/s, throttle %d%%: %s",
				p.Elapsed.Round(time.Millisecond), p.Phase, p.Pass, p.PercentSent, fmtBytes(float64(p.RemainingBytes)),
				fmtBytes(p.TransferRate), fmtBytes(p.DirtyRate), p.ThrottlePercent, p.Note)
		}
		last = p
	}
}

func TestRunMigratesIdleGuest(t *testing.T) {
	spec := guestSpec(t, 512, "")
	src := bootGuest(t, spec)
	p, err := LookupPolicy("")
	if err != nil {
		t.Fatal(err)
	}
	dst, uri := startDestination(t, spec, &p, true)

	var progress []Progress
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	// PrepareDestination set the return path and the announce timing.
	caps, err := dst.mon.QueryMigrateCapabilities(ctx)
	if err != nil || !caps[qmp.CapReturnPath] || caps[qmp.CapMultifd] {
		t.Errorf("destination capabilities %v, %v: want return-path on, multifd off", caps, err)
	}
	dp, err := dst.mon.QueryMigrateParameters(ctx)
	if err != nil || dp.AnnounceInitial == nil || dp.AnnounceRounds == nil || dp.AnnounceStep == nil {
		t.Fatalf("destination parameters %+v, %v", dp, err)
	}
	if *dp.AnnounceInitial != AnnounceInitial.Milliseconds() || *dp.AnnounceRounds != AnnounceRounds || *dp.AnnounceStep != AnnounceStep.Milliseconds() {
		t.Errorf("destination announce parameters: initial %d, rounds %d, step %d", *dp.AnnounceInitial, *dp.AnnounceRounds, *dp.AnnounceStep)
	}

	res, err := Run(ctx, src.mon, Options{Policy: p, URI: uri, OnProgress: logProgress(t, &progress)})
	t.Logf("result: %+v", res)
	if err != nil {
		t.Fatalf("Run: %v", err)
	}
	if res.Status != PhaseCompleted || res.Downtime <= 0 || res.Bytes == 0 || res.Passes < 1 || res.Policy != p.Name {
		t.Errorf("result %+v: want completed with downtime > 0, bytes > 0, passes ≥ 1, policy %q", res, p.Name)
	}
	if len(progress) == 0 || progress[len(progress)-1].Phase != PhaseCompleted {
		t.Errorf("the last progress report is not \"completed\" (%d reports)", len(progress))
	}
	if got := status(t, src); got != qmp.StatusPostMigrate {
		t.Errorf("source run state %q, want %q", got, qmp.StatusPostMigrate)
	}
	waitStatus(t, dst, qmp.StatusRunning, 5*time.Second)

	// The guest really runs on the destination: its memory checker keeps
	// verifying RAM (it would print MEMORY ERROR), and it answers the power
	// button on the destination's console, which held nothing before.
	time.Sleep(1500 * time.Millisecond)
	waitStatus(t, dst, qmp.StatusRunning, time.Second)
	if err := dst.mon.SystemPowerdown(ctx); err != nil {
		t.Fatalf("system_powerdown on the destination: %v", err)
	}
	waitConsole(t, dst, "power button pressed", 20*time.Second)
	if c := readFile(dst.spec.ConsoleLogPath()); strings.Contains(c, "MEMORY ERROR") || strings.Contains(c, "Kernel panic") {
		t.Errorf("the guest reported trouble on the destination:\n%s", c)
	}
}

// slowPolicy is the balanced policy limited to 20 MB/s, so that copying an
// idle 512 MiB guest takes a few seconds.
func slowPolicy(t *testing.T) Policy {
	p, err := LookupPolicy(PolicyBalanced)
	if err != nil {
		t.Fatal(err)
	}
	p.Name = "slow"
	p.MaxBandwidth = 20e6
	return p
}

func TestRunCancelledByContextKeepsSourceRunning(t *testing.T) {
	spec := guestSpec(t, 512, "")
	src := bootGuest(t, spec)
	p := slowPolicy(t)
	dst, uri := startDestination(t, spec, &p, false)

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var progress []Progress
	logp := logProgress(t, &progress)
	res, err := Run(ctx, src.mon, Options{Policy: p, URI: uri, OnProgress: func(pr Progress) {
		logp(pr)
		if pr.TransferredBytes > 10e6 {
			cancel() // mid-copy
		}
	}})
	t.Logf("result: %+v, err: %v", res, err)
	if res.Status != PhaseCancelled || !errors.Is(err, ErrCancelled) || !errors.Is(err, context.Canceled) {
		t.Fatalf("Run = %+v, %v; want cancelled, an error wrapping ErrCancelled and context.Canceled", res, err)
	}
	if !strings.Contains(res.Reason, "caller cancelled") {
		t.Errorf("reason %q does not say the caller cancelled", res.Reason)
	}
	if res.Bytes < 10e6 || res.Bytes > 400e6 {
		t.Errorf("%d bytes sent; want the cancel to have come mid-copy", res.Bytes)
	}
	if got := status(t, src); got != qmp.StatusRunning {
		t.Errorf("source run state %q after the cancel, want running", got)
	}
	// The destination (exit-on-error off) reports the failed incoming migration.
	deadline := time.Now().Add(10 * time.Second)
	for {
		info, err := dst.mon.QueryMigrate(context.Background())
		if err == nil && info.Status == qmp.MigrationFailed {
			break
		}
		if err != nil && !dst.proc.Alive() {
			break // it exited: as good
		}
		if time.Now().After(deadline) {
			t.Fatalf("the destination's incoming migration is %q (err %v), not failed, 10 s after the cancel", info.Status, err)
		}
		time.Sleep(50 * time.Millisecond)
	}

	// The source can be migrated again afterwards.
	fast, _ := LookupPolicy(PolicyBalanced)
	dst2, uri2 := startDestination(t, spec, &fast, true)
	ctx2, cancel2 := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel2()
	res, err = Run(ctx2, src.mon, Options{Policy: fast, URI: uri2})
	if err != nil || res.Status != PhaseCompleted {
		t.Fatalf("migrating again after the cancel: %+v, %v", res, err)
	}
	waitStatus(t, dst2, qmp.StatusRunning, 5*time.Second)
}

func TestRunCancelledAtTimeBudget(t *testing.T) {
	spec := guestSpec(t, 512, "")
	src := bootGuest(t, spec)
	p := slowPolicy(t)
	p.TimeBudget = 1500 * time.Millisecond
	_, uri := startDestination(t, spec, &p, true)

	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	var progress []Progress
	t0 := time.Now()
	res, err := Run(ctx, src.mon, Options{Policy: p, URI: uri, OnProgress: logProgress(t, &progress)})
	took := time.Since(t0)
	t.Logf("result after %v: %+v, err: %v", took, res, err)
	if res.Status != PhaseCancelled || !errors.Is(err, ErrCancelled) || errors.Is(err, context.Canceled) {
		t.Fatalf("Run = %+v, %v; want cancelled with an error wrapping ErrCancelled (and not context.Canceled)", res, err)
	}
	if !strings.Contains(res.Reason, "time budget of 1.5s ran out") {
		t.Errorf("reason %q does not name the time budget", res.Reason)
	}
	if took < p.TimeBudget || took > p.TimeBudget+10*time.Second {
		t.Errorf("Run returned after %v; want just after the %v budget", took, p.TimeBudget)
	}
	if got := status(t, src); got != qmp.StatusRunning {
		t.Errorf("source run state %q after the cancel, want running", got)
	}
}

func TestRunThrottlesWriteHeavyGuestStepwise(t *testing.T) {
	// The guest rewrites 64 MiB as fast as its vCPU can (over 1 GB/s under
	// TCG here), the link is capped at 300 MB/s: it cannot converge without
	// a throttle of about 90%, so the controller throttles step by step.
	spec := guestSpec(t, 512, "godwit.dirty_mib=64 godwit.dirty_rate=0")
	src := bootGuest(t, spec)
	waitConsole(t, src, "dirty: started", 10*time.Second)
	p := mustPolicy(t, PolicyBalanced)
	p.Name, p.MaxBandwidth, p.TimeBudget = "throttle-test", 300e6, 9*time.Second
	p.DowntimeMax, p.ThrottleInitial, p.ThrottleStep, p.ThrottleMax = 50*time.Millisecond, 20, 20, 60
	_, uri := startDestination(t, spec, &p, true)

	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	var progress []Progress
	res, err := Run(ctx, src.mon, Options{Policy: p, URI: uri, OnProgress: logProgress(t, &progress)})
	t.Logf("result: %+v, err: %v", res, err)

	// QEMU applied the controller's steps, in order, and nothing else.
	var applied []int
	for _, pr := range progress {
		if n := len(applied); pr.ThrottlePercent > 1 && (n == 0 || applied[n-1] != pr.ThrottlePercent) {
			applied = append(applied, pr.ThrottlePercent)
		}
	}
	t.Logf("throttles applied by QEMU: %v", applied)
	if len(applied) < 2 || applied[0] != 20 || applied[1] != 40 {
		t.Errorf("QEMU applied the throttles %v; want the steps 20%%, 40%%, ...", applied)
	}
	for i := range applied {
		if applied[i] != 20*(i+1) {
			t.Errorf("QEMU applied the throttles %v; want 20%% steps up to 60%%", applied)
			break
		}
	}
	if res.MaxThrottle != applied[len(applied)-1] {
		t.Errorf("MaxThrottle %d, want %d", res.MaxThrottle, applied[len(applied)-1])
	}
	switch res.Status {
	case PhaseCancelled:
		if !errors.Is(err, ErrCancelled) || !strings.Contains(res.Reason, "time budget of 9s ran out") || !strings.Contains(res.Reason, "throttled to") {
			t.Errorf("cancelled with %v, reason %q", err, res.Reason)
		}
		if got := status(t, src); got != qmp.StatusRunning {
			t.Errorf("source run state %q after the cancel, want running", got)
		}
		// The guest is no longer throttled.
		info, err := src.mon.QueryMigrate(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if tp := info.CPUThrottlePercentage; tp != nil && *tp != 0 {
			t.Errorf("the source still throttles its vCPUs by %d%% after the cancel", *tp)
		}
	case PhaseCompleted:
		if err != nil {
			t.Errorf("completed with an error: %v", err)
		}
	default:
		t.Errorf("status %s (%v), want cancelled at the budget or completed", res.Status, err)
	}
}

func TestRunDestinationFailingAtSwitchoverKeepsSourceRunning(t *testing.T) {
	// The destination lacks a device the source has: it accepts all RAM and
	// fails only on the device state sent at switch-over. The return path
	// tells the source, which resumes the guest instead of staying paused
	// with the VM on neither host.
	spec := guestSpec(t, 256, "")
	spec.RNG = true
	src := bootGuest(t, spec)
	p := mustPolicy(t, PolicyBalanced)
	bad := spec
	bad.RNG = false
	dst, uri := startDestination(t, bad, &p, false)

	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	drain(src.mon)
	var progress []Progress
	res, err := Run(ctx, src.mon, Options{Policy: p, URI: uri, OnProgress: logProgress(t, &progress)})
	t.Logf("result: %+v, err: %v", res, err)
	if res.Status != PhaseFailed || !errors.Is(err, ErrFailed) || !strings.Contains(res.Reason, "destination QEMU could not load") {
		t.Fatalf("Run = %+v, %v; want failed, saying the destination could not load the stream", res, err)
	}
	waitStatus(t, src, qmp.StatusRunning, 5*time.Second)
	// The source did pause for the switch-over, and resumed.
	var events []string
	for len(events) < 2 {
		select {
		case e := <-src.mon.Events():
			if e.Name == qmp.EventStop || e.Name == qmp.EventResume {
				events = append(events, e.Name)
			}
		case <-time.After(5 * time.Second):
			t.Fatalf("the source's run-state events were %v; want STOP then RESUME", events)
		}
	}
	if events[0] != qmp.EventStop || events[1] != qmp.EventResume {
		t.Errorf("the source's run-state events were %v; want STOP then RESUME", events)
	}
	if log := readFile(dst.spec.LogPath()); !strings.Contains(log, "Unknown savevm section") {
		t.Errorf("the destination did not fail on the device state; its log:\n%s", log)
	}
	info, err := dst.mon.QueryMigrate(ctx)
	if err != nil || info.Status != qmp.MigrationFailed {
		t.Errorf("destination query-migrate: %+v, %v; want failed", info, err)
	}
}

func TestRunSourceQEMUDying(t *testing.T) {
	spec := guestSpec(t, 256, "")
	src := bootGuest(t, spec)
	p := slowPolicy(t)
	_, uri := startDestination(t, spec, &p, true)

	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	var progress []Progress
	logp := logProgress(t, &progress)
	res, err := Run(ctx, src.mon, Options{Policy: p, URI: uri, OnProgress: func(pr Progress) {
		logp(pr)
		if pr.TransferredBytes > 5e6 && src.proc.Alive() {
			if err := src.proc.Kill(); err != nil {
				t.Errorf("killing the source QEMU: %v", err)
			}
		}
	}})
	t.Logf("result: %+v, err: %v", res, err)
	if res.Status != PhaseFailed || !errors.Is(err, qmp.ErrClosed) || !strings.Contains(res.Reason, "outcome is unknown") {
		t.Errorf("Run = %+v, %v; want failed, wrapping qmp.ErrClosed", res, err)
	}
	if res.Bytes < 5e6 {
		t.Errorf("the result lost the statistics: %+v", res)
	}
}
