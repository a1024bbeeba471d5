package cli

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/godwit/godwit/internal/api"
)

// newMaintenanceCmd is `host maintenance`: enter (a plan moves the host's VMs away),
// exit (the plan is cancelled), and the older `maintenance NAME on|off`.
func newMaintenanceCmd(e *env) *cobra.Command {
	var why string
	maint := &cobra.Command{
		Use:   "maintenance NAME on|off",
		Short: "Maintenance mode: `enter HOST` moves its VMs away by a plan, `exit HOST` cancels it (on|off: the same)",
		Args:  cobra.ExactArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			if args[1] != "on" && args[1] != "off" {
				return fmt.Errorf("say on or off, not %q (or use `host maintenance enter|exit HOST`)", args[1])
			}
			return setMaintenance(cmd.Context(), e, args[0], args[1] == "on", why, false)
		},
	}
	maint.Flags().StringVar(&why, "reason", "", "why, for the audit trail and the host list")

	var reason string
	var dryRun, wait bool
	enter := &cobra.Command{
		Use:   "enter HOST",
		Short: "Put a host in maintenance mode: no VM is placed on it, and a plan moves its running VMs away live",
		Long: "Put a host in maintenance mode. The center plans where each running VM goes (biggest first,\n" +
			"destinations spread by the placement engine, each move predicted), then moves them through the\n" +
			"migration queue. The host is \"entering\" until its last QEMU has exited, then \"in_maintenance\";\n" +
			"a VM that cannot move makes it \"blocked\", naming the VM and why. --dry-run shows the plan only.",
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if dryRun {
				return fetchAndPrint(cmd.Context(), e, "/api/v1/hosts/"+url.PathEscape(args[0])+"/maintenance/plan?reason="+url.QueryEscape(reason),
					func(p api.Plan) error { return printPlan(e.out, p) })
			}
			return setMaintenance(cmd.Context(), e, args[0], true, reason, wait)
		},
	}
	enter.Flags().StringVar(&reason, "reason", "", "why, for the audit trail, the plan and the host list")
	enter.Flags().BoolVar(&dryRun, "dry-run", false, "show the plan; change nothing")
	enter.Flags().BoolVar(&wait, "wait", false, "wait until the host is in maintenance (or blocked), showing each move")
	var back bool
	exit := &cobra.Command{
		Use:   "exit HOST",
		Short: "Take a host out of maintenance mode; its plan's queued moves are cancelled (running ones finish)",
		Long: "Take a host out of maintenance mode; its plan's queued moves are cancelled (running ones finish).\n" +
			"With --return, the VMs its last maintenance plan moved away are moved back, by a plan of its own\n" +
			"(`godwit plan list --host HOST`); --wait follows it to the end.",
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return exitMaintenance(cmd.Context(), e, args[0], back, wait)
		},
	}
	exit.Flags().BoolVar(&back, "return", false, "move the VMs the last maintenance plan moved away back to the host")
	exit.Flags().BoolVar(&wait, "wait", false, "with --return, wait until the VMs are back (or the plan is blocked)")
	maint.AddCommand(enter, exit)
	return maint
}

// setMaintenance asks the center to put host into maintenance mode or take it out, and
// says where it stands; with wait, it follows the plan until the host is in maintenance
// or blocked.
func setMaintenance(ctx context.Context, e *env, host string, on bool, reason string, wait bool) error {
	c, err := e.client()
	if err != nil {
		return err
	}
	var h api.Host
	if err := c.Do(ctx, http.MethodPost, "/api/v1/hosts/"+url.PathEscape(host)+"/maintenance",
		api.MaintenanceRequest{Enter: on, Reason: reason}, &h); err != nil {
		return err
	}
	for wait && h.Maintenance != nil && h.Maintenance.State == api.MaintenanceEntering {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(500 * time.Millisecond):
		}
		if err := c.Do(ctx, http.MethodGet, "/api/v1/hosts/"+url.PathEscape(host), nil, &h); err != nil {
			return err
		}
	}
	if e.output == "json" {
		return printJSON(e.out, h)
	}
	fmt.Fprintln(e.out, maintenanceLine(h))
	if h.Maintenance != nil && h.Maintenance.Plan != "" {
		var p api.Plan
		if err := c.Do(ctx, http.MethodGet, "/api/v1/plans/"+url.PathEscape(h.Maintenance.Plan), nil, &p); err != nil {
			return err
		}
		return printPlan(e.out, p)
	}
	return nil
}

// exitMaintenance takes host out of maintenance mode; with back, the VMs its last plan
// moved away go back, and with wait the return plan is followed to its end.
func exitMaintenance(ctx context.Context, e *env, host string, back, wait bool) error {
	c, err := e.client()
	if err != nil {
		return err
	}
	var h api.Host
	if err := c.Do(ctx, http.MethodPost, "/api/v1/hosts/"+url.PathEscape(host)+"/maintenance",
		api.MaintenanceRequest{Enter: false, Return: back}, &h); err != nil {
		return err
	}
	var ret *api.Plan
	if back {
		var open []api.Plan
		if err := c.Do(ctx, http.MethodGet, "/api/v1/plans?state=open&host="+url.QueryEscape(host), nil, &open); err != nil {
			return err
		}
		for i := range open {
			if open[i].Kind == api.PlanReturn {
				ret = &open[i]
				break
			}
		}
		for wait && ret != nil && ret.State == api.PlanRunning {
			select {
			case <-ctx.Done():
				return ctx.Err()
			case <-time.After(500 * time.Millisecond):
			}
			if err := c.Do(ctx, http.MethodGet, "/api/v1/plans/"+url.PathEscape(ret.ID), nil, ret); err != nil {
				return err
			}
		}
	}
	if e.output == "json" {
		if back {
			return printJSON(e.out, ret)
		}
		return printJSON(e.out, h)
	}
	fmt.Fprintln(e.out, maintenanceLine(h))
	if ret != nil {
		return printPlan(e.out, *ret)
	}
	if back {
		fmt.Fprintln(e.out, "No VM to move back.")
	}
	return nil
}

