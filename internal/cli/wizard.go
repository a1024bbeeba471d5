package cli

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"strings"
	"time"

	"github.com/spf13/cobra"
	"golang.org/x/term"

	"github.com/godwit/godwit/internal/api"
	"github.com/godwit/godwit/internal/placement"
)

// migrateFlags are the flags of `godwit vm migrate`.
type migrateFlags struct {
	req    api.MigrateRequest
	auto   bool
	check  bool
	yes    bool
	detach bool
}

func newVMMigrateCmd(e *env) *cobra.Command {
	var f migrateFlags
	cmd := &cobra.Command{
		Use:   "migrate NAME... [--to HOST | --auto] [--check]",
		Short: "Live-migrate running VMs to other hosts, or check and rank the destinations",
		Long: `Move a running VM to another host while it keeps running: its memory is copied while
it runs, then it pauses for a moment on this host and resumes on the other, with the same
MAC and IP, its TCP connections open, and its disks handed over on the shared datastore.

  vm migrate NAME --to HOST        migrate now (or queue, when the hosts' slots are taken)
  vm migrate NAME --check [--to H] check every host (or H) as a destination, changing
                                   nothing: typed errors (which block) and warnings,
                                   and for each compatible host the predicted total
                                   time and downtime and whether it converges without
                                   throttling (under --policy, default the VM's)
  vm migrate NAME                  the wizard: rank the compatible hosts by live load,
                                   with a score breakdown and the same predictions,
                                   list the refused ones with their reasons, and
                                   migrate to the best after you confirm (or with --yes)
  vm migrate A B C --to HOST       move several VMs by one request
  vm migrate A B C --auto          ... each to the wizard's best host

--priority high|normal|low: high is admitted first and gets a larger share of the
migration network and CPU, but is never queued — refused if its slots are taken now;
normal and low wait in the queue (normal first) when the limits are reached.

--postcopy allows post-copy as a last resort: when throttling the VM's vCPUs as far as
the policy goes still needs more downtime than it allows, the VM is switched to the
destination and fetches the memory it lacks from there. Once in post-copy the VM cannot
fall back to the source: a cancel no longer brings it back, and if the source host or
the link between the hosts dies for good before the last page arrived, the VM is lost
(it stays stopped, its disks intact). A link that comes back is recovered from.

Progress shows the phase, the share of memory sent, the transfer and dirty rates, the
pass and the expected downtime; a queued migration shows what it waits for. --detach
returns at once with the migration's id (` + "`godwit migration watch ID`" + ` follows it later).`,
		Args: cobra.MinimumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := e.client()
			if err != nil {
				return err
			}
			switch {
			case f.check:
				if len(args) != 1 || f.auto {
					return errors.New("--check looks at one VM: `godwit vm migrate NAME --check [--to HOST]`")
				}
				return e.checkMigration(cmd.Context(), c, args[0], f.req.To, f.req.Policy)
			case len(args) > 1 || f.auto:
				return e.bulkMigrate(cmd.Context(), c, args, f)
			case f.req.To == "":
				return e.wizard(cmd.Context(), c, cmd.InOrStdin(), args[0], f)
			}
			return e.migrateOne(cmd.Context(), c, args[0], f)
		},
	}
	fl := cmd.Flags()
	fl.StringVar(&f.req.To, "to", "", "destination host")
	fl.BoolVar(&f.auto, "auto", false, "let the wizard place each VM on its best host")
	fl.BoolVar(&f.check, "check", false, "only check the destinations; change nothing")
	fl.BoolVarP(&f.yes, "yes", "y", false, "migrate to the wizard's best host without asking")
	fl.StringVar(&f.req.Policy, "policy", "", "convergence policy (see `godwit migration policies`)")
	fl.StringVar(&f.req.Encryption, "encryption", "", "encrypt the memory stream: required, opportunistic or off (default: the policy's, opportunistic)")
	fl.StringVar(&f.req.Priority, "priority", "", "high, normal (default) or low")
	fl.BoolVar(&f.req.Postcopy, "postcopy", false, "allow post-copy as a last resort; once in post-copy the VM cannot fall back to the source, and is lost if the source or the link dies for good")
	fl.BoolVar(&f.detach, "detach", false, "return at once with the migration's id")
	return cmd
}

