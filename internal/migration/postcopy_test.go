package migration

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/godwit/godwit/internal/qmp"
)

// link stands for the network between two QEMUs: it carries TCP connections to
// target and can die in two ways — freeze (nothing moves, the connections stay
// open, as when a cable is pulled) and cut (every connection is reset). It keeps
// the first bytes the source sent on each connection, to show what travels on
// the wire.
type link struct {
	t      *testing.T
	ln     net.Listener
	target string
	frozen atomic.Bool
	mu     sync.Mutex
	conns  []net.Conn
	heads  [][]byte
	wg     sync.WaitGroup
}

func newLink(t *testing.T, target string) *link {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	l := &link{t: t, ln: ln, target: strings.TrimPrefix(target, "tcp:")}
	l.wg.Add(1)
	go func() {
		defer l.wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			up, err := net.Dial("tcp", l.target)
			if err != nil {
				c.Close()
				continue
			}
			l.mu.Lock()
			l.conns = append(l.conns, c, up)
			l.heads = append(l.heads, nil)
			i := len(l.heads) - 1
			l.mu.Unlock()
			l.wg.Add(2)
			go func() { defer l.wg.Done(); l.carry(up, c, i) }()
			go func() { defer l.wg.Done(); l.carry(c, up, -1) }()
		}
	}()
	t.Cleanup(l.close)
	return l
}

// carry copies from src to dst, holding the data while the link is frozen; head
// >= 0 keeps the first bytes as heads[head].
func (l *link) carry(dst, src net.Conn, head int) {
	buf := make([]byte, 64<<10)
	for {
		n, err := src.Read(buf)
		if n > 0 && head >= 0 {
			l.mu.Lock()
			if len(l.heads[head]) < 16 {
				l.heads[head] = append(l.heads[head], buf[:min(n, 16-len(l.heads[head]))]...)
			}
			l.mu.Unlock()
		}
		for l.frozen.Load() {
			time.Sleep(10 * time.Millisecond)
			if !l.open() {
				return
			}
		}
		if n > 0 {
			if _, werr := dst.Write(buf[:n]); werr != nil {
				return
			}
		}
		if err != nil {
			dst.Close()
			return
		}
	}
}

func (l *link) open() bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.conns != nil
}

func (l *link) uri() string { return "tcp:" + l.ln.Addr().String() }

func (l *link) freeze() { l.frozen.Store(true) }

// cut resets every connection the link carries.
func (l *link) cut() {
	l.mu.Lock()
	for _, c := range l.conns {
		if tc, ok := c.(*net.TCPConn); ok {
			_ = tc.SetLinger(0)
		}
		c.Close()
	}
	l.conns = []net.Conn{}
	l.mu.Unlock()
}

func (l *link) close() {
	l.ln.Close()
	l.cut()
	l.mu.Lock()
	l.conns = nil
	l.mu.Unlock()
	l.wg.Wait()
}

// firstBytes returns the first bytes the source sent on each connection.
func (l *link) firstBytes() [][]byte {
	l.mu.Lock()
	defer l.mu.Unlock()
	return append([][]byte(nil), l.heads...)
}

// postcopyPolicy allows post-copy and caps pre-copy far below what the test
// guest dirties (it rewrites 64 MiB as fast as its vCPU can: over 1 GB/s under
// TCG on an idle host, still tens of MB/s on a loaded one), so that the
// migration cannot converge.
func postcopyPolicy(t *testing.T, throttleMax int) Policy {
	p := mustPolicy(t, PolicyBalanced)
	p.Name, p.AllowPostcopy, p.MaxBandwidth, p.TimeBudget = "postcopy-test", true, 20e6, 3*time.Minute
	p.DowntimeMax = 50 * time.Millisecond
	p.ThrottleInitial, p.ThrottleStep, p.ThrottleMax = 20, 20, throttleMax
	if throttleMax == 0 {
		p.ThrottleInitial, p.ThrottleStep = 0, 0
	}
	return p
}

// setPostcopyBandwidth caps the stream after the switch (QEMU's
// max-postcopy-bandwidth, which Run leaves unlimited), so that post-copy lasts
// long enough for a test to break its stream.
func setPostcopyBandwidth(t *testing.T, v *testVM, bytesPerSecond int64) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := v.mon.MigrateSetParameters(ctx, qmp.MigrationParameters{MaxPostcopyBandwidth: qmp.Ptr(bytesPerSecond)}); err != nil {
		t.Fatal(err)
	}
}

