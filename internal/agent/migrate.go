package agent

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/godwit/godwit/internal/admission"
	"github.com/godwit/godwit/internal/api"
	"github.com/godwit/godwit/internal/metrics"
	"github.com/godwit/godwit/internal/migration"
	"github.com/godwit/godwit/internal/pki"
	"github.com/godwit/godwit/internal/placement"
	"github.com/godwit/godwit/internal/qemu"
	"github.com/godwit/godwit/internal/qmp"
	"github.com/godwit/godwit/internal/ticket"
)

// outgoing is a migration this host runs as the source. Its record stays in memory after
// it ends so the center can read the outcome.
type outgoing struct {
	mu     sync.Mutex
	m      api.Migration
	cancel context.CancelFunc
	// why says who cancelled, when a person did.
	why string
	// bandwidthCap is the cap on the stream the center set, in bytes/s (0: none); the
	// migration's driver reads it at every poll (migration.Options.BandwidthCap).
	bandwidthCap atomic.Int64
	// hub hears of every change of m, for the progress streams (nil: a record read
	// back from disk, which no longer changes).
	hub *progressHub
}

func (o *outgoing) snapshot() api.Migration {
	o.mu.Lock()
	defer o.mu.Unlock()
	return o.m
}

func (o *outgoing) update(f func(m *api.Migration)) {
	o.mu.Lock()
	f(&o.m)
	id := o.m.ID
	o.mu.Unlock()
	if o.hub != nil {
		o.hub.changed(id)
	}
}

// outgoingRecord is kept in vm.json while a migration runs, so that a restarted source
// agent can settle it.
type outgoingRecord struct {
	ID             string    `json:"id"`
	Destination    string    `json:"destination"`
	DestinationURL string    `json:"destination_url"`
	Policy         string    `json:"policy"`
	Priority       string    `json:"priority,omitempty"`
	Started        time.Time `json:"started"`
	// Ticket is the center's ticket, which the destination asks for at every step.
	Ticket string `json:"ticket"`
	// Postcopy: the migration may switch to post-copy; DestinationAddr is where the
	// destination listens again to recover a broken post-copy stream.
	Postcopy        bool   `json:"postcopy,omitempty"`
	DestinationAddr string `json:"destination_addr,omitempty"`
	// Carried: the agents carry the stream, encrypted (carry.go); a recovered
	// post-copy stream is carried again.
	Carried bool `json:"carried,omitempty"`
	// Prediction is the center's, kept with the outcome.
	Prediction *api.Prediction `json:"prediction,omitempty"`
}

func progressOf(p migration.Progress) api.MigrationProgress {
	return api.MigrationProgress{
		Phase: string(p.Phase), Pass: p.Pass, PercentSent: p.PercentSent,
		TransferredBytes: p.TransferredBytes, RemainingBytes: p.RemainingBytes, TotalBytes: p.TotalBytes,
		TransferRate: p.TransferRate, DirtyRate: p.DirtyRate,
		ExpectedDowntimeMS: ms(p.ExpectedDowntime), ThrottlePercent: p.ThrottlePercent,
		ElapsedMS: ms(p.Elapsed), Note: p.Note,
	}
}

func ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }

// Migration returns a migration this host ran or runs as the source.
func (a *Agent) Migration(id string) (api.Migration, error) {
	a.migMu.Lock()
	o, ok := a.migrations[id]
	a.migMu.Unlock()
	if !ok {
		return api.Migration{}, api.NotFound("host %s has no record of migration %s", a.cfg.Name, id)
	}
	return o.snapshot(), nil
}

// SetMigrationBandwidth changes the cap on a running migration's stream (its share of
// the network, which the center decides): the migration's driver puts it in force at its
// next poll, within the policy's own bandwidth. 404 for a migration this host has no
// record of, 409 for one that has ended, 422 for a negative cap.
func (a *Agent) SetMigrationBandwidth(id string, req api.BandwidthRequest) (api.Migration, error) {
	if req.MaxBandwidth < 0 {
		return api.Migration{}, api.Errorf(422, "invalid_bandwidth",
			"max_bandwidth %d is negative: give the cap in bytes per second, or 0 for none beyond the policy's", req.MaxBandwidth)
	}
	a.migMu.Lock()
	o, ok := a.migrations[id]
	a.migMu.Unlock()
	if !ok {
		return api.Migration{}, api.NotFound("host %s has no record of migration %s", a.cfg.Name, id)
	}
	o.mu.Lock()
	if st := o.m.State; st == api.MigrationSucceeded || st == api.MigrationFailed || st == api.MigrationCancelled {
		o.mu.Unlock()
		return api.Migration{}, api.Conflict("migration %s has ended (%s); its bandwidth can no longer change", id, st)
	}
	old := o.m.BandwidthCap
	o.m.BandwidthCap = req.MaxBandwidth
	o.bandwidthCap.Store(req.MaxBandwidth)
	m := o.m
	o.mu.Unlock()
	a.progress.changed(id)
	if old != req.MaxBandwidth {
		a.log.Info("migration bandwidth cap changed", "migration", id, "vm", m.VM, "from", old, "to", req.MaxBandwidth)
	}
	return m, nil
}

// CancelMigration cancels a running migration; the VM stays on this host. A migration
// in post-copy cannot be cancelled: the VM runs on the destination already. It goes on
// while its stream flows, but a broken stream is no longer recovered, and the VM is then
// lost; its record's note says so.
func (a *Agent) CancelMigration(id string) (api.Migration, error) {
	a.migMu.Lock()
	o, ok := a.migrations[id]
	a.migMu.Unlock()
	if !ok {
		return api.Migration{}, api.NotFound("host %s has no record of migration %s", a.cfg.Name, id)
	}
	o.mu.Lock()
	if o.why == "" {
		o.why = "cancelled on request"
	}
	o.mu.Unlock()
	o.cancel()
	return o.snapshot(), nil
}

