package api

import (
	"errors"
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/spf13/pflag"
)

// CreateScheduleRequest is the body of POST /api/v1/schedules: a migration to run later,
// once (At) or on a cron expression (Cron), with nobody present. Give exactly one of At
// and Cron.
type CreateScheduleRequest struct {
	// Name names the schedule: 1-63 letters, digits, '.', '_' or '-'.
	Name string `json:"name"`
	// At is when a one-shot schedule runs, in UTC: RFC 3339 ("2026-11-26T14:00:00Z" or
	// with an offset), "2026-11-26 14:00" (read as UTC), or a delay from now on the
	// center's clock ("+30m").
	At string `json:"at,omitempty"`
	// Cron is a recurring schedule's expression, read in UTC: 5 fields (minute hour
	// day-of-month month day-of-week) or @hourly, @daily, @weekly, @monthly, @yearly.
	Cron string `json:"cron,omitempty"`
	// Missed says what to do with runs that fell due while the center was down:
	// "run-once" (run once on recovery, the default) or "skip".
	Missed string `json:"missed,omitempty"`
	// Migrate is what the schedule runs: the VMs and where they go, as
	// POST /api/v1/migrations takes them.
	Migrate BulkMigrateRequest `json:"migrate"`
}

// Outcomes of a schedule's last run.
const (
	// ScheduleRunning: some migration of the last run has not ended yet.
	ScheduleRunning = "running"
	// ScheduleSucceeded: every VM of the last run moved.
	ScheduleSucceeded = "succeeded"
	// ScheduleFailed: a VM of the last run was refused, or its migration failed or was
	// cancelled; the schedule's LastError says which and why.
	ScheduleFailed = "failed"
)

// KindScheduleRun is the kind of the task of one run of a schedule. Its target is the
// schedule's name and its result a ScheduleRunResult.
const KindScheduleRun = "schedule.run"

// Schedule is a scheduled migration and how it last ran. Times are UTC.
type Schedule struct {
	Name string `json:"name"`
	// Kind is "at" (runs once, at At) or "cron" (recurs on Cron).
	Kind string     `json:"kind"`
	At   *time.Time `json:"at,omitempty"`
	Cron string     `json:"cron,omitempty"`
	// Missed is the missed-run policy: run-once or skip.
	Missed  string `json:"missed"`
	Enabled bool   `json:"enabled"`
	// Migrate is the command the schedule runs; Command is the same as a command line
	// ("vm migrate web-1 --to host-2").
	Migrate   BulkMigrateRequest `json:"migrate"`
	Command   string             `json:"command"`
	CreatedBy string             `json:"created_by"`
	Created   time.Time          `json:"created"`
	// NextRun is when it runs next; none when it is disabled or has no run left.
	NextRun *time.Time `json:"next_run,omitempty"`
	// LastRun is when its last run started, and LastTask that run's task (kind
	// schedule.run); none when it never ran.
	LastRun  *time.Time `json:"last_run,omitempty"`
	LastTask string     `json:"last_task,omitempty"`
	// LastMigrations are the migrations the last run started or queued, as they are
	// now; LastRefused the VMs it could not move, with why.
	LastMigrations []ScheduledMigration `json:"last_migrations,omitempty"`
	LastRefused    []BulkRefusal        `json:"last_refused,omitempty"`
	// LastOutcome is one of the Schedule* outcomes (empty when it never ran); LastError
	// says why the last run failed.
	LastOutcome string `json:"last_outcome,omitempty"`
	LastError   string `json:"last_error,omitempty"`
	// Skipped is the latest run skipped since the last run: a run missed while the
	// center was down under the skip policy, or one that fell due while the schedule
	// was disabled.
	Skipped *time.Time `json:"skipped,omitempty"`
}

// ScheduledMigration is a migration a schedule's run started or queued.
type ScheduledMigration struct {
	// ID is the migration's id, which is also its task's.
	ID          string `json:"id"`
	VM          string `json:"vm"`
	Source      string `json:"source,omitempty"`
	Destination string `json:"destination"`
	// State is "started" or "queued" in a run's result; in a Schedule, the state of
	// the migration's task now (queued, running, succeeded, failed, cancelled).
	State string `json:"state"`
	Error string `json:"error,omitempty"`
}

