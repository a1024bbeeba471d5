package migration

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/godwit/godwit/internal/qmp"
)

// DefaultPollInterval is how often Run polls query-migrate.
const DefaultPollInterval = 50 * time.Millisecond

// cancelTimeout bounds how long Run waits for QEMU to wind a migration down
// after migrate_cancel.
const cancelTimeout = 30 * time.Second

// pollTimeout bounds one query-migrate (the source's monitor can be busy for
// the length of the switch-over, never for this long).
const pollTimeout = 30 * time.Second

// Announce timing set on the destination (QEMU's announce-* parameters, which
// act on the destination: it sends the RARP frames as it resumes the guest). The
// first round goes out 1 ms after the state is loaded, then the gaps grow by 10 ms
// up to 100 ms, for 8 rounds over about 0.4 s: a switch that misses the first
// frames still learns the VM's new port quickly. QEMU's default is 5 rounds from
// 50 ms. Measured in the benchmark's lab (2026-12-06, 3–5 interleaved runs each):
// with the first round at 0 ms and 50 ms steps a migration left ~450 of the client's
// 1 ms pings unanswered (median), with 1 ms and 10 ms steps 0–2; why the earlier,
// sparser rounds lose the switch is not yet understood.
const (
	AnnounceInitial = 1 * time.Millisecond
	AnnounceStep    = 10 * time.Millisecond
	AnnounceMax     = 100 * time.Millisecond
	AnnounceRounds  = 8
)

// minQEMU is the oldest QEMU Run accepts (major, minor). Debian 12's QEMU 7.2
// was measured to corrupt TCG guests once a migration needs a fourth pass,
// which the controller relies on; 10.0 passed the same test.
var minQEMU = [2]int{10, 0}

// ErrCancelled is wrapped by Run's error when the migration was cancelled (by
// the caller's context or because the policy's time budget ran out).
var ErrCancelled = errors.New("migration cancelled")

// ErrFailed is wrapped by Run's error when QEMU reported that the migration
// failed.
var ErrFailed = errors.New("migration failed")

// ErrLost is wrapped by Run's error, with ErrFailed, when a migration that had
// switched to post-copy did not complete: the VM must never run on the source
// again, and its copy on the destination lacks memory that only the source had.
var ErrLost = errors.New("the VM was lost in post-copy")

// ErrNoDestination is wrapped by an Options.Recover error that means the
// destination no longer has the VM's copy (its QEMU is gone): the stream can
// never be recovered, and Run gives the migration up as lost.
var ErrNoDestination = errors.New("the destination no longer has the VM's copy")

// recoverTimeout bounds one attempt to recover a post-copy stream: the
// destination listening again, then the source resuming to it. Attempts run
// beside the poll loop, one at a time; one that hangs (the destination
// unreachable) delays the next by at most this.
const recoverTimeout = 10 * time.Second

// Options configure Run.
type Options struct {
	// Policy is the convergence policy (see LookupPolicy).
	Policy Policy
	// URI is where the destination QEMU listens, e.g. "tcp:198.18.1.12:49152", or the
	// socket of the agent that carries the stream, "unix:/path".
	URI string
	// PollInterval is how often query-migrate is polled; DefaultPollInterval
	// (50 ms) when 0.
	PollInterval time.Duration
	// OnProgress, when set, is called after every poll from Run's goroutine;
	// it must not block for long.
	OnProgress func(Progress)
	// Logger receives the controller's decisions; slog.Default() when nil.
	Logger *slog.Logger
	// BandwidthCap, when set, caps the stream from outside while the migration
	// runs (e.g. its share of the network): it returns the cap in bytes/s, 0
	// for none. Run reads it before it starts the migration and after every
	// poll, from its own goroutine, so it must be cheap and safe to call while
	// someone else changes the cap (read an atomic.Int64, for example). QEMU's
	// max-bandwidth is the lower of the policy's bandwidth and the cap, set
	// again whenever the cap changes; the controller's own bandwidth decisions
	// stay within the cap (see Controller.SetBandwidthCap).
	BandwidthCap func() int64
	// Recover, when set, makes the destination break its end of a stalled or
	// broken post-copy stream and listen again (see RecoverDestination), and
	// returns the URI to resume to. Run calls it every RecoverRetry while the
	// stream is stalled or paused, in a goroutine of its own while the polls go
	// on (and waits for it before it returns); when it succeeds Run breaks the
	// source's end and resumes it to the URI. An error (the destination cannot
	// be reached yet) is tried again, except one wrapping ErrNoDestination,
	// which ends the migration lost. Without Recover a broken post-copy stream
	// stays broken until ctx is done.
	Recover func(ctx context.Context) (uri string, err error)
}

