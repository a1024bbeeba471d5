package migration

import (
	"fmt"
	"math"
	"strings"
	"time"

	"github.com/godwit/godwit/internal/qmp"
)

// Phase is where a migration stands.
type Phase string

// Phases of a migration. Completed, Failed and Cancelled are final.
const (
	// PhaseSetup: QEMU is connecting to the destination and setting up.
	PhaseSetup Phase = "setup"
	// PhasePrecopy: RAM is being copied while the guest runs, pass after pass.
	PhasePrecopy Phase = "precopy"
	// PhaseSwitchover: the guest is paused on the source and its last dirty
	// pages and device state are being sent.
	PhaseSwitchover Phase = "switchover"
	// PhasePostcopy: the migration switched to post-copy: the guest runs on the
	// destination, which fetches the pages it still lacks from the source while
	// the rest follows in the background. The VM can no longer return to the
	// source.
	PhasePostcopy Phase = "postcopy-active"
	// PhasePostcopyPaused: the post-copy stream broke; both ends wait for a
	// recovery. The guest runs on the destination but stalls on every page it
	// still lacks.
	PhasePostcopyPaused Phase = "postcopy-paused"
	// PhasePostcopyRecover: a recovery is reconnecting the ends of a paused
	// post-copy stream.
	PhasePostcopyRecover Phase = "postcopy-recover"
	// PhaseCancelling: a cancel was sent and QEMU is winding the migration down.
	PhaseCancelling Phase = "cancelling"
	// PhaseCompleted: the guest runs on the destination; the source QEMU is
	// paused in "postmigrate".
	PhaseCompleted Phase = "completed"
	// PhaseFailed: the migration failed; the guest runs on the source, unless
	// the migration had switched to post-copy (Result.Postcopy): then it runs
	// nowhere.
	PhaseFailed Phase = "failed"
	// PhaseCancelled: the migration was cancelled; the guest runs on the source.
	PhaseCancelled Phase = "cancelled"
)

// Final reports whether the phase is one a migration ends in.
func (p Phase) Final() bool {
	return p == PhaseCompleted || p == PhaseFailed || p == PhaseCancelled
}

// Postcopy reports whether the phase is one of post-copy's, in which the VM
// runs on the destination and cannot return to the source.
func (p Phase) Postcopy() bool {
	return p == PhasePostcopy || p == PhasePostcopyPaused || p == PhasePostcopyRecover
}

// phaseOf maps QEMU's migration status to a Phase; unknown statuses keep the
// previous phase.
func phaseOf(status string, prev Phase) Phase {
	switch status {
	case "", qmp.MigrationNone, qmp.MigrationSetup:
		return PhaseSetup
	case qmp.MigrationActive, qmp.MigrationPreSwitchover, qmp.MigrationWaitUnplug:
		return PhasePrecopy
	case qmp.MigrationDevice:
		return PhaseSwitchover
	case qmp.MigrationPostcopyActive:
		return PhasePostcopy
	case qmp.MigrationPostcopyPaused:
		return PhasePostcopyPaused
	case qmp.MigrationPostcopyRecoverSetup, qmp.MigrationPostcopyRecover:
		return PhasePostcopyRecover
	case qmp.MigrationCancelling:
		return PhaseCancelling
	case qmp.MigrationCancelled:
		return PhaseCancelled
	case qmp.MigrationCompleted:
		return PhaseCompleted
	case qmp.MigrationFailed:
		return PhaseFailed
	}
	return prev
}

// Observation is one poll of query-migrate on the source.
type Observation struct {
	// Elapsed is the time since the migration was started.
	Elapsed time.Duration
	// Info is QEMU's answer.
	Info qmp.MigrationInfo
}

// Progress is what a migration is doing now, for people and progress bars.
type Progress struct {
	// Phase is where the migration stands.
	Phase Phase `json:"phase"`
	// Pass is the number of the pre-copy pass (QEMU's dirty-sync count): 1 is
	// the first copy of all RAM, each later pass re-sends what the guest
	// dirtied meanwhile.
	Pass int `json:"pass"`
	// PercentSent is the share of the guest's RAM that is not waiting to be
	// sent in this pass, 0 to 100.
	PercentSent float64 `json:"percent_sent"`
	// TransferredBytes is how much has been sent so far.
	TransferredBytes uint64 `json:"transferred_bytes"`
	// RemainingBytes is how much is still to be sent in this pass.
	RemainingBytes uint64 `json:"remaining_bytes"`
	// TotalBytes is the guest's RAM size.
	TotalBytes uint64 `json:"total_bytes"`
	// TransferRate is the link rate the controller measured from successive
	// polls (smoothed), in bytes/s.
	TransferRate float64 `json:"transfer_rate"`
	// DirtyRate is how fast the guest dirties memory, in bytes/s, measured
	// from the dirty sets at pass boundaries (QEMU's figure before the first).
	DirtyRate float64 `json:"dirty_rate"`
	// ExpectedDowntime is QEMU's estimate of the switch-over pause.
	ExpectedDowntime time.Duration `json:"expected_downtime"`
	// ThrottlePercent is the vCPU throttle QEMU applies now.
	ThrottlePercent int `json:"throttle_percent"`
	// Elapsed is the time since the migration started.
	Elapsed time.Duration `json:"elapsed"`
	// Note is the controller's latest decision or assessment in words.
	Note string `json:"note"`
}

