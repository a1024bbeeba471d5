package migration

import (
	"time"

	"github.com/godwit/godwit/internal/qmp"
)

// simQEMU is a model of QEMU's pre-copy on the source, good enough to feed the
// controller synthetic but realistic observation sequences: a guest that keeps
// rewriting a working set at a speed its vCPU throttle scales down, a link of
// fixed rate, dirty syncs whenever the pending RAM falls below link rate ×
// downtime limit (dirtied pages that are still pending counting once),
// switch-over when the pending RAM is still below after the sync, and
// QEMU's auto-converge rules (a throttle change only at a sync at least a
// second after the previous check, when the guest dirtied more than the
// trigger threshold of what was sent, the second time in a row).
type simQEMU struct {
	// The guest and the link.
	total      float64 // RAM, bytes
	link       float64 // bytes/s
	dirtyMax   float64 // the guest's dirty speed unthrottled, bytes/s
	workingSet float64 // bytes the guest keeps rewriting

	// Parameters and capabilities.
	limit                                 time.Duration
	autoConverge                          bool
	thrInitial, thrMax, thrInc, threshold int

	now         time.Duration
	status      string
	transferred float64
	remaining   float64 // dirty, not yet sent
	dirtied     float64 // dirtied since the last sync
	sync        int
	throttle    int
	downtime    time.Duration

	periodStart              time.Duration
	periodSent, periodDirty  float64
	highCount, qemuDirtyRate int64
	cancelAt                 time.Duration
}

const simSetup = 20 * time.Millisecond

func newSim(totalMiB int, link, dirtyMax, workingSet float64) *simQEMU {
	t := float64(totalMiB) * (1 << 20)
	return &simQEMU{total: t, link: link, dirtyMax: dirtyMax, workingSet: workingSet,
		limit: 300 * time.Millisecond, thrInitial: 20, thrMax: 99, thrInc: 10, threshold: 50,
		status: qmp.MigrationSetup, remaining: t}
}

// setParams applies migrate-set-parameters.
func (s *simQEMU) setParams(p qmp.MigrationParameters) {
	if p.DowntimeLimit != nil {
		s.limit = time.Duration(*p.DowntimeLimit) * time.Millisecond
	}
	if p.MaxBandwidth != nil && float64(*p.MaxBandwidth) < s.link {
		s.link = float64(*p.MaxBandwidth)
	}
	if p.CPUThrottleInitial != nil {
		s.thrInitial = int(*p.CPUThrottleInitial)
	}
	if p.MaxCPUThrottle != nil {
		s.thrMax = int(*p.MaxCPUThrottle)
	}
	if p.CPUThrottleIncrement != nil {
		s.thrInc = int(*p.CPUThrottleIncrement)
	}
	if p.ThrottleTriggerThreshold != nil {
		s.threshold = int(*p.ThrottleTriggerThreshold)
	}
}

// cancel is migrate_cancel: "cancelling" now, "cancelled" a little later,
// the throttle stops.
func (s *simQEMU) cancel() {
	if s.status == qmp.MigrationActive || s.status == qmp.MigrationSetup {
		s.status = qmp.MigrationCancelling
		s.cancelAt = s.now
	}
}

// run advances the model by d in 1 ms steps.
func (s *simQEMU) run(d time.Duration) {
	for end := s.now + d; s.now < end; {
		s.step(time.Millisecond)
	}
}

func (s *simQEMU) step(dt time.Duration) {
	s.now += dt
	switch s.status {
	case qmp.MigrationSetup:
		if s.now >= simSetup {
			s.status = qmp.MigrationActive
			s.sync = 1
			s.periodStart = s.now
		}
		return
	case qmp.MigrationCancelling:
		if s.now-s.cancelAt >= 10*time.Millisecond {
			s.status = qmp.MigrationCancelled
			s.throttle = 0
		}
		return
	case qmp.MigrationActive:
	default:
		return
	}
	sec := dt.Seconds()
	rate := s.dirtyMax * (1 - float64(s.throttle)/100)
	s.dirtied = min(s.dirtied+rate*sec, s.workingSet)
	send := min(s.link*sec, s.remaining)
	s.transferred += send
	s.remaining -= send
	s.periodSent += send

	threshold := s.link * s.limit.Seconds()
	if s.remaining > threshold {
		return
	}
	s.dirtySync()
	if s.remaining <= threshold {
		// Switch-over: the rest goes while the guest is paused.
		s.downtime = time.Duration(s.remaining/s.link*float64(time.Second)) + 2*time.Millisecond
		s.transferred += s.remaining
		s.remaining = 0
		s.sync++
		s.status = qmp.MigrationCompleted
		s.throttle = 0
	}
}

