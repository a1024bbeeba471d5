package cli

import (
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"

	"github.com/godwit/godwit/internal/api"
)

// scheduleSemantics is the part of `godwit schedule`'s help that says how schedules run.
const scheduleSemantics = `Times are UTC, always: --at takes RFC 3339 ("2026-11-26T14:00:00Z", or with an
offset, converted to UTC), "2026-11-26 14:00" (read as UTC) or a delay on the center's
clock ("+30m", "+2h"); --cron takes 5 fields, minute hour day-of-month month
day-of-week ("30 2 * * 6" is 02:30 UTC every Saturday), or @hourly, @daily, @weekly,
@monthly, @yearly.

A schedule runs on the center with nobody present, as "schedule NAME" on behalf of the
user who created it: every migration's task names the initiator "schedule NAME (created
by USER)", and the audit trail names the schedule and USER. Each run is a task of kind
schedule.run that lists the migrations it started or queued and the VMs it refused.
The VMs are checked when the schedule runs, as ` + "`vm migrate`" + ` checks them then: with --to
a VM that no longer fits that host is refused with the reason and never sent elsewhere;
with --auto the wizard picks each VM's host at that moment. A VM deleted since is
refused ("VM x does not exist").

The last outcome is "running" until every migration of the last run has ended, then
"succeeded", or "failed" with the reasons (refused VMs, failed or cancelled migrations).

Missed runs: a run that fell due while the center was down is handled when the center
is back, by the schedule's --missed policy: run-once (the default) runs it once,
however many runs were missed; skip runs none of them and waits for the next one (a
one-shot schedule then never runs, and ` + "`schedule show`" + ` says it was skipped). Either way
the audit trail has a schedule.missed record with how many runs were missed and what
was done. A disabled schedule does not run; enabling it skips the runs that passed
meanwhile.`

// newScheduleCmd is `godwit schedule`: create, list, show, disable, enable and delete
// scheduled migrations.
func newScheduleCmd(e *env) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "schedule",
		Short: "Scheduled migrations: run `vm migrate` later, once or on a cron expression (UTC)",
		Long: `Scheduled migrations, like vCenter's scheduled tasks: a ` + "`vm migrate`" + ` that the center
runs later, once (--at) or on a cron expression (--cron).

` + scheduleSemantics,
	}
	cmd.AddCommand(newScheduleCreateCmd(e), newScheduleListCmd(e), newScheduleShowCmd(e),
		newScheduleSetCmd(e, "disable", "Stop a schedule from running (its running migrations go on)"),
		newScheduleSetCmd(e, "enable", "Let a disabled schedule run again, from its next run on"),
		newScheduleDeleteCmd(e))
	return cmd
}

