package center

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"time"

	"github.com/godwit/godwit/internal/admission"
	"github.com/godwit/godwit/internal/api"
	"github.com/godwit/godwit/internal/audit"
	"github.com/godwit/godwit/internal/migration"
	"github.com/godwit/godwit/internal/schedule"
	"github.com/godwit/godwit/internal/store"
)

// Scheduled migrations, like vCenter's scheduled tasks.
//
// A schedule runs a migration later with nobody present: `vm migrate VM... --to HOST`
// or `--auto`, stored as the api.BulkMigrateRequest it stands for. It runs once, at a
// time (at), or on every slot of a cron expression; both are UTC, always. Everything is
// checked when it is created (name, time not in the past, cron, missed-run policy, the
// VMs and the destination exist, the policy, encryption and priority), so a schedule
// that is stored can run; nothing is stored when a check fails.
//
// Running. runSchedules runs in the center's own goroutine and ticks every second. On
// each tick schedule.Due decides, for every enabled schedule, whether a slot is due.
// The slot is recorded as run (store.RecordScheduleRun, which refuses a slot already
// settled) before anything starts, so no slot ever runs twice, restarts included. The
// run is a task of kind schedule.run whose result lists the migrations it started or
// queued and the VMs it refused; it ends once they are submitted (the outcome, below,
// follows them to their end). Runs are at most once: a center that stops in the middle
// of a run does not run that slot again; the run's task fails with the reason, and so
// does the schedule's outcome. The command goes through bulkMigrate exactly as a
// user's bulk request does, so every VM is checked when the run starts — not when the
// schedule was made — for compatibility, limits and queueing. With --to the named host
// is the only destination: a VM that no longer fits it is refused with the reason,
// never sent elsewhere; with --auto the wizard picks, which is what the user chose. A
// VM deleted since the schedule was made is refused as "VM x does not exist".
//
// Who. Every migration's task names the initiator "schedule NAME (created by USER)";
// its vm.migrate audit record, and the schedule's own records (schedule.run,
// schedule.missed, schedule.outcome), name the actor "schedule NAME", of kind schedule,
// on behalf of USER.
//
// Outcome. A schedule's last outcome is "running" until every migration of its last run
// has ended, then "succeeded" (every VM moved) or "failed" with the reasons (the VMs
// refused, the migrations that failed or were cancelled). Each tick checks the last
// run's tasks and records the outcome on the schedule (store.RecordScheduleOutcome) and
// in a schedule.outcome audit record; the tasks are stored, so a restart in between
// loses nothing.
//
// Missed runs. A slot is missed when it fell due while no center ran: after the last
// tick of the center that stopped and before this one started. A slot that falls due
// while the center runs is on time however late the tick that picks it up (a slow run
// of another schedule delays it but never makes it missed). Missed slots are handled on
// the first tick after the start and on every tick after: under run-once (the default)
// the schedule runs once, now, however many slots were missed; under skip it runs none
// of them and waits for its next slot (a one-shot schedule then never runs). Either way
// a schedule.missed audit record says how many runs were missed, the policy, and what
// was done. After a start, runs wait until every host has reported (or a heartbeat
// timeout has passed), so that they are checked against the hosts as they are now.
//
// Disable, enable, delete. A disabled schedule does not run. Enabling it again skips
// the slots that passed meanwhile (no one meant them to run); the enable request's audit
// record says how many. Deleting a schedule does not stop the migrations its last run
// started.

const (
	// scheduleTickEvery is how often runSchedules looks for due schedules and for the
	// outcomes of their runs.
	scheduleTickEvery = time.Second
	// kindScheduleRun is the kind of the task of one run of a schedule.
	kindScheduleRun = api.KindScheduleRun
)

