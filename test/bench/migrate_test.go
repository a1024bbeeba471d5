package bench

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"math"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/godwit/godwit/internal/api"
	"github.com/godwit/godwit/internal/benchplot"
	"github.com/godwit/godwit/internal/labtest"
	"github.com/godwit/godwit/internal/migration"
	"github.com/godwit/godwit/internal/probe"
)

// The three tools compared, on the same guest between the same hosts: Godwit with its
// default policy, QEMU with its own defaults, and QEMU hand-tuned as a user who read the
// manual would drive it (migration.QEMUTunedPolicy). The baselines run through the same
// plumbing (the agents start the destination QEMU the same way); what differs is what
// each sets in QEMU and does around the switch-over.
var migrationTools = []string{migration.DefaultPolicyName, migration.PolicyQEMUDefaults, migration.PolicyQEMUTuned}

// toolLabel names a tool in tables and plots.
func toolLabel(policy string) string {
	switch policy {
	case migration.PolicyQEMUDefaults:
		return "QEMU defaults"
	case migration.PolicyQEMUTuned:
		return "QEMU hand-tuned"
	}
	return "Godwit (" + policy + ")"
}

// toolShort names a tool in metric names.
func toolShort(policy string) string {
	switch policy {
	case migration.PolicyQEMUDefaults:
		return "qemu"
	case migration.PolicyQEMUTuned:
		return "tuned"
	}
	return "godwit"
}

const (
	// migrationRuns is how many migrations each tool gets per scenario
	// (GODWIT_BENCH_RUNS overrides it, for a quick look).
	migrationRuns = 10
	// benchGuestMiB is the guest's memory.
	benchGuestMiB = 1024
	// dirtyMiB is the working set the guest rewrites in scenario (b).
	dirtyMiB = 256
	// completeWithin is (b)'s target: every migration completes within this.
	completeWithin = 10 * time.Second
	// dirtyCap is the hard cap on one migration of (b), for every tool: a migration
	// still running then is cancelled, so that the benchmark always ends.
	dirtyCap = 45 * time.Second
	// otherCap bounds a migration of the other scenarios the same way.
	otherCap = 2 * time.Minute
	// pauseTarget is (a)'s target for Godwit's pause (STOP on the source to RESUME on
	// the destination).
	pauseTarget = 10 * time.Millisecond
	// shapedRate is (c)'s link rate (bytes/s) and floorSlack its target: total time at
	// most this times the floor (bytes that must cross ÷ link rate).
	shapedRate = 1e9 / 8
	floorSlack = 1.1
	// bulkVMs idle guests of bulkMiB each move by one request in (d); bulkSlack is
	// its target: each VM's pause at most this times its pause alone.
	bulkVMs   = 4
	bulkMiB   = 512
	bulkSlack = 2.0
	// evacSlack is the evacuation's target: its makespan at most this times the floor.
	evacSlack = 1.5
	// controlWindow is how long each control window watches.
	controlWindow = 3 * time.Second
	// controlTool and inPlaceTool mark the control windows among the runs: no
	// migration at all, and the guest's QEMU frozen in place for Godwit's median pause.
	controlTool = "control"
	inPlaceTool = "paused-in-place"
	// plotPath is where the PNG goes, relative to the repository root.
	plotPath = "bench-results/migration.png"
)

// migSummary is what `godwit vm migrate -o json` prints when a migration ends.
type migSummary struct {
	ID         string  `json:"id"`
	State      string  `json:"state"`
	TotalMS    float64 `json:"total_ms"`
	DowntimeMS float64 `json:"downtime_ms"`
	Bytes      uint64  `json:"bytes"`
	Passes     int     `json:"passes"`
	Encrypted  bool    `json:"encrypted"`
}

// migRecord is what `godwit migration show ID -o json` prints, with the prediction the
// center made when it admitted the migration (absent from older centers).
type migRecord struct {
	api.Migration
	Prediction *struct {
		TotalMS    float64 `json:"total_ms"`
		DowntimeMS float64 `json:"downtime_ms"`
	} `json:"prediction,omitempty"`
}

// migRun is one measured migration, or one control window.
type migRun struct {
	tool     string
	from, to string
	rec      migRecord
	// cappedAt is set when the benchmark cancelled the migration at its cap.
	cappedAt time.Duration
	// What a client in the client namespace saw: ICMP echo every millisecond (the
	// guest's kernel answers), UDP echo every millisecond (the guest program answers),
	// and HTTP requests every 20 ms on fresh TCP connections.
	icmp, udp probe.UDPResult
	http      probe.HTTPResult
	// retrans is how many TCP segments the client's kernel retransmitted meanwhile.
	retrans int64
	// guest is the guest's own longest pause between 1 ms wake-ups.
	guest time.Duration
	// beforeEnd is how long before the migration's end the longest ICMP gap ended;
	// above a second it was not the switch-over's.
	beforeEnd time.Duration
}

func (r migRun) ok() bool { return r.rec.State == api.MigrationSucceeded }

func (r migRun) total() time.Duration {
	return time.Duration(r.rec.TotalMS * float64(time.Millisecond))
}

// pause is the hosts' STOP→RESUME, from QEMU's checkpoints when they were traced.
func (r migRun) pause() float64 {
	if r.rec.Pause != nil {
		return r.rec.Pause.TotalMS
	}
	return r.rec.PauseMS
}

// migEnv is the lab and the VM the scenarios migrate.
type migEnv struct {
	l    *labtest.Lab
	vm   api.VM
	host string // where the VM runs now
}

// scenario is one of the benchmark's situations.
type scenario struct {
	key, name, title string
	// setup runs before the scenario's migrations and returns how to undo it.
	setup func(b *testing.B, e *migEnv) (undo func())
	// cap is the longest one migration may run before it is cancelled.
	cap time.Duration
}