// migrateOne migrates one VM to f.req.To.
func (e *env) migrateOne(ctx context.Context, c *api.Client, name string, f migrateFlags) error {
	var m api.Migration
	if err := c.Do(ctx, http.MethodPost, "/api/v1/vms/"+name+"/migrate", f.req, &m); err != nil {
		return fmt.Errorf("migrate VM %s: %w", name, err)
	}
	if f.detach {
		if e.output == "json" {
			return printJSON(e.out, m)
		}
		fmt.Fprintf(e.out, "migration %s of %s to %s %s; follow it with `godwit migration watch %s`\n", m.ID, m.VM, m.Destination, startedWord(m), m.ID)
		return nil
	}
	return e.watchMigration(ctx, c, m.ID)
}

func startedWord(m api.Migration) string {
	if m.State == api.MigrationQueued {
		return "queued (" + m.Waiting + ")"
	}
	return "started"
}

// checkMigration prints the compatibility of every host (or to) as a destination. With
// to, an incompatible host is an error (exit status 1).
func (e *env) checkMigration(ctx context.Context, c *api.Client, name, to, policy string) error {
	var chk api.MigrationCheck
	q := url.Values{}
	if to != "" {
		q.Set("to", to)
	}
	if policy != "" {
		q.Set("policy", policy)
	}
	path := "/api/v1/vms/" + name + "/migrate/check"
	if len(q) > 0 {
		path += "?" + q.Encode()
	}
	if err := c.Do(ctx, http.MethodGet, path, nil, &chk); err != nil {
		return fmt.Errorf("check the migration of %s: %w", name, err)
	}
	if e.output == "json" {
		if err := printJSON(e.out, chk); err != nil {
			return err
		}
	} else {
		fmt.Fprintf(e.out, "VM %s on %s — destinations:\n", chk.VM, chk.Source)
		t := newTable("HOST", "VERDICT", "PREDICTED TOTAL", "DOWNTIME", "FINDINGS")
		hosts, preds := make([]string, len(chk.Hosts)), make([]*api.Prediction, len(chk.Hosts))
		for i, h := range chk.Hosts {
			verdict := "compatible"
			if !h.Compatible {
				verdict = "refused"
			}
			total, down := predictedCells(h.Prediction)
			t.row(h.Host, verdict, total, down, findingsText(append(h.Errors, h.Warnings...)))
			hosts[i], preds[i] = h.Host, h.Prediction
		}
		if err := t.print(e.out); err != nil {
			return err
		}
		printPredictionNotes(e.out, hosts, preds)
	}
	if to != "" && len(chk.Hosts) == 1 && !chk.Hosts[0].Compatible {
		return fmt.Errorf("host %s cannot take VM %s", to, name)
	}
	return nil
}

// findingsText is findings as "error code: message; warning code: message".
func findingsText(fs []placement.Finding) string {
	if len(fs) == 0 {
		return "-"
	}
	parts := make([]string, len(fs))
	for i, f := range fs {
		parts[i] = fmt.Sprintf("%s %s: %s", f.Severity, f.Code, f.Message)
	}
	return strings.Join(parts, "; ")
}

// wizard ranks the destinations of one VM, shows why, and migrates to the best one
// after a confirmation (or --yes).
func (e *env) wizard(ctx context.Context, c *api.Client, in io.Reader, name string, f migrateFlags) error {
	var rec api.Recommendation
	path := "/api/v1/vms/" + name + "/migrate/recommend"
	if f.req.Policy != "" {
		path += "?policy=" + url.QueryEscape(f.req.Policy)
	}
	if err := c.Do(ctx, http.MethodGet, path, nil, &rec); err != nil {
		return fmt.Errorf("recommend a destination for %s: %w", name, err)
	}
	best, ok := rec.Best()
	if e.output == "json" && !f.yes {
		return printJSON(e.out, rec)
	}
	if e.output != "json" {
		printRecommendation(e.out, rec)
	}
	if !ok {
		return fmt.Errorf("no host can take VM %s; the reasons are listed above", name)
	}
	if !f.yes {
		file, isFile := in.(*os.File)
		if !isFile || !term.IsTerminal(int(file.Fd())) {
			return fmt.Errorf("not migrating without a confirmation: add --yes to migrate %s to %s, or --to HOST to choose", name, best.Host)
		}
		fmt.Fprintf(e.errOut, "Migrate %s to %s? [y/N] ", name, best.Host)
		line, _ := bufio.NewReader(file).ReadString('\n')
		if a := strings.ToLower(strings.TrimSpace(line)); a != "y" && a != "yes" {
			return errors.New("not migrated")
		}
	}
	f.req.To = best.Host
	return e.migrateOne(ctx, c, name, f)
}