// registerSchedules adds the scheduled migrations' endpoints to mux:
//
//	GET    /api/v1/schedules                 every schedule, by name
//	POST   /api/v1/schedules                 create one (api.CreateScheduleRequest)
//	GET    /api/v1/schedules/{name}          one schedule, with its last run
//	DELETE /api/v1/schedules/{name}          delete it (its running migrations go on)
//	POST   /api/v1/schedules/{name}/disable  stop it from running
//	POST   /api/v1/schedules/{name}/enable   let it run again from its next slot
//
// Reading needs the viewer role, everything else the operator role.
func (c *Center) registerSchedules(mux *api.Mux) {
	mux.HandleFunc("GET /api/v1/schedules", func(w http.ResponseWriter, r *http.Request) {
		ss, err := c.listSchedules(r.Context())
		writeResult(w, http.StatusOK, ss, err)
	})
	mux.HandleFunc("POST /api/v1/schedules", func(w http.ResponseWriter, r *http.Request) {
		var req api.CreateScheduleRequest
		if err := api.Decode(w, r, &req); err != nil {
			api.WriteError(w, err)
			return
		}
		audit.SetTarget(r.Context(), req.Name)
		s, err := c.createSchedule(r.Context(), req, audit.ActorOf(r).Name)
		writeResult(w, http.StatusCreated, s, err)
	})
	mux.HandleFunc("GET /api/v1/schedules/{name}", func(w http.ResponseWriter, r *http.Request) {
		s, err := c.getSchedule(r.Context(), r.PathValue("name"))
		writeResult(w, http.StatusOK, s, err)
	})
	mux.HandleFunc("DELETE /api/v1/schedules/{name}", func(w http.ResponseWriter, r *http.Request) {
		if err := c.deleteSchedule(r.Context(), r.PathValue("name")); err != nil {
			api.WriteError(w, err)
			return
		}
		w.WriteHeader(http.StatusNoContent)
	})
	mux.HandleFunc("POST /api/v1/schedules/{name}/disable", func(w http.ResponseWriter, r *http.Request) {
		s, err := c.setScheduleEnabled(r.Context(), r.PathValue("name"), false)
		writeResult(w, http.StatusOK, s, err)
	})
	mux.HandleFunc("POST /api/v1/schedules/{name}/enable", func(w http.ResponseWriter, r *http.Request) {
		s, err := c.setScheduleEnabled(r.Context(), r.PathValue("name"), true)
		writeResult(w, http.StatusOK, s, err)
	})
}

// noSchedule is the answer about a schedule that does not exist.
func noSchedule(name string) error {
	return api.NotFound("there is no schedule named %s; `godwit schedule list` shows the schedules", name)
}

// createSchedule checks a request and stores the schedule, created by by. Nothing is
// stored when a check fails.
func (c *Center) createSchedule(ctx context.Context, req api.CreateScheduleRequest, by string) (api.Schedule, error) {
	now := c.now().UTC()
	rec, err := c.checkSchedule(ctx, req, now)
	if err != nil {
		return api.Schedule{}, err
	}
	rec.CreatedBy, rec.CreatorLocal, rec.Created, rec.Enabled = by, principalOf(ctx).local, now, true
	audit.Params(ctx, map[string]any{"kind": rec.Kind, "missed": rec.MissedPolicy, "next_run": rec.NextRun.Format(time.RFC3339)})
	if err := c.store.InsertSchedule(ctx, rec); err != nil {
		var dup *store.DuplicateError
		if errors.As(err, &dup) {
			return api.Schedule{}, api.Conflict("a schedule named %s already exists; delete it first or pick another name", req.Name)
		}
		return api.Schedule{}, fmt.Errorf("store schedule %s: %w", req.Name, err)
	}
	c.log.Info("schedule created", "schedule", rec.Name, "by", by, "next_run", rec.NextRun, "command", string(rec.Command))
	return c.scheduleView(ctx, rec), nil
}

// checkSchedule checks a request to create a schedule at now and returns the record to
// store (without its creator), or a 4xx error that says what is wrong.
func (c *Center) checkSchedule(ctx context.Context, req api.CreateScheduleRequest, now time.Time) (store.ScheduleRecord, error) {
	if err := schedule.ValidateName(req.Name); err != nil {
		return store.ScheduleRecord{}, api.BadRequest("%v", err)
	}
	rec := store.ScheduleRecord{Name: req.Name}
	switch {
	case req.At == "" && req.Cron == "":
		return rec, api.BadRequest("say when schedule %s runs: a time to run once (at; `--at` in the CLI) or a cron expression to recur (cron; `--cron`)", req.Name)
	case req.At != "" && req.Cron != "":
		return rec, api.BadRequest("schedule %s has both a time (at) and a cron expression (cron); give only one of them", req.Name)
	case req.At != "":
		at, err := schedule.ParseAt(req.At, now)
		if err != nil {
			return rec, api.BadRequest("schedule %s: %v", req.Name, err)
		}
		rec.Kind, rec.At = schedule.KindAt, at
	default:
		cr, err := schedule.ParseCron(req.Cron)
		if err != nil {
			return rec, api.BadRequest("schedule %s: %v", req.Name, err)
		}
		rec.Kind, rec.Cron = schedule.KindCron, cr.String()
	}
	policy, err := schedule.ParsePolicy(req.Missed)
	if err != nil {
		return rec, api.BadRequest("schedule %s: %v", req.Name, err)
	}
	rec.MissedPolicy = policy
	cmd, err := c.checkScheduledMigration(ctx, req.Migrate)
	if err != nil {
		return rec, err
	}
	if rec.Command, err = json.Marshal(cmd); err != nil {
		return rec, fmt.Errorf("encode the command of schedule %s: %w", req.Name, err)
	}
	next, ok := rec.Spec().Next(now)
	if !ok {
		return rec, api.BadRequest("schedule %s would never run: %s has no time after now", req.Name, whenText(rec))
	}
	rec.NextRun = next
	return rec, nil
}