func newScheduleCreateCmd(e *env) *cobra.Command {
	var req api.CreateScheduleRequest
	cmd := &cobra.Command{
		Use:   "create NAME (--at TIME | --cron EXPR) [--missed run-once|skip] -- vm migrate VM... (--to HOST | --auto) [--priority P] [--policy P] [--encryption E]",
		Short: "Schedule a migration, once or recurring",
		Long: `Schedule a migration. The command to run comes after --; it is ` + "`vm migrate`" + ` with
the VMs to move and --to HOST or --auto, and optionally --priority, --policy and
--encryption (see ` + "`godwit vm migrate --help`" + `).

  godwit schedule create drain-h1 --at "2026-11-26 22:00" -- vm migrate web-1 web-2 --to host-2
  godwit schedule create nightly --cron "0 2 * * *" --missed skip -- vm migrate db-1 --auto
  godwit schedule create soon --at +30m -- vm migrate web-1 --to host-3 --priority low

Everything is checked now — the name, the time (not in the past), the cron expression,
the policy for missed runs, that the VMs and the host exist — and nothing is created
when a check fails.

` + scheduleSemantics,
		Args: cobra.ArbitraryArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			dash := cmd.ArgsLenAtDash()
			if dash < 0 {
				return errors.New("give the command to schedule after --, such as: godwit schedule create NAME --at +1h -- vm migrate VM --to HOST")
			}
			if dash != 1 {
				return fmt.Errorf("give one schedule name before --, not %d words (%s)", dash, strings.Join(args[:dash], " "))
			}
			if err := globalFlagAfterDash(cmd, args[dash:]); err != nil {
				return err
			}
			migrate, err := api.ParseScheduledCommand(args[dash:])
			if err != nil {
				return err
			}
			req.Name, req.Migrate = args[0], migrate
			c, err := e.client()
			if err != nil {
				return err
			}
			var s api.Schedule
			if err := c.Do(cmd.Context(), http.MethodPost, "/api/v1/schedules", req, &s); err != nil {
				return fmt.Errorf("create schedule %s: %w", req.Name, err)
			}
			if e.output == "json" {
				return printJSON(e.out, s)
			}
			fmt.Fprintf(e.out, "Created schedule %s: %s, %s.\n", s.Name, whenOf(s), s.Command)
			return printSchedule(e, s)
		},
	}
	fl := cmd.Flags()
	fl.StringVar(&req.At, "at", "", `run once at this time, in UTC: RFC 3339, "2026-11-26 14:00", or "+30m" from now`)
	fl.StringVar(&req.Cron, "cron", "", `run on this cron expression, in UTC: 5 fields ("0 2 * * *") or @hourly, @daily, @weekly, @monthly, @yearly`)
	fl.StringVar(&req.Missed, "missed", "", "what to do with runs missed while the center was down: run-once (the default: run once on recovery) or skip")
	return cmd
}

func newScheduleListCmd(e *env) *cobra.Command {
	return &cobra.Command{
		Use: "list", Short: "List the schedules with their next and last runs", Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			c, err := e.client()
			if err != nil {
				return err
			}
			var ss []api.Schedule
			if err := c.Do(cmd.Context(), http.MethodGet, "/api/v1/schedules", nil, &ss); err != nil {
				return err
			}
			if e.output == "json" {
				return printJSON(e.out, ss)
			}
			t := newTable("NAME", "WHEN", "MISSED", "ENABLED", "NEXT RUN", "LAST RUN", "OUTCOME", "COMMAND")
			for _, s := range ss {
				t.row(s.Name, whenOf(s), s.Missed, fmt.Sprint(s.Enabled), nextRunOf(s), lastRunOf(s),
					orDash(s.LastOutcome), s.Command)
			}
			return t.print(e.out)
		},
	}
}

func newScheduleShowCmd(e *env) *cobra.Command {
	return &cobra.Command{
		Use: "show NAME", Short: "Show a schedule: when it runs, its last run, its migrations and outcome", Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := e.client()
			if err != nil {
				return err
			}
			var s api.Schedule
			if err := c.Do(cmd.Context(), http.MethodGet, "/api/v1/schedules/"+url.PathEscape(args[0]), nil, &s); err != nil {
				return err
			}
			if e.output == "json" {
				return printJSON(e.out, s)
			}
			return printSchedule(e, s)
		},
	}
}

// newScheduleSetCmd is `schedule disable` or `schedule enable` (verb).
func newScheduleSetCmd(e *env, verb, short string) *cobra.Command {
	return &cobra.Command{
		Use: verb + " NAME", Short: short, Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := e.client()
			if err != nil {
				return err
			}
			var s api.Schedule
			if err := c.Do(cmd.Context(), http.MethodPost, "/api/v1/schedules/"+url.PathEscape(args[0])+"/"+verb, nil, &s); err != nil {
				return fmt.Errorf("%s schedule %s: %w", verb, args[0], err)
			}
			if e.output == "json" {
				return printJSON(e.out, s)
			}
			fmt.Fprintf(e.out, "Schedule %s is %sd; next run: %s.\n", s.Name, verb, nextRunOf(s))
			return nil
		},
	}
}