// StartMigration begins moving a running VM to another host. It returns at once; the
// migration runs in the background, owned by the agent.
func (a *Agent) StartMigration(name string, req api.AgentMigrateRequest) (api.Migration, error) {
	v, err := a.get(name)
	if err != nil {
		return api.Migration{}, err
	}
	policy, err := migration.LookupPolicy(req.Policy)
	if err != nil {
		return api.Migration{}, api.Errorf(422, "invalid_policy", "%v", err)
	}
	policy.AllowPostcopy = policy.AllowPostcopy || req.Postcopy
	encryption := policy.EncryptionMode()
	if req.Encryption != "" {
		if encryption, err = migration.ParseEncryption(req.Encryption); err != nil {
			return api.Migration{}, api.Errorf(422, "invalid_encryption", "%v", err)
		}
	}
	req.Encryption = encryption
	priority, err := parsePriority(req.Priority)
	if err != nil {
		return api.Migration{}, err
	}
	req.Priority = string(priority)
	if req.MaxBandwidth < 0 {
		return api.Migration{}, api.Errorf(422, "invalid_bandwidth",
			"max_bandwidth %d is negative: give the cap in bytes per second, or 0 for none beyond the policy's", req.MaxBandwidth)
	}
	if req.ID == "" || req.DestinationURL == "" || req.Destination == "" || req.DestinationAddr == "" {
		return api.Migration{}, api.BadRequest("a migration needs an id, a destination, its agent URL and its address")
	}
	if req.Destination == a.cfg.Name {
		return api.Migration{}, api.Errorf(422, "same_host", "VM %s already runs on %s; choose another destination", name, a.cfg.Name)
	}
	a.mu.Lock()
	state, busy := v.state, v.outgoing != nil
	a.mu.Unlock()
	if state != api.VMRunning {
		return api.Migration{}, api.Conflict("VM %s is %s; only a running VM can be live-migrated", name, state)
	}
	if busy {
		return api.Migration{}, api.Conflict("VM %s is already being migrated", name)
	}
	tk, err := a.checkOwnTicket(name, req)
	if err != nil {
		return api.Migration{}, api.Errorf(422, "invalid_ticket", "%v", err)
	}
	a.migMu.Lock()
	if _, dup := a.migrations[req.ID]; dup {
		a.migMu.Unlock()
		return api.Migration{}, api.Conflict("migration %s exists already", req.ID)
	}
	ctx, cancel := context.WithCancel(a.runCtx)
	o := &outgoing{cancel: cancel, hub: &a.progress, m: api.Migration{
		ID: req.ID, VM: name, Source: a.cfg.Name, Destination: req.Destination, Policy: policy.Name,
		State: api.MigrationPreparing, Started: time.Now().UTC(), Encryption: encryption,
		Priority: req.Priority, BandwidthCap: req.MaxBandwidth, PostcopyAllowed: policy.AllowPostcopy, Prediction: req.Prediction,
	}}
	o.bandwidthCap.Store(req.MaxBandwidth)
	a.migrations[req.ID] = o
	a.migMu.Unlock()
	a.progress.changed(req.ID)

	a.wg.Add(1)
	go func() {
		defer a.wg.Done()
		defer cancel()
		a.runOutgoing(ctx, v, o, req, policy, tk)
	}()
	return o.snapshot(), nil
}

// destination returns a client for a migration's destination host that presents the
// migration's ticket with every request.
func (a *Agent) destination(name, url, tk string) (*api.Client, error) {
	c, err := a.peer(name, url, 2*time.Minute)
	if err != nil {
		return nil, err
	}
	return c.WithHeader(ticket.Header, tk), nil
}

// checkOwnTicket checks the ticket the center sent with a migration this host is to run
// as the source: the CA signed it, for this migration, VM and pair of hosts. The
// destination checks it again; a bad one fails here, before anything moves.
func (a *Agent) checkOwnTicket(name string, req api.AgentMigrateRequest) (ticket.Ticket, error) {
	t, err := ticket.Parse(req.Ticket, a.id.Load().CA.PublicKey)
	if err != nil {
		return t, fmt.Errorf("the center's ticket for migration %s: %w", req.ID, err)
	}
	if err := t.Check(req.Destination, a.cfg.Name, false); err != nil {
		return t, err
	}
	if t.Migration != req.ID || t.VM != name {
		return t, fmt.Errorf("the ticket is for migration %s of VM %s, not %s of %s", t.Migration, t.VM, req.ID, name)
	}
	if _, err := t.StreamKey(); err != nil {
		return t, err
	}
	return t, nil
}