// checkScheduledMigration checks the migration a schedule is to run: the VMs named and
// the destination host exist, and the policy, encryption and priority are known. What
// depends on the moment — is the VM running, does it fit the host — is checked when the
// schedule runs. It returns the request as it will be stored.
func (c *Center) checkScheduledMigration(ctx context.Context, req api.BulkMigrateRequest) (api.BulkMigrateRequest, error) {
	if err := checkBulkShape(req); err != nil {
		return req, err
	}
	var missing []string
	for _, vm := range req.VMs {
		_, err := c.store.VM(ctx, vm)
		switch {
		case errors.Is(err, store.ErrNotFound):
			missing = append(missing, vm)
		case err != nil:
			return req, fmt.Errorf("look up VM %s: %w", vm, err)
		}
	}
	switch len(missing) {
	case 0:
	case 1:
		return req, invalid("VM %s does not exist; `godwit vm list` shows the VMs", missing[0])
	default:
		return req, invalid("VMs %s do not exist; `godwit vm list` shows the VMs", strings.Join(missing, ", "))
	}
	if req.To != "" {
		_, err := c.store.Host(ctx, req.To)
		if errors.Is(err, store.ErrNotFound) {
			return req, invalid("there is no host named %q; `godwit host list` shows the hosts", req.To)
		}
		if err != nil {
			return req, fmt.Errorf("look up host %s: %w", req.To, err)
		}
	}
	if req.Policy != "" {
		if _, err := migration.LookupPolicy(req.Policy); err != nil {
			return req, invalid("%v", err)
		}
	}
	if req.Encryption != "" {
		if _, err := migration.ParseEncryption(req.Encryption); err != nil {
			return req, invalid("%v", err)
		}
	}
	if req.Priority != "" {
		if _, err := admission.ParsePriority(req.Priority); err != nil {
			return req, invalid("%v", err)
		}
	}
	return req, nil
}

// whenText says when a schedule runs: "once at 2026-11-26 14:00:00 UTC" or "cron
// expression 0 2 * * * (UTC)".
func whenText(r store.ScheduleRecord) string {
	if r.Kind == schedule.KindAt {
		return "once at " + r.At.UTC().Format("2006-01-02 15:04:05 UTC")
	}
	return "cron expression " + r.Cron + " (UTC)"
}

func (c *Center) listSchedules(ctx context.Context) ([]api.Schedule, error) {
	recs, err := c.store.ListSchedules(ctx)
	if err != nil {
		return nil, err
	}
	out := make([]api.Schedule, 0, len(recs))
	for _, r := range recs {
		out = append(out, c.scheduleView(ctx, r))
	}
	return out, nil
}

func (c *Center) getSchedule(ctx context.Context, name string) (api.Schedule, error) {
	r, err := c.store.Schedule(ctx, name)
	if errors.Is(err, store.ErrNotFound) {
		return api.Schedule{}, noSchedule(name)
	}
	if err != nil {
		return api.Schedule{}, err
	}
	return c.scheduleView(ctx, r), nil
}

func (c *Center) deleteSchedule(ctx context.Context, name string) error {
	err := c.store.DeleteSchedule(ctx, name)
	if errors.Is(err, store.ErrNotFound) {
		return noSchedule(name)
	}
	if err == nil {
		c.log.Info("schedule deleted", "schedule", name)
	}
	return err
}