// Result is the outcome of a migration.
type Result struct {
	// Status is PhaseCompleted, PhaseFailed or PhaseCancelled.
	Status Phase `json:"status"`
	// Reason says, in a sentence, why the migration failed or was cancelled
	// ("" when it completed).
	Reason string `json:"reason,omitempty"`
	// Total is the whole migration's duration (QEMU's figure when it has one).
	Total time.Duration `json:"total"`
	// Downtime is the pause QEMU measured at switch-over. With the return path
	// Godwit enables, it lasts until the destination has loaded the state.
	Downtime time.Duration `json:"downtime"`
	// SetupTime is the time QEMU spent setting up.
	SetupTime time.Duration `json:"setup_time"`
	// Bytes is how much was sent.
	Bytes uint64 `json:"bytes"`
	// Passes is the number of pre-copy passes (dirty syncs).
	Passes int `json:"passes"`
	// MaxThrottle is the highest vCPU throttle QEMU applied, in percent. (1 is
	// the guard SourceParameters sets before the controller decides to
	// throttle, which QEMU may apply when the guest dirties faster than the
	// link carries.)
	MaxThrottle int `json:"max_throttle"`
	// Policy is the name of the policy the migration ran under.
	Policy string `json:"policy"`
	// Postcopy says that the migration switched to post-copy: from then on the
	// VM ran on the destination and could not return to the source, whatever
	// the outcome.
	Postcopy bool `json:"postcopy,omitempty"`
	// PostcopyRecoveries is how often a broken post-copy stream was recovered.
	PostcopyRecoveries int `json:"postcopy_recoveries,omitempty"`
}

// Decision is what the controller wants changed in the running migration.
// Nil fields stay as they are.
type Decision struct {
	// DowntimeLimit is the new downtime-limit.
	DowntimeLimit *time.Duration
	// MaxBandwidth is the new max-bandwidth, in bytes/s. The controller sets
	// it when a bandwidth cap changes what is in force (SetBandwidthCap); it
	// never exceeds the cap. Run applies it if set.
	MaxBandwidth *int64
	// Throttle is the vCPU throttle to apply, in percent.
	Throttle *int
	// StartPostcopy asks to switch to post-copy (migrate-start-postcopy); only
	// under a policy that allows it.
	StartPostcopy bool
	// PausePostcopy asks to break the source's end of a stalled post-copy
	// stream on purpose (migrate-pause): one the caller gave up, or a
	// reconnection that made no progress.
	PausePostcopy bool
	// RecoverPostcopy asks to reconnect a stalled or paused post-copy stream:
	// the destination breaks its end and listens again (migrate-recover), then
	// the source breaks its end and resumes to it (migrate with resume).
	RecoverPostcopy bool
	// Cancel asks to cancel the migration; the guest keeps running on the source.
	Cancel bool
	// Reason explains the decision in words (also set, alone, for an
	// assessment worth logging that changes nothing).
	Reason string
}

// Changes reports whether the decision asks for anything to be done.
func (d Decision) Changes() bool {
	return d.DowntimeLimit != nil || d.MaxBandwidth != nil || d.Throttle != nil || d.StartPostcopy ||
		d.PausePostcopy || d.RecoverPostcopy || d.Cancel
}

// Tuning of the controller.
const (
	// rateTau is the time constant of the link-rate smoothing.
	rateTau = 500 * time.Millisecond
	// dirtyAlpha is the weight of the newest pass in the dirty-rate average.
	dirtyAlpha = 0.5
	// stallWindow is how many pass-start dirty sets are compared to decide
	// whether a migration converges.
	stallWindow = 3
	// shrinkRatio: the dirty set shrinks if the newest of the window is below
	// this fraction of the oldest.
	shrinkRatio = 0.8
	// convergeRatio: a guest dirtying at least this fraction of the link rate
	// counts as dirtying as fast as the link carries.
	convergeRatio = 0.8
	// downtimeMargin is the headroom on a computed downtime limit.
	downtimeMargin = 1.25
	// throttleSettle is the longest the controller waits for QEMU to apply a
	// throttle step before judging it anyway.
	throttleSettle = 5 * time.Second
	// defaultPageSize is used when QEMU does not report its page size.
	defaultPageSize = 4096
)

// passSample is the dirty set found at the start of one pass.
type passSample struct {
	pass int
	at   time.Duration
	// dirtySet is what the sync found newly dirty (per sync, when several
	// happened between two polls), in bytes.
	dirtySet float64
	// pending bounds from above what was pending right after the sync, which
	// is what QEMU compares with link rate × downtime limit to switch over.
	pending float64
}