// BenchmarkMigration migrates the same 1 GiB test guest (booted from its own kernel
// and initrd) between the same two lab hosts, 10 times per tool and scenario, by Godwit
// (its default policy), QEMU with its defaults and QEMU hand-tuned, the three
// interleaved run by run (the order rotates) so that machine noise hits all alike:
//
//	(a) idle      the guest idle;
//	(c) idle-1g   the guest idle, both hosts' links shaped to 1 Gbit/s (tc tbf);
//	(b) dirty     the guest rewriting a 256 MiB working set as fast as it can;
//	(d) bulk      four idle 512 MiB guests moved by one request (and each alone).
//
// Every tool sends the stream in the clear (--encryption off); BenchmarkEncryption
// measures what Godwit's default encryption costs. Each migration is started with
// `godwit vm migrate NAME --to HOST --policy P --detach`, followed with `godwit migration
// watch ID`, and read back with `migration show ID -o json`. A client in the client
// namespace meanwhile pings the guest every millisecond (ICMP, answered by its kernel),
// sends it a UDP echo every millisecond and an HTTP request every 20 ms, and the
// client's kernel counts its TCP retransmissions. Control windows measure the same with
// no migration and with the guest's QEMU frozen in place (SIGSTOP … SIGCONT) for as
// long as Godwit's median pause: what a pause costs the client without a move. A
// migration still running at its cap (45 s in (b), 2 min otherwise) is cancelled.
//
// It prints a table per scenario (medians with min and max; Godwit's pause part by part)
// and a verdict per target of the issue, reports key medians as metrics and draws
// bench-results/migration.png. It asserts nothing about times.
// GODWIT_BENCH_RUNS=N runs N migrations per tool and scenario instead of 10;
// GODWIT_BENCH_SCENARIOS=a,b,c,d picks scenarios.
func BenchmarkMigration(b *testing.B) {
	runs := migrationRuns
	if s := os.Getenv("GODWIT_BENCH_RUNS"); s != "" {
		n, err := strconv.Atoi(s)
		if err != nil || n < 1 {
			b.Fatalf("GODWIT_BENCH_RUNS=%q: want a positive number of runs", s)
		}
		runs = n
	}
	pick := map[string]bool{"a": true, "b": true, "c": true, "d": true}
	if s := os.Getenv("GODWIT_BENCH_SCENARIOS"); s != "" {
		pick = map[string]bool{}
		for _, k := range strings.Split(s, ",") {
			if k = strings.TrimSpace(k); k != "a" && k != "b" && k != "c" && k != "d" {
				b.Fatalf("GODWIT_BENCH_SCENARIOS=%q: want a comma-separated list of a, b, c and d", s)
			}
			pick[strings.TrimSpace(k)] = true
		}
	}
	fmt.Printf("\nload average at the start: %s\n", loadAvg())
	e := &migEnv{l: labtest.New(b, home, 2)}
	e.l.RunJSON(&e.vm, "vm", "create", "mig", "--host", "host-1", "--memory", strconv.Itoa(benchGuestMiB))
	e.l.WaitHTTP("client", "http://"+e.vm.IP+"/healthz", 2*time.Minute)
	e.host = "host-1"
	// Let the boot settle (the guest fills its checked region, the checker starts).
	time.Sleep(3 * time.Second)

	all := map[string][]migRun{}
	// (c) runs before (b): (b)'s working set would stay in the guest's RAM after the
	// dirtier stops and make the "idle" guest of (c) heavier than (a)'s.
	for _, sc := range migrationScenarios() {
		if !pick[strings.Trim(sc.name, "()")] {
			continue
		}
		b.Run(sc.key, func(b *testing.B) {
			rs := runScenario(b, e, sc, runs)
			all[sc.key] = rs
			reportScenario(b, sc, rs)
		})
	}
	var bulk *bulkResult
	if pick["d"] {
		b.Run("bulk", func(b *testing.B) { bulk = runBulk(b, e.l, runs) })
	}
	fmt.Printf("\nVerdicts (the issue's targets; medians over completed runs):\n")
	for _, v := range verdicts(all, bulk) {
		fmt.Println("  " + v)
	}
	if len(all) > 0 {
		path, err := plotMigrations(all)
		if err != nil {
			b.Errorf("drawing the plot: %v", err)
		} else {
			fmt.Printf("\nplot: %s\n", path)
		}
	}
	fmt.Printf("load average at the end: %s\n", loadAvg())
	fmt.Printf("(numbers from a %d-core machine, guests under TCG: noisy; see the control rows)\n\n", runtime.NumCPU())
	e.l.MustRun("vm", "stop", "mig", "--force")
	e.l.MustRun("vm", "delete", "mig")
}

func migrationScenarios() []scenario {
	return []scenario{
		{key: "idle", name: "(a)", title: fmt.Sprintf("(a) idle %d MiB guest", benchGuestMiB), cap: otherCap},
		{
			key: "idle-1g", name: "(c)", title: fmt.Sprintf("(c) idle %d MiB guest, host links shaped to 1 Gbit/s", benchGuestMiB),
			cap: otherCap,
			setup: func(b *testing.B, e *migEnv) func() {
				for _, h := range []string{"host-1", "host-2"} {
					e.l.Shape(h, "1gbit")
				}
				return func() {
					for _, h := range []string{"host-1", "host-2"} {
						e.l.Shape(h, "off")
					}
				}
			},
		},
		{
			key: "dirty", name: "(b)", title: fmt.Sprintf("(b) guest rewriting %d MiB as fast as it can", dirtyMiB),
			cap: dirtyCap,
			setup: func(b *testing.B, e *migEnv) func() {
				startDirtier(b, e.l, e.vm.IP, dirtyMiB, 0)
				time.Sleep(2 * time.Second) // the working set is written once and churning
				return func() { startDirtier(b, e.l, e.vm.IP, 0, 0) }
			},
		},
	}
}