// SourceCapabilities returns the migration capabilities Run sets on the
// source for policy p. Run owns these; others are left as they are.
//
//   - events: QEMU emits MIGRATION events (Run itself polls and does not read
//     the monitor's events, so the caller's event reader keeps working).
//   - return-path: the destination reports back whether it loaded the state;
//     without it a destination that fails at the very end would leave the VM
//     on neither host (the source would think it had succeeded and stay
//     paused). With it QEMU restarts the guest on the source instead.
//   - multifd: when p.Channels > 1.
//   - auto-converge: when the policy may throttle; the controller then drives
//     the throttle itself (see SourceParameters).
//   - postcopy-ram: when the policy allows post-copy (both ends must have it
//     before the migration starts; the migration stays pre-copy unless the
//     controller switches).
//   - xbzrle and pause-before-switchover: off (not used; the last would stop
//     the migration before switch-over forever).
func SourceCapabilities(p Policy) map[string]bool {
	return map[string]bool{
		qmp.CapEvents:                true,
		qmp.CapReturnPath:            !p.NoReturnPath,
		qmp.CapMultifd:               p.multifd(),
		qmp.CapAutoConverge:          p.throttles() || p.QEMUAutoConverge,
		qmp.CapPostcopyRAM:           p.AllowPostcopy,
		qmp.CapXBZRLE:                false,
		qmp.CapPauseBeforeSwitchover: false,
	}
}

// DestinationCapabilities returns the migration capabilities
// PrepareDestination sets for policy p: those that must match the source
// (multifd, return-path, postcopy-ram) and events. QEMU refuses postcopy-ram
// on a destination whose kernel lacks userfaultfd.
func DestinationCapabilities(p Policy) map[string]bool {
	return map[string]bool{
		qmp.CapEvents:      true,
		qmp.CapReturnPath:  !p.NoReturnPath,
		qmp.CapMultifd:     p.multifd(),
		qmp.CapPostcopyRAM: p.AllowPostcopy,
	}
}

// SourceParameters returns the migration parameters Run sets on the source
// before it starts a migration under policy p: downtime-limit (the target),
// max-bandwidth (UnlimitedBandwidth for 0), avail-switchover-bandwidth 0 (QEMU
// uses the rate it measures), multifd-channels with multifd, and, when the
// policy may throttle, a throttle that the controller drives:
//
// QEMU applies a vCPU throttle only inside a migration with auto-converge on,
// at a dirty sync (at most once a second) when its own trigger fires twice
// (the guest dirtied more than throttle-trigger-threshold% of what was sent).
// The first time it applies cpu-throttle-initial, later min(current +
// cpu-throttle-increment, max-cpu-throttle). So Run starts with initial = max
// = 1% (a guard that costs nothing) and trigger threshold 100%, and each step
// the controller decides sets initial = max = the step's percentage with
// increment 99 and threshold 1%: QEMU then applies exactly that percentage at
// its next trigger. cpu-throttle-tailslow is off. Measured with QEMU 10 under
// TCG: each step took effect about 2 s after it was set (two trigger periods
// of at least a second), which is why the controller waits for QEMU to report
// a step before judging it.
func SourceParameters(p Policy) qmp.MigrationParameters {
	mp := qmp.MigrationParameters{
		DowntimeLimit:            qmp.Ptr(p.DowntimeTarget.Milliseconds()),
		MaxBandwidth:             qmp.Ptr(p.bandwidth()),
		AvailSwitchoverBandwidth: qmp.Ptr(int64(0)),
	}
	if p.multifd() {
		mp.MultifdChannels = qmp.Ptr(int64(p.Channels))
	}
	if p.QEMUAutoConverge && !p.throttles() {
		// QEMU's own defaults, set in case an earlier migration of this QEMU changed them.
		mp.CPUThrottleInitial = qmp.Ptr(int64(20))
		mp.MaxCPUThrottle = qmp.Ptr(int64(MaxThrottle))
		mp.CPUThrottleIncrement = qmp.Ptr(int64(10))
		mp.CPUThrottleTailslow = qmp.Ptr(false)
		mp.ThrottleTriggerThreshold = qmp.Ptr(int64(50))
	}
	if p.throttles() {
		mp.CPUThrottleInitial = qmp.Ptr(int64(1))
		mp.MaxCPUThrottle = qmp.Ptr(int64(1))
		mp.CPUThrottleIncrement = qmp.Ptr(int64(MaxThrottle))
		mp.CPUThrottleTailslow = qmp.Ptr(false)
		mp.ThrottleTriggerThreshold = qmp.Ptr(int64(100))
	}
	return mp
}