// Controller decides, from observations only, what to change in a running
// migration. It is pure — no I/O, no clock, no goroutines — so that every
// decision can be tested with synthetic observations. It is not safe for
// concurrent use; one migration has one controller.
//
// What it does, per observation (one poll of query-migrate, every 50 ms):
//
//   - It measures the link rate from successive polls (bytes sent over time,
//     smoothed with a 0.5 s time constant) and the guest's dirty rate from the
//     dirty set found at each pass boundary (pages re-dirtied since the previous
//     pass over the time between the passes; QEMU's own dirty-pages-rate before
//     the second pass).
//   - It judges convergence on the passes after the first: a migration is not
//     converging when the dirty set at the start of a pass has not shrunk by
//     20% over three passes while the guest dirties at least 80% of what the
//     link carries.
//   - When it is not converging the controller acts, one step at a time, and
//     judges each step on fresh passes: if a downtime limit within the policy's
//     DowntimeMax would let QEMU switch over (what was pending after the last
//     dirty sync / link rate, +25%; at least half as much again as the limit in
//     force), it raises the limit to that; otherwise it throttles the vCPUs, ThrottleInitial
//     first, then ThrottleStep more each time up to ThrottleMax (waiting until
//     QEMU has applied each step); at ThrottleMax it finally allows DowntimeMax
//     or, when the policy allows post-copy (AllowPostcopy), switches to
//     post-copy instead: the downtime it would need is beyond DowntimeMax.
//   - When the policy's TimeBudget is used up it cancels, saying why (never in
//     post-copy, which cannot be cancelled).
//   - In post-copy it asks, every RecoverRetry, for a recovery of a stream
//     that has moved nothing for PostcopyStallTimeout or is paused, until the
//     stream moves again or the caller gives up (see GiveUp and
//     duringPostcopy).
type Controller struct {
	policy Policy

	phase   Phase
	last    Observation
	lastRAM *qmp.MigrationRAMStats // latest RAM statistics (QEMU drops them once cancelled)

	// Previous sample with RAM statistics.
	havePrev                       bool
	prevElapsed                    time.Duration
	prevTransferred, prevRemaining int64
	prevPages                      int64

	rate       float64 // smoothed link rate, bytes/s
	rateKnown  bool
	dirty      float64 // smoothed dirty rate from pass boundaries, bytes/s
	dirtyKnown bool
	qemuDirty  float64 // QEMU's dirty-pages-rate in bytes/s

	pass        int
	passStart   time.Duration
	samples     []passSample // passes since the last action
	lastPending float64      // pending after the latest observed sync

	limit        time.Duration // downtime limit in force
	throttleWant int           // throttle last asked for
	throttleSeen int           // throttle QEMU applies now
	maxThrottle  int
	waitThrottle bool
	waitSince    time.Duration
	atLimits     bool
	decided      bool // the controller has changed something
	// postcopyAsked: the controller decided to switch to post-copy.
	postcopyAsked bool

	cancelRequested bool
	cancelReason    string
	note            string

	// movedBytes is the most sent so far and movedAt when that last grew: the
	// watchdog that cancels a migration whose stream stopped moving.
	movedBytes int64
	movedAt    time.Duration

	// Post-copy: whether the migration reached it and when, when the stream last
	// became active, whether a pause was decided for the current stall, when
	// the next recovery attempt is due and how many were decided in the current
	// stall or pause, whether the source was resumed since the stream was last
	// active, how many recoveries succeeded, and whether the caller gave up
	// recovering (lost: the migration ended paused).
	postcopy      bool
	postcopyAt    time.Duration
	activeSince   time.Duration
	pauseAsked    bool
	pausedSince   time.Duration
	recoverDue    time.Duration
	recoverTries  int
	resumed       bool
	recoveries    int
	giveUp        string
	lost          bool
	pausedBecause string // QEMU's error-desc when the stream paused

	// bwWant is the max-bandwidth the controller would have without a cap:
	// the policy's (UnlimitedBandwidth when it has none) or its own later
	// decision. bwCap is the cap set from outside (SetBandwidthCap), 0 for
	// none. What is in force is the lower of the two (see Bandwidth).
	bwWant int64
	bwCap  int64
}

// A migration whose stream moves no data for this long is cancelled: the link
// between the hosts is down or the destination stopped reading. TCP alone would
// wait many minutes. While the guest is paused for the switch-over the wait is
// shorter, since every moment counts against the VM.
const (
	NoProgressTimeout           = 15 * time.Second
	SwitchoverNoProgressTimeout = 5 * time.Second
)

// A post-copy stream that moves no data for PostcopyStallTimeout is recovered
// over a new connection as soon as the destination answers again, tried every
// RecoverRetry: the VM waits on the destination for every page it lacks, and
// TCP alone would resume only at its next retransmission, seconds to minutes
// after the link is back (or never, if a host lost the connection). A
// recovery stuck reconnecting for PostcopyStallTimeout is broken and tried
// again.
const (
	PostcopyStallTimeout = 3 * time.Second
	RecoverRetry         = time.Second
)

// NewController returns the controller for one migration under policy p,
// which should be valid (see Policy.Validate). It assumes the migration starts
// with the parameters of SourceParameters(p).
func NewController(p Policy) *Controller {
	return &Controller{
		policy: p,
		phase:  PhaseSetup,
		limit:  p.DowntimeTarget,
		bwWant: p.bandwidth(),
		note: fmt.Sprintf("starting under policy %q: downtime limit %v, %s", p.Name,
			p.DowntimeTarget, bandwidthWords(p.MaxBandwidth)),
	}
}

// Policy returns the controller's policy.
func (c *Controller) Policy() Policy { return c.policy }

// DowntimeLimit returns the downtime limit the controller has in force.
func (c *Controller) DowntimeLimit() time.Duration { return c.limit }

// Phase returns the phase of the latest observation.
func (c *Controller) Phase() Phase { return c.phase }

