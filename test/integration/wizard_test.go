package integration

import (
	"encoding/json"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/godwit/godwit/internal/api"
	"github.com/godwit/godwit/internal/labtest"
	"github.com/godwit/godwit/internal/placement"
)

// wizardLab is a 3-host lab whose hosts take 2 migrations each at once, with host-3
// limited to the Nehalem CPU generation.
func wizardLab(t *testing.T) *labtest.Lab {
	return labtest.NewWith(t, home, 3, "--cpu-limit", "host-3=Nehalem", "--center-arg=--max-migrations-per-host=2")
}

// createVMs creates and starts VMs name-1..n round robin on hosts, and waits for them
// to answer.
func createVMs(t *testing.T, l *labtest.Lab, prefix string, hosts []string, n int, extra ...string) []api.VM {
	t.Helper()
	var vms []api.VM
	for i := range n {
		var vm api.VM
		args := append([]string{"vm", "create", fmt.Sprintf("%s-%d", prefix, i+1), "--host", hosts[i%len(hosts)], "--memory", "256"}, extra...)
		l.RunJSON(&vm, args...)
		vms = append(vms, vm)
	}
	for _, vm := range vms {
		l.WaitHTTP("client", "http://"+vm.IP+"/healthz", 2*time.Minute)
	}
	return vms
}

// hostCheck returns the verdict on host in a check.
func hostCheck(chk api.MigrationCheck, host string) api.HostCheck {
	for _, h := range chk.Hosts {
		if h.Host == host {
			return h
		}
	}
	return api.HostCheck{}
}

func hasCode(fs []placement.Finding, code string) *placement.Finding {
	for i := range fs {
		if fs[i].Code == code {
			return &fs[i]
		}
	}
	return nil
}

