package cli

import (
	"context"
	"fmt"
	"math"
	"net/http"
	"os"
	"strings"
	"time"

	"github.com/spf13/cobra"
	"golang.org/x/term"

	"github.com/godwit/godwit/internal/api"
	"github.com/godwit/godwit/internal/migration"
)

// migrationSummary is what `vm migrate -o json` prints when a migration ends.
type migrationSummary struct {
	ID          string  `json:"id"`
	VM          string  `json:"vm"`
	State       string  `json:"state"`
	Source      string  `json:"source"`
	Destination string  `json:"destination"`
	Policy      string  `json:"policy"`
	TotalMS     float64 `json:"total_ms"`
	DowntimeMS  float64 `json:"downtime_ms"`
	PauseMS     float64 `json:"pause_ms,omitempty"`
	// Pause is where the pause went (see api.PauseBreakdown).
	Pause     *api.PauseBreakdown `json:"pause,omitempty"`
	Bytes     uint64              `json:"bytes"`
	Passes    int                 `json:"passes"`
	Encrypted bool                `json:"encrypted"`
	Priority  string              `json:"priority,omitempty"`
	Postcopy  bool                `json:"postcopy,omitempty"`
	Error     string              `json:"error,omitempty"`
	// Prediction is what was predicted when the migration was admitted.
	Prediction *api.Prediction `json:"prediction,omitempty"`
}

func summaryOf(m api.Migration) migrationSummary {
	return migrationSummary{ID: m.ID, VM: m.VM, State: m.State, Source: m.Source, Destination: m.Destination,
		Policy: m.Policy, TotalMS: m.TotalMS, DowntimeMS: m.DowntimeMS, PauseMS: m.PauseMS, Pause: m.Pause, Bytes: m.Bytes, Passes: m.Passes, Encrypted: m.Encrypted, Priority: m.Priority, Postcopy: m.Postcopy, Error: m.Error, Prediction: m.Prediction}
}

// watchMigration shows a migration's progress until it ends and prints its summary. A
// failed or cancelled migration is an error (non-zero exit).
func (e *env) watchMigration(ctx context.Context, c *api.Client, id string) error {
	tty := false
	if f, ok := e.errOut.(*os.File); ok {
		tty = term.IsTerminal(int(f.Fd()))
	}
	var m api.Migration
	lastLine := time.Time{}
	for {
		if err := c.Do(ctx, http.MethodGet, "/api/v1/migrations/"+id, nil, &m); err != nil {
			if ctx.Err() != nil {
				fmt.Fprintf(e.errOut, "\nstopped watching; migration %s goes on (`godwit migration cancel %s` cancels it)\n", id, id)
			}
			return err
		}
		if terminal(m.State) {
			break
		}
		switch line := progressLine(m); {
		case m.State == api.MigrationQueued && tty:
			fmt.Fprintf(e.errOut, "\r\033[K%s → %s  queued: %s", m.Source, m.Destination, m.Waiting)
		case m.State == api.MigrationQueued:
			if time.Since(lastLine) >= time.Second {
				fmt.Fprintf(e.errOut, "%s → %s  queued: %s\n", m.Source, m.Destination, m.Waiting)
				lastLine = time.Now()
			}
		case m.Progress.Phase == "": // nothing measured yet
		case tty:
			fmt.Fprintf(e.errOut, "\r\033[K%s", line)
		case time.Since(lastLine) >= time.Second:
			fmt.Fprintln(e.errOut, line)
			lastLine = time.Now()
		}
		select {
		case <-ctx.Done():
			fmt.Fprintf(e.errOut, "\nstopped watching; migration %s goes on (`godwit migration cancel %s` cancels it)\n", id, id)
			return ctx.Err()
		case <-time.After(100 * time.Millisecond):
		}
	}
	if tty {
		fmt.Fprint(e.errOut, "\r\033[K")
	}
	if e.output == "json" {
		if err := printJSON(e.out, summaryOf(m)); err != nil {
			return err
		}
	} else {
		printMigration(e, m)
	}
	if m.State != api.MigrationSucceeded {
		return fmt.Errorf("migration %s of %s %s: %s", m.ID, m.VM, m.State, m.Error)
	}
	return nil
}

func terminal(state string) bool {
	return state == api.MigrationSucceeded || state == api.MigrationFailed || state == api.MigrationCancelled
}