// Bandwidth returns the max-bandwidth the controller has in force, in
// bytes/s: the policy's (UnlimitedBandwidth when the policy has none),
// lowered to the cap set with SetBandwidthCap.
func (c *Controller) Bandwidth() int64 { return c.clampBandwidth(c.bwWant) }

// BandwidthCap returns the cap set with SetBandwidthCap (0: none).
func (c *Controller) BandwidthCap() int64 { return c.bwCap }

// clampBandwidth lowers b to the cap, when there is one.
func (c *Controller) clampBandwidth(b int64) int64 {
	if c.bwCap > 0 && b > c.bwCap {
		return c.bwCap
	}
	return b
}

// SetBandwidthCap caps the migration stream at limit bytes/s from now on
// (0 or less: no cap beyond the policy's bandwidth). The cap is the
// migration's share of the network, set from outside while it runs; the
// controller's own bandwidth decisions never exceed it. SetBandwidthCap
// returns the decision that puts the new bandwidth in force — the lower of
// the policy's and the cap — with the reason in words, or an empty decision
// when the bandwidth in force stays the same.
func (c *Controller) SetBandwidthCap(limit int64) Decision {
	before := c.Bandwidth()
	c.bwCap = max(limit, 0)
	after := c.Bandwidth()
	if after == before {
		return Decision{}
	}
	var reason string
	switch {
	case c.bwCap > 0 && after == c.bwCap:
		reason = fmt.Sprintf("bandwidth capped at %s/s, the migration's share of the network (without the cap: %s)",
			fmtBytes(float64(after)), c.bandwidthWords(c.bwWant))
	case c.bwCap > 0:
		reason = fmt.Sprintf("bandwidth cap raised to %s/s, above %s, which is in force again",
			fmtBytes(float64(c.bwCap)), c.bandwidthWords(after))
	default:
		reason = fmt.Sprintf("bandwidth cap lifted: %s again", c.bandwidthWords(after))
	}
	c.note = reason
	return Decision{MaxBandwidth: ptr(after), Reason: reason}
}

// withinCap keeps a decision of the controller's own within the bandwidth
// cap: a new max-bandwidth becomes what the controller wants, and what it
// asks QEMU for is that, lowered to the cap.
func (c *Controller) withinCap(d Decision) Decision {
	if d.MaxBandwidth != nil {
		c.bwWant = *d.MaxBandwidth
		d.MaxBandwidth = ptr(c.Bandwidth())
	}
	return d
}

// bandwidthWords describes a max-bandwidth in force.
func (c *Controller) bandwidthWords(b int64) string {
	if b >= UnlimitedBandwidth {
		return "no bandwidth limit"
	}
	if b == c.policy.bandwidth() {
		return fmt.Sprintf("the policy's limit of %s/s", fmtBytes(float64(b)))
	}
	return fmt.Sprintf("a limit of %s/s", fmtBytes(float64(b)))
}

// NoteCancel records that the migration is being cancelled for reason (e.g. by
// the caller), so that the Result says why. It does not cancel anything.
func (c *Controller) NoteCancel(reason string) {
	if !c.cancelRequested {
		c.cancelRequested = true
		c.cancelReason = reason
		c.note = reason
	}
}

// Observe takes one observation and returns what to change now (often
// nothing) and the progress report.
func (c *Controller) Observe(o Observation) (Decision, Progress) {
	c.last = o
	if o.Info.RAM != nil {
		ram := *o.Info.RAM
		c.lastRAM = &ram
	}
	prev := c.phase
	c.phase = phaseOf(o.Info.Status, c.phase)
	if c.phase.Postcopy() {
		c.enterPostcopy(o, prev)
	}
	if t := o.Info.CPUThrottlePercentage; t != nil {
		c.throttleSeen = int(*t)
		c.maxThrottle = max(c.maxThrottle, c.throttleSeen)
	}
	newPass := false
	if o.Info.RAM != nil && o.Info.Status != qmp.MigrationSetup {
		newPass = c.measure(o)
	}
	if o.Info.RAM != nil && o.Info.RAM.Transferred > c.movedBytes {
		c.movedBytes, c.movedAt = o.Info.RAM.Transferred, o.Elapsed
	}
	if d, stuck := c.watchdog(o); stuck {
		c.note = d.Reason
		return d, c.progress(o)
	}

	var d Decision
	switch c.phase {
	case PhasePrecopy:
		d = c.decide(o, newPass)
	case PhaseSwitchover:
		if !c.cancelRequested {
			c.note = fmt.Sprintf("switching over after %d passes: the guest is paused on the source while the rest is sent", c.pass)
		}
	case PhasePostcopy, PhasePostcopyPaused, PhasePostcopyRecover:
		d = c.duringPostcopy(o)
	case PhaseCompleted:
		c.note = c.completedNote(o)
	case PhaseFailed:
		c.note = c.failedReason(o)
	case PhaseCancelled:
		c.note = c.cancelledReason()
	}
	d = c.withinCap(d)
	if d.Reason != "" {
		c.note = d.Reason
	}
	return d, c.progress(o)
}