// migrationStatus returns a QEMU's migration status.
func migrationStatus(t *testing.T, v *testVM) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	info, err := v.mon.QueryMigrate(ctx)
	if err != nil {
		t.Fatalf("query-migrate: %v", err)
	}
	return info.Status
}

// waitMigration waits until a QEMU's migration status is want.
func waitMigration(t *testing.T, v *testVM, want string, d time.Duration) {
	t.Helper()
	deadline := time.Now().Add(d)
	for {
		got := migrationStatus(t, v)
		if got == want {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("the migration is %q, not %q, after %v", got, want, d)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// waitMigrationEvent waits for a MIGRATION event announcing status on the VM's
// monitor. A destination's in-band commands may hang while post-copy is paused
// (its main loop waits for a page), its events do not.
func waitMigrationEvent(t *testing.T, v *testVM, status string, d time.Duration) {
	t.Helper()
	deadline := time.After(d)
	for {
		select {
		case e := <-v.mon.Events():
			var data qmp.MigrationEventData
			if e.Name == qmp.EventMigration && e.Decode(&data) == nil && data.Status == status {
				return
			}
		case <-deadline:
			t.Fatalf("no MIGRATION event %q within %v", status, d)
		}
	}
}

// checkGuestWhole lets the destination guest's memory checker go over its memory
// a few times, then has the guest answer the power button: it runs, and reported
// no corrupted word.
func checkGuestWhole(t *testing.T, v *testVM) {
	t.Helper()
	// 32 MiB static and 64 MiB dirtied, checked at 64 MiB/s: a pass takes 1.5 s.
	time.Sleep(4 * time.Second)
	waitStatus(t, v, qmp.StatusRunning, time.Second)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := v.mon.SystemPowerdown(ctx); err != nil {
		t.Fatalf("system_powerdown on the destination: %v", err)
	}
	waitConsole(t, v, "power button pressed", 30*time.Second)
	if c := readFile(v.spec.ConsoleLogPath()); strings.Contains(c, "MEMORY ERROR") || strings.Contains(c, "Kernel panic") {
		t.Errorf("the guest reported trouble on the destination:\n%s", c)
	}
}

// TestRunPostcopySwitchesAtMaxThrottleAndCompletes: a guest dirtying memory
// faster than the link carries, under a policy that allows post-copy, is
// throttled to the policy's maximum, then switched to post-copy, and completes
// with its memory intact on the destination. A cancel during post-copy cannot
// bring the VM back to the source: the migration goes on and completes.
func TestRunPostcopySwitchesAtMaxThrottleAndCompletes(t *testing.T) {
	spec := guestSpec(t, 512, "godwit.dirty_mib=64 godwit.dirty_rate=0")
	src := bootGuest(t, spec)
	waitConsole(t, src, "dirty: started", 10*time.Second)
	p := postcopyPolicy(t, 40)
	dst, uri := startDestination(t, spec, &p, true)
	setPostcopyBandwidth(t, src, 50e6)

	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	var progress []Progress
	logp := logProgress(t, &progress)
	cancelledAt := -1
	res, err := Run(ctx, src.mon, Options{Policy: p, URI: uri, OnProgress: func(pr Progress) {
		logp(pr)
		if pr.Phase == PhasePostcopy && cancelledAt < 0 {
			cancelledAt = len(progress)
			cancel()
		}
	}})
	t.Logf("result: %+v, err: %v", res, err)
	if err != nil || res.Status != PhaseCompleted || !res.Postcopy {
		t.Fatalf("Run = %+v, %v; want completed in post-copy despite the cancel", res, err)
	}
	if cancelledAt < 0 {
		t.Fatal("no progress report showed post-copy")
	}
	// The switch came only once QEMU throttled the vCPUs to the policy's maximum.
	maxSeen := 0
	for _, pr := range progress[:cancelledAt] {
		maxSeen = max(maxSeen, pr.ThrottlePercent)
	}
	if maxSeen != p.ThrottleMax {
		t.Errorf("the vCPUs were throttled to at most %d%% before post-copy; want the policy's maximum %d%%", maxSeen, p.ThrottleMax)
	}
	last := progress[len(progress)-1]
	if !strings.Contains(last.Note, "completed in post-copy") {
		t.Errorf("last note %q", last.Note)
	}
	if got := status(t, src); got != qmp.StatusPostMigrate {
		t.Errorf("source run state %q, want %q", got, qmp.StatusPostMigrate)
	}
	waitStatus(t, dst, qmp.StatusRunning, 5*time.Second)
	checkGuestWhole(t, dst)
}

// TestRunPostcopyRecoversBrokenStream breaks a post-copy stream
// twice — the link freezes (nothing moves; neither end notices, and the stream
// is left alone while the destination cannot be reached) and the link resets
// (both ends pause at once) — and each time, once the destination can be reached
// again, the stream is recovered over a new connection (after a
// freeze, the destination breaks its end first, then the source); the migration
// completes with the guest's memory intact.
func TestRunPostcopyRecoversBrokenStream(t *testing.T) {
	spec := guestSpec(t, 512, "godwit.dirty_mib=64 godwit.dirty_rate=0")
	src := bootGuest(t, spec)
	waitConsole(t, src, "dirty: started", 10*time.Second)
	p := postcopyPolicy(t, 0)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()

	dst := startVM(t, spec, true)
	if err := PrepareDestination(ctx, dst.mon, p); err != nil {
		t.Fatal(err)
	}
	listen := fmt.Sprintf("tcp:127.0.0.1:%d", freePort(t))
	if err := dst.mon.MigrateIncoming(ctx, listen, true); err != nil {
		t.Fatal(err)
	}
	setPostcopyBandwidth(t, src, 10e6)

	var mu sync.Mutex
	links := []*link{newLink(t, listen)}
	current := func() *link {
		mu.Lock()
		defer mu.Unlock()
		return links[len(links)-1]
	}
	var reachable atomic.Bool // whether the destination answers a recovery
	recoverFn := func(ctx context.Context) (string, error) {
		if !reachable.Load() {
			return "", errors.New("the destination cannot be reached")
		}
		listen := fmt.Sprintf("tcp:127.0.0.1:%d", freePort(t))
		if err := RecoverDestination(ctx, dst.mon, listen); err != nil {
			return "", err
		}
		l := newLink(t, listen)
		mu.Lock()
		links = append(links, l)
		mu.Unlock()
		return l.uri(), nil
	}

	type run struct {
		res Result
		err error
	}
	done := make(chan run, 1)
	phases := make(chan Progress, 1024)
	var progress []Progress
	logp := logProgress(t, &progress)
	go func() {
		res, err := Run(ctx, src.mon, Options{Policy: p, URI: current().uri(), Recover: recoverFn,
			OnProgress: func(pr Progress) {
				logp(pr)
				select {
				case phases <- pr:
				default:
				}
			}})
		done <- run{res, err}
	}()
	// fresh drops the reports made so far: the next wait sees only new ones.
	fresh := func() {
		for {
			select {
			case <-phases:
			default:
				return
			}
		}
	}
	waitPhase := func(want Phase, d time.Duration) Progress {
		t.Helper()
		deadline := time.After(d)
		for {
			select {
			case pr := <-phases:
				if pr.Phase == want {
					return pr
				}
			case r := <-done:
				t.Fatalf("the migration ended (%+v, %v) while waiting for phase %s", r.res, r.err, want)
			case <-deadline:
				t.Fatalf("no phase %s within %v", want, d)
			}
		}
	}

	// 1. The link freezes once post-copy has moved some memory (the
	// destination runs the guest).
	waitPostcopyMoved := func(bytes uint64) {
		t.Helper()
		pr := waitPhase(PhasePostcopy, 2*time.Minute)
		for from := pr.TransferredBytes; pr.TransferredBytes < from+bytes; {
			pr = waitPhase(PhasePostcopy, 30*time.Second)
		}
	}
	waitPostcopyMoved(2e6)
	current().freeze()
	// While the destination cannot be reached the source's end stays as it is:
	// a stream only stalled may go on by itself, and one whose destination is
	// still loading the device state must not be broken.
	time.Sleep(PostcopyStallTimeout + 3*time.Second)
	if got := migrationStatus(t, src); got != qmp.MigrationPostcopyActive {
		t.Errorf("the source's migration is %q with the link frozen and the destination out of reach, want %q", got, qmp.MigrationPostcopyActive)
	}
	fresh()
	reachable.Store(true)

	// 2. Once some memory moved again, the link resets: both ends pause.
	waitPostcopyMoved(3e6)
	reachable.Store(false)
	fresh()
	current().cut()
	waitPhase(PhasePostcopyPaused, 10*time.Second)
	waitMigrationEvent(t, dst, qmp.MigrationPostcopyPaused, 10*time.Second)
	if got := migrationStatus(t, src); got != qmp.MigrationPostcopyPaused {
		t.Errorf("the source's migration is %q with the link reset, want %q", got, qmp.MigrationPostcopyPaused)
	}
	// Neither end runs the guest twice: the source stays stopped.
	if got := status(t, src); got == qmp.StatusRunning {
		t.Errorf("the source runs the guest while post-copy is paused")
	}
	time.Sleep(time.Second)
	reachable.Store(true)

	var r run
	select {
	case r = <-done:
	case <-time.After(2 * time.Minute):
		t.Fatal("the migration did not end within 2 minutes of the link's return")
	}
	t.Logf("result: %+v, err: %v", r.res, r.err)
	if r.err != nil || r.res.Status != PhaseCompleted || !r.res.Postcopy || r.res.PostcopyRecoveries != 2 {
		t.Fatalf("Run = %+v, %v; want completed in post-copy after 2 recoveries", r.res, r.err)
	}
	// The first connection began the stream (QEMU's magic); each recovered one
	// resumed it where it broke, on a connection of its own.
	mu.Lock()
	all := append([]*link(nil), links...)
	mu.Unlock()
	if len(all) != 3 {
		t.Errorf("%d connections were made; want the first and one per recovery", len(all))
	}
	for i, l := range all {
		for _, h := range l.firstBytes() {
			if began := bytes.HasPrefix(h, []byte("QEVM")); began != (i == 0) {
				t.Errorf("connection %d began with % x; want QEMU's magic QEVM on the first connection only", i, h[:min(8, len(h))])
			}
		}
	}
	waitStatus(t, dst, qmp.StatusRunning, 5*time.Second)
	checkGuestWhole(t, dst)
}

// TestRunPostcopyGivenUpWhilePausedIsLost: a cancel while post-copy is paused
// ends the migration lost — failed, wrapping ErrLost — at once, and the source,
// which the VM left, is never resumed.
func TestRunPostcopyGivenUpWhilePausedIsLost(t *testing.T) {
	spec := guestSpec(t, 256, "godwit.dirty_mib=64 godwit.dirty_rate=0")
	src := bootGuest(t, spec)
	waitConsole(t, src, "dirty: started", 10*time.Second)
	p := postcopyPolicy(t, 0)
	dst, listen := startDestination(t, spec, &p, true)
	setPostcopyBandwidth(t, src, 5e6)
	l := newLink(t, listen)

	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	var progress []Progress
	logp := logProgress(t, &progress)
	var cutAt, cancelAt time.Time
	var postcopyFrom uint64
	res, err := Run(ctx, src.mon, Options{Policy: p, URI: l.uri(),
		Recover: func(context.Context) (string, error) { return "", errors.New("the destination cannot be reached") },
		OnProgress: func(pr Progress) {
			logp(pr)
			switch {
			case pr.Phase == PhasePostcopy && postcopyFrom == 0:
				postcopyFrom = pr.TransferredBytes
			case pr.Phase == PhasePostcopy && cutAt.IsZero() && pr.TransferredBytes > postcopyFrom+1e6:
				// The destination runs the guest by now: the link resets.
				l.cut()
				cutAt = time.Now()
			case pr.Phase == PhasePostcopyPaused && cancelAt.IsZero() && time.Since(cutAt) > 2*time.Second:
				cancelAt = time.Now()
				cancel()
			}
		}})
	t.Logf("result: %+v, err: %v", res, err)
	if cancelAt.IsZero() {
		t.Fatal("the migration never waited paused in post-copy")
	}
	if res.Status != PhaseFailed || !res.Postcopy || !errors.Is(err, ErrLost) || !errors.Is(err, ErrFailed) || !errors.Is(err, context.Canceled) {
		t.Fatalf("Run = %+v, %v; want failed in post-copy, wrapping ErrLost, ErrFailed and context.Canceled", res, err)
	}
	if took := time.Since(cancelAt); took > 2*time.Second {
		t.Errorf("Run returned %v after the cancel; a paused post-copy has nothing to wind down", took)
	}
	for _, want := range []string{"the caller cancelled", "cannot run on the source again", "it is lost"} {
		if !strings.Contains(res.Reason, want) {
			t.Errorf("reason %q does not say %q", res.Reason, want)
		}
	}
	// The source stays stopped: it must never run the guest again.
	time.Sleep(time.Second)
	if got := status(t, src); got == qmp.StatusRunning {
		t.Errorf("the source runs the guest again after post-copy was given up")
	}
	if got := migrationStatus(t, src); got != qmp.MigrationPostcopyPaused {
		t.Errorf("the source's migration is %q, want still %q", got, qmp.MigrationPostcopyPaused)
	}
	waitMigrationEvent(t, dst, qmp.MigrationPostcopyPaused, 5*time.Second)
}