// ThrottleParameters returns the parameters that make QEMU apply a vCPU
// throttle of percent (see SourceParameters).
func ThrottleParameters(percent int) qmp.MigrationParameters {
	pc := int64(min(max(percent, 1), MaxThrottle))
	return qmp.MigrationParameters{
		CPUThrottleInitial:       qmp.Ptr(pc),
		MaxCPUThrottle:           qmp.Ptr(pc),
		CPUThrottleIncrement:     qmp.Ptr(int64(MaxThrottle)),
		ThrottleTriggerThreshold: qmp.Ptr(int64(1)),
	}
}

// DecisionParameters returns the migrate-set-parameters arguments that carry
// out dec's parameter changes, and whether there are any.
func DecisionParameters(dec Decision) (qmp.MigrationParameters, bool) {
	var mp qmp.MigrationParameters
	if dec.Throttle != nil {
		mp = ThrottleParameters(*dec.Throttle)
	}
	if dec.DowntimeLimit != nil {
		mp.DowntimeLimit = qmp.Ptr(roundUpMs(*dec.DowntimeLimit).Milliseconds())
	}
	if dec.MaxBandwidth != nil {
		mp.MaxBandwidth = qmp.Ptr(*dec.MaxBandwidth)
	}
	return mp, dec.Throttle != nil || dec.DowntimeLimit != nil || dec.MaxBandwidth != nil
}

// DestinationParameters returns the migration parameters PrepareDestination
// sets for policy p: multifd-channels with multifd, and the announce timing
// (AnnounceInitial and the rest).
func DestinationParameters(p Policy) qmp.MigrationParameters {
	a := AnnounceTiming{Initial: AnnounceInitial, Step: AnnounceStep, Max: AnnounceMax, Rounds: AnnounceRounds}
	if p.Announce != nil {
		a = *p.Announce
	}
	mp := qmp.MigrationParameters{
		AnnounceInitial: qmp.Ptr(a.Initial.Milliseconds()),
		AnnounceStep:    qmp.Ptr(a.Step.Milliseconds()),
		AnnounceMax:     qmp.Ptr(a.Max.Milliseconds()),
		AnnounceRounds:  qmp.Ptr(int64(a.Rounds)),
	}
	if p.multifd() {
		mp.MultifdChannels = qmp.Ptr(int64(p.Channels))
	}
	return mp
}

// PrepareDestination sets, on the destination QEMU (started with -incoming
// defer), the capabilities that must match the source's for policy p and the
// announce parameters (see DestinationCapabilities, DestinationParameters). QEMU's own
// TLS stays off: an encrypted stream reaches QEMU through a local socket of its agent,
// which carries it between the hosts. Call it before migrate-incoming.
func PrepareDestination(ctx context.Context, mon *qmp.Monitor, p Policy) error {
	if err := p.Validate(); err != nil {
		return err
	}
	if err := checkVersion(mon); err != nil {
		return err
	}
	if err := mon.MigrateSetCapabilities(ctx, DestinationCapabilities(p)); err != nil {
		return fmt.Errorf("setting the migration capabilities on the destination QEMU failed: %w", err)
	}
	dp := DestinationParameters(p)
	dp.TLSCreds = qmp.Ptr("")
	if err := mon.MigrateSetParameters(ctx, dp); err != nil {
		return fmt.Errorf("setting the migration parameters on the destination QEMU failed: %w", err)
	}
	return nil
}

// checkVersion refuses QEMU versions older than minQEMU.
func checkVersion(mon *qmp.Monitor) error {
	v := mon.Version()
	if !v.AtLeast(minQEMU[0], minQEMU[1]) {
		return fmt.Errorf("QEMU %s is too old for live migration with Godwit: %d.%d or newer is needed (Debian 12's 7.2 corrupts guests in migrations of more than three passes; install QEMU from bookworm-backports)",
			v, minQEMU[0], minQEMU[1])
	}
	return nil
}