// watchdog cancels a migration whose stream has not moved for too long.
func (c *Controller) watchdog(o Observation) (Decision, bool) {
	if c.cancelRequested {
		return Decision{}, false
	}
	limit := NoProgressTimeout
	switch c.phase {
	case PhaseSetup, PhasePrecopy:
	case PhaseSwitchover:
		limit = SwitchoverNoProgressTimeout
	default:
		return Decision{}, false
	}
	if o.Elapsed-c.movedAt < limit {
		return Decision{}, false
	}
	reason := fmt.Sprintf("no data reached the destination for %v (%s sent so far): the link between the hosts may be down or the destination stopped reading; the VM stays on the source",
		limit, fmtBytes(float64(c.movedBytes)))
	c.NoteCancel(reason)
	return Decision{Cancel: true, Reason: reason}, true
}

// measure updates the rate estimates and the pass bookkeeping from an
// observation with RAM statistics. It reports whether a new pass began.
func (c *Controller) measure(o Observation) bool {
	ram := o.Info.RAM
	pageSize := ram.PageSize
	if pageSize <= 0 {
		pageSize = defaultPageSize
	}
	c.qemuDirty = float64(ram.DirtyPagesRate * pageSize)
	pages := ram.Normal + ram.Duplicate

	if c.havePrev {
		dt := (o.Elapsed - c.prevElapsed).Seconds()
		if dt > 0 && ram.Transferred >= c.prevTransferred {
			inst := float64(ram.Transferred-c.prevTransferred) / dt
			if !c.rateKnown {
				c.rate, c.rateKnown = inst, true
			} else {
				a := 1 - math.Exp(-dt/rateTau.Seconds())
				c.rate += a * (inst - c.rate)
			}
		}
	}

	newPass := false
	sync := int(ram.DirtySyncCount)
	if sync > c.pass {
		newPass = true
		if c.havePrev && c.pass >= 1 {
			// The dirty set found at the sync: what is left now, plus what was
			// processed since the previous poll, minus what was left then.
			processed := float64(ram.Transferred - c.prevTransferred)
			if pages > 0 && pages >= c.prevPages {
				processed = float64((pages - c.prevPages) * pageSize)
			}
			found := max(float64(ram.Remaining-c.prevRemaining)+processed, 0)
			// What was pending after the sync: at most what is left now plus
			// what went since the previous poll, and at most what was found
			// plus what was left before the sync (below the switch-over
			// threshold, link rate × downtime limit).
			pending := min(float64(ram.Remaining)+processed, found+c.rate*c.limit.Seconds())
			pending = max(pending, float64(ram.Remaining))
			if span := (o.Elapsed - c.passStart).Seconds(); span > 0 {
				inst := found / span
				if !c.dirtyKnown {
					c.dirty, c.dirtyKnown = inst, true
				} else {
					c.dirty += dirtyAlpha * (inst - c.dirty)
				}
			}
			dirtySet := found / float64(sync-c.pass)
			c.lastPending = pending
			if !c.waitThrottle {
				c.samples = append(c.samples, passSample{pass: sync, at: o.Elapsed, dirtySet: dirtySet, pending: pending})
				if len(c.samples) > 2*stallWindow {
					c.samples = c.samples[len(c.samples)-stallWindow:]
				}
			}
		}
		c.pass = sync
		c.passStart = o.Elapsed
	}

	c.havePrev = true
	c.prevElapsed = o.Elapsed
	c.prevTransferred = ram.Transferred
	c.prevRemaining = ram.Remaining
	c.prevPages = pages
	return newPass
}

// dirtyRate is the best dirty-rate estimate: the controller's own from pass
// boundaries, or QEMU's before there is one.
func (c *Controller) dirtyRate() float64 {
	if c.dirtyKnown {
		return c.dirty
	}
	return c.qemuDirty
}

// decide runs the convergence policy on a pre-copy observation.
func (c *Controller) decide(o Observation, newPass bool) Decision {
	if c.cancelRequested {
		return Decision{}
	}
	if o.Elapsed >= c.policy.TimeBudget {
		reason := c.budgetReason(o)
		c.NoteCancel(reason)
		return Decision{Cancel: true, Reason: reason}
	}
	if c.waitThrottle {
		if c.throttleSeen >= c.throttleWant || o.Elapsed-c.waitSince >= throttleSettle {
			// Judge the new throttle on passes that ran under it.
			c.waitThrottle = false
			c.samples = nil
		}
		return Decision{}
	}
	if !newPass {
		return Decision{}
	}
	if c.stalled() {
		d := c.act(o)
		if d.Changes() {
			c.decided = true
		}
		return d
	}
	n := len(c.samples)
	switch {
	case n >= stallWindow:
		c.note = fmt.Sprintf("pass %d: %s to re-send, down from %s two passes before; the guest dirties %s/s, the link carries %s/s: converging",
			c.pass, fmtBytes(c.samples[n-1].dirtySet), fmtBytes(c.samples[n-stallWindow].dirtySet), fmtBytes(c.dirtyRate()), fmtBytes(c.rate))
	case n > 0 && !c.decided:
		c.note = fmt.Sprintf("pass %d: %s to re-send; the guest dirties %s/s, the link carries %s/s: watching whether it converges",
			c.pass, fmtBytes(c.samples[n-1].dirtySet), fmtBytes(c.dirtyRate()), fmtBytes(c.rate))
	}
	// Otherwise the latest decision stays the note while its effect is judged.
	return Decision{}
}