// runScenario runs runs migrations per tool, the order rotating run by run, then the
// control windows, and returns them in order.
func runScenario(b *testing.B, e *migEnv, sc scenario, runs int) []migRun {
	if sc.setup != nil {
		undo := sc.setup(b, e)
		defer undo()
	}
	fmt.Printf("\n%s: %d migrations per tool\n", sc.title, runs)
	var rs []migRun
	for i := range runs {
		n := len(migrationTools)
		for j := range n {
			tool := migrationTools[(i+j)%n]
			r := measureMigration(b, e, tool, sc.cap)
			fmt.Printf("  %s %2d %-18s %s→%s %-9s total %6.0f ms  gap ICMP %6.1f ms (%d lost) UDP %6.1f ms  TCP retrans %d  HTTP slowest %4.0f ms  pause %5.1f ms  QEMU %5.1f ms  %5.0f MB %2d passes%s\n",
				sc.name, i+1, toolLabel(tool), r.from, r.to, r.rec.State, r.rec.TotalMS, ms(r.icmp.MaxGap), r.icmp.Lost(),
				ms(r.udp.MaxGap), r.retrans, ms(r.http.Slowest), r.pause(), r.rec.DowntimeMS, float64(r.rec.Bytes)/1e6, r.rec.Passes, runNote(r))
			rs = append(rs, r)
			time.Sleep(500 * time.Millisecond)
		}
	}
	c := measureControl(b, e, 0)
	fmt.Printf("  %s control, no migration for %v: longest gap ICMP %.1f ms (%d lost), UDP %.1f ms; guest %.1f ms\n",
		sc.name, controlWindow, ms(c.icmp.MaxGap), c.icmp.Lost(), ms(c.udp.MaxGap), ms(c.guest))
	rs = append(rs, c)
	if p := summarise(completed(ofTool(rs, migrationTools[0]), migRun.pause)); p.n > 0 {
		d := time.Duration(p.median * float64(time.Millisecond))
		for range 3 {
			c := measureControl(b, e, d)
			fmt.Printf("  %s control, the guest's QEMU frozen in place for %v: longest gap ICMP %.1f ms (%d lost), UDP %.1f ms; TCP retrans %d\n",
				sc.name, d.Round(10*time.Microsecond), ms(c.icmp.MaxGap), c.icmp.Lost(), ms(c.udp.MaxGap), c.retrans)
			rs = append(rs, c)
		}
	}
	return rs
}

func runNote(r migRun) string {
	var s []string
	if r.cappedAt > 0 {
		s = append(s, fmt.Sprintf("cancelled by the benchmark at its %v cap", r.cappedAt))
	}
	if !r.ok() && r.rec.Error != "" {
		s = append(s, r.rec.Error)
	}
	if len(s) == 0 {
		return ""
	}
	return "  [" + strings.Join(s, "; ") + "]"
}

// watchers are the client's probes of one VM, running until stopped.
type watchers struct {
	stop    context.CancelFunc
	icmp    chan probe.UDPResult
	udp     chan probe.UDPResult
	http    chan probe.HTTPResult
	retrans int64
	l       *labtest.Lab
}

// watch starts the client's probes of the guest at ip: ICMP and UDP echo every
// millisecond, HTTP every 20 ms. id tells this ICMP stream's replies from others'.
func watch(b *testing.B, l *labtest.Lab, ip string, id uint16, withHTTP bool) *watchers {
	b.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	w := &watchers{stop: cancel, icmp: make(chan probe.UDPResult, 1), udp: make(chan probe.UDPResult, 1),
		http: make(chan probe.HTTPResult, 1), l: l}
	w.retrans = l.TCPRetransmits("client")
	ic, err := l.Dial(ctx, "client", "ip4:icmp", ip)
	if err != nil {
		b.Fatalf("ICMP socket in the client namespace: %v", err)
	}
	uc, err := l.Dial(ctx, "client", "udp", ip+":7")
	if err != nil {
		b.Fatal(err)
	}
	go func() {
		defer ic.Close()
		res, _ := probe.ICMPStream(ctx, ic, id, time.Millisecond)
		w.icmp <- res
	}()
	go func() {
		defer uc.Close()
		res, _ := probe.UDPStream(ctx, uc, time.Millisecond)
		w.udp <- res
	}()
	go func() {
		if !withHTTP {
			w.http <- probe.HTTPResult{}
			return
		}
		dial := func(ctx context.Context, network, addr string) (net.Conn, error) {
			return l.Dial(ctx, "client", network, addr)
		}
		w.http <- probe.HTTPStreamVia(ctx, dial, "http://"+ip+"/healthz", 20*time.Millisecond, 10*time.Second)
	}()
	return w
}

// end stops the probes and fills r with what they saw.
func (w *watchers) end(r *migRun) {
	w.stop()
	r.icmp, r.udp, r.http = <-w.icmp, <-w.udp, <-w.http
	r.retrans = w.l.TCPRetransmits("client") - w.retrans
}

// measureControl watches the guest for controlWindow with no migration; with freeze >
// 0 it freezes the guest's QEMU (SIGSTOP) for that long in the middle of the window.
func measureControl(b *testing.B, e *migEnv, freeze time.Duration) migRun {
	b.Helper()
	r := migRun{tool: controlTool, from: e.host, to: e.host}
	if freeze > 0 {
		r.tool = inPlaceTool
	}
	resetGuestStats(b, e.l, e.vm.IP)
	w := watch(b, e.l, e.vm.IP, 0x4701, true)
	time.Sleep(controlWindow / 2)
	if freeze > 0 {
		pid := qemuPID(b, e)
		if err := syscall.Kill(pid, syscall.SIGSTOP); err != nil {
			b.Fatalf("freeze QEMU %d: %v", pid, err)
		}
		time.Sleep(freeze)
		if err := syscall.Kill(pid, syscall.SIGCONT); err != nil {
			b.Fatalf("thaw QEMU %d: %v", pid, err)
		}
	}
	time.Sleep(controlWindow / 2)
	w.end(&r)
	r.guest = time.Duration(e.l.Stats(e.vm.IP).MaxPauseMS * float64(time.Millisecond))
	return r
}