// Run migrates the VM behind mon (the source QEMU) to the destination already
// listening at o.URI, and returns when the migration completed, failed, was
// cancelled, or was lost in post-copy. It sets the source's capabilities and
// parameters for the policy (SourceCapabilities, SourceParameters), starts the
// migration, polls
// query-migrate every o.PollInterval, feeds each answer to a Controller,
// applies its decisions and reports progress.
//
// The error is nil exactly when the migration completed; the source QEMU is
// then paused in "postmigrate" and the caller quits it. Otherwise the guest
// keeps running on the source (unless the source QEMU itself died), the
// Result says why (Status, Reason), and the error wraps ErrFailed (QEMU
// reported a failure) or ErrCancelled. Cancelling ctx cancels the migration
// cleanly (migrate_cancel, then waiting up to 30 s for QEMU to report
// "cancelled"), and so does the end of the policy's time budget, with the
// reason; for a cancel by ctx the error also wraps ctx's error. A migration
// that completes before a cancel takes effect is reported completed (the guest
// then runs on the destination).
//
// If the source's monitor fails (e.g. QEMU died) the Result is PhaseFailed
// with the error as reason; if QEMU does not finish a cancel within 30 s the
// Result keeps the last phase seen (PhaseCancelling). Errors before the
// migration started (a bad policy, an old QEMU, a migration already running,
// QMP failures) leave the source as it was, apart from its migration settings.
//
// Post-copy (only under a policy with AllowPostcopy) changes this: once the
// migration switched (Result.Postcopy), the VM runs on the destination and
// QEMU cannot cancel the migration. Cancelling ctx then lets a flowing stream
// complete (reported completed) but stops the recovery of a paused one; a
// post-copy migration that does not complete is PhaseFailed and its error
// wraps ErrLost: the caller must never resume the source QEMU. A stream that
// stalls or breaks is recovered through o.Recover (see PostcopyStallTimeout).
//
// Run reads nothing from mon.Events(): the monitor's single event consumer
// stays the caller's.
func Run(ctx context.Context, mon *qmp.Monitor, o Options) (Result, error) {
	p := o.Policy
	failed := func(err error) (Result, error) {
		if ctx.Err() != nil {
			r := Result{Status: PhaseCancelled, Policy: p.Name,
				Reason: fmt.Sprintf("the caller cancelled the migration (%v) before it started; the VM keeps running on the source", ctx.Err())}
			return r, fmt.Errorf("%w: %s: %w", ErrCancelled, r.Reason, err)
		}
		return Result{Status: PhaseFailed, Reason: err.Error(), Policy: p.Name}, err
	}
	if err := p.Validate(); err != nil {
		return failed(err)
	}
	if o.URI == "" {
		return failed(errors.New("no destination URI was given for the migration"))
	}
	if err := checkVersion(mon); err != nil {
		return failed(err)
	}
	poll := o.PollInterval
	if poll <= 0 {
		poll = DefaultPollInterval
	}
	log := o.Logger
	if log == nil {
		log = slog.Default()
	}
	log = log.With("uri", o.URI, "policy", p.Name)

	info, err := mon.QueryMigrate(ctx)
	if err != nil {
		return failed(fmt.Errorf("asking the source QEMU for its migration state failed: %w", err))
	}
	switch info.Status {
	case "", qmp.MigrationNone, qmp.MigrationCompleted, qmp.MigrationFailed, qmp.MigrationCancelled:
	default:
		return failed(fmt.Errorf("a migration of this VM is already in progress (QEMU status %q)", info.Status))
	}
	if err := mon.MigrateSetCapabilities(ctx, SourceCapabilities(p)); err != nil {
		return failed(fmt.Errorf("setting the migration capabilities on the source QEMU failed: %w", err))
	}
	c := NewController(p)
	d := &driver{mon: mon, c: c, log: log, bwCap: o.BandwidthCap, recoverFn: o.Recover}
	if d.bwCap != nil {
		d.capSeen = max(d.bwCap(), 0)
		c.SetBandwidthCap(d.capSeen)
	}
	sp := SourceParameters(p)
	sp.MaxBandwidth = qmp.Ptr(c.Bandwidth())
	// QEMU's own TLS stays off (see PrepareDestination).
	sp.TLSCreds, sp.TLSHostname = qmp.Ptr(""), qmp.Ptr("")
	if err := mon.MigrateSetParameters(ctx, sp); err != nil {
		return failed(fmt.Errorf("setting the migration parameters on the source QEMU failed: %w", err))
	}

	d.start = time.Now()
	log.Info("migration starting", "downtime_target", p.DowntimeTarget, "downtime_max", p.downtimeMax(),
		"max_bandwidth", p.MaxBandwidth, "bandwidth_cap", d.capSeen, "channels", p.Channels, "throttle_max", p.ThrottleMax, "time_budget", p.TimeBudget)
	if err := mon.Migrate(ctx, o.URI); err != nil {
		if ctx.Err() != nil {
			// QEMU may have started the migration after all: cancel it.
			cancelStarting(ctx, mon, log)
			r := Result{Status: PhaseCancelled, Policy: p.Name,
				Reason: fmt.Sprintf("the caller cancelled the migration (%v) while it was being started; the VM keeps running on the source", ctx.Err())}
			return r, fmt.Errorf("%w: %s: %w", ErrCancelled, r.Reason, ctx.Err())
		}
		return failed(fmt.Errorf("starting the migration to %s failed: %w", o.URI, err))
	}

	return d.loop(ctx, poll, o.OnProgress)
}