// stalled reports whether the recent passes show a migration that does not
// converge.
func (c *Controller) stalled() bool {
	n := len(c.samples)
	if n < stallWindow || !c.rateKnown || c.rate <= 0 {
		return false
	}
	first, last := c.samples[n-stallWindow], c.samples[n-1]
	shrinking := last.dirtySet < shrinkRatio*first.dirtySet
	return !shrinking && c.dirtyRate() >= convergeRatio*c.rate
}

// act takes the next step for a migration that does not converge.
func (c *Controller) act(o Observation) Decision {
	last := c.samples[len(c.samples)-1]
	situation := fmt.Sprintf("pass %d: %s to re-send at every pass, the guest dirties %s/s and the link carries %s/s",
		c.pass, fmtBytes(last.pending), fmtBytes(c.dirtyRate()), fmtBytes(c.rate))
	needed := roundUpMs(time.Duration(last.pending / c.rate * downtimeMargin * float64(time.Second)))
	most := c.policy.downtimeMax()
	c.samples = nil

	if needed <= most {
		limit := min(max(needed, roundUpMs(c.limit*3/2)), most)
		if limit > c.limit {
			c.limit = limit
			return Decision{DowntimeLimit: ptr(limit), Reason: fmt.Sprintf(
				"%s: allowing a downtime of %v to switch over (target %v, policy maximum %v)",
				situation, limit, c.policy.DowntimeTarget, most)}
		}
	}
	if c.policy.throttles() && c.throttleWant < c.policy.ThrottleMax {
		next := c.policy.ThrottleInitial
		if c.throttleWant > 0 {
			next = min(c.throttleWant+max(c.policy.ThrottleStep, 1), c.policy.ThrottleMax)
		}
		c.throttleWant = next
		c.waitThrottle = true
		c.waitSince = o.Elapsed
		return Decision{Throttle: ptr(next), Reason: fmt.Sprintf(
			"%s; a downtime of %v would be needed (policy maximum %v): throttling vCPUs to %d%%",
			situation, needed, most, next)}
	}
	if c.policy.AllowPostcopy && !c.postcopyAsked {
		// Throttled as far as the policy goes and still short of the budget by
		// more than the downtime the policy allows: the pages that remain are
		// fetched after the switch instead.
		c.postcopyAsked = true
		return Decision{StartPostcopy: true, Reason: fmt.Sprintf(
			"%s; %s, and a downtime of %v would be needed (policy maximum %v): switching to post-copy — the VM runs on the destination from now on, fetching the pages it lacks from the source, and can no longer return to the source",
			situation, c.throttleWords(), needed, most)}
	}
	if c.limit < most {
		c.limit = most
		return Decision{DowntimeLimit: ptr(most), Reason: fmt.Sprintf(
			"%s; %s: allowing the policy's maximum downtime of %v (a downtime of %v would be needed)",
			situation, c.throttleWords(), most, needed)}
	}
	reason := fmt.Sprintf(
		"%s; at the policy's limits (%s, downtime %v, %v needed): waiting, and cancelling when the time budget runs out in %v",
		situation, c.throttleWords(), most, needed, (c.policy.TimeBudget - o.Elapsed).Round(time.Second))
	if c.atLimits {
		c.note = reason // refresh the countdown without logging it again
		return Decision{}
	}
	c.atLimits = true
	return Decision{Reason: reason}
}

// throttleWords describes the throttle state for reasons.
func (c *Controller) throttleWords() string {
	if !c.policy.throttles() {
		return "the policy does not throttle vCPUs"
	}
	return fmt.Sprintf("vCPUs throttled to the policy's maximum of %d%%", c.policy.ThrottleMax)
}

// budgetReason explains a cancel at the end of the time budget.
func (c *Controller) budgetReason(o Observation) string {
	s := fmt.Sprintf("the time budget of %v ran out", c.policy.TimeBudget)
	ram := o.Info.RAM
	switch {
	case ram == nil:
		s += " before QEMU reported any progress"
	case c.pass <= 1:
		s += fmt.Sprintf(" during the first copy of RAM, with %.0f%% of %s sent at %s/s",
			percentSent(ram), fmtBytes(float64(ram.Total)), fmtBytes(c.rate))
	default:
		s += fmt.Sprintf(" in pass %d: %s to re-send at the last pass while the guest dirties %s/s and the link carries %s/s",
			c.pass, fmtBytes(max(c.lastPending, float64(ram.Remaining))), fmtBytes(c.dirtyRate()), fmtBytes(c.rate))
		if c.throttleSeen > 0 {
			s += fmt.Sprintf(", with vCPUs throttled to %d%% and a downtime limit of %v", c.throttleSeen, c.limit)
		} else {
			s += fmt.Sprintf(", with a downtime limit of %v", c.limit)
		}
	}
	return s + "; cancelling, the VM keeps running on the source"
}

// completedNote describes a completed migration.
func (c *Controller) completedNote(o Observation) string {
	s := fmt.Sprintf("completed in %d passes", c.pass)
	if c.postcopy {
		s = fmt.Sprintf("completed in post-copy after %d pre-copy passes", c.pass)
		if c.recoveries > 0 {
			s += fmt.Sprintf(" and %d recoveries of its stream", c.recoveries)
		}
	}
	if d := o.Info.Downtime; d != nil {
		s += fmt.Sprintf(" with a downtime of %d ms", *d)
	}
	return s
}

// Postcopy reports whether the migration has switched to post-copy: the VM
// runs on the destination from then on and must never run on the source again.
func (c *Controller) Postcopy() bool { return c.postcopy }

