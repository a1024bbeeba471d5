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