// Follow takes over a migration that already runs on the source QEMU behind
// mon — one a restarted agent finds in post-copy, which cannot be cancelled —
// and drives it like Run from its current state until it ends (o.URI is not
// used). The Result's times count from the call.
func Follow(ctx context.Context, mon *qmp.Monitor, o Options) (Result, error) {
	poll := o.PollInterval
	if poll <= 0 {
		poll = DefaultPollInterval
	}
	log := o.Logger
	if log == nil {
		log = slog.Default()
	}
	c := NewController(o.Policy)
	d := &driver{mon: mon, c: c, log: log.With("policy", o.Policy.Name), recoverFn: o.Recover, start: time.Now()}
	return d.loop(ctx, poll, o.OnProgress)
}

// IsMigrationThread reports whether name is a name QEMU gives the source's
// main migration thread — the thread that sends the guest's memory — in
// query-migrationthreads and, when QEMU runs with -name debug-threads=on, as
// the thread's own name (/proc/PID/task/TID/comm): "mig/src/main" in QEMU
// 10, "live_migration" in older versions.
func IsMigrationThread(name string) bool {
	return name == "mig/src/main" || name == "live_migration"
}

// migrationThreadInfo is one element of QMP's query-migrationthreads reply.
type migrationThreadInfo struct {
	Name     string `json:"name"`
	ThreadID int    `json:"thread-id"`
}

// MigrationThread returns the host thread id of the source QEMU's main
// migration thread as QEMU reports it (query-migrationthreads). ok is false
// while there is none: QEMU creates the thread once it has connected to the
// destination (after the TLS handshake when the stream is encrypted) and it
// ends with the migration. Unlike the thread's name, this does not depend on
// -name debug-threads=on.
func MigrationThread(ctx context.Context, mon *qmp.Monitor) (tid int, ok bool, err error) {
	var threads []migrationThreadInfo
	if err := mon.Execute(ctx, "query-migrationthreads", nil, &threads); err != nil {
		return 0, false, fmt.Errorf("asking the source QEMU for its migration threads failed: %w", err)
	}
	for _, t := range threads {
		if IsMigrationThread(t.Name) && t.ThreadID > 0 {
			return t.ThreadID, true, nil
		}
	}
	return 0, false, nil
}

// cancelStarting cancels a migration that may or may not have started (its
// migrate command's reply was not awaited) and waits, up to cancelTimeout,
// until QEMU no longer reports one in progress. QEMU runs QMP commands in
// order, so query-migrate after migrate_cancel shows the outcome of both.
func cancelStarting(ctx context.Context, mon *qmp.Monitor, log *slog.Logger) {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), cancelTimeout)
	defer cancel()
	if err := mon.MigrateCancel(ctx); err != nil {
		log.Warn("migrate_cancel failed", "err", err)
	}
	for {
		info, err := mon.QueryMigrate(ctx)
		if err != nil {
			log.Warn("waiting for the cancelled migration to end failed", "err", err)
			return
		}
		switch info.Status {
		case "", qmp.MigrationNone, qmp.MigrationCompleted, qmp.MigrationFailed, qmp.MigrationCancelled:
			return
		}
		select {
		case <-ctx.Done():
			log.Warn("the cancelled migration did not end in time", "status", info.Status)
			return
		case <-time.After(DefaultPollInterval):
		}
	}
}

