package cli

import (
	"fmt"
	"io"

	"github.com/godwit/godwit/internal/api"
)

// predictedCells are a prediction's total time and downtime for a table ("-" for none).
func predictedCells(p *api.Prediction) (total, downtime string) {
	if p == nil || p.LinkBps <= 0 {
		return "-", "-"
	}
	if p.GivesUp {
		return fmt.Sprintf("cancelled at %.0f s", p.TotalMS/1000), "-"
	}
	return fmt.Sprintf("%.1f s", p.TotalMS/1000), fmt.Sprintf("%.0f ms", p.DowntimeMS)
}

// predictionBasis says what a prediction was made from.
func predictionBasis(p *api.Prediction) string {
	return fmt.Sprintf("link: %s; memory: %s; fixed costs %.0f ms, switch-over %.0f ms",
		p.LinkSource, orDash(p.DirtySource), p.FixedMS, p.SwitchoverMS)
}

// printPredictionNotes lists, under a table, each host's prediction in words.
func printPredictionNotes(w io.Writer, hosts []string, preds []*api.Prediction) {
	header := false
	for i, p := range preds {
		if p == nil {
			continue
		}
		if !header {
			fmt.Fprintln(w, "Predictions:")
			header = true
		}
		fmt.Fprintf(w, "  %s: %s\n    (%s)\n", hosts[i], p.Note, predictionBasis(p))
	}
}

// predictedAgainstActual is a migration's prediction beside what happened, for `migration
// show`.
func predictedAgainstActual(m api.Migration) string {
	p := m.Prediction
	total, down := predictedCells(p)
	s := fmt.Sprintf("total %s, downtime %s", total, down)
	if m.State == api.MigrationSucceeded && p.TotalMS > 0 && p.DowntimeMS > 0 {
		s += fmt.Sprintf(" (actual %.1f s, %+.0f%%; %.0f ms, %+.0f%%)", m.TotalMS/1000, 100*(m.TotalMS/p.TotalMS-1),
			m.DowntimeMS, 100*(m.DowntimeMS/p.DowntimeMS-1))
	}
	return s + "; " + p.Note
}