// runOutgoing prepares the destination, runs the migration and settles the outcome:
// either the destination runs the VM and this host lets it go, or the destination is
// torn down and the VM keeps running here.
func (a *Agent) runOutgoing(ctx context.Context, v *vm, o *outgoing, req api.AgentMigrateRequest, policy migration.Policy, tk ticket.Ticket) {
	v.op.Lock()
	defer v.op.Unlock()
	log := a.log.With("vm", v.spec.Name, "migration", req.ID, "to", req.Destination)
	start := time.Now()
	fail := func(state, reason string) {
		o.update(func(m *api.Migration) {
			now := time.Now().UTC()
			m.State, m.Error, m.Finished = state, reason, &now
			m.TotalMS = ms(time.Since(start))
		})
		a.keepRecord(o)
		log.Warn("migration did not complete; the VM stays here", "state", state, "reason", reason)
	}

	a.mu.Lock()
	p := v.proc
	if p == nil || v.state != api.VMRunning {
		a.mu.Unlock()
		fail(api.MigrationFailed, fmt.Sprintf("VM %s stopped before the migration began", v.spec.Name))
		return
	}
	v.outgoing = &outgoingRecord{ID: req.ID, Destination: req.Destination, DestinationURL: req.DestinationURL,
		Policy: policy.Name, Priority: req.Priority, Started: o.snapshot().Started, Ticket: req.Ticket,
		Postcopy: policy.AllowPostcopy, DestinationAddr: req.DestinationAddr, Prediction: req.Prediction}
	a.mu.Unlock()
	_ = v.save()
	defer func() {
		a.mu.Lock()
		v.outgoing = nil
		a.mu.Unlock()
		if _, err := os.Stat(v.dir); err == nil {
			_ = v.save()
		}
		go a.kick()
	}()

	dest, err := a.destination(req.Destination, req.DestinationURL, req.Ticket)
	if err != nil {
		fail(api.MigrationFailed, err.Error())
		return
	}
	var owned []int
	for i, d := range v.spec.Disks {
		if p, err := a.datastorePath(d.Datastore, d.Path); err == nil && slices.Contains(v.owned, p) {
			owned = append(owned, i)
		}
	}
	a.mu.Lock()
	memory := v.memory
	a.mu.Unlock()
	ireq := api.IncomingRequest{ID: req.ID, Source: a.cfg.Name, SourceURL: a.cfg.Advertise, Spec: v.spec, OwnedDisks: owned,
		QEMUVersion: a.qemuVer, Policy: policy.Name, Address: req.DestinationAddr, Encryption: req.Encryption, Postcopy: policy.AllowPostcopy, Memory: memory}
	var rep api.IncomingReply
	if err := dest.Do(ctx, http.MethodPost, "/agent/v1/incoming", ireq, &rep); err != nil {
		if ctx.Err() != nil {
			fail(api.MigrationCancelled, a.cancelReason(o, "while the destination was being prepared"))
		} else {
			fail(api.MigrationFailed, fmt.Sprintf("destination %s refused the VM: %v", req.Destination, err))
		}
		a.abortDestination(dest, v.spec.Name, req.ID, log)
		return
	}
	mon, err := p.Monitor(ctx)
	if err != nil {
		fail(api.MigrationFailed, fmt.Sprintf("cannot reach the VM's QEMU on this host: %v", err))
		a.abortDestination(dest, v.spec.Name, req.ID, log)
		return
	}
	key, _ := tk.StreamKey() // checked when the migration was accepted
	if !rep.TLS && req.Encryption == migration.EncryptionRequired {
		fail(api.MigrationFailed, fmt.Sprintf("the migration must be encrypted, but destination %s cannot take an encrypted stream: %s", req.Destination, rep.TLSNote))
		a.abortDestination(dest, v.spec.Name, req.ID, log)
		return
	}
	uri := rep.URI
	var stream *outStream
	if rep.TLS {
		if stream, err = a.carryOut(req.Destination, req.DestinationURL, v.spec.Name, req.ID, req.Ticket, log); err != nil {
			fail(api.MigrationFailed, err.Error())
			a.abortDestination(dest, v.spec.Name, req.ID, log)
			return
		}
		defer stream.close()
		uri = stream.uri()
		a.mu.Lock()
		v.outgoing.Carried = true
		a.mu.Unlock()
		_ = v.save()
	}
	o.update(func(m *api.Migration) { m.State, m.Encrypted = api.MigrationRunning, rep.TLS })
	log.Info("migration started", "uri", uri, "policy", policy.Name, "encrypted", rep.TLS)
	frames := a.carryFrames(v, p, req.ID, req.DestinationAddr, rep.FramePort, key, log)
	stoppedAt := a.lastEvent(ctx, mon, "STOP", frames.stopped)
	stopRenice := a.reniceMigration(ctx, mon, p.PID, admission.Priority(req.Priority), o, log)
	res, runErr := migration.Run(ctx, mon, migration.Options{
		Policy: policy, URI: uri,
		BandwidthCap: o.bandwidthCap.Load,
		Recover:      a.recoverer(dest, v.spec.Name, req.ID, req.DestinationAddr, stream),
		OnProgress: func(pr migration.Progress) {
			o.update(func(m *api.Migration) {
				m.Progress = progressOf(pr)
				if m.Progress.Note == "" && rep.TLSNote != "" {
					m.Progress.Note = rep.TLSNote
				}
			})
		},
	})
	stopRenice()
	o.update(func(m *api.Migration) {
		m.DowntimeMS, m.Bytes, m.Passes = ms(res.Downtime), res.Bytes, res.Passes
		m.Postcopy, m.PostcopyRecoveries = res.Postcopy, res.PostcopyRecoveries
	})
	if res.Postcopy && (runErr != nil || res.Status != migration.PhaseCompleted) {
		stoppedAt()
		why := a.lostInPostcopy(v, p, req.ID, req.Destination, res, runErr, log)
		o.update(func(m *api.Migration) {
			now := time.Now().UTC()
			m.State, m.Error, m.Finished = api.MigrationFailed, why, &now
			m.TotalMS = ms(time.Since(start))
		})
		a.keepRecord(o)
		a.abortLostCopy(dest, v.spec.Name, req.ID, log)
		return
	}
	if runErr != nil || res.Status != migration.PhaseCompleted {
		stoppedAt()
		frames.giveBack()
		a.resumeHere(context.WithoutCancel(ctx), p, log)
		reason := res.Reason
		if reason == "" && runErr != nil {
			reason = runErr.Error()
		}
		if stream != nil && stream.err() != nil {
			// QEMU saw only its socket close; say why.
			reason = fmt.Sprintf("the encrypted stream to %s failed: %v", req.Destination, stream.err())
		}
		state := api.MigrationFailed
		switch {
		case ctx.Err() != nil:
			// Cancelled on request or because this agent stops, even if QEMU saw the
			// cancel first as a broken stream and called it a failure.
			state, reason = api.MigrationCancelled, a.cancelReason(o, "during the copy")
		case res.Status == migration.PhaseCancelled:
			state = api.MigrationCancelled
		}
		fail(state, reason)
		a.abortDestination(dest, v.spec.Name, req.ID, log)
		return
	}

	// The destination runs the VM now (QEMU resumes it there on completion); this QEMU is
	// paused in postmigrate and must never run again.
	fin := a.finishDestination(context.WithoutCancel(ctx), dest, v.spec.Name, req.ID, log)
	// Read before release removes the run directory with QEMU's log.
	srcTrace, err := qemu.ReadSwitchover(qemu.Spec{RunDir: p.RunDir}.LogPath(), start)
	if err != nil {
		log.Warn("cannot read the source QEMU's switch-over checkpoints", "err", err)
	}
	a.release(v, p, frames)
	stop := stoppedAt()
	o.update(func(m *api.Migration) {
		now := time.Now().UTC()
		m.State, m.Finished, m.TotalMS = api.MigrationSucceeded, &now, ms(time.Since(start))
		if !stop.IsZero() && fin.ResumedAt.After(stop) {
			m.PauseMS = ms(fin.ResumedAt.Sub(stop))
		}
		m.Pause = pauseBreakdown(srcTrace, fin.Switchover)
		m.Progress.Phase = string(migration.PhaseCompleted)
		m.Progress.PercentSent = 100
	})
	a.keepRecord(o)
	log.Info("migration completed", "total", time.Since(start).Round(time.Millisecond), "downtime", res.Downtime, "bytes", res.Bytes, "passes", res.Passes)
}

// release lets go of a VM that now runs elsewhere: its QEMU ends, its TAPs and state go;
// its disks stay (they belong to the VM, which lives on). The TAPs go once frames is
// done carrying what still reaches them.
func (a *Agent) release(v *vm, p *qemu.Process, frames *frameSender) {
	a.mu.Lock()
	v.proc, v.state, v.stopping = nil, api.VMStopped, true
	a.mu.Unlock()
	if err := p.Kill(); err != nil {
		a.log.Error("could not end the source QEMU after the migration", "vm", v.spec.Name, "pid", p.PID, "err", err)
	}
	_ = p.Close()
	if frames != nil {
		frames.linger(func() { a.deleteTaps(v) })
	} else {
		a.deleteTaps(v)
	}
	_ = v.removeDir()
	a.mu.Lock()
	if a.vms[v.spec.Name] == v {
		delete(a.vms, v.spec.Name)
	}
	a.mu.Unlock()
}