// setScheduleEnabled disables or enables a schedule. Enabling skips the slots that
// passed while it was disabled, so that it runs from its next slot on; the request's
// audit record says how many were skipped. Either is a no-op when the schedule already
// is so.
func (c *Center) setScheduleEnabled(ctx context.Context, name string, enabled bool) (api.Schedule, error) {
	r, err := c.store.Schedule(ctx, name)
	if errors.Is(err, store.ErrNotFound) {
		return api.Schedule{}, noSchedule(name)
	}
	if err != nil {
		return api.Schedule{}, err
	}
	if r.Enabled == enabled {
		return c.scheduleView(ctx, r), nil
	}
	if enabled {
		// Settle the slots that passed while disabled before enabling, so that no tick
		// takes them for missed runs in between. A slot that falls due exactly now is
		// left to the tick.
		d, err := schedule.Due(r.Spec(), schedule.MissedSkip, r.LastRun, r.Created, c.now(), time.Nanosecond)
		if err != nil {
			return api.Schedule{}, fmt.Errorf("schedule %s cannot be evaluated: %w; delete it and create it again", name, err)
		}
		if !d.Run && !d.Slot.IsZero() {
			audit.Params(ctx, map[string]any{"skipped": d.Missed, "skipped_through": d.Slot.Format(time.RFC3339)})
			if err := c.store.SkipScheduleSlots(ctx, name, d.Slot, d.Next); err != nil && !errors.Is(err, store.ErrScheduleSlotDone) {
				return api.Schedule{}, err
			}
		} else if err := c.store.SetScheduleNext(ctx, name, d.Next); err != nil {
			return api.Schedule{}, err
		}
	}
	if err := c.store.SetScheduleEnabled(ctx, name, enabled); errors.Is(err, store.ErrNotFound) {
		return api.Schedule{}, noSchedule(name)
	} else if err != nil {
		return api.Schedule{}, err
	}
	c.log.Info("schedule enabled or disabled", "schedule", name, "enabled", enabled)
	return c.getSchedule(ctx, name)
}

// scheduleView is the API's view of a schedule: its record, and its last run's
// migrations as their tasks are now.
func (c *Center) scheduleView(ctx context.Context, r store.ScheduleRecord) api.Schedule {
	var cmd api.BulkMigrateRequest
	if err := json.Unmarshal(r.Command, &cmd); err != nil {
		c.log.Warn("the stored command of a schedule is not a migration", "schedule", r.Name, "err", err)
	}
	policy := r.MissedPolicy
	if policy == "" {
		policy = schedule.DefaultMissedPolicy
	}
	s := api.Schedule{Name: r.Name, Kind: r.Kind, Cron: r.Cron, Missed: policy, Enabled: r.Enabled,
		Migrate: cmd, Command: api.MigrateCommandLine(cmd), CreatedBy: r.CreatedBy, Created: r.Created.UTC(),
		LastTask: r.LastTask, LastOutcome: r.LastOutcome, LastError: r.LastError}
	opt := func(t time.Time) *time.Time {
		if t.IsZero() {
			return nil
		}
		t = t.UTC()
		return &t
	}
	s.At = opt(r.At)
	if r.Enabled {
		s.NextRun = opt(r.NextRun)
	}
	s.LastRun = opt(r.LastRunAt)
	// A run's slot is never after its start; a slot settled after it was skipped.
	if !r.LastRun.IsZero() && (r.LastTask == "" || r.LastRun.After(r.LastRunAt)) {
		s.Skipped = opt(r.LastRun)
	}
	if r.LastTask == "" {
		return s
	}
	if s.LastOutcome == "" {
		s.LastOutcome = api.ScheduleRunning
	}
	t, err := c.getTask(ctx, r.LastTask)
	if err != nil {
		return s
	}
	var res api.ScheduleRunResult
	if len(t.Result) > 0 && json.Unmarshal(t.Result, &res) == nil {
		s.LastRefused = res.Refused
		for _, m := range res.Migrations {
			if mt, err := c.getTask(ctx, m.ID); err == nil {
				m.State, m.Error = mt.State, mt.Error
			}
			s.LastMigrations = append(s.LastMigrations, m)
		}
	}
	return s
}

// scheduleRequester is who a schedule's runs act as: the actor "schedule NAME" on
// behalf of its creator, and the initiator its tasks name.
func scheduleRequester(r store.ScheduleRecord) requester {
	by := r.CreatedBy
	if by == "" {
		by = audit.Anonymous
	}
	return requester{
		actor:     audit.Actor{Name: "schedule " + r.Name, Kind: audit.KindSchedule, OnBehalfOf: by},
		initiator: fmt.Sprintf("schedule %s (created by %s)", r.Name, by),
	}
}