// driver runs the poll loop of one migration.
type driver struct {
	mon   *qmp.Monitor
	c     *Controller
	log   *slog.Logger
	start time.Time

	// After a cancel: the context the remaining QMP calls use (detached from
	// the caller's, which may be done) and its cancel function.
	cancelCtx  context.Context
	stopCancel context.CancelFunc
	byCaller   error // the caller's ctx error when it caused the cancel
	// cancelReason is why the driver cancelled, once it has.
	cancelReason string

	// bwCap is Options.BandwidthCap (nil: none); capSeen is the cap last read.
	bwCap   func() int64
	capSeen int64

	// recoverFn is Options.Recover; attempt the recovery under way, if any;
	// lastRecoverErr the last failure logged.
	recoverFn      func(ctx context.Context) (string, error)
	attempt        *recoverAttempt
	lastRecoverErr string
	// givingUp: the caller stopped a migration in post-copy (see
	// Controller.GiveUp); QMP calls use cancelCtx, which then has no deadline.
	givingUp bool
}

func (d *driver) loop(ctx context.Context, poll time.Duration, onProgress func(Progress)) (Result, error) {
	defer func() {
		d.stopRecover()
		if d.stopCancel != nil {
			d.stopCancel()
		}
	}()
	ticker := time.NewTicker(poll)
	defer ticker.Stop()
	for {
		qctx := ctx
		if d.cancelCtx != nil {
			qctx = d.cancelCtx
		}
		info, err := d.query(qctx)
		if err != nil {
			if d.cancelCtx == nil && ctx.Err() != nil {
				d.callerCancelled(ctx)
				continue
			}
			if d.cancelCtx != nil && d.cancelCtx.Err() != nil {
				// The result keeps the last phase seen (e.g. cancelling).
				return d.c.Result(), fmt.Errorf("QEMU did not finish cancelling the migration within %v (last status %q): %w",
					cancelTimeout, d.c.last.Info.Status, err)
			}
			if errors.Is(err, qmp.ErrClosed) {
				err = fmt.Errorf("the source QEMU's monitor closed during the migration (QEMU probably exited), so its outcome is unknown: check on both hosts whether the guest runs: %w", err)
			} else {
				err = fmt.Errorf("polling the migration's state on the source QEMU failed, so its outcome is unknown: %w", err)
			}
			r := d.c.Result()
			r.Status, r.Reason = PhaseFailed, err.Error()
			if r.Postcopy {
				err = fmt.Errorf("%w: %w", ErrLost, err)
			}
			return r, err
		}
		d.reapRecover()
		dec, prog := d.c.Observe(Observation{Elapsed: time.Since(d.start), Info: info})
		if d.c.Phase().Final() || d.c.Lost() {
			if onProgress != nil {
				onProgress(prog)
			}
			return d.finish()
		}
		if d.cancelCtx != nil && !d.givingUp && d.c.Postcopy() {
			// A cancel sent during pre-copy met a migration that switched to
			// post-copy, which QEMU does not cancel.
			d.stopCancel()
			why := "a cancel was under way (" + d.cancelReason + ")"
			if d.byCaller != nil {
				why = fmt.Sprintf("the caller cancelled the migration (%v)", d.byCaller)
			}
			d.giveUp(ctx, why, d.byCaller)
		}
		if dec.Reason != "" {
			d.log.Info("migration decision", "decision", dec.Reason, "pass", prog.Pass, "elapsed", prog.Elapsed.Round(time.Millisecond))
		}
		switch {
		case d.cancelCtx == nil:
			d.apply(ctx, dec)
			d.applyCap(ctx)
		case d.givingUp:
			d.apply(d.cancelCtx, dec)
		}
		if onProgress != nil {
			onProgress(prog)
		}
		select {
		case <-ticker.C:
		case <-ctx.Done():
			if d.cancelCtx == nil {
				d.callerCancelled(ctx)
			} else {
				<-ticker.C
			}
		}
	}
}

// query polls query-migrate with a bounded wait.
func (d *driver) query(ctx context.Context) (qmp.MigrationInfo, error) {
	ctx, cancel := context.WithTimeout(ctx, pollTimeout)
	defer cancel()
	return d.mon.QueryMigrate(ctx)
}