// resumeHere makes sure the VM runs on this host after a failed or cancelled migration
// — never after one that switched to post-copy: the VM ran on the destination since,
// and resuming it here would run it twice.
func (a *Agent) resumeHere(ctx context.Context, p *qemu.Process, log interface{ Warn(string, ...any) }) {
	cctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	mon, err := p.Monitor(cctx)
	if err != nil {
		log.Warn("cannot check the VM after the migration stopped", "err", err)
		return
	}
	if inPostcopy(cctx, mon) {
		log.Warn("not resuming the VM here: its migration is in post-copy, so it runs on the destination")
		return
	}
	st, err := mon.QueryStatus(cctx)
	if err == nil && !st.Running && st.Status != "postmigrate" {
		if err := mon.Cont(cctx); err != nil {
			log.Warn("cannot resume the VM after the migration stopped", "status", st.Status, "err", err)
		}
	}
}

// cancelReason says why a migration was cancelled: on request, or because this agent
// is stopping.
func (a *Agent) cancelReason(o *outgoing, when string) string {
	o.mu.Lock()
	why := o.why
	o.mu.Unlock()
	if why == "" {
		why = fmt.Sprintf("the agent on %s stopped", a.cfg.Name)
	}
	return fmt.Sprintf("%s %s; the VM stays on %s", why, when, a.cfg.Name)
}

// abortDestination has the destination tear down its waiting copy, in the background
// and retrying for a while, so the outcome is known at once. Should the destination stay
// out of reach, it drops the copy by itself (see guardIncoming).
func (a *Agent) abortDestination(dest *api.Client, name, id string, log interface{ Warn(string, ...any) }) {
	a.abortCopy(dest, "/agent/v1/vms/"+name+"/incoming/"+id+"/abort", log)
}

// abortLostCopy has the destination tear down the copy of a migration that ended in
// post-copy without completing, like abortDestination: the copy runs the VM but can
// never get the rest of its memory.
func (a *Agent) abortLostCopy(dest *api.Client, name, id string, log interface{ Warn(string, ...any) }) {
	a.abortCopy(dest, "/agent/v1/vms/"+name+"/incoming/"+id+"/abort?postcopy=lost", log)
}

func (a *Agent) abortCopy(dest *api.Client, path string, log interface{ Warn(string, ...any) }) {
	a.wg.Add(1)
	go func() {
		defer a.wg.Done()
		a.retry(context.WithoutCancel(a.runCtx), func(ctx context.Context) error {
			return dest.Do(ctx, http.MethodPost, path, nil, nil)
		}, func(err error) { log.Warn("destination did not confirm the abort; retrying", "err", err) })
	}()
}

// lostInPostcopy handles a migration that switched to post-copy and did not complete:
// the VM never runs here again (see abandon). It returns the reason for the record.
func (a *Agent) lostInPostcopy(v *vm, p *qemu.Process, id, dest string, res migration.Result, runErr error, log interface{ Warn(string, ...any) }) string {
	reason := res.Reason
	if reason == "" && runErr != nil {
		reason = runErr.Error()
	}
	why := fmt.Sprintf("lost in post-copy during migration %s to %s (%s); its QEMU here was stopped, since the VM ran on %s from the switch: "+
		"start it again from its disks once %s no longer has its copy", id, dest, reason, dest, dest)
	a.abandon(v, p, why)
	log.Warn("migration ended in post-copy without completing: the VM is lost; it stays stopped here", "reason", reason)
	return why
}

// finishDestination has the destination take the VM as its own, and returns its
// answer: when it resumed the VM (zero if it could not say) and what its QEMU traced of
// the switch-over.
func (a *Agent) finishDestination(ctx context.Context, dest *api.Client, name, id string, log interface{ Warn(string, ...any) }) api.FinishReply {
	var rep api.FinishReply
	a.retry(ctx, func(ctx context.Context) error {
		return dest.Do(ctx, http.MethodPost, "/agent/v1/vms/"+name+"/incoming/"+id+"/finish", nil, &rep)
	}, func(err error) { log.Warn("destination did not confirm it runs the VM; retrying", "err", err) })
	return rep
}

// lastEvent reads a monitor's events in the background and returns a function that
// stops reading and gives the time of the last event of that name seen (zero if none).
// It is the single reader of the monitor's events while it runs. on, unless nil, is
// called at each such event, by the reader: it must not wait.
func (a *Agent) lastEvent(ctx context.Context, mon *qmp.Monitor, name string, on func()) func() time.Time {
	ctx, cancel := context.WithCancel(ctx)
	var last time.Time
	done := make(chan struct{})
	go func() {
		defer close(done)
		for {
			select {
			case <-ctx.Done():
				return
			case ev, ok := <-mon.Events():
				if !ok {
					return
				}
				if ev.Name == name {
					last = ev.Timestamp
					if on != nil {
						on()
					}
				}
			}
		}
	}()
	return func() time.Time {
		cancel()
		<-done
		return last
	}
}

// retry calls f until it succeeds, f's error is a 4xx other than a conflict, or two
// minutes have passed.
func (a *Agent) retry(ctx context.Context, f func(context.Context) error, onErr func(error)) {
	ctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
	defer cancel()
	for i := 0; ; i++ {
		cctx, ccancel := context.WithTimeout(ctx, 10*time.Second)
		err := f(cctx)
		ccancel()
		if err == nil {
			return
		}
		var se *api.StatusError
		if errors.As(err, &se) && se.Status >= 400 && se.Status < 500 {
			onErr(err)
			return
		}
		if i == 0 {
			onErr(err)
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(500 * time.Millisecond):
		}
	}
}