// runSchedules runs the schedules that are due until ctx ends: every scheduleTickEvery
// it records the outcomes of runs whose migrations have ended and starts the runs that
// are due (see the comment at the top of this file). It runs in the caller's goroutine.
func (c *Center) runSchedules(ctx context.Context) {
	start := c.now()
	tick := time.NewTicker(scheduleTickEvery)
	defer tick.Stop()
	wait := func() bool {
		select {
		case <-ctx.Done():
			return false
		case <-tick.C:
			return true
		}
	}
	// Runs are checked against the hosts, so first let them report after the start.
	for !c.hostsReportedSince(ctx, start) {
		if !wait() {
			return
		}
	}
	// Slots up to since were looked at by an earlier tick, or fell due while no center
	// ran (since is this center's start): only slots after it are on time.
	since := start
	for {
		now := c.now()
		c.scheduleTick(ctx, since, now)
		since = now
		if !wait() {
			return
		}
	}
}

// hostsReportedSince reports whether every host has sent a heartbeat since start, or
// the heartbeat timeout has passed since then (a host that has not reported by then is
// down, and runs that need it are refused with that reason).
func (c *Center) hostsReportedSince(ctx context.Context, start time.Time) bool {
	if c.now().Sub(start) >= c.cfg.HeartbeatTimeout {
		return true
	}
	hosts, err := c.store.Hosts(ctx)
	if err != nil {
		c.log.Warn("schedules: could not read the hosts", "err", err)
		return false
	}
	for _, h := range hosts {
		if !h.LastHeartbeat.After(start) {
			return false
		}
	}
	return true
}

// scheduleTick does one tick at now: for every schedule, it records the outcome of its
// last run if that has ended, and, if the schedule is enabled, runs or skips the slot
// that is due. Slots after since are on time; earlier ones not yet settled were missed.
func (c *Center) scheduleTick(ctx context.Context, since, now time.Time) {
	recs, err := c.store.ListSchedules(ctx)
	if err != nil {
		if ctx.Err() == nil {
			c.log.Error("schedules: could not list them; trying again at the next tick", "err", err)
		}
		return
	}
	grace := now.Sub(since)
	if grace <= 0 {
		grace = time.Nanosecond
	}
	for _, r := range recs {
		if ctx.Err() != nil {
			return
		}
		if r.LastTask != "" && r.LastOutcome == "" {
			c.settleScheduleOutcome(ctx, r)
		}
		if r.Enabled {
			c.dueSchedule(ctx, r, now, grace)
		}
	}
}

// dueSchedule runs, skips or merely reschedules one enabled schedule at now, as
// schedule.Due decides.
func (c *Center) dueSchedule(ctx context.Context, r store.ScheduleRecord, now time.Time, grace time.Duration) {
	d, err := schedule.Due(r.Spec(), r.MissedPolicy, r.LastRun, r.Created, now, grace)
	if err != nil {
		c.log.Error("schedules: a stored schedule cannot be evaluated; delete it and create it again", "schedule", r.Name, "err", err)
		return
	}
	switch {
	case d.Run:
		c.runSchedule(ctx, r, d, now)
	case !d.Slot.IsZero():
		// The skip and its record commit together.
		if err := c.store.SkipScheduleSlots(store.WithTxHook(ctx, c.trail.AppendHook(missedRecord(r, d))), r.Name, d.Slot, d.Next); err != nil {
			if !errors.Is(err, store.ErrScheduleSlotDone) && !errors.Is(err, store.ErrNotFound) {
				c.log.Error("schedules: could not record skipped runs; trying again at the next tick", "schedule", r.Name, "err", err)
			}
			return
		}
		c.log.Info("schedule skipped the runs missed while the center was down", "schedule", r.Name, "missed", d.Missed, "next_run", d.Next)
	case !d.Next.Equal(r.NextRun):
		if err := c.store.SetScheduleNext(ctx, r.Name, d.Next); err != nil && !errors.Is(err, store.ErrNotFound) {
			c.log.Error("schedules: could not record the next run", "schedule", r.Name, "err", err)
		}
	}
}

