package integration

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/godwit/godwit/internal/api"
	"github.com/godwit/godwit/internal/audit"
)

// TestPrediction checks that Godwit says what a migration will take before it starts:
// `vm migrate --check` and the wizard predict every compatible host from the guest's
// measured memory activity and the link; a migration keeps the prediction made when it
// was admitted beside what happened (summary, show, -o json, audit trail); the next
// prediction uses what that migration achieved; and a guest that rewrites memory faster
// than the link carries it is said not to converge without throttling. The hosts' links
// are shaped to 200 Mbit/s, so the guest's dirtier outruns the link whatever else the
// machine runs.
func TestPrediction(t *testing.T) {
	l := newLab(t, 3)
	for _, h := range []string{"host-1", "host-2", "host-3"} {
		l.Shape(h, "200mbit")
	}
	var vm api.VM
	l.RunJSON(&vm, "vm", "create", "pr-1", "--host", "host-1", "--memory", "256")
	l.WaitHTTP("client", "http://"+vm.IP+"/healthz", 90*time.Second)

	// Before any migration: a prediction for each compatible host, from the configured
	// rate of the migration network and the guest's memory as host-1 measured it.
	var chk api.MigrationCheck
	l.RunJSON(&chk, "vm", "migrate", "pr-1", "--check")
	predicted := 0
	for _, h := range chk.Hosts {
		if !h.Compatible {
			if h.Prediction != nil {
				t.Errorf("refused host %s has a prediction: %+v", h.Host, h.Prediction)
			}
			continue
		}
		predicted++
		checkPrediction(t, "check of "+h.Host, h.Prediction)
		if !strings.Contains(h.Prediction.LinkSource, "configured rate") || !strings.Contains(h.Prediction.DirtySource, "measured by host-1") {
			t.Errorf("check of %s before any migration: link from %q, memory from %q; want the configured rate and host-1's measurement",
				h.Host, h.Prediction.LinkSource, h.Prediction.DirtySource)
		}
	}
	if predicted != 2 {
		t.Fatalf("check: %+v; want host-2 and host-3 compatible, each with a prediction", chk)
	}
	table := l.MustRun("vm", "migrate", "pr-1", "--check")
	for _, want := range []string{"PREDICTED TOTAL", "DOWNTIME", "Predictions:", "host-2: ", "host-3: ", "configured rate"} {
		if !strings.Contains(table, want) {
			t.Errorf("vm migrate --check lacks %q:\n%s", want, table)
		}
	}
	var rec api.Recommendation
	l.RunJSON(&rec, "vm", "migrate", "pr-1")
	if len(rec.Candidates) != 2 {
		t.Fatalf("wizard: %+v; want two candidates", rec)
	}
	for _, c := range rec.Candidates {
		checkPrediction(t, "wizard's "+c.Host, c.Prediction)
	}
	if out, errOut, err := l.Run("vm", "migrate", "pr-1"); err == nil || !strings.Contains(out, "PREDICTED TOTAL") || !strings.Contains(out, "Predictions:") {
		t.Errorf("wizard table: err %v\n%s%s; want the predictions, and no migration without --yes", err, out, errOut)
	}

	// A migration keeps its prediction beside what happened.
	var sum api.Migration
	l.RunJSON(&sum, "vm", "migrate", "pr-1", "--to", "host-2")
	if sum.State != api.MigrationSucceeded || sum.TotalMS <= 0 {
		t.Fatalf("migration: %+v", sum)
	}
	checkPrediction(t, "the migration's summary", sum.Prediction)
	t.Logf("migration host-1 → host-2: predicted %.0f ms total, %.1f ms downtime; actual %.0f ms, %.1f ms (%s)",
		sum.Prediction.TotalMS, sum.Prediction.DowntimeMS, sum.TotalMS, sum.DowntimeMS, sum.Prediction.Note)
	var shown api.Migration
	l.RunJSON(&shown, "migration", "show", sum.ID)
	if shown.Prediction == nil || *shown.Prediction != *sum.Prediction || shown.TotalMS != sum.TotalMS {
		t.Errorf("migration show -o json: %+v (prediction %+v); want the summary's prediction %+v and outcome", shown, shown.Prediction, sum.Prediction)
	}
	out := l.MustRun("migration", "show", sum.ID)
	for _, want := range []string{"Predicted:", "actual", "Prediction from:", "configured rate"} {
		if !strings.Contains(out, want) {
			t.Errorf("migration show lacks %q:\n%s", want, out)
		}
	}
	recs := waitAudit(t, l, func(rs []audit.Record) bool { return find(rs, "migration.finish") != nil }, "--vm", "pr-1")
	fin := find(recs, "migration.finish")
	if param(*fin, "predicted_total_ms") != fmt.Sprint(sum.Prediction.TotalMS) || param(*fin, "predicted_downtime_ms") != fmt.Sprint(sum.Prediction.DowntimeMS) ||
		param(*fin, "predicted_converges") != fmt.Sprint(sum.Prediction.Converges) {
		t.Errorf("the migration's audit record: params %s; want its prediction %+v", fin.Params, sum.Prediction)
	}

	// What that migration achieved is the link's rate now, either way.
	var back api.MigrationCheck
	l.RunJSON(&back, "vm", "migrate", "pr-1", "--check", "--to", "host-1")
	if len(back.Hosts) != 1 || back.Hosts[0].Prediction == nil || back.Hosts[0].Prediction.LinkSource != "past migrations between host-2 and host-1 (1)" {
		t.Fatalf("check host-2 → host-1 after a migration host-1 → host-2: %+v; want that migration's link", back)
	}
	checkPrediction(t, "check after a migration", back.Hosts[0].Prediction)

	// The guest rewrites 64 MiB as fast as it can, faster than 200 Mbit/s. Once every
	// measurement a check may use (10 s old at most, each over 5.1 s) began after that,
	// the prediction says the migration does not converge without throttling.
	dirty(t, l, vm.IP, 64, 0)
	time.Sleep(16 * time.Second)
	var busy api.MigrationCheck
	l.RunJSON(&busy, "vm", "migrate", "pr-1", "--check", "--to", "host-1")
	p := busy.Hosts[0].Prediction
	checkPrediction(t, "check of a busy guest", p)
	t.Logf("busy guest: %s", p.Note)
	if p.Converges || p.DirtyRateBps <= p.LinkBps || !strings.Contains(p.Note, "does not converge without throttling") ||
		(p.ThrottlePercent == 0 && !p.GivesUp) {
		t.Errorf("a guest dirtying %.0f B/s over a link of %.0f B/s: %+v; want no convergence without throttling, and what throttling does",
			p.DirtyRateBps, p.LinkBps, p)
	}
	var none api.MigrationCheck
	l.RunJSON(&none, "vm", "migrate", "pr-1", "--check", "--to", "host-1", "--policy", "qemu-defaults")
	if p := none.Hosts[0].Prediction; p == nil || p.Converges || !p.GivesUp || !strings.Contains(p.Note, "does not throttle vCPUs") {
		t.Errorf("the same under qemu-defaults, which never throttles: %+v; want it to give up", p)
	}
	table = l.MustRun("vm", "migrate", "pr-1", "--check", "--to", "host-1")
	if !strings.Contains(table, "does not converge without throttling") {
		t.Errorf("vm migrate --check of a busy guest:\n%s", table)
	}
	if _, errOut, err := l.Run("vm", "migrate", "pr-1", "--check", "--policy", "nosuch"); err == nil || !strings.Contains(errOut, "no migration policy called \"nosuch\"") {
		t.Errorf("--check with an unknown policy: err %v, %s", err, errOut)
	}
	dirty(t, l, vm.IP, 0, 0)
}

// checkPrediction checks that a prediction is there and makes sense: positive times,
// the total longer than the pause and than the fixed costs, a link, a note.
func checkPrediction(t *testing.T, what string, p *api.Prediction) {
	t.Helper()
	switch {
	case p == nil:
		t.Fatalf("%s: no prediction", what)
	case p.TotalMS <= 0 || p.DowntimeMS <= 0 && !p.GivesUp || p.TotalMS <= p.DowntimeMS || p.TotalMS < p.FixedMS:
		t.Errorf("%s: %+v; want positive times, the total above the downtime and the fixed costs", what, p)
	case p.LinkBps <= 0 || p.LinkSource == "" || p.Note == "" || p.DirtySource == "" || p.Passes < 3 || p.Bytes <= 0:
		t.Errorf("%s: %+v; want a link, its source, a note, the memory's source, passes and bytes", what, p)
	}
}