// Lost reports whether the migration ended paused in post-copy because the
// caller gave up recovering it (see GiveUp): the VM can run neither on the
// source, which it left, nor on the destination, which lacks part of its memory.
func (c *Controller) Lost() bool { return c.lost }

// GiveUp records that the caller stops the migration for reason (e.g. it was
// cancelled) once it is in post-copy, where QEMU cannot cancel: a stream that
// flows goes on to completion, but one that stalls is broken and a broken one
// is not recovered: the migration ends lost. It changes nothing in QEMU itself.
func (c *Controller) GiveUp(reason string) {
	if c.giveUp == "" {
		c.giveUp = reason
		c.note = fmt.Sprintf("%s during post-copy: the VM already runs on the destination and cannot return to the source; "+
			"the copy goes on, but a broken stream is no longer recovered", reason)
	}
}

// Resumed tells the controller that the source was resumed to a destination
// listening again (migrate with resume accepted): the next time the stream is
// active counts as a recovery.
func (c *Controller) Resumed() { c.resumed = true }

// enterPostcopy keeps the books of post-copy's phases.
func (c *Controller) enterPostcopy(o Observation, prev Phase) {
	if !c.postcopy {
		c.postcopy, c.postcopyAt, c.activeSince = true, o.Elapsed, o.Elapsed
	}
	if c.phase == PhasePostcopy && c.resumed {
		c.resumed = false
		c.recoveries++
	}
	if c.phase == prev {
		return
	}
	c.pauseAsked = false
	switch c.phase {
	case PhasePostcopy, PhasePostcopyRecover:
		c.activeSince = o.Elapsed
	case PhasePostcopyPaused:
		c.pausedSince, c.recoverDue, c.recoverTries = o.Elapsed, o.Elapsed, 0
		c.pausedBecause = o.Info.ErrorDesc
	}
}

// duringPostcopy watches a post-copy stream. One that stalls (no data moved
// for PostcopyStallTimeout) or paused is reconnected: every RecoverRetry the
// controller asks for a recovery, which has the destination break its end and
// listen again, then the source break its end and resume — never the source
// first: a destination still loading the switch-over's device state when its
// stream breaks cannot recover, while a stream only stalled may still go on by
// itself once the link is back. A reconnection that stalls is broken to be
// tried again. Once the caller gave up, a stalled stream is broken and a paused
// one ends the migration lost.
func (c *Controller) duringPostcopy(o Observation) Decision {
	left := "the rest of its memory"
	if c.lastRAM != nil {
		left = fmtBytes(float64(max(c.lastRAM.Remaining, 0)))
	}
	if c.phase == PhasePostcopyPaused {
		if c.giveUp != "" {
			c.lost = true
			c.note = c.lostReason(o)
			return Decision{}
		}
		return c.reconnect(o, fmt.Sprintf("post-copy paused for %v (%s), %s still on the source: reconnecting; the VM runs on the destination and waits for every page it lacks",
			(o.Elapsed-c.pausedSince).Round(time.Second), orWords(c.pausedBecause, "the stream broke"), left))
	}
	stalled := o.Elapsed - max(c.movedAt, c.activeSince)
	switch {
	case stalled < PostcopyStallTimeout:
		c.recoverDue, c.recoverTries = 0, 0
		switch {
		case c.phase == PhasePostcopyRecover:
			c.note = "post-copy: reconnecting the stream to the destination"
		case c.giveUp == "":
			c.note = fmt.Sprintf("post-copy for %v: the VM runs on the destination, %s still to fetch from the source",
				(o.Elapsed - c.postcopyAt).Round(100*time.Millisecond), left)
		}
		return Decision{}
	case c.pauseAsked:
		return Decision{}
	case c.giveUp != "":
		c.pauseAsked = true
		return Decision{PausePostcopy: true, Reason: fmt.Sprintf(
			"post-copy: no data reached the destination for %v, and the migration was given up: breaking the stream", stalled.Round(time.Second))}
	case c.phase == PhasePostcopyRecover:
		c.pauseAsked = true
		return Decision{PausePostcopy: true, Reason: fmt.Sprintf(
			"post-copy: reconnecting the stream made no progress for %v: breaking it to try again", stalled.Round(time.Second))}
	}
	return c.reconnect(o, fmt.Sprintf("post-copy: no data reached the destination for %v with %s still on the source: reconnecting the stream as soon as the destination answers (the VM runs on the destination and waits for every page it lacks)",
		stalled.Round(time.Second), left))
}

// reconnect asks for a recovery attempt when one is due; the first of a
// stall or pause is logged, later ones only noted.
func (c *Controller) reconnect(o Observation, words string) Decision {
	if o.Elapsed < c.recoverDue {
		return Decision{}
	}
	c.recoverTries++
	c.recoverDue = o.Elapsed + RecoverRetry
	if c.recoverTries > 1 {
		c.note = words
		return Decision{RecoverPostcopy: true}
	}
	return Decision{RecoverPostcopy: true, Reason: words}
}

