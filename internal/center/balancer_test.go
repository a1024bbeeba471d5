package center

import (
	"context"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/godwit/godwit/internal/api"
	"github.com/godwit/godwit/internal/store"
)

// The balancer through the API and its rounds: bad settings are refused with nothing
// changed; in recommend mode two busy VMs on one host of two give, after holdRounds
// rounds over the target and not before, one recommended move with its explanation,
// kept (not repeated) by the next rounds; applying it runs it; in automatic mode the
// move runs at once and nothing more is proposed while it is under way.
func TestBalancerRecommendsThenApplies(t *testing.T) {
	c := newTestCenter(t)
	ctx := context.Background()
	now := time.Now()
	vms := map[string][]api.VMStatus{"host-1": {}, "host-2": {}}
	for i, name := range []string{"busy-1", "busy-2"} {
		id := uuid.NewString()
		if err := c.store.InsertVM(ctx, store.VMRecord{Spec: api.VMSpec{Name: name, UUID: id, CPUs: 2, MemoryMiB: 512,
			Boot: api.Boot{Kernel: "[shared] images/godwit-test/vmlinuz"}}, Host: "host-1",
			Desired: api.VMRunning, State: api.VMRunning, PID: 100 + i, Created: now, Updated: now}); err != nil {
			t.Fatal(err)
		}
		vms["host-1"] = append(vms["host-1"], api.VMStatus{Name: name, UUID: id, State: api.VMRunning, PID: 100 + i, CPU: 1.5})
	}
	beat := func() {
		t.Helper()
		for name, v := range vms {
			f := placementFacts(name, 32<<10)
			f.VMs = v
			if _, err := c.store.SaveHeartbeat(ctx, f, time.Now()); err != nil {
				t.Fatal(err)
			}
		}
	}
	srv := httptest.NewServer(c.Handler())
	t.Cleanup(srv.Close)
	call := func(method, path, body string) (int, string) {
		t.Helper()
		st, b := apiCall(t, srv.URL, method, path, body)
		return st, string(b)
	}
	for _, bad := range []string{`{"mode":"sometimes","level":3}`, `{"mode":"automatic","level":6}`, `{"mode":"automatic","level":0}`} {
		if st, body := call("PUT", "/api/v1/cluster/balancer", bad); st != http.StatusBadRequest {
			t.Errorf("PUT %s: %d %s; want 400", bad, st, body)
		}
	}
	if set, _ := c.store.BalancerSettings(ctx); set.Mode != api.BalancerOff || set.Level != 3 {
		t.Fatalf("settings after refused requests: %+v; want off, level 3", set)
	}
	if st, body := call("PUT", "/api/v1/cluster/balancer", `{"mode":"recommend","level":3}`); st != 200 {
		t.Fatalf("PUT recommend: %d %s", st, body)
	}
	recommended := func() []api.Plan {
		ps, err := c.store.Plans(ctx, "", false, 50)
		if err != nil {
			t.Fatal(err)
		}
		var out []api.Plan
		for _, p := range ps {
			if p.Kind == api.PlanBalance && p.State == api.PlanRecommended {
				out = append(out, p)
			}
		}
		return out
	}
	for round := 1; round < holdRounds; round++ {
		beat()
		c.balanceRound(ctx)
		if n := len(recommended()); n != 0 {
			t.Fatalf("round %d: %d recommendations; want none before %d rounds over the target", round, n, holdRounds)
		}
	}
	beat()
	c.balanceRound(ctx)
	beat()
	c.balanceRound(ctx)
	recs := recommended()
	if len(recs) != 1 {
		t.Fatalf("after %d rounds: %d recommendations; want exactly one", holdRounds+1, len(recs))
	}
	p := recs[0]
	if len(p.Moves) != 1 || p.Moves[0].From != "host-1" || p.Moves[0].To != "host-2" || p.Explanation == nil ||
		!(p.Explanation.ImbalanceAfter < p.Explanation.Imbalance) || p.Explanation.RoundsOver < holdRounds {
		t.Fatalf("recommendation: %+v %+v; want one move host-1 → host-2, explained", p, p.Explanation)
	}
	st, _ := c.balancerStatus(ctx)
	if st.Imbalance <= st.Target || len(st.Hosts) != 2 || !strings.Contains(st.Note, p.ID) {
		t.Errorf("status: %+v; want the imbalance over the target, both hosts, the recommendation named", st)
	}
	if ms, _ := c.store.PlanMigrations(ctx, p.ID); len(ms) != 0 {
		t.Fatalf("recommend mode started migrations: %+v", ms)
	}
	if code, body := call("POST", "/api/v1/plans/"+p.ID+"/apply", ""); code != 200 || !strings.Contains(body, `"state":"running"`) {
		t.Fatalf("apply: %d %s; want the plan running", code, body)
	}
	if code, _ := call("POST", "/api/v1/plans/"+p.ID+"/apply", ""); code != http.StatusConflict {
		t.Errorf("second apply: %d; want 409", code)
	}

	// Automatic: while that plan is under way, nothing more; once it is done, the VM
	// moved is in its cooldown.
	if st, body := call("PUT", "/api/v1/cluster/balancer", `{"mode":"automatic","level":5}`); st != 200 {
		t.Fatalf("PUT automatic: %d %s", st, body)
	}
	for range holdRounds {
		beat()
		c.balanceRound(ctx)
	}
	st, _ = c.balancerStatus(ctx)
	if !strings.Contains(st.Note, "waits for balance plan "+p.ID) {
		t.Errorf("automatic, with a balance plan under way: note %q; want it to wait", st.Note)
	}
}