// maintenanceLine says a host's maintenance mode in a sentence.
func maintenanceLine(h api.Host) string {
	m := h.Maintenance
	if m == nil {
		return fmt.Sprintf("Host %s is not in maintenance mode.", h.Name)
	}
	s := fmt.Sprintf("Host %s: %s (since %s", h.Name, maintenanceWords(*m), m.Since.UTC().Format(time.RFC3339))
	if m.Plan != "" {
		s += ", plan " + m.Plan
	}
	s += ")."
	for _, b := range m.Blocked {
		s += fmt.Sprintf("\n  %s cannot move (%s): %s", b.VM, b.Code, b.Error)
	}
	return s
}

// maintenanceWords is a maintenance mode's state, short.
func maintenanceWords(m api.MaintenanceMode) string {
	switch m.State {
	case api.MaintenanceIn:
		return "in maintenance"
	case api.MaintenanceBlocked:
		return fmt.Sprintf("blocked by %d VM(s)", len(m.Blocked))
	case "":
		return "in maintenance"
	}
	return "entering maintenance"
}

// printPlan prints a plan: its state and makespan, then a row per move.
func printPlan(w io.Writer, p api.Plan) error {
	head := fmt.Sprintf("Plan %s: %s of %s", p.ID, p.Kind, p.Host)
	if p.Reason != "" {
		head += " (" + p.Reason + ")"
	}
	head += fmt.Sprintf(", %s; predicted makespan %s", p.State, msWords(p.PredictedMakespanMS))
	if p.ActualMakespanMS > 0 {
		head += ", actual " + msWords(p.ActualMakespanMS)
	}
	fmt.Fprintln(w, head+".")
	if p.Note != "" {
		fmt.Fprintln(w, "  "+p.Note)
	}
	if len(p.Moves) == 0 {
		fmt.Fprintln(w, "  No VM to move.")
		return nil
	}
	t := newTable("VM", "FROM", "TO", "MEMORY", "STATE", "PREDICTED (TOTAL/DOWNTIME)", "ACTUAL", "MIGRATION", "WHY")
	for _, mv := range p.Moves {
		pred, act := "-", "-"
		if mv.Prediction != nil {
			pred = msWords(mv.Prediction.TotalMS) + " / " + msWords(mv.Prediction.DowntimeMS)
		}
		if mv.ActualTotalMS > 0 {
			act = msWords(mv.ActualTotalMS) + " / " + msWords(mv.ActualDowntimeMS)
		}
		why := "-"
		if mv.Error != "" {
			why = strings.TrimSpace(mv.Code + ": " + mv.Error)
		}
		t.row(mv.VM, mv.From, orDash(mv.To), mib(mv.MemoryMiB), mv.State, pred, act, orDash(mv.Migration), why)
	}
	return t.print(w)
}

// msWords is a duration in milliseconds, short.
func msWords(ms float64) string {
	if ms >= 1000 {
		return fmt.Sprintf("%.1f s", ms/1000)
	}
	return fmt.Sprintf("%.0f ms", ms)
}

// newPlanCmd is `plan list|show`: the center's plans.
func newPlanCmd(e *env) *cobra.Command {
	cmd := &cobra.Command{Use: "plan", Short: "The center's plans: maintenance evacuations, each move predicted against actual"}
	var host string
	var open bool
	list := &cobra.Command{
		Use: "list", Short: "List plans, newest first", Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			q := url.Values{}
			if host != "" {
				q.Set("host", host)
			}
			if open {
				q.Set("state", "open")
			}
			return fetchAndPrint(cmd.Context(), e, "/api/v1/plans?"+q.Encode(), func(ps []api.Plan) error {
				t := newTable("ID", "KIND", "HOST", "STATE", "MOVES", "CREATED", "PREDICTED", "ACTUAL", "BY")
				for _, p := range ps {
					act := "-"
					if p.ActualMakespanMS > 0 {
						act = msWords(p.ActualMakespanMS)
					}
					t.row(p.ID, p.Kind, p.Host, p.State, fmt.Sprint(len(p.Moves)), p.Created.UTC().Format(time.RFC3339),
						msWords(p.PredictedMakespanMS), act, orDash(p.Initiator))
				}
				return t.print(e.out)
			})
		},
	}
	list.Flags().StringVar(&host, "host", "", "only the plans of this host")
	list.Flags().BoolVar(&open, "open", false, "only unfinished plans")
	show := &cobra.Command{
		Use: "show ID", Short: "Show a plan and each of its moves", Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return fetchAndPrint(cmd.Context(), e, "/api/v1/plans/"+url.PathEscape(args[0]), func(p api.Plan) error { return printPlan(e.out, p) })
		},
	}
	cmd.AddCommand(list, show)
	return cmd
}