// runSchedule runs the slot d.Slot of schedule r: it records the run first (refused
// if the slot is already settled, and then does nothing), then runs the command as a
// task of kind schedule.run and records what it started and refused.
func (c *Center) runSchedule(ctx context.Context, r store.ScheduleRecord, d schedule.Decision, now time.Time) {
	who := scheduleRequester(r)
	id := c.newID()
	// The run is recorded (schedule.start) in the transaction that claims its slot, with
	// the runs missed, if any; what it did follows in its schedule.run record.
	start := audit.Record{Actor: who.actor.Name, ActorKind: who.actor.Kind, OnBehalfOf: who.actor.OnBehalfOf,
		Action: "schedule.start", Target: r.Name, Outcome: audit.Succeeded}
	start.Params, _ = audit.EncodeParams(map[string]any{"task": id, "slot": d.Slot.UTC().Format(time.RFC3339Nano), "missed": d.Missed})
	rctx := store.WithTxHook(ctx, c.trail.AppendHook(start))
	if d.Missed > 0 {
		rctx = store.WithTxHook(rctx, c.trail.AppendHook(missedRecord(r, d)))
	}
	if err := c.store.RecordScheduleRun(rctx, r.Name, d.Slot, now, id, d.Next); err != nil {
		if !errors.Is(err, store.ErrScheduleSlotDone) && !errors.Is(err, store.ErrNotFound) {
			c.log.Error("schedules: could not record a run; trying again at the next tick", "schedule", r.Name, "err", err)
		}
		return
	}
	c.log.Info("schedule runs", "schedule", r.Name, "slot", d.Slot, "task", id, "missed", d.Missed)
	started := now.UTC()
	task := api.Task{ID: id, Kind: kindScheduleRun, Target: r.Name, Initiator: who.initiator, State: api.TaskRunning,
		Queued: started, Started: &started}
	rec := audit.Record{Actor: who.actor.Name, ActorKind: who.actor.Kind, OnBehalfOf: who.actor.OnBehalfOf,
		Action: "schedule.run", Target: r.Name, Outcome: audit.Succeeded}
	if err := c.createTask(ctx, task); err != nil {
		c.log.Error("schedules: the task of a run could not be recorded; the run does not start", "schedule", r.Name, "task", id, "err", err)
		rec.Outcome, rec.Error = audit.Failed, "the run did not start: "+err.Error()
		rec.Params, _ = audit.EncodeParams(map[string]any{"task": id, "slot": d.Slot.UTC().Format(time.RFC3339Nano)})
		c.appendScheduleRecord(ctx, rec)
		return
	}

	res := api.ScheduleRunResult{Schedule: r.Name, Slot: d.Slot.UTC(), Missed: d.Missed,
		Migrations: []api.ScheduledMigration{}, Refused: []api.BulkRefusal{}}
	refused := c.creatorMayMigrate(ctx, r)
	if refused != nil {
		res.Error = refused.Error()
		c.log.Warn("schedule run refused: its creator may no longer migrate", "schedule", r.Name, "creator", r.CreatedBy, "reason", refused)
	} else if err := c.runScheduledMigration(ctx, r, who, &res); err != nil {
		res.Error = err.Error()
	}
	// What the run did is recorded even when the center is stopping meanwhile.
	ctx = context.WithoutCancel(ctx)
	problems := runProblems(res)
	fin := c.now().UTC()
	task.Finished = &fin
	task.Result, _ = json.Marshal(res)
	if len(problems) == 0 {
		task.State, task.Progress.Percent = api.TaskSucceeded, 100
	} else {
		task.State, task.Error = api.TaskFailed, strings.Join(problems, "; ")
	}
	c.updateTask(ctx, task, true)

	switch {
	case refused != nil:
		rec.Outcome, rec.Error = audit.Refused, task.Error
	case len(problems) > 0:
		rec.Outcome, rec.Error = audit.Failed, task.Error
	}
	rec.Params, _ = audit.EncodeParams(map[string]any{"task": id, "slot": d.Slot.UTC().Format(time.RFC3339Nano),
		"missed": d.Missed, "command": json.RawMessage(r.Command), "migrations": res.Migrations, "refused": res.Refused})
	c.appendScheduleRecord(ctx, rec)
}

// creatorMayMigrate checks that schedule r's creator may migrate VMs now: a schedule
// acts with its creator's current rights, never with rights taken away since it was
// made. A creator who was deleted, or whose role no longer allows migrations, makes the
// run refused with that reason.
func (c *Center) creatorMayMigrate(ctx context.Context, r store.ScheduleRecord) error {
	if r.CreatorLocal {
		return nil // root on the center's own socket: no user management takes that away
	}
	const need = api.RoleOperator // what POST /api/v1/vms/{name}/migrate needs
	u, err := c.store.User(ctx, r.CreatedBy)
	switch {
	case errors.Is(err, store.ErrNotFound):
		return api.Errorf(http.StatusForbidden, "forbidden",
			"refused: schedule %s runs with the rights of its creator, user %s, who no longer exists; an operator or admin may create it again", r.Name, r.CreatedBy)
	case err != nil:
		return fmt.Errorf("refused: the rights of user %s, who created schedule %s, cannot be read: %w", r.CreatedBy, r.Name, err)
	case !allows(u.Role, need):
		return api.Errorf(http.StatusForbidden, "forbidden",
			"refused: schedule %s runs with the rights of its creator, user %s, who now has the %s role; migrating VMs needs the %s role", r.Name, r.CreatedBy, u.Role, need)
	}
	return nil
}