// TestMigrationWizard checks the compatibility checks, the recommendation with its
// breakdown, and CPU baselines across hosts of different generations.
func TestMigrationWizard(t *testing.T) {
	l := wizardLab(t)
	vms := createVMs(t, l, "wz", []string{"host-1"}, 1)
	var west api.VM
	l.RunJSON(&west, "vm", "create", "west-1", "--host", "host-1", "--memory", "256", "--cpu-model", "Westmere")

	// The check: the source itself is refused, a host in maintenance too; the others
	// are compatible.
	l.MustRun("host", "maintenance", "host-2", "on", "--reason", "new disks")
	var chk api.MigrationCheck
	l.RunJSON(&chk, "vm", "migrate", vms[0].Name, "--check")
	if len(chk.Hosts) != 3 {
		t.Fatalf("check lists %d hosts; want 3: %+v", len(chk.Hosts), chk)
	}
	if h := hostCheck(chk, "host-1"); h.Compatible || hasCode(h.Errors, placement.CodeSameHost) == nil {
		t.Errorf("host-1 (the source): %+v; want refused with same_host", h)
	}
	if h := hostCheck(chk, "host-2"); h.Compatible || hasCode(h.Errors, placement.CodeHostMaintenance) == nil {
		t.Errorf("host-2 in maintenance: %+v; want refused with host_maintenance", h)
	}
	if h := hostCheck(chk, "host-3"); !h.Compatible {
		t.Errorf("host-3 for a VM on the baseline (qemu64): %+v; want compatible", h)
	}
	_, errOut, err := l.Run("vm", "migrate", vms[0].Name, "--to", "host-2")
	if err == nil || !strings.Contains(errOut, "maintenance") {
		t.Errorf("migrating to a host in maintenance: %v %s; want a refusal naming maintenance", err, errOut)
	}
	l.MustRun("host", "maintenance", "host-2", "off")

	// The recommendation ranks host-2 and host-3 with a four-line breakdown that adds up;
	// without --yes nothing moves.
	var rec api.Recommendation
	l.RunJSON(&rec, "vm", "migrate", vms[0].Name)
	if len(rec.Candidates) != 2 || len(rec.Refused) != 1 || rec.Refused[0].Host != "host-1" {
		t.Fatalf("recommendation %+v; want host-2 and host-3 ranked, host-1 refused", rec)
	}
	for _, cand := range rec.Candidates {
		sum := 0.0
		for _, b := range cand.Breakdown {
			sum += b.Contribution
		}
		if len(cand.Breakdown) != 4 || sum < cand.Score-0.5 || sum > cand.Score+0.5 || cand.Stars < 1 || cand.Stars > 5 {
			t.Errorf("candidate %+v: want 4 criteria adding up to the score and 1-5 stars", cand)
		}
	}
	if rec.Candidates[0].Score < rec.Candidates[1].Score {
		t.Errorf("candidates not best first: %+v", rec.Candidates)
	}
	recJSON, _ := json.MarshalIndent(rec.Candidates[0], "", "  ")
	t.Logf("best destination of %s:\n%s", vms[0].Name, recJSON)
	if _, errOut, err := l.Run("vm", "migrate", vms[0].Name); err == nil || !strings.Contains(errOut, "--yes") {
		t.Errorf("the wizard without --yes at no terminal: %v %s; want a refusal that asks for --yes", err, errOut)
	}
	var sum migrationSummary
	l.RunJSON(&sum, "vm", "migrate", vms[0].Name, "--yes")
	// The ranking is made of live load: between two calls, hosts whose scores were close
	// may trade places (both here are alike but for their load), so the wizard must pick
	// the best host, or one that was within a few points of it.
	best := rec.Candidates[0]
	picked := false
	for _, c := range rec.Candidates {
		picked = picked || c.Host == sum.Destination && (c.Host == best.Host || best.Score-c.Score < 10)
	}
	if sum.State != api.MigrationSucceeded || !picked {
		t.Errorf("wizard migration %+v; want it on the best host %s (or one as good as it)", sum, best.Host)
	}

	// CPU baselines: the Westmere VM cannot go to host-3 (a Nehalem host); the pre-check
	// names the missing flags. The baseline VM moves freely between generations.
	// An incompatible --to makes --check exit non-zero, after printing the verdict.
	out, _, err := l.Run("vm", "migrate", west.Name, "--check", "--to", "host-3", "-o", "json")
	if err == nil || json.Unmarshal([]byte(out), &chk) != nil {
		t.Fatalf("check of the Westmere VM against host-3: %v\n%s; want a verdict and a non-zero exit", err, out)
	}
	h3 := hostCheck(chk, "host-3")
	if f := hasCode(h3.Errors, placement.CodeCPUUnsupported); h3.Compatible || f == nil || !strings.Contains(f.Message, "aes") {
		t.Errorf("Westmere VM to the Nehalem host: %+v; want cpu_unsupported naming the missing flags (aes, …)", h3)
	}
	if _, _, err := l.Run("vm", "migrate", west.Name, "--to", "host-3"); err == nil {
		t.Error("a Westmere VM was migrated to a Nehalem host")
	}
	waitVM(t, l, west.Name, func(v api.VM) bool { return v.Host == "host-1" && v.State == api.VMRunning })
	// To the Nehalem host and back to another generation, whichever host the wizard
	// picked above (live load decides between host-2 and host-3).
	hops := []string{"host-3", sum.Destination}
	if sum.Destination == "host-3" {
		hops = []string{"host-2", "host-3"}
	}
	for _, to := range hops {
		l.RunJSON(&sum, "vm", "migrate", vms[0].Name, "--to", to)
		if sum.State != api.MigrationSucceeded {
			t.Errorf("baseline VM to %s: %+v", to, sum)
		}
	}
	// --auto: the wizard places each VM of one request; the Westmere VM can only go to
	// host-2 (host-1 is its source, host-3 a Nehalem host).
	var bulk api.BulkMigrateReply
	l.RunJSON(&bulk, "vm", "migrate", vms[0].Name, west.Name, "--auto")
	if len(bulk.Migrations) != 2 || len(bulk.Refused) != 0 {
		t.Fatalf("vm migrate --auto: %+v; want both moved", bulk)
	}
	for _, m := range bulk.Migrations {
		if m.State != api.MigrationSucceeded || m.VM == west.Name && m.Destination != "host-2" {
			t.Errorf("--auto moved %s to %s: %s %s", m.VM, m.Destination, m.State, m.Error)
		}
	}
	var hosts []api.Host
	l.RunJSON(&hosts, "host", "list")
	for _, h := range hosts {
		if h.Baseline != "ok" {
			t.Errorf("host %s: baseline %q; every host provides qemu64", h.Name, h.Baseline)
		}
	}
}