func (s *simQEMU) dirtySync() {
	// Pages dirtied that are still pending count once: in the first pass the
	// pending pages are spread over all RAM, later they are working-set pages.
	overlap := s.remaining / s.total
	if s.sync > 1 {
		overlap = min(s.remaining/s.workingSet, 1)
	}
	s.remaining = min(s.remaining+s.dirtied*(1-overlap), s.total)
	s.periodDirty += s.dirtied
	s.dirtied = 0
	s.sync++
	if s.now-s.periodStart < time.Second {
		return
	}
	s.qemuDirtyRate = int64(s.periodDirty / (s.now - s.periodStart).Seconds() / 4096)
	if s.autoConverge && s.periodDirty > s.periodSent*float64(s.threshold)/100 {
		s.highCount++
		if s.highCount >= 2 {
			s.highCount = 0
			if s.throttle == 0 {
				s.throttle = s.thrInitial
			} else {
				s.throttle = min(s.throttle+s.thrInc, s.thrMax)
			}
		}
	}
	s.periodStart, s.periodSent, s.periodDirty = s.now, 0, 0
}

// info is query-migrate.
func (s *simQEMU) info(started time.Duration) qmp.MigrationInfo {
	info := qmp.MigrationInfo{Status: s.status}
	total := (s.now - started).Milliseconds()
	info.TotalTime = &total
	if s.status == qmp.MigrationSetup || s.status == qmp.MigrationCancelled {
		return info
	}
	info.RAM = &qmp.MigrationRAMStats{
		Transferred:    int64(s.transferred),
		Remaining:      int64(s.remaining),
		Total:          int64(s.total),
		DirtySyncCount: int64(s.sync),
		PageSize:       4096,
		DirtyPagesRate: s.qemuDirtyRate,
	}
	setup := simSetup.Milliseconds()
	info.SetupTime = &setup
	if s.autoConverge {
		t := int64(s.throttle)
		info.CPUThrottlePercentage = &t
	}
	if s.status == qmp.MigrationCompleted {
		d := s.downtime.Milliseconds()
		info.Downtime = &d
	} else {
		e := int64(s.remaining / s.link * 1000)
		info.ExpectedDowntime = &e
	}
	return info
}

// simRun is the outcome of driving a controller against a simQEMU.
type simRun struct {
	result    Result
	decisions []simDecision
	progress  []Progress
}

type simDecision struct {
	at time.Duration
	Decision
}

// throttles returns the throttle steps decided, in order.
func (r simRun) throttles() []int {
	var t []int
	for _, d := range r.decisions {
		if d.Throttle != nil {
			t = append(t, *d.Throttle)
		}
	}
	return t
}

// downtimes returns the downtime limits decided, in order.
func (r simRun) downtimes() []time.Duration {
	var t []time.Duration
	for _, d := range r.decisions {
		if d.DowntimeLimit != nil {
			t = append(t, *d.DowntimeLimit)
		}
	}
	return t
}

// simulate runs one migration of s under policy p the way Run does: the
// policy's capabilities and parameters first, then one observation every
// 50 ms with the controller's decisions applied, until the migration ends, the
// controller switches to post-copy, or limit passes.
func simulate(p Policy, s *simQEMU, limit time.Duration) simRun {
	s.autoConverge = SourceCapabilities(p)[qmp.CapAutoConverge]
	s.setParams(SourceParameters(p))
	c := NewController(p)
	var r simRun
	start := s.now
	for s.now-start <= limit {
		dec, prog := c.Observe(Observation{Elapsed: s.now - start, Info: s.info(start)})
		r.progress = append(r.progress, prog)
		if c.Phase().Final() {
			break
		}
		if dec.Reason != "" || dec.Changes() {
			r.decisions = append(r.decisions, simDecision{at: s.now - start, Decision: dec})
		}
		if dec.StartPostcopy {
			break // the model has no post-copy
		}
		if dec.Cancel {
			c.NoteCancel(dec.Reason)
			s.cancel()
		} else if mp, ok := DecisionParameters(dec); ok {
			s.setParams(mp)
		}
		s.run(DefaultPollInterval)
	}
	r.result = c.Result()
	return r
}