// ScheduleRunResult is the result of a schedule.run task: the slot it ran for, how many
// runs had been missed before it, the migrations it started or queued, the VMs it could
// not move, and why the command as a whole could not run, if it could not.
type ScheduleRunResult struct {
	Schedule   string               `json:"schedule"`
	Slot       time.Time            `json:"slot"`
	Missed     int                  `json:"missed,omitempty"`
	Migrations []ScheduledMigration `json:"migrations"`
	Refused    []BulkRefusal        `json:"refused"`
	Error      string               `json:"error,omitempty"`
}

// MigrateCommandLine renders a bulk migration as the CLI command that asks for it:
// "vm migrate web-1 web-2 --to host-2 --priority high".
func MigrateCommandLine(r BulkMigrateRequest) string {
	parts := append([]string{"vm", "migrate"}, r.VMs...)
	if r.To != "" {
		parts = append(parts, "--to", r.To)
	}
	if r.Auto {
		parts = append(parts, "--auto")
	}
	if r.Postcopy {
		parts = append(parts, "--postcopy")
	}
	for _, f := range [][2]string{{"--policy", r.Policy}, {"--encryption", r.Encryption}, {"--priority", r.Priority}} {
		if f[1] != "" {
			parts = append(parts, f[0], f[1])
		}
	}
	return strings.Join(parts, " ")
}

// scheduledFlagsHelp says what the scheduled `vm migrate` takes.
const scheduledFlagsHelp = "it takes the VMs' names and --to HOST or --auto, and optionally --policy P, --encryption E, --priority P and --postcopy"

// ParseScheduledCommand reads the command a schedule is to run, given as words after
// `--` on the command line: `vm migrate VM... (--to HOST | --auto) [--policy P]
// [--encryption E] [--priority P] [--postcopy]`, the flags of `godwit vm migrate` that make sense
// with nobody watching. Any other command, and any other flag, is refused with a
// sentence that says what is taken. The values are checked by the center.
func ParseScheduledCommand(args []string) (BulkMigrateRequest, error) {
	var req BulkMigrateRequest
	switch {
	case len(args) == 0:
		return req, errors.New("no command given after --: a schedule runs `vm migrate VM... --to HOST` (or --auto instead of --to)")
	case len(args) < 2 || args[0] != "vm" || args[1] != "migrate":
		return req, fmt.Errorf("a schedule can run only `vm migrate VM... --to HOST` (or --auto), not `%s`", strings.Join(args, " "))
	}
	fs := pflag.NewFlagSet("vm migrate", pflag.ContinueOnError)
	fs.SetOutput(io.Discard)
	fs.StringVar(&req.To, "to", "", "destination host")
	fs.BoolVar(&req.Auto, "auto", false, "let the wizard place each VM on its best host when the schedule runs")
	fs.StringVar(&req.Policy, "policy", "", "convergence policy")
	fs.StringVar(&req.Encryption, "encryption", "", "required, opportunistic or off")
	fs.StringVar(&req.Priority, "priority", "", "high, normal or low")
	fs.BoolVar(&req.Postcopy, "postcopy", false, "allow post-copy as a last resort")
	if err := fs.Parse(args[2:]); err != nil {
		if errors.Is(err, pflag.ErrHelp) {
			return req, fmt.Errorf("the scheduled `vm migrate` has no help flag: %s", scheduledFlagsHelp)
		}
		return req, fmt.Errorf("the scheduled `vm migrate`: %v; %s", err, scheduledFlagsHelp)
	}
	req.VMs = fs.Args()
	switch {
	case len(req.VMs) == 0:
		return req, fmt.Errorf("the scheduled `vm migrate` names no VM: %s", scheduledFlagsHelp)
	case req.To == "" && !req.Auto:
		return req, errors.New("the scheduled `vm migrate` says nowhere to go: add --to HOST, or --auto to let the wizard place each VM when the schedule runs")
	case req.To != "" && req.Auto:
		return req, errors.New("the scheduled `vm migrate` has both --to and --auto: give only one of them")
	}
	return req, nil
}