// TestConcurrentMigrations starts 6 migrations at once across 3 hosts whose limit is 2
// migrations each: they run in parallel up to the limit, the rest queue (their tasks say
// for what), no host ever holds more than 2, and the queue drains. A high-priority
// migration that does not fit is refused with the reason; one that fits gets a larger
// bandwidth share and CPU priority than a normal one running beside it.
func TestConcurrentMigrations(t *testing.T) {
	l := wizardLab(t)
	hosts := []string{"host-1", "host-2", "host-3"}
	vms := createVMs(t, l, "cc", hosts, 7) // cc-7 (on host-1) stays out of the rotation
	for _, h := range hosts {
		l.Shape(h, "200mbit") // long enough migrations to overlap
	}
	defer func() {
		for _, h := range hosts {
			l.Shape(h, "off")
		}
	}()

	// Watch the slots while the migrations run.
	stop := make(chan struct{})
	var mu sync.Mutex
	maxInUse, maxRunning := map[string]int{}, 0
	sawQueuedTask := ""
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			select {
			case <-stop:
				return
			case <-time.After(150 * time.Millisecond):
			}
			var slots api.MigrationSlots
			out, _, err := l.Run("migration", "slots", "-o", "json")
			if err != nil || json.Unmarshal([]byte(out), &slots) != nil {
				continue
			}
			var tasks []api.Task
			tout, _, err := l.Run("task", "list", "-o", "json")
			if err == nil {
				_ = json.Unmarshal([]byte(tout), &tasks)
			}
			mu.Lock()
			for _, r := range slots.Resources {
				if strings.HasPrefix(r.Resource, "host:") {
					maxInUse[r.Resource] = max(maxInUse[r.Resource], r.InUse)
				}
			}
			maxRunning = max(maxRunning, len(slots.Admitted))
			for _, tk := range tasks {
				if tk.State == api.TaskQueued && strings.Contains(tk.Progress.Phase, "waiting for host:") {
					sawQueuedTask = tk.Progress.Phase
				}
			}
			mu.Unlock()
		}
	}()

	// A rotation: host-1's VMs to host-2, host-2's to host-3, host-3's to host-1 — each
	// host is the source of 2 and the destination of 2, so 4 slots are wanted per host.
	var reps []api.BulkMigrateReply
	for i, to := range []string{"host-2", "host-3", "host-1"} {
		var rep api.BulkMigrateReply
		l.RunJSON(&rep, "vm", "migrate", vms[i].Name, vms[i+3].Name, "--to", to, "--detach")
		if len(rep.Refused) != 0 || len(rep.Migrations) != 2 {
			t.Fatalf("bulk migration to %s: %+v; want 2 migrations started or queued", to, rep)
		}
		reps = append(reps, rep)
	}
	queued := 0
	for _, rep := range reps {
		for _, m := range rep.Migrations {
			if m.State == api.MigrationQueued {
				queued++
				if !strings.Contains(m.Waiting, "host:") {
					t.Errorf("queued migration %s waits for %q; want the host named", m.ID, m.Waiting)
				}
			}
		}
	}
	if queued == 0 {
		t.Error("6 migrations across 3 hosts limited to 2 each: none was queued")
	}

	// A high-priority migration does not queue: refused, naming the full host.
	_, errOut, err := l.Run("vm", "migrate", "cc-7", "--to", "host-3", "--priority", "high")
	if err == nil || !strings.Contains(errOut, "high priority is never queued") {
		t.Errorf("high priority while slots are full: %v %s; want a refusal with the reason", err, errOut)
	}

	deadline := time.Now().Add(5 * time.Minute)
	for _, rep := range reps {
		for _, m := range rep.Migrations {
			for {
				var cur api.Migration
				l.RunJSON(&cur, "migration", "show", m.ID)
				if cur.State == api.MigrationSucceeded {
					break
				}
				if terminalState(cur.State) || time.Now().After(deadline) {
					t.Fatalf("migration %s of %s: %s %s", cur.ID, cur.VM, cur.State, cur.Error)
				}
				time.Sleep(300 * time.Millisecond)
			}
		}
	}
	close(stop)
	wg.Wait()
	for res, n := range maxInUse {
		if n > 2 {
			t.Errorf("%s held %d migrations at once; the limit is 2", res, n)
		}
	}
	if maxRunning < 2 {
		t.Errorf("at most %d migrations were admitted at once; want them in parallel", maxRunning)
	}
	if sawQueuedTask == "" {
		t.Error("no queued task said what it waits for")
	} else {
		t.Logf("a queued task: %s", sawQueuedTask)
	}
	var slots api.MigrationSlots
	l.RunJSON(&slots, "migration", "slots")
	if len(slots.Queue) != 0 || len(slots.Admitted) != 0 {
		t.Errorf("after all ended: %+v; want the queue drained and no slot held", slots)
	}

	// Priority shares: a normal and a high migration side by side on the migration
	// network: the high one's bandwidth cap is twice the normal one's, and its migration
	// thread runs at a higher CPU priority. The guests dirty memory, so that both run
	// for a while.
	for _, vm := range vms[:2] {
		dirty(t, l, vm.IP, 64, 12)
	}
	defer func() {
		for _, vm := range vms[:2] {
			dirty(t, l, vm.IP, 0, 0)
		}
	}()
	var normal, high api.Migration
	l.RunJSON(&normal, "vm", "migrate", "cc-1", "--to", "host-1", "--detach", "--priority", "normal")
	l.RunJSON(&high, "vm", "migrate", "cc-2", "--to", "host-2", "--detach", "--priority", "high")
	normalID := normal.ID
	var n, h api.Migration
	for time.Now().Before(deadline) {
		l.RunJSON(&n, "migration", "show", normalID)
		l.RunJSON(&h, "migration", "show", high.ID)
		if n.BandwidthCap > 0 && h.BandwidthCap > 0 && n.State == api.MigrationRunning && h.State == api.MigrationRunning &&
			n.ThreadNice != nil && h.ThreadNice != nil {
			break
		}
		if terminalState(n.State) || terminalState(h.State) {
			break
		}
		time.Sleep(200 * time.Millisecond)
	}
	t.Logf("normal: cap %d B/s, nice %v, %s; high: cap %d B/s, nice %v, %s %s", n.BandwidthCap, deref(n.ThreadNice), n.State,
		h.BandwidthCap, deref(h.ThreadNice), h.State, h.Error)
	if n.BandwidthCap <= 0 || h.BandwidthCap < 19*n.BandwidthCap/10 || h.BandwidthCap > 21*n.BandwidthCap/10 {
		t.Errorf("bandwidth caps: normal %d, high %d; want high at twice normal (weights 4:2)", n.BandwidthCap, h.BandwidthCap)
	}
	if n.ThreadNice == nil || h.ThreadNice == nil || *h.ThreadNice >= *n.ThreadNice {
		t.Errorf("migration thread nice: normal %v, high %v; want high's lower (more CPU)", deref(n.ThreadNice), deref(h.ThreadNice))
	}
}

func terminalState(s string) bool {
	return s == api.MigrationSucceeded || s == api.MigrationFailed || s == api.MigrationCancelled
}

func deref(p *int) any {
	if p == nil {
		return nil
	}
	return *p
}