// apply carries out a decision. Failing to change a parameter is logged, not
// fatal: the migration goes on with the old value.
func (d *driver) apply(ctx context.Context, dec Decision) {
	if dec.Cancel {
		d.cancel(ctx, dec.Reason, nil)
		return
	}
	switch {
	case dec.StartPostcopy:
		// From here the stream is not capped (QEMU's max-postcopy-bandwidth stays
		// 0): the VM waits on the destination for every page it lacks.
		if err := d.mon.MigrateStartPostcopy(ctx); err != nil {
			d.log.Warn("switching to post-copy failed; the migration goes on in pre-copy", "err", err)
		}
	case dec.PausePostcopy:
		if err := d.mon.MigratePause(ctx); err != nil {
			d.log.Warn("breaking the source's end of the post-copy stream failed", "err", err)
		}
	case dec.RecoverPostcopy:
		d.startRecover(ctx)
	}
	mp, changed := DecisionParameters(dec)
	if !changed {
		return
	}
	if err := d.mon.MigrateSetParameters(ctx, mp); err != nil {
		d.log.Warn("changing the migration parameters failed; the migration goes on with the old ones", "err", err)
	}
}

// applyCap reads the bandwidth cap and, when it changed, puts the bandwidth
// it leads to in force.
func (d *driver) applyCap(ctx context.Context) {
	if d.bwCap == nil {
		return
	}
	limit := max(d.bwCap(), 0)
	if limit == d.capSeen {
		return
	}
	d.capSeen = limit
	dec := d.c.SetBandwidthCap(limit)
	if !dec.Changes() {
		return
	}
	d.log.Info("migration decision", "decision", dec.Reason, "max_bandwidth", d.c.Bandwidth())
	d.apply(ctx, dec)
}

// recoverAttempt is one attempt to recover a stalled or paused post-copy stream,
// running in its own goroutine; done delivers its outcome.
type recoverAttempt struct {
	done   chan error
	cancel context.CancelFunc
}

// startRecover starts an attempt to have the destination listen again for a
// stalled or paused post-copy stream and to resume the source to it, unless one
// is under way. Its outcome is taken by reapRecover.
func (d *driver) startRecover(ctx context.Context) {
	if d.attempt != nil {
		return
	}
	if d.recoverFn == nil {
		d.logRecoverErr(errors.New("nothing can make the destination listen again (no Options.Recover); the stream stays paused"))
		return
	}
	rctx, cancel := context.WithTimeout(ctx, recoverTimeout)
	a := &recoverAttempt{done: make(chan error, 1), cancel: cancel}
	d.attempt = a
	go func() {
		defer cancel()
		uri, err := d.recoverFn(rctx)
		switch {
		case errors.Is(err, ErrNoDestination):
		case err != nil:
			err = fmt.Errorf("the destination cannot take the stream again yet: %w", err)
		default:
			// The destination broke its end and listens: only now the source
			// breaks its own (see Controller.duringPostcopy).
			if err = d.pauseSource(rctx); err == nil {
				err = d.mon.MigrateResume(rctx, uri)
			}
			if err != nil {
				err = fmt.Errorf("resuming the post-copy stream to %s failed: %w", uri, err)
			} else {
				d.log.Info("resuming the post-copy stream", "uri", uri)
			}
		}
		a.done <- err
	}()
}

// pauseSource breaks the source's end of a post-copy stream that has not
// broken by itself, and waits until QEMU has paused it.
func (d *driver) pauseSource(ctx context.Context) error {
	info, err := d.mon.QueryMigrate(ctx)
	switch {
	case err != nil:
		return err
	case info.Status == qmp.MigrationPostcopyPaused:
		return nil
	case info.Status != qmp.MigrationPostcopyActive:
		return fmt.Errorf("%w: the source's migration is %q", ErrNotPaused, info.Status)
	}
	if err := d.mon.MigratePause(ctx); err != nil {
		return err
	}
	return waitMigrationStatus(ctx, d.mon, qmp.MigrationPostcopyPaused, pauseTimeout)
}

// reapRecover takes the outcome of a finished recovery attempt: a failure is
// logged when it differs from the last one (the controller decides the next
// attempt), a destination without the copy gives the migration up.
func (d *driver) reapRecover() {
	if d.attempt == nil {
		return
	}
	var err error
	select {
	case err = <-d.attempt.done:
		d.attempt = nil
	default:
		return
	}
	switch {
	case errors.Is(err, ErrNoDestination):
		d.log.Warn("the post-copy stream cannot be recovered: the destination's copy is gone", "err", err)
		d.c.GiveUp(fmt.Sprintf("the destination no longer has the VM's copy (%v)", err))
	case err != nil:
		d.logRecoverErr(err)
	default:
		d.lastRecoverErr = ""
		d.c.Resumed()
	}
}