// qemuPID finds the pid of the VM's QEMU on its host from the agent's state directory.
func qemuPID(b *testing.B, e *migEnv) int {
	b.Helper()
	dir := filepath.Join(e.l.Dir(), e.host, "vms", strings.ReplaceAll(e.vm.UUID, "-", ""))
	s, err := os.ReadFile(filepath.Join(dir, "qemu.pid"))
	if err != nil {
		b.Fatalf("the VM's QEMU on %s: %v", e.host, err)
	}
	pid, err := strconv.Atoi(strings.TrimSpace(string(s)))
	if err != nil {
		b.Fatalf("pid file %s: %v", dir, err)
	}
	return pid
}

// measureMigration migrates the VM to the other host with policy tool while the client
// watches it, and returns the outcome. A migration still running after limit is
// cancelled with `godwit migration cancel`.
func measureMigration(b *testing.B, e *migEnv, tool string, limit time.Duration) migRun {
	b.Helper()
	l := e.l
	to := "host-2"
	if e.host == "host-2" {
		to = "host-1"
	}
	r := migRun{tool: tool, from: e.host, to: to}
	resetGuestStats(b, l, e.vm.IP)
	streamStart := time.Now()
	w := watch(b, l, e.vm.IP, 0x4702, true)
	time.Sleep(200 * time.Millisecond)

	start := time.Now()
	var m api.Migration
	l.RunJSON(&m, "vm", "migrate", e.vm.Name, "--to", to, "--policy", tool, "--encryption", "off", "--detach")
	done := make(chan struct{})
	go func() {
		// Non-zero exit for a migration that did not succeed.
		_, _, _ = l.Run("migration", "watch", m.ID)
		close(done)
	}()
	select {
	case <-done:
	case <-time.After(limit - time.Since(start)):
		r.cappedAt = limit
		if o, errOut, err := l.Run("migration", "cancel", m.ID); err != nil {
			b.Logf("cancel migration %s: %v: %s%s", m.ID, err, o, errOut)
		}
		<-done
	}
	end := time.Since(streamStart)
	time.Sleep(300 * time.Millisecond)
	w.end(&r)
	l.RunJSON(&r.rec, "migration", "show", m.ID)
	st := l.Stats(e.vm.IP)
	r.guest = time.Duration(st.MaxPauseMS * float64(time.Millisecond))
	r.beforeEnd = end - r.icmp.MaxGapAt
	if st.MemoryErrors != 0 || st.ClockBackwards != 0 {
		b.Errorf("after migration %s (%s) the guest counts %d memory errors and %d clock steps back",
			m.ID, tool, st.MemoryErrors, st.ClockBackwards)
	}
	want := r.from
	if r.ok() {
		want = r.to
	}
	e.host = waitRunning(b, l, e.vm.Name, want)
	return r
}

// waitRunning waits until the center reports the VM running on host, and returns host.
func waitRunning(b *testing.B, l *labtest.Lab, name, host string) string {
	b.Helper()
	deadline := time.Now().Add(time.Minute)
	var vm api.VM
	for time.Now().Before(deadline) {
		l.RunJSON(&vm, "vm", "show", name)
		if vm.Host == host && vm.State == api.VMRunning {
			return host
		}
		time.Sleep(200 * time.Millisecond)
	}
	b.Fatalf("VM %s is %s on %s a minute after its migration; want running on %s", name, vm.State, vm.Host, host)
	return ""
}

func resetGuestStats(b *testing.B, l *labtest.Lab, ip string) {
	b.Helper()
	resp, err := l.HTTP("client").Post("http://"+ip+"/stats/reset", "application/json", nil)
	if err != nil {
		b.Fatalf("reset the guest's stats: %v", err)
	}
	resp.Body.Close()
}

