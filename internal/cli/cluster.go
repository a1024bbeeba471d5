package cli

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"net/url"

	"github.com/spf13/cobra"

	"github.com/godwit/godwit/internal/api"
)

// newClusterCmd is `cluster`: the balancer's settings, its recommendations, and apply.
func newClusterCmd(e *env) *cobra.Command {
	cmd := &cobra.Command{Use: "cluster", Short: "The cluster's balancer: its mode and level, its recommendations"}
	var mode string
	var level int
	bal := &cobra.Command{
		Use:   "balancer",
		Short: "Show the balancer (each host's load, the imbalance against its target), or set its mode and level",
		Long: "Show the balancer, or set it: --mode off|recommend|automatic and --level 1-5 (1: only mandatory\n" +
			"moves, 5: the most). In recommend mode the balancer offers moves (`godwit cluster recommendations`,\n" +
			"`godwit cluster apply ID`); in automatic mode it makes them, one at a time.",
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			c, err := e.client()
			if err != nil {
				return err
			}
			var st api.BalancerStatus
			if err := c.Do(cmd.Context(), http.MethodGet, "/api/v1/cluster/balancer", nil, &st); err != nil {
				return err
			}
			if cmd.Flags().Changed("mode") || cmd.Flags().Changed("level") {
				set := st.BalancerSettings
				if cmd.Flags().Changed("mode") {
					set.Mode = mode
				}
				if cmd.Flags().Changed("level") {
					set.Level = level
				}
				if err := c.Do(cmd.Context(), http.MethodPut, "/api/v1/cluster/balancer", set, &st); err != nil {
					return err
				}
			}
			if e.output == "json" {
				return printJSON(e.out, st)
			}
			return printBalancer(e.out, st)
		},
	}
	bal.Flags().StringVar(&mode, "mode", "", "off, recommend or automatic")
	bal.Flags().IntVar(&level, "level", 0, "aggressiveness, 1 (only mandatory moves) to 5 (the most)")
	recs := &cobra.Command{
		Use: "recommendations", Short: "The balancer's recommended moves, each explained", Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return fetchAndPrint(cmd.Context(), e, "/api/v1/cluster/recommendations", func(ps []api.Plan) error {
				if len(ps) == 0 {
					fmt.Fprintln(e.out, "No recommendation.")
				}
				for _, p := range ps {
					if err := printPlan(e.out, p); err != nil {
						return err
					}
					printExplanation(e.out, p.Explanation)
				}
				return nil
			})
		},
	}
	apply := &cobra.Command{
		Use: "apply ID", Short: "Carry out a recommended plan", Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return applyPlan(cmd.Context(), e, args[0])
		},
	}
	cmd.AddCommand(bal, recs, apply)
	return cmd
}

func applyPlan(ctx context.Context, e *env, id string) error {
	c, err := e.client()
	if err != nil {
		return err
	}
	var p api.Plan
	if err := c.Do(ctx, http.MethodPost, "/api/v1/plans/"+url.PathEscape(id)+"/apply", nil, &p); err != nil {
		return err
	}
	if e.output == "json" {
		return printJSON(e.out, p)
	}
	return printPlan(e.out, p)
}

// printBalancer prints the balancer's settings and last round.
func printBalancer(w io.Writer, st api.BalancerStatus) error {
	target := fmt.Sprintf("%.3f", st.Target)
	if st.Target < 0 {
		target = "none (level 1, or one host)"
	}
	if err := kv(w, "Mode", st.Mode, "Level", fmt.Sprint(st.Level),
		"Imbalance", fmt.Sprintf("%.3f (target %s; over it %d of %d rounds)", st.Imbalance, target, st.RoundsOver, st.HoldRounds),
		"Last round", orDash(st.Note)); err != nil {
		return err
	}
	t := newTable("HOST", "LOAD", "VMS")
	for _, h := range st.Hosts {
		t.row(h.Host, fmt.Sprintf("%.2f", h.Load), fmt.Sprint(h.VMs))
	}
	return t.print(w)
}

// printExplanation prints why the balancer recommends a move.
func printExplanation(w io.Writer, x *api.BalanceExplanation) {
	if x == nil {
		return
	}
	fmt.Fprintf(w, "  Why: imbalance %.3f → %.3f (level %d target %.3f, over it %d rounds); source load %.2f → %.2f, destination %.2f → %.2f.\n",
		x.Imbalance, x.ImbalanceAfter, x.Level, x.Target, x.RoundsOver, x.SourceLoad, x.SourceLoadAfter, x.DestinationLoad, x.DestinationLoadAfter)
	for _, r := range x.Rejected {
		fmt.Fprintf(w, "  Not %s to %s (would leave %.3f): %s\n", r.VM, r.To, r.ImbalanceAfter, r.Reason)
	}
}