func newScheduleDeleteCmd(e *env) *cobra.Command {
	return &cobra.Command{
		Use: "delete NAME", Short: "Delete a schedule (the migrations of its last run go on)", Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := e.client()
			if err != nil {
				return err
			}
			if err := c.Do(cmd.Context(), http.MethodDelete, "/api/v1/schedules/"+url.PathEscape(args[0]), nil, nil); err != nil {
				return fmt.Errorf("delete schedule %s: %w", args[0], err)
			}
			fmt.Fprintf(e.out, "Deleted schedule %s.\n", args[0])
			return nil
		},
	}
}

// globalFlagAfterDash refuses a flag of godwit itself (such as -o json or --server)
// among the words of the scheduled command: everything after -- belongs to that
// command, so the flag would not do what was meant.
func globalFlagAfterDash(cmd *cobra.Command, words []string) error {
	global := cmd.Root().PersistentFlags()
	for _, w := range words {
		if w == "--" {
			return nil
		}
		var f *pflag.Flag
		switch {
		case strings.HasPrefix(w, "--"):
			f = global.Lookup(strings.SplitN(w[2:], "=", 2)[0])
		case strings.HasPrefix(w, "-") && len(w) > 1:
			f = global.ShorthandLookup(w[1:2])
		}
		if f != nil {
			return fmt.Errorf("%s is a flag of godwit itself, not of the scheduled command: put it before -- (everything after -- is the command the schedule runs)", w)
		}
	}
	return nil
}

// utcTime formats a time for schedules, which are all UTC.
func utcTime(t time.Time) string { return t.UTC().Format("2006-01-02 15:04:05 UTC") }

func timeOrDash(t *time.Time) string {
	if t == nil {
		return "-"
	}
	return utcTime(*t)
}

// lastRunOf says when a schedule last ran, or that its latest run was skipped (a
// skipped run is always later than the last run).
func lastRunOf(s api.Schedule) string {
	if s.Skipped != nil {
		return "skipped " + utcTime(*s.Skipped)
	}
	return timeOrDash(s.LastRun)
}

// whenOf says when a schedule runs.
func whenOf(s api.Schedule) string {
	if s.At != nil {
		return "once at " + utcTime(*s.At)
	}
	return "cron " + s.Cron + " (UTC)"
}

// nextRunOf says when a schedule runs next, or why it does not.
func nextRunOf(s api.Schedule) string {
	switch {
	case !s.Enabled:
		return "none (disabled)"
	case s.NextRun == nil:
		return "none (no run left)"
	}
	return utcTime(*s.NextRun)
}

// printSchedule prints one schedule for people.
func printSchedule(e *env, s api.Schedule) error {
	missed := s.Missed + " (a run missed while the center was down runs once on recovery)"
	if s.Missed == "skip" {
		missed = s.Missed + " (runs missed while the center was down are not run)"
	}
	pairs := []string{"Schedule", s.Name, "Command", s.Command, "When", whenOf(s), "Missed runs", missed,
		"Enabled", fmt.Sprint(s.Enabled), "Created", utcTime(s.Created) + " by " + orDash(s.CreatedBy),
		"Next run", nextRunOf(s)}
	last := "never"
	if s.LastRun != nil {
		last = utcTime(*s.LastRun) + " (task " + s.LastTask + ")"
	}
	pairs = append(pairs, "Last run", last)
	if s.Skipped != nil {
		pairs = append(pairs, "Skipped", "the run due "+utcTime(*s.Skipped)+" (missed while the center was down, or due while disabled)")
	}
	if s.LastOutcome != "" {
		outcome := s.LastOutcome
		if s.LastError != "" {
			outcome += ": " + s.LastError
		}
		pairs = append(pairs, "Last outcome", outcome)
	}
	for _, m := range s.LastMigrations {
		line := fmt.Sprintf("%s  %s → %s  %s", m.ID, m.VM, m.Destination, m.State)
		if m.Error != "" {
			line += ": " + m.Error
		}
		pairs = append(pairs, "Migration", line)
	}
	for _, r := range s.LastRefused {
		pairs = append(pairs, "Refused", r.VM+": "+r.Error)
	}
	return kv(e.out, pairs...)
}