// startDirtier (re)starts the guest's memory dirtier on mib MiB at rate MiB/s (0: as fast
// as it can); mib 0 stops it.
func startDirtier(b *testing.B, l *labtest.Lab, ip string, mib, rate int) {
	b.Helper()
	resp, err := l.HTTP("client").Post(fmt.Sprintf("http://%s/dirty?mib=%d&rate=%d", ip, mib, rate), "application/json", nil)
	if err != nil {
		b.Fatalf("dirtier mib=%d: %v", mib, err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		b.Fatalf("dirtier mib=%d: %s: %s", mib, resp.Status, body)
	}
}

// bulkResult is scenario (d): per tool, each VM's pause alone and in the bulk moves.
type bulkResult struct {
	alone, together map[string][]float64 // pause (ms) per tool
	lost, retrans   map[string]int       // ICMP requests unanswered, TCP retransmissions
	completed, all  map[string]int
	totals          map[string][]float64 // each VM's total time in a bulk move (ms)
	// evac is the evacuation of the host holding the guests by maintenance mode, on
	// links shaped to 1 Gbit/s.
	evac *evacResult
}

// evacResult is one maintenance evacuation: the plan's makespan, predicted and actual,
// and the bytes its migrations sent.
type evacResult struct {
	plan      api.Plan
	bytes     uint64
	completed int
}

// floor is the evacuation's least possible makespan: its bytes over the shaped link.
func (e *evacResult) floor() float64 { return float64(e.bytes) / shapedRate }

// runEvacuation shapes both hosts' links to 1 Gbit/s, puts host (holding vms) into
// maintenance and waits until it is in maintenance, then takes it out with --return
// (the VMs move back, not measured) and lifts the shaping.
func runEvacuation(b *testing.B, l *labtest.Lab, host string, vms []api.VM) *evacResult {
	for _, h := range []string{"host-1", "host-2"} {
		l.Shape(h, "1gbit")
	}
	defer func() {
		for _, h := range []string{"host-1", "host-2"} {
			l.Shape(h, "off")
		}
	}()
	res := &evacResult{}
	var h api.Host
	l.RunJSON(&h, "host", "maintenance", "enter", host, "--wait", "--reason", "benchmark")
	if h.Maintenance == nil || h.Maintenance.Plan == "" {
		b.Fatalf("maintenance of %s: %+v", host, h.Maintenance)
	}
	l.RunJSON(&res.plan, "plan", "show", h.Maintenance.Plan)
	for _, mv := range res.plan.Moves {
		if mv.Migration == "" {
			continue
		}
		var m api.Migration
		l.RunJSON(&m, "migration", "show", mv.Migration)
		res.bytes += m.Bytes
		if m.State == api.MigrationSucceeded {
			res.completed++
		}
	}
	fmt.Printf("\n(d) evacuation of %s by maintenance mode, links shaped to 1 Gbit/s: %s; %d of %d moved; makespan %.2f s (predicted %.2f s); %.0f MB sent, floor (bytes ÷ link rate) %.2f s, ratio %.2f\n",
		host, res.plan.State, res.completed, len(vms), res.plan.ActualMakespanMS/1000, res.plan.PredictedMakespanMS/1000,
		float64(res.bytes)/1e6, res.floor(), res.plan.ActualMakespanMS/1000/res.floor())
	for _, mv := range res.plan.Moves {
		pred := "-"
		if mv.Prediction != nil {
			pred = fmt.Sprintf("%.2f s / %.0f ms", mv.Prediction.TotalMS/1000, mv.Prediction.DowntimeMS)
		}
		fmt.Printf("  %s → %s: %s, predicted %s, actual %.2f s / %.0f ms\n", mv.VM, mv.To, mv.State, pred, mv.ActualTotalMS/1000, mv.ActualDowntimeMS)
	}
	l.MustRun("host", "maintenance", "exit", host, "--return", "--wait")
	for _, vm := range vms {
		waitRunning(b, l, vm.Name, host)
	}
	return res
}

// runBulk creates bulkVMs idle guests on host-1 and, per tool, moves each alone once
// and then all of them by one request runs times, back and forth.
func runBulk(b *testing.B, l *labtest.Lab, runs int) *bulkResult {
	fmt.Printf("\n(d) %d idle %d MiB guests moved by one request, %d times per tool (and each alone once)\n", bulkVMs, bulkMiB, runs)
	var vms []api.VM
	for i := range bulkVMs {
		var vm api.VM
		l.RunJSON(&vm, "vm", "create", fmt.Sprintf("bulk-%d", i+1), "--host", "host-1", "--memory", strconv.Itoa(bulkMiB))
		vms = append(vms, vm)
	}
	for _, vm := range vms {
		l.WaitHTTP("client", "http://"+vm.IP+"/healthz", 3*time.Minute)
	}
	time.Sleep(3 * time.Second)
	res := &bulkResult{alone: map[string][]float64{}, together: map[string][]float64{}, lost: map[string]int{},
		retrans: map[string]int{}, completed: map[string]int{}, all: map[string]int{}, totals: map[string][]float64{}}
	host := "host-1"
	other := func() string {
		if host == "host-1" {
			return "host-2"
		}
		return "host-1"
	}
	pauseOf := func(m api.Migration) float64 {
		if m.Pause != nil {
			return m.Pause.TotalMS
		}
		return m.PauseMS
	}
	// Alone: each VM there and back, so that all end where they began.
	for _, tool := range migrationTools {
		for _, vm := range vms {
			for _, to := range []string{other(), host} {
				var m api.Migration
				l.RunJSON(&m, "vm", "migrate", vm.Name, "--to", to, "--policy", tool, "--encryption", "off")
				if m.State == api.MigrationSucceeded {
					res.alone[tool] = append(res.alone[tool], pauseOf(m))
				}
			}
		}
	}
	for i := range runs {
		n := len(migrationTools)
		for j := range n {
			tool := migrationTools[(i+j)%n]
			to := other()
			var ws []*watchers
			for k, vm := range vms {
				ws = append(ws, watch(b, l, vm.IP, uint16(0x4800+k), k == 0))
			}
			args := []string{"vm", "migrate"}
			for _, vm := range vms {
				args = append(args, vm.Name)
			}
			out, errOut, err := l.Run(append(args, "--to", to, "--policy", tool, "--encryption", "off", "-o", "json")...)
			time.Sleep(300 * time.Millisecond)
			var rep api.BulkMigrateReply
			if jerr := json.Unmarshal([]byte(out), &rep); jerr != nil {
				b.Fatalf("bulk migration (%s): %v %v\n%s%s", tool, err, jerr, out, errOut)
			}
			lost, retrans := 0, int64(0)
			for _, w := range ws {
				var r migRun
				w.end(&r)
				lost += r.icmp.Lost()
				retrans += r.retrans
			}
			res.lost[tool] += lost
			res.retrans[tool] += int(retrans)
			var line []string
			for _, m := range rep.Migrations {
				res.all[tool]++
				if m.State == api.MigrationSucceeded {
					res.completed[tool]++
					res.together[tool] = append(res.together[tool], pauseOf(m))
					res.totals[tool] = append(res.totals[tool], m.TotalMS)
				}
				line = append(line, fmt.Sprintf("%s %s %.0f ms pause %.1f ms", m.VM, m.State, m.TotalMS, pauseOf(m)))
			}
			fmt.Printf("  (d) %2d %-18s %s→%s  %s  (%d ICMP lost, %d TCP retrans)\n", i+1, toolLabel(tool), host, to,
				strings.Join(line, "; "), lost, retrans)
			for _, vm := range vms {
				waitRunning(b, l, vm.Name, to)
			}
			host = to
			time.Sleep(500 * time.Millisecond)
		}
	}
	fmt.Printf("\n(d) each VM's pause (hosts' STOP→RESUME), medians [min–max]\n")
	for _, tool := range migrationTools {
		a, t := summarise(res.alone[tool]), summarise(res.together[tool])
		fmt.Printf("  %-18s alone %s ms, in the bulk move %s ms, ratio %.2f; total time per VM in the bulk move %s ms; %d of %d completed; %d ICMP lost, %d TCP retrans\n",
			toolLabel(tool), span(a), span(t), t.median/a.median, span(summarise(res.totals[tool])), res.completed[tool], res.all[tool],
			res.lost[tool], res.retrans[tool])
	}
	res.evac = runEvacuation(b, l, host, vms)
	for _, vm := range vms {
		l.MustRun("vm", "stop", vm.Name, "--force")
		l.MustRun("vm", "delete", vm.Name)
	}
	return res
}

// loadAvg is the machine's load average over 1, 5 and 15 minutes.
func loadAvg() string {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return "unknown"
	}
	f := strings.Fields(string(b))
	return strings.Join(f[:min(3, len(f))], " ")
}

func ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }

// stat summarises values: median (mean of the middle two for an even count), min, max.
type stat struct {
	n              int
	median, lo, hi float64
}

func summarise(v []float64) stat {
	if len(v) == 0 {
		return stat{}
	}
	s := slices.Clone(v)
	slices.Sort(s)
	n := len(s)
	med := s[n/2]
	if n%2 == 0 {
		med = (s[n/2-1] + s[n/2]) / 2
	}
	return stat{n: n, median: med, lo: s[0], hi: s[n-1]}
}

// span prints a stat as "median [min–max]".
func span(s stat) string {
	if s.n == 0 {
		return "-"
	}
	return fmt.Sprintf("%s [%s–%s]", num(s.median), num(s.lo), num(s.hi))
}

// ofTool returns the runs of one tool, in order.
func ofTool(rs []migRun, tool string) []migRun {
	var out []migRun
	for _, r := range rs {
		if r.tool == tool {
			out = append(out, r)
		}
	}
	return out
}

// completed returns f of every completed run.
func completed(rs []migRun, f func(migRun) float64) []float64 {
	var v []float64
	for _, r := range rs {
		if r.ok() {
			v = append(v, f(r))
		}
	}
	return v
}

// partOf returns a part of the pause breakdown (0 when it was not traced).
func partOf(f func(*api.PauseBreakdown) float64) func(migRun) float64 {
	return func(r migRun) float64 {
		if r.rec.Pause == nil {
			return math.NaN()
		}
		return f(r.rec.Pause)
	}
}

// measure is a row of a scenario's table (over completed runs).
type measure struct {
	label string
	f     func(migRun) float64
}

var measures = []measure{
	{"total time (s)", func(r migRun) float64 { return r.total().Seconds() }},
	{"client gap, ICMP (ms)", func(r migRun) float64 { return ms(r.icmp.MaxGap) }},
	{"client gap, UDP echo (ms)", func(r migRun) float64 { return ms(r.udp.MaxGap) }},
	{"ICMP requests unanswered", func(r migRun) float64 { return float64(r.icmp.Lost()) }},
	{"TCP retransmissions (client)", func(r migRun) float64 { return float64(r.retrans) }},
	{"slowest HTTP request (ms)", func(r migRun) float64 { return ms(r.http.Slowest) }},
	{"QEMU downtime (ms)", func(r migRun) float64 { return r.rec.DowntimeMS }},
	{"pause, STOP→RESUME (ms)", migRun.pause},
	{"  stop vCPUs, flush disks", partOf(func(p *api.PauseBreakdown) float64 { return p.StopMS })},
	{"  last memory pass", partOf(func(p *api.PauseBreakdown) float64 { return p.LastPassMS })},
	{"  device state", partOf(func(p *api.PauseBreakdown) float64 { return p.DeviceStateMS })},
	{"  disk hand-over", partOf(func(p *api.PauseBreakdown) float64 { return p.DiskHandoverMS })},
	{"  destination load", partOf(func(p *api.PauseBreakdown) float64 { return p.DestinationLoadMS })},
	{"  resume", partOf(func(p *api.PauseBreakdown) float64 { return p.ResumeMS })},
	{"first announce vs resume (ms)", func(r migRun) float64 {
		if r.rec.Pause == nil || r.rec.Pause.AnnounceMS == nil {
			return math.NaN()
		}
		return *r.rec.Pause.AnnounceMS
	}},
	{"client gap - pause (ms)", func(r migRun) float64 { return ms(r.icmp.MaxGap) - r.pause() }},
	{"sent (MB)", func(r migRun) float64 { return float64(r.rec.Bytes) / 1e6 }},
	{"passes", func(r migRun) float64 { return float64(r.rec.Passes) }},
	{"|actual/predicted - 1|, total", func(r migRun) float64 {
		if r.rec.Prediction == nil || r.rec.Prediction.TotalMS <= 0 {
			return math.NaN()
		}
		return math.Abs(r.rec.TotalMS/r.rec.Prediction.TotalMS - 1)
	}},
	{"|actual/predicted - 1|, downtime", func(r migRun) float64 {
		if r.rec.Prediction == nil || r.rec.Prediction.DowntimeMS <= 0 {
			return math.NaN()
		}
		return math.Abs(r.pause()/r.rec.Prediction.DowntimeMS - 1)
	}},
}

// medianOf is the median of f over the completed runs (NaN values left out).
func medianOf(rs []migRun, f func(migRun) float64) stat {
	var v []float64
	for _, x := range completed(rs, f) {
		if !math.IsNaN(x) {
			v = append(v, x)
		}
	}
	return summarise(v)
}