// Incoming prepares this host to receive a VM: it checks that the VM can run here,
// creates its TAPs and starts a QEMU that waits for the migration stream.
func (a *Agent) Incoming(ctx context.Context, req api.IncomingRequest, tk string, key []byte) (api.IncomingReply, error) {
	s := req.Spec
	if req.ID == "" {
		return api.IncomingReply{}, api.BadRequest("an incoming migration needs an id")
	}
	if err := a.preflight(ctx, req); err != nil {
		return api.IncomingReply{}, a.preflightRefusal(s.Name, err)
	}
	policy, err := migration.LookupPolicy(req.Policy)
	if err != nil {
		return api.IncomingReply{}, api.Errorf(422, "invalid_policy", "%v", err)
	}
	policy.AllowPostcopy = req.Postcopy
	probe, err := a.waitAccel(ctx)
	if err != nil {
		return api.IncomingReply{}, err
	}
	dir, err := a.vmDir(s.UUID)
	if err != nil {
		return api.IncomingReply{}, err
	}
	a.mu.Lock()
	if old, exists := a.vms[s.Name]; exists {
		stale := old.incoming != "" && old.incoming != req.ID && old.state == api.VMIncoming
		a.mu.Unlock()
		if !stale {
			return api.IncomingReply{}, api.Conflict("host %s already has a VM named %s", a.cfg.Name, s.Name)
		}
		// A copy left waiting by an earlier migration of this VM that ended badly: the
		// source now sends a new one, so the old one can never complete.
		if err := a.AbortIncoming(ctx, s.Name, old.incoming, false); err != nil {
			return api.IncomingReply{}, fmt.Errorf("drop the copy left by an earlier migration of %s: %w", s.Name, err)
		}
		a.mu.Lock()
		if _, exists := a.vms[s.Name]; exists {
			a.mu.Unlock()
			return api.IncomingReply{}, api.Conflict("host %s already has a VM named %s", a.cfg.Name, s.Name)
		}
	}
	if err := a.claimLocked(s, dir); err != nil {
		a.mu.Unlock()
		return api.IncomingReply{}, err
	}
	v := &vm{spec: s, dir: dir, state: api.VMIncoming, incoming: req.ID, ticket: tk, memory: req.Memory}
	for _, i := range req.OwnedDisks {
		if i >= 0 && i < len(s.Disks) {
			if p, err := a.datastorePath(s.Disks[i].Datastore, s.Disks[i].Path); err == nil {
				v.owned = append(v.owned, p)
			}
		}
	}
	a.vms[s.Name] = v
	v.op.Lock()
	a.mu.Unlock()
	defer v.op.Unlock()

	undo := func(p *qemu.Process) {
		a.takeFrames(v).close()
		if p != nil {
			_ = p.Kill()
			_ = p.Close()
		}
		a.deleteTaps(v)
		_ = v.removeDir()
		a.mu.Lock()
		delete(a.vms, s.Name)
		a.mu.Unlock()
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		undo(nil)
		return api.IncomingReply{}, fmt.Errorf("create VM directory: %w", err)
	}
	q, err := a.qemuSpec(v, probe.Accel)
	if err != nil {
		undo(nil)
		return api.IncomingReply{}, err
	}
	q.Incoming = qemu.IncomingDefer
	carried, streamNote, err := incomingEncryption(req, key, a.cfg.Name)
	if err != nil {
		undo(nil)
		return api.IncomingReply{}, err
	}
	if err := a.createTaps(v); err != nil {
		undo(nil)
		return api.IncomingReply{}, err
	}
	p, err := qemu.Start(ctx, a.cfg.QEMU, q)
	if err != nil {
		undo(nil)
		return api.IncomingReply{}, api.Errorf(422, "start_failed", "the destination QEMU did not start: %v", err)
	}
	mon, err := p.Monitor(ctx)
	if err == nil {
		err = migration.PrepareDestination(ctx, mon, policy)
	}
	var uri string
	if err == nil {
		uri, err = a.incomingURI(v, req.Address, carried)
	}
	if err == nil {
		err = mon.MigrateIncoming(ctx, uri, true)
	}
	if err != nil {
		undo(p)
		return api.IncomingReply{}, fmt.Errorf("prepare the destination QEMU: %w", err)
	}
	a.mu.Lock()
	v.proc, v.accel = p, probe.Accel
	a.mu.Unlock()
	framePort := 0
	if len(key) > 0 {
		r, err := a.receiveFrames(v, req.Address, req.ID, key)
		if err != nil {
			undo(p)
			return api.IncomingReply{}, fmt.Errorf("prepare to take the switch-over's frames: %w", err)
		}
		a.mu.Lock()
		v.frames = r
		a.mu.Unlock()
		framePort = r.port()
	}
	if err := v.save(); err != nil {
		undo(p)
		return api.IncomingReply{}, err
	}
	v.resumedAt = a.lastEvent(a.runCtx, mon, "RESUME", v.frames.resumed)
	a.watch(v, p)
	a.guardIncoming(v, p, req.ID, req.Source, req.SourceURL, tk)
	a.log.Info("waiting for incoming VM", "vm", s.Name, "migration", req.ID, "from", req.Source, "uri", uri, "carried", carried)
	rep := api.IncomingReply{TLS: carried, TLSNote: streamNote, FramePort: framePort}
	if !carried {
		rep.URI = uri
	}
	return rep, nil
}

// incomingEncryption decides how an incoming stream travels: carried by the agents over
// mutual TLS (carry.go) when the migration is to be encrypted and came with the
// center's ticket, otherwise straight to QEMU. Required encryption without a ticket is
// refused; opportunistic goes plain then, and the note says why.
func incomingEncryption(req api.IncomingRequest, key []byte, host string) (carried bool, note string, err error) {
	mode, err := migration.ParseEncryption(req.Encryption)
	if err != nil {
		return false, "", api.BadRequest("%v", err)
	}
	switch {
	case mode == migration.EncryptionOff:
		return false, "", nil
	case key != nil:
		return true, "", nil
	case mode == migration.EncryptionRequired:
		return false, "", api.Errorf(422, "encryption_unavailable", "the migration must be encrypted, but it came to host %s without the center's ticket, which the encrypted stream needs", host)
	}
	return false, fmt.Sprintf("not encrypted: the migration came to host %s without the center's ticket, which the encrypted stream needs", host), nil
}

// incomingURI is where an incoming VM's QEMU waits for its stream: a Unix socket in a
// private directory for a carried stream (v.stream), else a free port on addr.
func (a *Agent) incomingURI(v *vm, addr string, carried bool) (string, error) {
	if !carried {
		return listenURI(addr)
	}
	a.mu.Lock()
	dir := v.stream
	a.mu.Unlock()
	if dir == "" {
		var err error
		if dir, err = a.streamDir(); err != nil {
			return "", err
		}
		a.mu.Lock()
		v.stream = dir
		a.mu.Unlock()
	}
	sock := filepath.Join(dir, streamSocket)
	_ = os.Remove(sock) // left by the stream that broke, when the copy listens again
	return "unix:" + sock, nil
}

// listenURI picks a free TCP port on addr for the incoming migration stream.
func listenURI(addr string) (string, error) {
	ln, err := net.Listen("tcp", net.JoinHostPort(addr, "0"))
	if err != nil {
		return "", fmt.Errorf("find a free port on %s for the migration stream: %w", addr, err)
	}
	port := ln.Addr().(*net.TCPAddr).Port
	ln.Close()
	return "tcp:" + net.JoinHostPort(addr, strconv.Itoa(port)), nil
}