// runProblems are the sentences that say what a run could not do: the command as a
// whole, and each VM refused.
func runProblems(res api.ScheduleRunResult) []string {
	var problems []string
	if res.Error != "" {
		problems = append(problems, res.Error)
	}
	for _, f := range res.Refused {
		problems = append(problems, fmt.Sprintf("VM %s was not moved: %s", f.VM, f.Error))
	}
	return problems
}

// runScheduledMigration runs a schedule's command for one run, filling res with the
// migrations started or queued and the VMs refused. A VM deleted since the schedule was
// made is refused here, with its own vm.migrate audit record like any refusal; the
// others go to bulkMigrate. It returns an error only when the command as a whole could
// not run.
func (c *Center) runScheduledMigration(ctx context.Context, r store.ScheduleRecord, who requester, res *api.ScheduleRunResult) error {
	var req api.BulkMigrateRequest
	if err := json.Unmarshal(r.Command, &req); err != nil {
		return fmt.Errorf("the stored command of schedule %s is not a migration (%v); delete the schedule and create it again", r.Name, err)
	}
	present := make([]string, 0, len(req.VMs))
	for _, vm := range req.VMs {
		_, err := c.store.VM(ctx, vm)
		switch {
		case errors.Is(err, store.ErrNotFound):
			gone := api.NotFound("VM %s does not exist: it was deleted after schedule %s was created", vm, r.Name)
			res.Refused = append(res.Refused, refusal(vm, gone))
			c.recordBulkItem(ctx, who, vm, nil, gone)
		case err != nil:
			return fmt.Errorf("look up VM %s: %w", vm, err)
		default:
			present = append(present, vm)
		}
	}
	if len(present) == 0 {
		return nil
	}
	req.VMs = present
	rep, err := c.bulkMigrate(ctx, req, who)
	if err != nil {
		return fmt.Errorf("the migration of schedule %s could not start: %w", r.Name, err)
	}
	for _, m := range rep.Migrations {
		state := "started"
		switch {
		case m.State == api.MigrationQueued:
			state = "queued"
		case terminal(m.State):
			state = m.State
		}
		res.Migrations = append(res.Migrations, api.ScheduledMigration{ID: m.ID, VM: m.VM, Source: m.Source,
			Destination: m.Destination, State: state, Error: m.Error})
	}
	res.Refused = append(res.Refused, rep.Refused...)
	// Keep the order the command names the VMs in.
	order := map[string]int{}
	for i, vm := range req.VMs {
		order[vm] = i
	}
	slices.SortStableFunc(res.Migrations, func(a, b api.ScheduledMigration) int { return order[a.VM] - order[b.VM] })
	return nil
}

// missedRecord is the schedule.missed audit record of a decision that found missed
// runs: how many, the policy, and what was done.
func missedRecord(r store.ScheduleRecord, d schedule.Decision) audit.Record {
	who := scheduleRequester(r)
	policy := r.MissedPolicy
	if policy == "" {
		policy = schedule.DefaultMissedPolicy
	}
	done := fmt.Sprintf("skipped them (policy %s); the next run is %s", policy, nextText(d.Next))
	if d.Run {
		done = fmt.Sprintf("ran once for them now (policy %s), for the run due %s", policy, d.Slot.UTC().Format(time.RFC3339))
	}
	params := map[string]any{"missed": d.Missed, "policy": policy, "done": done, "slot": d.Slot.UTC().Format(time.RFC3339Nano)}
	if d.Run {
		params["action"] = "run-once"
	} else {
		params["action"] = "skip"
	}
	rec := audit.Record{Actor: who.actor.Name, ActorKind: who.actor.Kind, OnBehalfOf: who.actor.OnBehalfOf,
		Action: "schedule.missed", Target: r.Name, Outcome: audit.Succeeded}
	rec.Params, _ = audit.EncodeParams(params)
	return rec
}

// nextText says when the next run is, or that there is none.
func nextText(next time.Time) string {
	if next.IsZero() {
		return "none (the schedule has no run left)"
	}
	return next.UTC().Format(time.RFC3339)
}