func progressLine(m api.Migration) string {
	p := m.Progress
	s := fmt.Sprintf("%s → %s  %-10s %5.1f%%  pass %d  sent %s  %s/s  dirty %s/s  expected downtime %.0f ms",
		m.Source, m.Destination, orDash(p.Phase), p.PercentSent, p.Pass, bytesStr(float64(p.TransferredBytes)),
		bytesStr(p.TransferRate), bytesStr(p.DirtyRate), p.ExpectedDowntimeMS)
	if p.ThrottlePercent > 0 {
		s += fmt.Sprintf("  throttle %d%%", p.ThrottlePercent)
	}
	if p.Note != "" {
		s += "  (" + p.Note + ")"
	}
	return s
}

func bytesStr(b float64) string {
	switch {
	case b >= 1<<30:
		return fmt.Sprintf("%.2f GiB", b/(1<<30))
	case b >= 1<<20:
		return fmt.Sprintf("%.1f MiB", b/(1<<20))
	case b >= 1<<10:
		return fmt.Sprintf("%.0f KiB", b/(1<<10))
	}
	return fmt.Sprintf("%.0f B", b)
}

func printMigration(e *env, m api.Migration) {
	state := m.State
	if m.Error != "" {
		state += ": " + m.Error
	}
	_ = kv(e.out, "Migration", m.ID, "VM", m.VM, "From", m.Source, "To", m.Destination, "Policy", m.Policy,
		"Priority", orDash(m.Priority), "Initiator", orDash(m.Initiator),
		"State", state,
		"Total time", fmt.Sprintf("%.0f ms", m.TotalMS),
		"Downtime", fmt.Sprintf("%.1f ms (QEMU); %.1f ms from the source's stop to the destination's resume", m.DowntimeMS, m.PauseMS),
		"Pause", pauseStr(m.Pause),
		"Sent", bytesStr(float64(m.Bytes)), "Passes", fmt.Sprint(m.Passes), "Encrypted", encryptedStr(m),
		"Post-copy", postcopyStr(m),
		"Started", m.Started.UTC().Format(time.RFC3339))
	if m.Prediction != nil {
		_ = kv(e.out, "Predicted", predictedAgainstActual(m), "Prediction from", predictionBasis(m.Prediction))
	}
}

// postcopyStr says whether a migration could switch to post-copy, and whether it did.
func postcopyStr(m api.Migration) string {
	switch {
	case m.Postcopy && m.PostcopyRecoveries > 0:
		return fmt.Sprintf("yes, its stream recovered %d times (the VM could not return to %s from the switch)", m.PostcopyRecoveries, m.Source)
	case m.Postcopy:
		return fmt.Sprintf("yes (the VM could not return to %s from the switch)", m.Source)
	case m.PostcopyAllowed:
		return "allowed, not used"
	}
	return "no"
}