// lostReason explains a migration that ended paused in post-copy.
func (c *Controller) lostReason(o Observation) string {
	left := "part of its memory"
	if c.lastRAM != nil {
		left = fmtBytes(float64(max(c.lastRAM.Remaining, 0))) + " of its memory"
	}
	return fmt.Sprintf("%s while the post-copy stream was paused (%s), so it is not recovered: the VM cannot run on the source again, which it left %v before, "+
		"and without %s, still on the source, it cannot go on on the destination: it is lost",
		c.giveUp, orWords(c.pausedBecause, "the stream broke"), (o.Elapsed - c.postcopyAt).Round(time.Second), left)
}

// orWords is s, or words when s is empty.
func orWords(s, words string) string {
	if s == "" {
		return words
	}
	return s
}

// failedReason explains a failed migration.
func (c *Controller) failedReason(o Observation) string {
	s := c.qemuFailure(o)
	if c.postcopy {
		s += "; it had switched to post-copy, so the VM cannot run on the source again"
	}
	return s
}

// qemuFailure says what QEMU reported about a failed migration.
func (c *Controller) qemuFailure(o Observation) string {
	desc := o.Info.ErrorDesc
	switch {
	case desc == "":
		return "QEMU reported that the migration failed without saying why"
	case strings.Contains(desc, "Sibling indicated error"):
		// The destination's failure as relayed over the return path.
		return "QEMU reported that the migration failed: the destination QEMU could not load the migration stream " +
			"(its log and query-migrate say why; the source said: " + desc + ")"
	}
	return "QEMU reported that the migration failed: " + desc
}

// cancelledReason explains a cancelled migration.
func (c *Controller) cancelledReason() string {
	if c.cancelReason != "" {
		return c.cancelReason
	}
	return "the migration was cancelled from outside Godwit's controller (migrate_cancel by another QMP client)"
}

// progress builds the progress report for an observation.
func (c *Controller) progress(o Observation) Progress {
	p := Progress{
		Phase:           c.phase,
		Pass:            c.pass,
		TransferRate:    c.rate,
		DirtyRate:       c.dirtyRate(),
		ThrottlePercent: c.throttleSeen,
		Elapsed:         o.Elapsed,
		Note:            c.note,
	}
	if ram := c.lastRAM; ram != nil {
		p.TransferredBytes = uint64(max(ram.Transferred, 0))
		p.RemainingBytes = uint64(max(ram.Remaining, 0))
		p.TotalBytes = uint64(max(ram.Total, 0))
		p.PercentSent = percentSent(ram)
	}
	if c.phase == PhaseCompleted {
		p.PercentSent = 100
		p.RemainingBytes = 0
	}
	if d := o.Info.ExpectedDowntime; d != nil && *d > 0 {
		p.ExpectedDowntime = time.Duration(*d) * time.Millisecond
	}
	return p
}

// Result summarises the migration as of the latest observation; once the
// phase is final it is the migration's outcome.
func (c *Controller) Result() Result {
	o := c.last
	r := Result{
		Status:      c.phase,
		Total:       o.Elapsed,
		Passes:      c.pass,
		MaxThrottle: c.maxThrottle,
		Policy:      c.policy.Name,
		Postcopy:    c.postcopy,

		PostcopyRecoveries: c.recoveries,
	}
	if t := o.Info.TotalTime; t != nil && *t > 0 {
		r.Total = time.Duration(*t) * time.Millisecond
	}
	if d := o.Info.Downtime; d != nil {
		r.Downtime = time.Duration(*d) * time.Millisecond
	}
	if s := o.Info.SetupTime; s != nil {
		r.SetupTime = time.Duration(*s) * time.Millisecond
	}
	if ram := c.lastRAM; ram != nil {
		r.Bytes = uint64(max(ram.Transferred, 0))
		r.Passes = max(r.Passes, int(ram.DirtySyncCount))
	}
	switch {
	case c.lost:
		r.Status, r.Reason = PhaseFailed, c.lostReason(o)
	case c.phase == PhaseFailed:
		r.Reason = c.failedReason(o)
	case c.phase == PhaseCancelled, c.phase == PhaseCancelling:
		r.Reason = c.cancelledReason()
	}
	return r
}

// percentSent is the share of RAM not waiting to be sent, 0 to 100.
func percentSent(ram *qmp.MigrationRAMStats) float64 {
	if ram.Total <= 0 {
		return 0
	}
	p := 100 * float64(ram.Total-ram.Remaining) / float64(ram.Total)
	return min(max(p, 0), 100)
}

// roundUpMs rounds d up to whole milliseconds (QEMU's unit), at least 1 ms.
func roundUpMs(d time.Duration) time.Duration {
	ms := (d + time.Millisecond - 1) / time.Millisecond
	return max(ms, 1) * time.Millisecond
}

// bandwidthWords describes a policy bandwidth.
func bandwidthWords(b int64) string {
	if b <= 0 {
		return "no bandwidth limit"
	}
	return fmt.Sprintf("bandwidth limit %s/s", fmtBytes(float64(b)))
}

// fmtBytes formats a byte count with decimal units ("1.2 GB", "800 MB").
func fmtBytes(b float64) string {
	switch a := math.Abs(b); {
	case a >= 1e9:
		return fmt.Sprintf("%.1f GB", b/1e9)
	case a >= 1e6:
		return fmt.Sprintf("%.1f MB", b/1e6)
	case a >= 1e3:
		return fmt.Sprintf("%.0f kB", b/1e3)
	}
	return fmt.Sprintf("%.0f B", b)
}

// ptr returns a pointer to v.
func ptr[T any](v T) *T { return &v }