// preflightRefusal is the answer to a VM that preflight refused: a 422 that names this
// host and the VM, with the code of the check that failed (a placement finding's code
// such as memory_short, qemu_incompatible, datastore_missing or network_missing;
// cpu_unsupported for a CPU model that needs flags this host lacks, cpu_caps_unknown when
// this host does not know its CPUs) or preflight_failed.
func (a *Agent) preflightRefusal(vm string, err error) error {
	code := "preflight_failed"
	var se *api.StatusError
	if errors.As(err, &se) && se.Code != "" {
		code = se.Code
	}
	return api.Errorf(422, code, "host %s cannot take VM %s: %v", a.cfg.Name, vm, err)
}

// ownChecks are the placement engine's checks a destination makes itself, from its own
// fresh facts, of a VM about to migrate in: memory (the one rule, placement.MemoryFits),
// the QEMU release, and the datastores and networks by name. Connection, health,
// maintenance and the ranking of hosts are the center's.
var ownChecks = mustEngine(placement.NewEngine(placement.CheckerMemory, placement.CheckerQEMU,
	placement.CheckerDatastores, placement.CheckerNetworks))

// mustEngine returns en, or panics on a checker name the placement engine does not know.
func mustEngine(en *placement.Engine, err error) *placement.Engine {
	if err != nil {
		panic(err)
	}
	return en
}

// preflight checks that this host can run the VM: the placement engine's checks on this
// host as it is now (see ownChecks), then what only this host can check: the spec is
// valid here, every disk is visible at the same place, and this host can give the
// guest its CPU model (every CPUID flag the model needs; see checkCPU).
func (a *Agent) preflight(ctx context.Context, req api.IncomingRequest) error {
	s := req.Spec
	if err := s.CheckBounds(); err != nil { // a spec beyond the limits is refused as such first
		return err
	}
	if err := a.placementCheck(req); err != nil {
		return err
	}
	if err := a.validateSpec(s); err != nil {
		return err
	}
	for i, d := range s.Disks {
		p, _ := a.datastorePath(d.Datastore, d.Path)
		if _, err := os.Stat(p); err != nil {
			return fmt.Errorf("disk %d: %s is not visible here; the datastore %s must be shared at the same path", i, p, d.Datastore)
		}
	}
	if err := a.checkCPU(ctx, s.CPUModel); err != nil {
		if !errors.Is(err, qemu.ErrUnknownCPUModel) {
			return err
		}
		// Not one of QEMU's baseline models (e.g. "max"): QEMU must at least know it.
		models, err := qemu.CPUModels(ctx, a.cfg.QEMU)
		if err != nil {
			return err
		}
		if !slices.Contains(models, s.CPUModel) {
			return fmt.Errorf("QEMU here does not provide the VM's CPU model %s", s.CPUModel)
		}
	}
	return nil
}

// placementCheck runs ownChecks on the VM of req against this host; a refusal is a 422
// with the first error's code and every error's sentence.
func (a *Agent) placementCheck(req api.IncomingRequest) error {
	h, err := a.placementHost()
	if err != nil {
		return err
	}
	var msgs []string
	code := ""
	for _, f := range ownChecks.Check(incomingVM(req), h) {
		if f.Blocking() {
			code = cmp.Or(code, f.Code)
			msgs = append(msgs, f.Message)
		}
	}
	if len(msgs) == 0 {
		return nil
	}
	return api.Errorf(http.StatusUnprocessableEntity, code, "%s", strings.Join(msgs, " "))
}

// placementHost describes this host as it is now for the placement engine: its free and
// total memory from /proc/meminfo, its QEMU, accelerator, datastores and networks.
func (a *Agent) placementHost() (placement.Host, error) {
	total, free, err := readMemInfo("/proc/meminfo")
	if err != nil {
		return placement.Host{}, err
	}
	h := placement.Host{Name: a.cfg.Name, Connected: true, Health: placement.HealthOK, MemoryMiB: total, FreeMemoryMiB: free,
		QEMUVersion: a.qemuVer, Datastores: a.datastoreNames()}
	select {
	case <-a.accelReady:
		h.Accel = a.accel.Accel
	default:
	}
	for n := range a.cfg.Networks {
		h.Networks = append(h.Networks, n)
	}
	return h, nil
}

// incomingVM describes the VM of an incoming migration for the placement engine. The
// source's QEMU release is compared when the request names it, as the center and source
// agents always do; without it there is no stream version to compare, and the VM is
// checked like one placed afresh (no source).
func incomingVM(req api.IncomingRequest) placement.VM {
	s := req.Spec
	v := placement.VM{Name: s.Name, MemoryMiB: s.MemoryMiB, CPUs: s.CPUs, CPUModel: s.CPUModel, QEMUVersion: req.QEMUVersion}
	if req.QEMUVersion != "" {
		v.Host = cmp.Or(req.Source, "the source")
	}
	for _, d := range s.Disks {
		v.Datastores = append(v.Datastores, d.Datastore)
	}
	for _, n := range s.NICs {
		v.Networks = append(v.Networks, n.Network)
	}
	return v
}

// FinishIncoming confirms that the VM, migrated in, runs here.
func (a *Agent) FinishIncoming(ctx context.Context, name, id string) (api.FinishReply, error) {
	v, err := a.get(name)
	if err != nil {
		return api.FinishReply{}, err
	}
	v.op.Lock()
	defer v.op.Unlock()
	a.mu.Lock()
	p, inc, state := v.proc, v.incoming, v.state
	a.mu.Unlock()
	if inc == "" && state == api.VMRunning {
		return api.FinishReply{}, nil // already finished
	}
	if inc != id || p == nil {
		return api.FinishReply{}, api.Conflict("VM %s is not waiting for migration %s here", name, id)
	}
	mon, err := p.Monitor(ctx)
	if err != nil {
		return api.FinishReply{}, err
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		st, err := mon.QueryStatus(ctx)
		if err != nil {
			return api.FinishReply{}, fmt.Errorf("check VM %s after the migration: %w", name, err)
		}
		if st.Running {
			break
		}
		if time.Now().After(deadline) {
			return api.FinishReply{}, fmt.Errorf("VM %s is %s here, not running, after the migration", name, st.Status)
		}
		time.Sleep(20 * time.Millisecond)
	}
	var rep api.FinishReply
	if v.resumedAt != nil {
		rep.ResumedAt = v.resumedAt()
		v.resumedAt = nil
	}
	rep.Switchover = switchoverTrace(p)
	a.closeFramesAfter(a.takeFrames(v))
	a.mu.Lock()
	v.incoming, v.state, v.errMsg, v.ticket = "", api.VMRunning, "", ""
	a.mu.Unlock()
	v.dropStream()
	_ = v.save()
	a.metrics.IncomingEnded(metrics.IncomingSucceeded)
	a.log.Info("VM migrated in and running", "vm", name, "migration", id)
	go a.kick()
	return rep, nil
}