// reportScenario prints the scenario's table and reports its key medians as metrics.
func reportScenario(b *testing.B, sc scenario, rs []migRun) {
	const w = 28
	fmt.Printf("\n%s — same guest, same two hosts, the tools' runs interleaved; median [min–max]\n", sc.title)
	fmt.Printf("%-32s", "")
	for _, tool := range migrationTools {
		fmt.Printf(" | %-*s", w, toolLabel(tool))
	}
	fmt.Printf("\n%s\n", strings.Repeat("-", 32+len(migrationTools)*(w+3)))
	for _, m := range measures {
		fmt.Printf("%-32s", m.label)
		for _, tool := range migrationTools {
			fmt.Printf(" | %-*s", w, span(medianOf(ofTool(rs, tool), m.f)))
		}
		fmt.Println()
	}
	fmt.Printf("%-32s", "completed")
	for _, tool := range migrationTools {
		tr := ofTool(rs, tool)
		n, capped := 0, 0
		for _, r := range tr {
			if r.ok() {
				n++
			}
			if r.cappedAt > 0 {
				capped++
			}
		}
		s := fmt.Sprintf("%d of %d", n, len(tr))
		if capped > 0 {
			s += fmt.Sprintf(" (%d cancelled)", capped)
		}
		fmt.Printf(" | %-*s", w, s)
	}
	fmt.Println()
	for _, tool := range []string{controlTool, inPlaceTool} {
		cs := ofTool(rs, tool)
		if len(cs) == 0 {
			continue
		}
		var ic, ud []float64
		lost := 0
		for _, r := range cs {
			ic, ud = append(ic, ms(r.icmp.MaxGap)), append(ud, ms(r.udp.MaxGap))
			lost += r.icmp.Lost()
		}
		what := "no migration"
		if tool == inPlaceTool {
			what = "the guest's QEMU frozen in place for Godwit's median pause, no move"
		}
		fmt.Printf("control, %s (%d windows of %v): longest gap ICMP %s ms, UDP %s ms; %d ICMP unanswered\n",
			what, len(cs), controlWindow, span(summarise(ic)), span(summarise(ud)), lost)
	}
	for _, tool := range migrationTools {
		tr := ofTool(rs, tool)
		if s := medianOf(tr, measures[1].f); s.n > 0 {
			b.ReportMetric(s.median, toolShort(tool)+"-icmp-gap-ms")
		}
		if s := medianOf(tr, measures[0].f); s.n > 0 {
			b.ReportMetric(s.median, toolShort(tool)+"-total-s")
		}
	}
	b.ReportMetric(0, "ns/op")
}

// num formats a table value with sensible precision.
func num(v float64) string {
	switch a := math.Abs(v); {
	case a >= 100:
		return fmt.Sprintf("%.0f", v)
	case a >= 10:
		return fmt.Sprintf("%.1f", v)
	}
	return fmt.Sprintf("%.2f", v)
}