// stopRecover ends a recovery attempt under way and waits for it.
func (d *driver) stopRecover() {
	if d.attempt != nil {
		d.attempt.cancel()
		<-d.attempt.done
		d.attempt = nil
	}
}

func (d *driver) logRecoverErr(err error) {
	if msg := err.Error(); msg != d.lastRecoverErr {
		d.lastRecoverErr = msg
		d.log.Warn("post-copy recovery attempt failed; trying again", "err", err)
	}
}

// callerCancelled handles the caller's ctx ending: a cancel in pre-copy, and in
// post-copy, which QEMU cannot cancel, giving up the recovery of a paused stream.
func (d *driver) callerCancelled(ctx context.Context) {
	if d.c.Postcopy() {
		d.giveUp(ctx, fmt.Sprintf("the caller cancelled the migration (%v)", ctx.Err()), ctx.Err())
		return
	}
	d.cancel(ctx, fmt.Sprintf("the caller cancelled the migration (%v); the VM keeps running on the source", ctx.Err()), ctx.Err())
}

// giveUp stops recovering a post-copy migration (see Controller.GiveUp); QMP
// calls go on, without a deadline, until the stream completes or is paused.
func (d *driver) giveUp(ctx context.Context, reason string, cause error) {
	d.givingUp = true
	d.byCaller, d.cancelReason = cause, reason
	d.cancelCtx, d.stopCancel = context.WithCancel(context.WithoutCancel(ctx))
	d.c.GiveUp(reason)
	d.log.Info("migration cancelled in post-copy: it goes on while its stream flows, and is lost if the stream breaks", "reason", reason)
}

// cancel sends migrate_cancel once, on a context detached from the caller's
// (which may be done) and bounded by cancelTimeout.
func (d *driver) cancel(ctx context.Context, reason string, cause error) {
	if d.cancelCtx != nil {
		return
	}
	d.c.NoteCancel(reason)
	d.byCaller, d.cancelReason = cause, reason
	d.cancelCtx, d.stopCancel = context.WithTimeout(context.WithoutCancel(ctx), cancelTimeout)
	d.log.Info("cancelling the migration", "reason", reason)
	if err := d.mon.MigrateCancel(d.cancelCtx); err != nil {
		// The migration may have ended meanwhile; the next poll tells.
		d.log.Warn("migrate_cancel failed", "err", err)
	}
}

// finish turns the final state into Run's result.
func (d *driver) finish() (Result, error) {
	r := d.c.Result()
	if r.Status == PhaseFailed && d.cancelReason != "" && !r.Postcopy {
		// The cancel tore the stream down and QEMU saw the broken channel first (a
		// destination that exits on error closes it): the migration ended because it
		// was cancelled, and the VM runs on the source as after any cancel.
		d.log.Info("QEMU reported the cancelled migration as failed", "qemu", r.Reason)
		r.Status, r.Reason = PhaseCancelled, d.cancelReason
	}
	switch r.Status {
	case PhaseCompleted:
		d.log.Info("migration completed", "total", r.Total, "downtime", r.Downtime, "bytes", r.Bytes,
			"passes", r.Passes, "max_throttle", r.MaxThrottle, "postcopy", r.Postcopy, "postcopy_recoveries", r.PostcopyRecoveries)
		return r, nil
	case PhaseCancelled:
		d.log.Info("migration cancelled", "reason", r.Reason, "total", r.Total)
		if d.byCaller != nil {
			return r, fmt.Errorf("%w: %s: %w", ErrCancelled, r.Reason, d.byCaller)
		}
		return r, fmt.Errorf("%w: %s", ErrCancelled, r.Reason)
	default:
		d.log.Warn("migration failed", "reason", r.Reason, "total", r.Total, "postcopy", r.Postcopy)
		switch {
		case r.Postcopy && d.byCaller != nil:
			return r, fmt.Errorf("%w: %w: %s: %w", ErrFailed, ErrLost, r.Reason, d.byCaller)
		case r.Postcopy:
			return r, fmt.Errorf("%w: %w: %s", ErrFailed, ErrLost, r.Reason)
		}
		return r, fmt.Errorf("%w: %s", ErrFailed, r.Reason)
	}
}