func newMigrationCmd(e *env) *cobra.Command {
	cmd := &cobra.Command{Use: "migration", Short: "List, watch and cancel live migrations"}
	var vm string
	list := &cobra.Command{
		Use: "list", Short: "List migrations, newest first", Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			c, err := e.client()
			if err != nil {
				return err
			}
			var ms []api.Migration
			if err := c.Do(cmd.Context(), http.MethodGet, "/api/v1/migrations?vm="+vm, nil, &ms); err != nil {
				return err
			}
			if e.output == "json" {
				return printJSON(e.out, ms)
			}
			t := newTable("ID", "VM", "FROM", "TO", "STATE", "TOTAL", "DOWNTIME", "SENT", "STARTED")
			for _, m := range ms {
				t.row(m.ID, m.VM, m.Source, m.Destination, m.State, fmt.Sprintf("%.0f ms", m.TotalMS),
					fmt.Sprintf("%.1f ms", m.DowntimeMS), bytesStr(float64(m.Bytes)), m.Started.UTC().Format(time.RFC3339))
			}
			return t.print(e.out)
		},
	}
	list.Flags().StringVar(&vm, "vm", "", "only this VM's migrations")
	show := &cobra.Command{
		Use: "show ID", Short: "Show one migration", Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return fetchAndPrint(cmd.Context(), e, "/api/v1/migrations/"+args[0], func(m api.Migration) error {
				printMigration(e, m)
				if !terminal(m.State) {
					fmt.Fprintln(e.out, progressLine(m))
				}
				return nil
			})
		},
	}
	watch := &cobra.Command{
		Use: "watch ID", Short: "Follow a migration's progress until it ends", Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := e.client()
			if err != nil {
				return err
			}
			return e.watchMigration(cmd.Context(), c, args[0])
		},
	}
	cancel := &cobra.Command{
		Use: "cancel ID", Short: "Cancel a running migration; the VM stays on its source host", Args: cobra.ExactArgs(1),
		Long: `Cancel a running migration: the VM stays on its source host.

A migration in post-copy cannot be cancelled that way: the VM already runs on the
destination and cannot go back to the source. The cancel then only stops Godwit from
recovering a broken stream: a stream that flows completes, one that is or becomes
broken ends the migration, and the VM is lost (left stopped on the source, its disks
intact).`,
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := e.client()
			if err != nil {
				return err
			}
			var m api.Migration
			if err := c.Do(cmd.Context(), http.MethodPost, "/api/v1/migrations/"+args[0]+"/cancel", nil, &m); err != nil {
				return err
			}
			if migration.Phase(m.Progress.Phase).Postcopy() {
				fmt.Fprintf(e.out, "migration %s of %s is in post-copy: the VM runs on %s and cannot go back to %s; it completes if its stream flows, and is lost if the stream breaks, which is no longer recovered\n",
					m.ID, m.VM, m.Destination, m.Source)
				return nil
			}
			fmt.Fprintf(e.out, "cancelling migration %s of %s; the VM stays on %s\n", m.ID, m.VM, m.Source)
			return nil
		},
	}
	policies := &cobra.Command{
		Use: "policies", Short: "List the convergence policies a migration can use", Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			c, err := e.client()
			if err != nil {
				return err
			}
			var ps []migration.Policy
			if err := c.Do(cmd.Context(), http.MethodGet, "/api/v1/migration-policies", nil, &ps); err != nil {
				return err
			}
			if e.output == "json" {
				return printJSON(e.out, ps)
			}
			t := newTable("NAME", "DOWNTIME TARGET", "BANDWIDTH", "TIME BUDGET", "CHANNELS", "THROTTLE", "POST-COPY")
			for _, p := range ps {
				bw := "link speed"
				if p.MaxBandwidth > 0 {
					bw = bytesStr(float64(p.MaxBandwidth)) + "/s"
				}
				thr := "off"
				if p.ThrottleMax > 0 {
					thr = fmt.Sprintf("%d%%+%d%% up to %d%%", p.ThrottleInitial, p.ThrottleStep, p.ThrottleMax)
				}
				t.row(p.Name, p.DowntimeTarget.String(), bw, p.TimeBudget.String(), fmt.Sprint(max(p.Channels, 1)), thr, fmt.Sprint(p.AllowPostcopy))
			}
			return t.print(e.out)
		},
	}
	slots := &cobra.Command{
		Use: "slots", Short: "Show the concurrent-migration limits: slots in use per host, network and datastore, and the queue", Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return fetchAndPrint(cmd.Context(), e, "/api/v1/migration-slots", func(s api.MigrationSlots) error {
				t := newTable("RESOURCE", "IN USE", "LIMIT", "HOLDERS", "WAITING")
				for _, r := range s.Resources {
					t.row(r.Resource, fmt.Sprint(r.InUse), fmt.Sprint(r.Limit), orDash(strings.Join(r.Holders, " ")), orDash(strings.Join(r.Waiting, " ")))
				}
				return t.print(e.out)
			})
		},
	}
	cmd.AddCommand(list, show, watch, cancel, policies, slots)
	return cmd
}

// encryptedStr says whether a migration's stream was encrypted, and what was asked.
func encryptedStr(m api.Migration) string {
	if m.Encrypted {
		return "yes (TLS, " + orDash(m.Encryption) + ")"
	}
	return "no (" + orDash(m.Encryption) + ")"
}

// pauseStr says where a migration's pause went, part by part.
func pauseStr(b *api.PauseBreakdown) string {
	if b == nil {
		return "-"
	}
	s := fmt.Sprintf("%.1f ms: stop %.1f, last memory pass %.1f, device state %.1f, disk hand-over %.1f, destination load %.1f, resume %.1f",
		b.TotalMS, b.StopMS, b.LastPassMS, b.DeviceStateMS, b.DiskHandoverMS, b.DestinationLoadMS, b.ResumeMS)
	if b.AnnounceMS != nil {
		when := "after"
		if *b.AnnounceMS < 0 {
			when = "before"
		}
		s += fmt.Sprintf("; first announce %.1f ms %s the resume", math.Abs(*b.AnnounceMS), when)
	}
	if b.SlowestLoad != "" {
		s += "; slowest device load: " + b.SlowestLoad
	}
	if b.SlowestSave != "" {
		s += "; slowest device save: " + b.SlowestSave
	}
	return s
}