// AbortIncoming tears down a VM that was waiting for a migration that will not complete.
// It refuses once the VM runs here: then this host holds the only running copy — or
// might, when its QEMU does not answer (in post-copy it runs the VM while its main loop
// waits for memory). With lostPostcopy the source says the migration ended in post-copy
// without completing: the copy runs the VM but can never get the rest of its memory, and
// goes too.
func (a *Agent) AbortIncoming(ctx context.Context, name, id string, lostPostcopy bool) error {
	v, err := a.get(name)
	var se *api.StatusError
	if errors.As(err, &se) && se.Status == http.StatusNotFound {
		return nil // never created, or already torn down
	}
	if err != nil {
		return err
	}
	v.op.Lock()
	defer v.op.Unlock()
	a.mu.Lock()
	p, inc := v.proc, v.incoming
	a.mu.Unlock()
	if inc != id {
		return api.Conflict("VM %s here is not the copy of migration %s", name, id)
	}
	if p != nil && !lostPostcopy {
		running, err := guestRuns(ctx, p)
		switch {
		case running:
			return api.Conflict("VM %s already runs here after migration %s; it cannot be aborted", name, id)
		case err != nil && p.Alive():
			return api.Conflict("VM %s here does not say whether it runs (%v): in post-copy its QEMU runs it while waiting for memory; not torn down", name, err)
		}
	}
	if p != nil {
		a.mu.Lock()
		v.proc, v.stopping = nil, true // the watcher leaves the teardown to us
		a.mu.Unlock()
		_ = p.Kill()
		_ = p.Close()
	}
	a.forgetIncoming(v)
	a.metrics.IncomingEnded(metrics.IncomingAborted)
	a.log.Info("incoming VM torn down", "vm", name, "migration", id, "lost_in_postcopy", lostPostcopy)
	return nil
}

// dropIncoming forgets a VM copy that never ran here because its migration failed (its
// QEMU ended, or was gone after an agent restart).
func (a *Agent) dropIncoming(v *vm) {
	a.metrics.IncomingEnded(metrics.IncomingFailed)
	a.forgetIncoming(v)
}

// forgetIncoming removes a VM copy that never ran here: its TAPs, state and record.
func (a *Agent) forgetIncoming(v *vm) {
	a.takeFrames(v).close()
	a.deleteTaps(v)
	_ = v.removeDir()
	a.mu.Lock()
	if a.vms[v.spec.Name] == v {
		delete(a.vms, v.spec.Name)
	}
	a.mu.Unlock()
}

// settleIncoming handles an incoming VM found after an agent restart: if its migration
// completed meanwhile, QEMU runs the VM and this host owns it.
func (a *Agent) settleIncoming(ctx context.Context, v *vm, p *qemu.Process) {
	cctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	mon, err := p.Monitor(cctx)
	if err != nil {
		return
	}
	if st, err := mon.QueryStatus(cctx); err == nil && st.Running {
		if inPostcopy(cctx, mon) {
			// It runs here, but its memory is still arriving: the source finishes it.
			a.log.Info("the migration bringing the VM in is in post-copy; the copy waits for its source", "vm", v.spec.Name)
			return
		}
		v.incoming, v.state = "", api.VMRunning
		_ = v.save()
		a.metrics.IncomingEnded(metrics.IncomingSucceeded)
		a.log.Info("the migration bringing the VM in completed while the agent was away; it runs here", "vm", v.spec.Name)
	}
}

// settleOutgoing resolves a migration that was under way when this (source) agent
// stopped. A migration still copying is cancelled: the VM stays here. One that completed
// is finished: the destination runs the VM and this copy goes. Either way the outcome is
// recorded for the center.
func (a *Agent) settleOutgoing(v *vm, p *qemu.Process) {
	rec := *v.outgoing
	// A cancel matters only to a migration found in post-copy, which is followed to its
	// end (and stops being recovered when cancelled).
	followCtx, cancel := context.WithCancel(a.runCtx)
	o := &outgoing{cancel: cancel, hub: &a.progress, m: api.Migration{
		ID: rec.ID, VM: v.spec.Name, Source: a.cfg.Name, Destination: rec.Destination,
		Policy: rec.Policy, Priority: rec.Priority, State: api.MigrationRunning, Started: rec.Started, Prediction: rec.Prediction,
		PostcopyAllowed: rec.Postcopy,
	}}
	a.migMu.Lock()
	a.migrations[rec.ID] = o
	a.migMu.Unlock()
	a.progress.changed(rec.ID)
	a.wg.Add(1)
	go func() {
		defer a.wg.Done()
		defer cancel()
		ctx := a.runCtx
		log := a.log.With("vm", v.spec.Name, "migration", rec.ID)
		v.op.Lock()
		defer v.op.Unlock()
		dest, err := a.destination(rec.Destination, rec.DestinationURL, rec.Ticket)
		if err != nil {
			log.Error("cannot settle the migration", "err", err)
			return
		}
		done := func(state, reason string) {
			o.update(func(m *api.Migration) {
				now := time.Now().UTC()
				m.State, m.Error, m.Finished = state, reason, &now
				if !m.Started.IsZero() {
					m.TotalMS = ms(now.Sub(m.Started))
				}
			})
			a.keepRecord(o)
			a.mu.Lock()
			v.outgoing = nil
			a.mu.Unlock()
			if _, err := os.Stat(v.dir); err == nil {
				_ = v.save()
			}
			go a.kick()
		}
		cctx, cancel := context.WithTimeout(ctx, 30*time.Second)
		defer cancel()
		mon, err := p.Monitor(cctx)
		if err != nil {
			log.Error("cannot reach the VM's QEMU to settle the migration", "err", err)
			return
		}
		info, err := mon.QueryMigrate(cctx)
		if err != nil {
			log.Error("cannot read the migration's state", "err", err)
			return
		}
		if info.Status == "completed" {
			a.finishDestination(ctx, dest, v.spec.Name, rec.ID, log)
			a.release(v, p, nil)
			done(api.MigrationSucceeded, "")
			log.Info("migration had completed while the agent was away; the VM runs on the destination")
			return
		}
		if postcopyStatus(info.Status) {
			// The VM runs on the destination: the migration cannot be cancelled, only
			// finished, its stream recovered when it breaks.
			log.Info("the migration is in post-copy; following it to its end", "status", info.Status)
			policy, err := migration.LookupPolicy(rec.Policy)
			if err != nil {
				policy = migration.QEMUDefaultsPolicy()
			}
			policy.AllowPostcopy = true
			var stream *outStream
			if rec.Carried {
				// The stream this agent carried ended with it: carry the recovered one.
				if stream, err = a.carryOut(rec.Destination, rec.DestinationURL, v.spec.Name, rec.ID, rec.Ticket, log); err != nil {
					log.Error("cannot carry the recovered post-copy stream", "err", err)
				} else {
					defer stream.close()
				}
			}
			res, err := migration.Follow(followCtx, mon, migration.Options{Policy: policy, Logger: log,
				Recover:    a.recoverer(dest, v.spec.Name, rec.ID, rec.DestinationAddr, stream),
				OnProgress: func(pr migration.Progress) { o.update(func(m *api.Migration) { m.Progress = progressOf(pr) }) }})
			o.update(func(m *api.Migration) { m.Postcopy, m.PostcopyRecoveries = true, res.PostcopyRecoveries })
			if err == nil && res.Status == migration.PhaseCompleted {
				a.finishDestination(ctx, dest, v.spec.Name, rec.ID, log)
				a.release(v, p, nil)
				done(api.MigrationSucceeded, "")
				return
			}
			res.Postcopy = true
			done(api.MigrationFailed, a.lostInPostcopy(v, p, rec.ID, rec.Destination, res, err, log))
			a.abortLostCopy(dest, v.spec.Name, rec.ID, log)
			return
		}
		if info.Status != "failed" && info.Status != "cancelled" && info.Status != "none" && info.Status != "" {
			if err := mon.MigrateCancel(cctx); err != nil {
				log.Warn("migrate_cancel", "err", err)
			}
			for cctx.Err() == nil {
				i, err := mon.QueryMigrate(cctx)
				if err != nil || i.Status == "cancelled" || i.Status == "failed" || i.Status == "completed" {
					info = i
					break
				}
				time.Sleep(20 * time.Millisecond)
			}
			if info.Status == "completed" {
				a.finishDestination(ctx, dest, v.spec.Name, rec.ID, log)
				a.release(v, p, nil)
				done(api.MigrationSucceeded, "")
				return
			}
		}
		a.resumeHere(ctx, p, log)
		a.abortDestination(dest, v.spec.Name, rec.ID, log)
		done(api.MigrationCancelled, fmt.Sprintf("the agent on %s restarted during the migration; it was cancelled and the VM stays on %s", a.cfg.Name, a.cfg.Name))
		log.Warn("migration cancelled after an agent restart; the VM stays here")
	}()
}

