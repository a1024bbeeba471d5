package integration

import (
	"strings"
	"testing"
	"time"

	"github.com/godwit/godwit/internal/api"
	"github.com/godwit/godwit/internal/audit"
	"github.com/godwit/godwit/internal/labtest"
)

// TestBalancerEvensBusyHosts: two VMs on host-1 of two, the balancer in recommend mode
// at level 3, a round every 2 s. Idle (and past their boot, which the agent does not
// count), they are no imbalance worth a move: no recommendation. Made busy (each guest rewriting memory as fast as it can: a core
// each), host-1 is loaded and host-2 empty: after three rounds over the target the
// balancer recommends moving one VM to host-2, explained with numbers, and moves
// nothing. Applied, the VM moves, and the move's records name the plan. In automatic
// mode, with one busy VM per host, the cluster is even: no further move.
func TestBalancerEvensBusyHosts(t *testing.T) {
	t.Parallel()
	l := labtest.NewWith(t, home, 2, "--center-arg=--balance-interval=2s")
	a, b := twoVMs(t, l, "host-1", "bal-1", "bal-2")
	status := func() api.BalancerStatus {
		t.Helper()
		var st api.BalancerStatus
		l.RunJSON(&st, "cluster", "balancer")
		return st
	}
	recommendations := func() []api.Plan {
		t.Helper()
		var ps []api.Plan
		l.RunJSON(&ps, "cluster", "recommendations")
		return ps
	}
	// rounds waits for n more rounds of the balancer.
	rounds := func(n int) api.BalancerStatus {
		t.Helper()
		seen := 0
		var last time.Time
		for start := time.Now(); ; time.Sleep(500 * time.Millisecond) {
			st := status()
			if st.LastRound != nil && !st.LastRound.Equal(last) {
				if !last.IsZero() {
					seen++
				}
				last = *st.LastRound
			}
			if seen >= n {
				return st
			}
			if time.Since(start) > time.Minute {
				t.Fatalf("the balancer ran %d rounds in a minute; want %d", seen, n)
			}
		}
	}

	var set api.BalancerStatus
	l.RunJSON(&set, "cluster", "balancer", "--mode", "recommend", "--level", "3")
	if set.Mode != api.BalancerRecommend || set.Level != 3 {
		t.Fatalf("balancer after set: %+v", set)
	}
	if _, errOut, err := l.Run("cluster", "balancer", "--level", "9"); err == nil || !strings.Contains(errOut, "level") {
		t.Errorf("level 9: %v %q; want it refused", err, errOut)
	}
	// Idle, once their host measures them (a VM's first 30 s, its boot, do not count).
	for start := time.Now(); ; time.Sleep(time.Second) {
		var h api.Host
		l.RunJSON(&h, "host", "show", "host-1")
		measured := 0
		for _, v := range h.VMs {
			if v.CPU > 0 {
				measured++
			}
		}
		if measured == 2 {
			break
		}
		if time.Since(start) > 2*time.Minute {
			t.Fatalf("host-1 does not report its VMs' CPU use: %+v", h.VMs)
		}
	}
	if st := rounds(4); len(recommendations()) != 0 || st.RoundsOver >= 3 {
		t.Fatalf("idle VMs: status %+v, recommendations %+v; want none", st, recommendations())
	}

	dirty(t, l, a.IP, 32, 0)
	dirty(t, l, b.IP, 32, 0)
	defer dirty(t, l, a.IP, 0, 0)
	var rec api.Plan
	for start := time.Now(); ; time.Sleep(time.Second) {
		if ps := recommendations(); len(ps) > 0 {
			rec = ps[0]
			break
		}
		if time.Since(start) > 3*time.Minute {
			t.Fatalf("no recommendation with both VMs busy on host-1: %+v", status())
		}
	}
	x := rec.Explanation
	if len(rec.Moves) != 1 || rec.Moves[0].From != "host-1" || rec.Moves[0].To != "host-2" || x == nil ||
		!(x.ImbalanceAfter < x.Imbalance) || x.Imbalance <= x.Target || x.RoundsOver < 3 || !(x.SourceLoadAfter < x.SourceLoad) {
		t.Fatalf("recommendation: %+v, explained %+v; want one VM host-1 → host-2, the imbalance over target and lowered", rec, x)
	}
	moved := rec.Moves[0].VM
	for _, name := range []string{"bal-1", "bal-2"} {
		var ms []api.Migration
		l.RunJSON(&ms, "migration", "list", "--vm", name)
		if len(ms) != 0 {
			t.Fatalf("recommend mode moved %s: %+v", name, ms)
		}
	}
	if out := l.MustRun("cluster", "recommendations", "-o", "table"); !strings.Contains(out, "Why: imbalance") {
		t.Errorf("recommendations for people: %q; want the explanation", out)
	} else {
		t.Logf("the recommendation:\n%s", out)
	}

	l.MustRun("cluster", "apply", rec.ID)
	for start := time.Now(); ; time.Sleep(500 * time.Millisecond) {
		var p api.Plan
		l.RunJSON(&p, "plan", "show", rec.ID)
		if p.State == api.PlanDone {
			break
		}
		if p.State == api.PlanBlocked || time.Since(start) > 2*time.Minute {
			t.Fatalf("the applied plan: %+v", p)
		}
	}
	var vm api.VM
	l.RunJSON(&vm, "vm", "show", moved)
	if vm.Host != "host-2" || vm.State != api.VMRunning {
		t.Fatalf("VM %s after the applied move: on %s, %s; want running on host-2", moved, vm.Host, vm.State)
	}
	recs := waitAudit(t, l, func(rs []audit.Record) bool { return find(rs, "migration.finish") != nil }, "--vm", moved)
	if r := find(recs, "vm.migrate"); r == nil || param(*r, "plan") != rec.ID {
		t.Errorf("the move's vm.migrate record: %+v; want it to name plan %s", r, rec.ID)
	}

	// Even now: automatic mode makes no further move.
	l.MustRun("cluster", "balancer", "--mode", "automatic")
	rounds(4)
	var plans []api.Plan
	l.RunJSON(&plans, "plan", "list")
	for _, p := range plans {
		if p.Kind == api.PlanBalance && p.ID != rec.ID && p.State != api.PlanCancelled {
			t.Errorf("a further balance plan on an even cluster: %+v", p)
		}
	}
	l.MustRun("cluster", "balancer", "--mode", "off")
	dirty(t, l, b.IP, 0, 0)
}