// verdicts judges the targets on what ran.
func verdicts(all map[string][]migRun, bulk *bulkResult) []string {
	var out []string
	mark := func(ok bool) string {
		if ok {
			return "MET    "
		}
		return "NOT MET"
	}
	gw, tuned := migrationTools[0], migration.PolicyQEMUTuned
	icmpGap := measures[1].f
	udpGap := measures[2].f
	total := func(r migRun) float64 { return r.total().Seconds() }
	allDone := func(rs []migRun) bool {
		for _, r := range rs {
			if !r.ok() {
				return false
			}
		}
		return len(rs) > 0
	}
	noLoss := func(key string, rs []migRun) string {
		lost, retrans := 0, int64(0)
		for _, r := range rs {
			lost += r.icmp.Lost()
			retrans += r.retrans
		}
		return fmt.Sprintf("%s %s Godwit: %d ICMP echo requests unanswered, %d TCP retransmissions by the client in %d migrations; want 0 and 0",
			mark(lost == 0 && retrans == 0), key, lost, retrans, len(rs))
	}
	// atMost compares as printed, to unit: equal on the page is level, not worse.
	atMost := func(a, b, unit float64) bool { return math.Round(a/unit) <= math.Round(b/unit) }
	gaps := func(key string, g, t []migRun) string {
		gi, ti := medianOf(g, icmpGap), medianOf(t, icmpGap)
		gu, tu := medianOf(g, udpGap), medianOf(t, udpGap)
		return fmt.Sprintf("%s %s client-seen gap: Godwit ICMP %.1f ms, UDP %.1f ms; QEMU hand-tuned ICMP %.1f ms, UDP %.1f ms; want no larger",
			mark(allDone(g) && atMost(gi.median, ti.median, 0.1) && atMost(gu.median, tu.median, 0.1)), key, gi.median, gu.median, ti.median, tu.median)
	}
	if rs, ok := all["idle"]; ok {
		g, t := ofTool(rs, gw), ofTool(rs, tuned)
		out = append(out, gaps("(a)", g, t))
		p := medianOf(g, migRun.pause)
		out = append(out, fmt.Sprintf("%s (a) Godwit's pause (STOP→RESUME): %.1f ms; want at most %v (QEMU hand-tuned: %.1f ms)",
			mark(allDone(g) && p.median <= ms(pauseTarget)), p.median, pauseTarget, medianOf(t, migRun.pause).median))
		gt, tt := medianOf(g, total), medianOf(t, total)
		out = append(out, fmt.Sprintf("%s (a) total time: Godwit %.2f s, QEMU hand-tuned %.2f s; want no longer",
			mark(allDone(g) && atMost(gt.median, tt.median, 0.01)), gt.median, tt.median))
		out = append(out, noLoss("(a)", g))
	}
	if rs, ok := all["dirty"]; ok {
		g, t := ofTool(rs, gw), ofTool(rs, tuned)
		within := 0
		for _, r := range g {
			if r.ok() && r.total() <= completeWithin {
				within++
			}
		}
		out = append(out, fmt.Sprintf("%s (b) Godwit: %d of %d completed within %v (median %.1f s)",
			mark(within == len(g) && within > 0), within, len(g), completeWithin, medianOf(g, total).median))
		out = append(out, gaps("(b)", g, t))
		for _, tool := range migrationTools[1:] {
			q := ofTool(rs, tool)
			n := len(completed(q, total))
			out = append(out, fmt.Sprintf("report  (b) %s: %d of %d completed (median total %.1f s, ICMP gap %.1f ms, %.0f MB sent in %.0f passes)",
				toolLabel(tool), n, len(q), medianOf(q, total).median, medianOf(q, icmpGap).median,
				medianOf(q, measures[16].f).median, medianOf(q, measures[17].f).median))
		}
		out = append(out, noLoss("(b)", g))
	}
	if rs, ok := all["idle-1g"]; ok {
		g, t := ofTool(rs, gw), ofTool(rs, tuned)
		floor := medianOf(g, func(r migRun) float64 { return float64(r.rec.Bytes) / shapedRate }).median
		gt := medianOf(g, total).median
		out = append(out, fmt.Sprintf("%s (c) total time on 1 Gbit/s: Godwit %.2f s; floor (bytes sent ÷ link rate) %.2f s; want at most %.1f× the floor (%.2f s); QEMU hand-tuned %.2f s",
			mark(allDone(g) && gt <= floorSlack*floor), gt, floor, floorSlack, floorSlack*floor, medianOf(t, total).median))
		out = append(out, gaps("(c)", g, t))
		out = append(out, noLoss("(c)", g))
	}
	if bulk != nil {
		a, t := summarise(bulk.alone[gw]), summarise(bulk.together[gw])
		out = append(out, fmt.Sprintf("%s (d) each VM's pause in a bulk move of %d: Godwit median %.1f ms (max %.1f ms) against %.1f ms alone, ratio %.2f; want at most %.0f×",
			mark(a.n > 0 && t.n == bulk.all[gw] && t.median <= bulkSlack*a.median), bulkVMs, t.median, t.hi, a.median, t.median/a.median, bulkSlack))
		out = append(out, fmt.Sprintf("%s (d) Godwit: %d ICMP echo requests unanswered, %d TCP retransmissions; want 0 and 0",
			mark(bulk.lost[gw] == 0 && bulk.retrans[gw] == 0), bulk.lost[gw], bulk.retrans[gw]))
		if ev := bulk.evac; ev != nil {
			ratio := ev.plan.ActualMakespanMS / 1000 / ev.floor()
			out = append(out, fmt.Sprintf("%s maintenance: %d idle %d MiB VMs evacuated in %.2f s on 1 Gbit/s; floor (bytes ÷ link rate) %.2f s, ratio %.2f; want at most %.1f× (issue 12)",
				mark(ev.completed == bulkVMs && ev.plan.State == api.PlanDone && ratio <= evacSlack), ev.completed, bulkMiB,
				ev.plan.ActualMakespanMS/1000, ev.floor(), ratio, evacSlack))
		}
	}
	var errs []float64
	for _, rs := range all {
		for _, x := range completed(ofTool(rs, gw), measures[18].f) {
			if !math.IsNaN(x) {
				errs = append(errs, x)
			}
		}
	}
	if s := summarise(errs); s.n > 0 {
		out = append(out, fmt.Sprintf("%s prediction: median |actual ÷ predicted − 1| of the total time %.2f over %d migrations; want at most 0.3",
			mark(s.median <= 0.3), s.median, s.n))
	} else {
		out = append(out, "NOT MET prediction: no migration recorded a prediction")
	}
	return out
}

// plotMigrations draws the client-seen gap (ICMP) and the total time per run, all
// tools, one row per scenario, to plotPath under the repository root.
func plotMigrations(all map[string][]migRun) (string, error) {
	root, err := repoRoot()
	if err != nil {
		return "", err
	}
	g := benchplot.Grid{
		Title: "Live migration of the same 1 GiB guest between two lab hosts: Godwit vs QEMU's defaults vs QEMU hand-tuned (TCG, 2-core host)",
		Cols:  2,
	}
	for _, sc := range migrationScenarios() {
		rs, ok := all[sc.key]
		if !ok {
			continue
		}
		g.Rows++
		cl := benchplot.Panel{Title: sc.title + ": client-seen gap", YLabel: "longest gap in 1 ms ICMP echoes (ms)"}
		tt := benchplot.Panel{Title: sc.title + ": total time", YLabel: "total time (s)"}
		for _, tool := range migrationTools {
			c := benchplot.Series{Name: toolLabel(tool)}
			t := benchplot.Series{Name: toolLabel(tool)}
			for _, r := range ofTool(rs, tool) {
				c.Values = append(c.Values, ms(r.icmp.MaxGap))
				t.Values = append(t.Values, r.total().Seconds())
				c.Failed = append(c.Failed, !r.ok())
				t.Failed = append(t.Failed, !r.ok())
			}
			cl.Series = append(cl.Series, c)
			tt.Series = append(tt.Series, t)
		}
		g.Panels = append(g.Panels, cl, tt)
	}
	path := filepath.Join(root, plotPath)
	return path, benchplot.WritePNG(path, g)
}

// repoRoot is the module's root: the nearest directory above the working directory
// (the package's, under go test) that holds go.mod.
func repoRoot() (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for d := dir; ; d = filepath.Dir(d) {
		if _, err := os.Stat(filepath.Join(d, "go.mod")); err == nil {
			return d, nil
		}
		if filepath.Dir(d) == d {
			return "", fmt.Errorf("no go.mod above %s", dir)
		}
	}
}