// incomingPatience is how long a waiting copy survives without its source agent
// confirming that the migration is still under way.
const incomingPatience = 60 * time.Second

// guardIncoming watches a copy waiting for its migration. It asks the source agent about
// the migration every two seconds and drops the copy when the source says the migration
// ended without it, or cannot be reached for incomingPatience while the copy still does
// not run. So no copy is left waiting forever, whatever happened to the source or the
// network between the hosts.
func (a *Agent) guardIncoming(v *vm, p *qemu.Process, id, source, sourceURL, tk string) {
	if sourceURL == "" {
		return
	}
	src, err := a.peer(source, sourceURL, 5*time.Second)
	if err != nil {
		return
	}
	src = src.WithHeader(ticket.Header, tk)
	a.wg.Add(1)
	go func() {
		defer a.wg.Done()
		ctx := a.runCtx
		lastHeard := time.Now()
		refused := false // the copy was not dropped while the source was away
		t := time.NewTicker(2 * time.Second)
		defer t.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-t.C:
			}
			a.mu.Lock()
			waiting := v.incoming == id && v.proc == p
			a.mu.Unlock()
			if !waiting {
				return
			}
			var m api.Migration
			err := src.Do(ctx, http.MethodGet, "/agent/v1/migrations/"+id, nil, &m)
			switch {
			case err == nil && (m.State == api.MigrationFailed || m.State == api.MigrationCancelled):
				a.log.Info("the source ended the migration without this copy; dropping it", "vm", v.spec.Name, "migration", id, "state", m.State, "postcopy", m.Postcopy)
			case err == nil:
				lastHeard = time.Now()
				continue
			case time.Since(lastHeard) < incomingPatience:
				continue
			case refused:
				continue // the copy runs the VM: only the source's word ends it
			default:
				a.log.Warn("the source has not answered about the migration; dropping the waiting copy", "vm", v.spec.Name, "migration", id, "for", incomingPatience, "err", err)
			}
			if err := a.AbortIncoming(ctx, v.spec.Name, id, m.Postcopy); err != nil {
				a.log.Warn("could not drop the waiting copy", "vm", v.spec.Name, "err", err)
				if m.State == "" {
					// The source is away and the copy runs the VM (in post-copy): only
					// the source's word ends it, however long it stays away.
					refused = true
					continue
				}
			}
			return
		}
	}()
}

// keepRecord writes a finished migration to the state directory, so that a restarted
// agent can still tell the center how it ended. Every outgoing migration passes here
// exactly once, when it ends, so its outcome is counted here too.
func (a *Agent) keepRecord(o *outgoing) {
	m := o.snapshot()
	a.metrics.OutgoingEnded(m.State)
	b, err := json.MarshalIndent(m, "", "  ")
	if err == nil {
		err = pki.WriteFileAtomic(filepath.Join(a.cfg.StateDir, "migrations", m.ID+".json"), b, 0o644)
	}
	if err != nil {
		a.log.Warn("could not keep the migration's record", "migration", m.ID, "err", err)
	}
}

// maxKeptRecords bounds how many finished migrations an agent remembers.
const maxKeptRecords = 200

// loadRecords reads the finished migrations kept in the state directory, dropping the
// oldest beyond maxKeptRecords.
func (a *Agent) loadRecords() {
	files, _ := filepath.Glob(filepath.Join(a.cfg.StateDir, "migrations", "*.json"))
	var ms []api.Migration
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			continue
		}
		var m api.Migration
		if json.Unmarshal(b, &m) == nil && m.ID != "" {
			ms = append(ms, m)
		}
	}
	sort.Slice(ms, func(i, j int) bool { return ms[i].Started.After(ms[j].Started) })
	a.migMu.Lock()
	defer a.migMu.Unlock()
	for i, m := range ms {
		if i >= maxKeptRecords {
			_ = os.Remove(filepath.Join(a.cfg.StateDir, "migrations", m.ID+".json"))
			continue
		}
		if _, ok := a.migrations[m.ID]; !ok {
			a.migrations[m.ID] = &outgoing{m: m, cancel: func() {}}
		}
	}
}