// settleScheduleOutcome records the outcome of schedule r's last run once every
// migration it started has ended: succeeded when every VM moved, failed otherwise, with
// the reasons. It does nothing while a migration still runs or waits.
func (c *Center) settleScheduleOutcome(ctx context.Context, r store.ScheduleRecord) {
	outcome, reason, ended := c.runOutcome(ctx, r)
	if !ended {
		return
	}
	who := scheduleRequester(r)
	rec := audit.Record{Actor: who.actor.Name, ActorKind: who.actor.Kind, OnBehalfOf: who.actor.OnBehalfOf,
		Action: "schedule.outcome", Target: r.Name, Outcome: audit.Succeeded, Error: reason}
	if outcome != api.ScheduleSucceeded {
		rec.Outcome = audit.Failed
	}
	rec.Params, _ = audit.EncodeParams(map[string]any{"task": r.LastTask, "outcome": outcome})
	// The outcome and its record commit together.
	if err := c.store.RecordScheduleOutcome(store.WithTxHook(ctx, c.trail.AppendHook(rec)), r.Name, r.LastTask, outcome, reason); err != nil {
		if !errors.Is(err, store.ErrScheduleStaleTask) && !errors.Is(err, store.ErrNotFound) {
			c.log.Error("schedules: could not record the outcome of a run; trying again at the next tick", "schedule", r.Name, "err", err)
		}
		return
	}
	c.log.Info("schedule run ended", "schedule", r.Name, "task", r.LastTask, "outcome", outcome, "error", reason)
}

// runOutcome is the outcome of schedule r's last run, with the reason when it failed;
// ended is false while a migration of the run has not ended.
func (c *Center) runOutcome(ctx context.Context, r store.ScheduleRecord) (outcome, reason string, ended bool) {
	t, err := c.getTask(ctx, r.LastTask)
	var se *api.StatusError
	switch {
	case errors.As(err, &se) && se.Status == http.StatusNotFound:
		return api.ScheduleFailed, fmt.Sprintf("the center stopped before run %s of the schedule started its migrations", r.LastTask), true
	case err != nil:
		c.log.Warn("schedules: could not read the task of a run", "schedule", r.Name, "task", r.LastTask, "err", err)
		return "", "", false
	case t.Kind != kindScheduleRun || t.Target != r.Name:
		return api.ScheduleFailed, fmt.Sprintf("task %s is not a run of schedule %s but %s of %s", r.LastTask, r.Name, t.Kind, t.Target), true
	case !api.TaskEnded(t.State):
		return "", "", false
	}
	var res api.ScheduleRunResult
	if len(t.Result) == 0 || json.Unmarshal(t.Result, &res) != nil {
		// The run itself failed before it could say what it did (the center
		// restarted while it ran, or the command could not run).
		return api.ScheduleFailed, orText(t.Error, "the run ended without a result"), true
	}
	problems := runProblems(res)
	for _, m := range res.Migrations {
		mt, err := c.getTask(ctx, m.ID)
		if errors.As(err, &se) && se.Status == http.StatusNotFound {
			problems = append(problems, fmt.Sprintf("migration %s of VM %s has no task any more", m.ID, m.VM))
			continue
		}
		if err != nil {
			c.log.Warn("schedules: could not read the task of a migration", "schedule", r.Name, "migration", m.ID, "err", err)
			return "", "", false
		}
		switch mt.State {
		case api.TaskSucceeded:
		case api.TaskFailed, api.TaskCancelled:
			problems = append(problems, fmt.Sprintf("migration %s of VM %s to %s %s: %s", m.ID, m.VM, m.Destination, mt.State,
				orText(mt.Error, "no reason given")))
		default:
			return "", "", false
		}
	}
	if len(problems) > 0 {
		return api.ScheduleFailed, strings.Join(problems, "; "), true
	}
	return api.ScheduleSucceeded, "", true
}

func orText(s, otherwise string) string {
	if s == "" {
		return otherwise
	}
	return s
}

// appendScheduleRecord appends one of a schedule's own records to the audit trail,
// logging what cannot be recorded.
func (c *Center) appendScheduleRecord(ctx context.Context, rec audit.Record) {
	if _, err := c.trail.Append(context.WithoutCancel(ctx), rec); err != nil {
		c.log.Error("schedules: a record could not be written to the audit trail", "action", rec.Action, "schedule", rec.Target,
			"err", fmt.Errorf("append: %w", err))
	}
}