// printRecommendation shows the ranked hosts with their score breakdown, and the refused
// hosts with their reasons.
func printRecommendation(w io.Writer, rec api.Recommendation) {
	fmt.Fprintf(w, "Destinations for VM %s (now on %s), best first:\n", rec.VM, rec.Source)
	t := newTable("RANK", "HOST", "SCORE", "RATING", "CPU", "MEMORY", "MIGRATIONS", "LINK", "PREDICTED TOTAL", "DOWNTIME", "WARNINGS")
	hosts, preds := make([]string, len(rec.Candidates)), make([]*api.Prediction, len(rec.Candidates))
	for i, cand := range rec.Candidates {
		cells := map[string]string{}
		for _, b := range cand.Breakdown {
			cells[b.Name] = fmt.Sprintf("%.0f×%.2f (%s)", b.Score, b.Weight, b.Value)
		}
		total, down := predictedCells(cand.Prediction)
		t.row(fmt.Sprint(i+1), cand.Host, fmt.Sprintf("%.1f", cand.Score), strings.Repeat("*", cand.Stars),
			cells[placement.CriterionCPU], cells[placement.CriterionMemory], cells[placement.CriterionMigrations],
			cells[placement.CriterionLink], total, down, findingsText(cand.Warnings))
		hosts[i], preds[i] = cand.Host, cand.Prediction
	}
	_ = t.print(w)
	printPredictionNotes(w, hosts, preds)
	if len(rec.Refused) > 0 {
		fmt.Fprintln(w, "Refused:")
		for _, r := range rec.Refused {
			fmt.Fprintf(w, "  %s: %s\n", r.Host, findingsText(r.Errors))
		}
	}
}

// bulkMigrate moves several VMs by one request and follows them all.
func (e *env) bulkMigrate(ctx context.Context, c *api.Client, vms []string, f migrateFlags) error {
	if f.req.To == "" && !f.auto {
		return errors.New("say where the VMs go: --to HOST, or --auto to let the wizard place each one")
	}
	req := api.BulkMigrateRequest{VMs: vms, To: f.req.To, Auto: f.auto, Policy: f.req.Policy, Encryption: f.req.Encryption, Priority: f.req.Priority, Postcopy: f.req.Postcopy}
	var rep api.BulkMigrateReply
	if err := c.Do(ctx, http.MethodPost, "/api/v1/migrations", req, &rep); err != nil {
		return fmt.Errorf("migrate %s: %w", strings.Join(vms, ", "), err)
	}
	if !f.detach {
		for i, m := range rep.Migrations {
			var cur api.Migration
			for !terminal(cur.State) {
				if err := c.Do(ctx, http.MethodGet, "/api/v1/migrations/"+m.ID, nil, &cur); err != nil {
					return err
				}
				if !terminal(cur.State) {
					if err := sleepCtx(ctx); err != nil {
						return err
					}
				}
			}
			rep.Migrations[i] = cur
		}
	}
	if e.output == "json" {
		if err := printJSON(e.out, rep); err != nil {
			return err
		}
	} else {
		t := newTable("MIGRATION", "VM", "FROM", "TO", "STATE", "PRIORITY", "TOTAL", "DOWNTIME", "NOTE")
		for _, m := range rep.Migrations {
			note := m.Error
			if m.State == api.MigrationQueued {
				note = m.Waiting
			}
			t.row(m.ID, m.VM, m.Source, m.Destination, m.State, orDash(m.Priority), fmt.Sprintf("%.0f ms", m.TotalMS),
				fmt.Sprintf("%.1f ms", m.DowntimeMS), orDash(note))
		}
		for _, r := range rep.Refused {
			t.row("-", r.VM, "-", "-", "refused", "-", "-", "-", r.Error)
		}
		if err := t.print(e.out); err != nil {
			return err
		}
	}
	failed := len(rep.Refused)
	for _, m := range rep.Migrations {
		if !f.detach && m.State != api.MigrationSucceeded {
			failed++
		}
	}
	if failed > 0 {
		return fmt.Errorf("%d of %d VMs were not moved", failed, len(vms))
	}
	return nil
}

// sleepCtx waits a polling interval, or less if ctx ends.
func sleepCtx(ctx context.Context) error {
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-time.After(200 * time.Millisecond):
		return nil
	}
}
