package integration

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/godwit/godwit/internal/api"
	"github.com/godwit/godwit/internal/lab"
	"github.com/godwit/godwit/internal/labtest"
	"github.com/godwit/godwit/internal/netdev"
)

// Fault tests: a live migration is hit by a fault while it is copying memory — the
// destination QEMU dies, the link between the hosts is cut, the user cancels, the
// destination or the source agent restarts — and afterwards exactly one copy of the VM
// runs, where the migration's reported outcome says (on the source, for a migration
// that failed or was cancelled, with a reason), its memory is intact, it is reachable
// on a TCP connection opened before the migration, nothing of it is left on the other
// host, and it can be migrated again.
//
// To be mid-copy when the fault hits, a migration must last: both hosts' links are
// shaped to faultRate (the first pass over the 512 MiB guest then takes about 15 s) and
// the guest rewrites memory about as fast as that link carries it, so later passes need
// throttling. The fault hits once faultAtPercent of the memory is sent (after about 3.5 s).

const (
	faultVMName = "fault-1"
	// faultRate is the speed of the hosts' links while a fault migration runs.
	faultRate = "100mbit"
	// faultDirtyMiB and faultDirtyRate keep the guest busy: 64 MiB rewritten at 12 MiB/s,
	// about what faultRate carries.
	faultDirtyMiB  = 64
	faultDirtyRate = 12
	// faultAtPercent is how much of the guest's memory must be sent before the fault.
	faultAtPercent = 10
)

// faultRun is one VM on a 2-host lab, migrated and hit by faults.
type faultRun struct {
	t      *testing.T
	l      *labtest.Lab
	vm     api.VM // as created
	bootID string
	host   string // where the VM runs now
	pid    int    // its QEMU there
	tcp    net.Conn
	record []byte // written to disk slot faultSlot before any migration
	// started is the faulted migration as it was reported while it ran.
	started api.Migration
	addrs   map[string]string
}

const faultSlot = 7

// newFaultRun brings up a lab with a running VM, a TCP connection to it from the client
// and a disk record, and makes sure the links are whole and unshaped again before the
// lab goes down (even when the test fails halfway).
func newFaultRun(t *testing.T) *faultRun {
	l := newLab(t, 2)
	r := &faultRun{t: t, l: l, addrs: map[string]string{}}
	t.Cleanup(func() {
		rec, err := lab.Load(home, l.Name)
		if err != nil {
			return
		}
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		for _, h := range []string{"host-1", "host-2"} {
			if err := rec.SetLink(ctx, h, true); err != nil {
				t.Errorf("cleanup: restore the link of %s: %v", h, err)
			}
			if err := rec.ShapeLink(ctx, h, "off"); err != nil {
				t.Errorf("cleanup: unshape the link of %s: %v", h, err)
			}
		}
		if t.Failed() {
			r.dumpLogs()
		}
	})

	var hosts []api.Host
	l.RunJSON(&hosts, "host", "list")
	for _, h := range hosts {
		r.addrs[h.Name] = h.Address
	}
	l.RunJSON(&r.vm, "vm", "create", faultVMName, "--host", "host-1")
	if r.vm.State != api.VMRunning || r.vm.PID == 0 {
		t.Fatalf("vm create returned %+v; want a running VM", r.vm)
	}
	r.host, r.pid = "host-1", r.vm.PID
	l.WaitHTTP("client", r.url("/healthz"), 90*time.Second)
	r.bootID = r.stats().BootID

	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	tcp, err := l.Dial(ctx, "client", "tcp", r.vm.IP+":7")
	if err != nil {
		t.Fatalf("TCP echo connection to the VM: %v", err)
	}
	t.Cleanup(func() { tcp.Close() })
	r.tcp = tcp
	r.echo()

	r.record = make([]byte, 96<<10)
	_, _ = rand.Read(r.record)
	putDisk(t, l, r.vm.IP, faultSlot, r.record)
	return r
}

func (r *faultRun) url(path string) string { return "http://" + r.vm.IP + path }

func faultOther(host string) string {
	if host == "host-1" {
		return "host-2"
	}
	return "host-1"
}

// echo sends data over the TCP connection opened before any migration, bounded in time
// so that a dead connection fails the test instead of hanging it.
func (r *faultRun) echo() {
	r.t.Helper()
	_ = r.tcp.SetDeadline(time.Now().Add(30 * time.Second))
	echoTCP(r.t, r.tcp, 16<<10)
	_ = r.tcp.SetDeadline(time.Time{})
}

// faultStats is the part of the guest's /stats the fault tests read.
type faultStats struct {
	BootID         string `json:"boot_id"`
	MemoryErrors   uint64 `json:"memory_errors"`
	MemoryBadPages uint64 `json:"memory_bad_pages"`
	CheckPasses    uint64 `json:"check_passes"`
	ClockBackwards uint64 `json:"clock_backwards"`
}

func (r *faultRun) stats() faultStats {
	r.t.Helper()
	var s faultStats
	var err error
	for i := 0; i < 10; i++ {
		var resp *http.Response
		if resp, err = r.l.HTTP("client").Get(r.url("/stats")); err == nil {
			err = json.NewDecoder(resp.Body).Decode(&s)
			resp.Body.Close()
			if err == nil {
				return s
			}
		}
		time.Sleep(500 * time.Millisecond)
	}
	r.t.Fatalf("GET /stats of the VM: %v", err)
	return s
}

// dirty starts (mib > 0) or stops (mib 0) the guest's memory dirtier.
func (r *faultRun) dirty(mib, rate int) {
	r.t.Helper()
	resp, err := r.l.HTTP("client").Post(r.url(fmt.Sprintf("/dirty?mib=%d&rate=%d", mib, rate)), "application/json", nil)
	if err != nil {
		r.t.Fatalf("POST /dirty: %v", err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		r.t.Fatalf("POST /dirty: %s: %s", resp.Status, b)
	}
}

// show returns the migration as `godwit migration show ID -o json` reports it.
func (r *faultRun) show(id string) api.Migration {
	r.t.Helper()
	var m api.Migration
	r.l.RunJSON(&m, "migration", "show", id)
	return m
}

func faultEnded(m api.Migration) bool {
	return m.State == api.MigrationSucceeded || m.State == api.MigrationFailed || m.State == api.MigrationCancelled
}

func faultDescribe(m api.Migration) string {
	p := m.Progress
	return fmt.Sprintf("%s (phase %q, pass %d, %.1f%% sent, %d bytes, %.0f B/s, note %q, error %q)",
		m.State, p.Phase, p.Pass, p.PercentSent, p.TransferredBytes, p.TransferRate, p.Note, m.Error)
}

// startSlowMigration shapes both hosts' links, makes the guest dirty memory and starts a
// detached migration to the other host; it returns once the migration has sent
// faultAtPercent of the memory and is still copying.
func (r *faultRun) startSlowMigration() api.Migration {
	r.t.Helper()
	r.l.Shape("host-1", faultRate)
	r.l.Shape("host-2", faultRate)
	r.dirty(faultDirtyMiB, faultDirtyRate)
	to := faultOther(r.host)
	var m api.Migration
	r.l.RunJSON(&m, "vm", "migrate", faultVMName, "--to", to, "--detach")
	if m.ID == "" || m.Source != r.host || m.Destination != to {
		r.t.Fatalf("vm migrate --detach printed %+v; want a migration %s → %s with an id", m, r.host, to)
	}
	start := time.Now()
	for {
		m = r.show(m.ID)
		if faultEnded(m) {
			r.t.Fatalf("migration %s ended before the fault could hit it: %s", m.ID, faultDescribe(m))
		}
		if m.State == api.MigrationRunning && m.Progress.PercentSent > faultAtPercent {
			break
		}
		if time.Since(start) > 90*time.Second {
			r.t.Fatalf("migration %s did not reach %d%% within 90 s: %s", m.ID, faultAtPercent, faultDescribe(m))
		}
		time.Sleep(100 * time.Millisecond)
	}
	r.t.Logf("migration %s %s → %s mid-copy after %s: %s", m.ID, m.Source, m.Destination, time.Since(start).Round(100*time.Millisecond), faultDescribe(m))
	r.started = m
	return m
}

// waitEnd polls the migration until it ends or timeout passes.
func (r *faultRun) waitEnd(id string, timeout time.Duration) (api.Migration, bool) {
	r.t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		m := r.show(id)
		if faultEnded(m) {
			return m, true
		}
		if time.Now().After(deadline) {
			return m, false
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// mustEnd waits for the migration to end; one that goes on is a bug (stuck "running").
func (r *faultRun) mustEnd(id string, timeout time.Duration, after string) api.Migration {
	r.t.Helper()
	start := time.Now()
	m, ok := r.waitEnd(id, timeout)
	if !ok {
		r.t.Fatalf("migration %s is still %s %s after %s: it is stuck", id, faultDescribe(m), after, timeout)
	}
	r.t.Logf("migration %s ended %s after %s: %s", id, after, time.Since(start).Round(100*time.Millisecond), faultDescribe(m))
	return m
}

// destinationQEMU returns the pid of the QEMU the migration started for the VM on host.
func (r *faultRun) destinationQEMU(host string) int {
	r.t.Helper()
	for _, pid := range qemuProcesses(r.vm.UUID) {
		if pid != r.pid && r.inNamespace(pid, host) {
			return pid
		}
	}
	r.t.Fatalf("no QEMU of VM %s in %s's namespace (QEMU processes of the VM: %v)", r.vm.UUID, host, qemuProcesses(r.vm.UUID))
	return 0
}

// inNamespace reports whether pid runs in host's network namespace.
func (r *faultRun) inNamespace(pid int, host string) bool {
	a, err1 := os.Stat(fmt.Sprintf("/proc/%d/ns/net", pid))
	b, err2 := os.Stat("/run/netns/" + r.l.NS(host))
	if err1 != nil || err2 != nil {
		return false
	}
	sa, sb := a.Sys().(*syscall.Stat_t), b.Sys().(*syscall.Stat_t)
	return sa.Dev == sb.Dev && sa.Ino == sb.Ino
}

// verify checks the state after a faulted migration m from → to has ended. With
// mayComplete, a migration that completed despite the fault is accepted as long as the
// VM is then whole on the destination; otherwise it must have failed or been cancelled,
// with a reason, and the VM must run on the source in its original QEMU.
func (r *faultRun) verify(m api.Migration, mayComplete bool) {
	r.t.Helper()
	t := r.t
	from, to := m.Source, m.Destination
	on := from
	switch {
	case m.State == api.MigrationSucceeded && mayComplete:
		on = to
		t.Logf("the migration completed despite the fault; the VM must now run on %s only", to)
	case m.State == api.MigrationSucceeded:
		t.Errorf("migration %s succeeded despite the fault; want it failed or cancelled with the VM on %s", m.ID, from)
		on = to
	case m.State != api.MigrationFailed && m.State != api.MigrationCancelled:
		t.Errorf("migration %s ended %q; want failed or cancelled", m.ID, m.State)
	case strings.TrimSpace(m.Error) == "":
		t.Errorf("migration %s ended %s without a reason (`migration show` has no error): %+v", m.ID, m.State, m)
	}
	off := faultOther(on)
	// The record keeps what it knew while the migration ran.
	if d := m.Started.Sub(r.started.Started); d > 2*time.Second || d < -2*time.Second || m.Policy != r.started.Policy || m.Finished == nil {
		t.Errorf("the ended migration's record says it started %s under policy %q, finished %v; while it ran it said %s and %q",
			m.Started.Format(time.RFC3339Nano), m.Policy, m.Finished, r.started.Started.Format(time.RFC3339Nano), r.started.Policy)
	}

	v := waitVM(t, r.l, faultVMName, func(v api.VM) bool {
		return v.Host == on && v.State == api.VMRunning && v.PID != 0 && (on != from || v.PID == r.pid)
	})
	if on == from && v.PID != r.pid {
		t.Errorf("the VM runs on %s in QEMU %d, not in its original QEMU %d: it was restarted", from, v.PID, r.pid)
	}

	// Exactly one copy: the QEMU the center names, in the namespace of the host it names.
	var pids []int
	for deadline := time.Now().Add(15 * time.Second); ; time.Sleep(200 * time.Millisecond) {
		pids = qemuProcesses(r.vm.UUID)
		if len(pids) == 1 && pids[0] == v.PID || time.Now().After(deadline) {
			break
		}
	}
	if len(pids) != 1 || pids[0] != v.PID || !r.inNamespace(v.PID, on) {
		var where []string
		for _, p := range pids {
			ns := "?"
			for _, h := range []string{"host-1", "host-2"} {
				if r.inNamespace(p, h) {
					ns = h
				}
			}
			where = append(where, fmt.Sprintf("%d on %s", p, ns))
		}
		t.Errorf("QEMU processes of the VM 15 s after the migration ended: [%s]; want exactly %d on %s", strings.Join(where, ", "), v.PID, on)
	}

	// Nothing of the VM is left on the other host: no TAP, no state, not in its agent's list.
	// The copy is torn down in steps (TAP, then state), so wait for all of them.
	tap := netdev.TapName(r.vm.UUID, 0)
	stateDir := filepath.Join(r.l.Dir(), off, "vms", strings.ReplaceAll(r.vm.UUID, "-", ""))
	var links string
	var statErr error
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(200 * time.Millisecond) {
		links, _, _ = r.l.Run("lab", "exec", "--name", r.l.Name, off, "--", "ip", "-o", "link", "show")
		_, statErr = os.Stat(stateDir)
		if (!strings.Contains(links, tap) && os.IsNotExist(statErr)) || time.Now().After(deadline) {
			break
		}
	}
	if strings.Contains(links, tap) {
		t.Errorf("TAP %s of the VM is left on %s:\n%s", tap, off, links)
	}
	if !os.IsNotExist(statErr) {
		t.Errorf("the VM's state directory is left on %s (stat: %v)", off, statErr)
	}
	var sts []api.VMStatus
	hc := r.l.AsCenter(off)
	if resp, err := hc.Get("https://" + r.addrs[off] + ":7700/agent/v1/vms"); err != nil {
		t.Errorf("list the VMs of %s's agent: %v", off, err)
	} else {
		_ = json.NewDecoder(resp.Body).Decode(&sts)
		resp.Body.Close()
		for _, s := range sts {
			if s.Name == faultVMName {
				t.Errorf("the agent of %s still lists the VM: %+v", off, s)
			}
		}
	}

	// The VM is whole and reachable.
	r.l.WaitHTTP("client", r.url("/healthz"), 20*time.Second)
	r.echo()
	if got := getDisk(t, r.l, r.vm.IP, faultSlot); !bytes.Equal(got, r.record) {
		t.Errorf("disk slot %d changed", faultSlot)
	}
	r.checkMemory()
	r.host, r.pid = on, v.PID
}

// checkMemory waits until the guest's checker has made two passes since now, then
// requires no memory error and the same boot.
func (r *faultRun) checkMemory() {
	r.t.Helper()
	s0 := r.stats()
	var s faultStats
	for deadline := time.Now().Add(90 * time.Second); ; time.Sleep(250 * time.Millisecond) {
		s = r.stats()
		if s.CheckPasses >= s0.CheckPasses+2 {
			break
		}
		if time.Now().After(deadline) {
			r.t.Fatalf("the guest's memory checker made %d passes in 90 s; want 2", s.CheckPasses-s0.CheckPasses)
		}
	}
	if s.BootID != r.bootID || s.MemoryErrors != 0 || s.ClockBackwards != 0 {
		r.t.Errorf("guest after the fault: boot id %s (was %s), %d memory errors in %d pages, %d clock steps back; want the same boot and none",
			s.BootID, r.bootID, s.MemoryErrors, s.MemoryBadPages, s.ClockBackwards)
	}
}

// migrateAgain removes the shaping and the dirtier and migrates the VM to the other host,
// which must succeed: the fault left nothing locked or stale.
func (r *faultRun) migrateAgain() {
	r.t.Helper()
	r.l.Shape("host-1", "off")
	r.l.Shape("host-2", "off")
	r.dirty(0, 0)
	from, to := r.host, faultOther(r.host)
	r.waitReady(to)
	var sum migrationSummary
	r.l.RunJSON(&sum, "vm", "migrate", faultVMName, "--to", to)
	if sum.State != api.MigrationSucceeded || sum.Source != from || sum.Destination != to {
		r.t.Fatalf("migration after the fault: %+v; want a success %s → %s", sum, from, to)
	}
	r.t.Logf("migrated again %s → %s after the fault: %.0f ms, downtime %.1f ms", from, to, sum.TotalMS, sum.DowntimeMS)
	r.pid = 0
	r.verifyMoved(to)
}

// waitReady waits until host is connected and has reported its accelerator and what
// it gives guests' CPUs, as an agent does once it has probed after a (re)start.
func (r *faultRun) waitReady(host string) {
	r.t.Helper()
	deadline := time.Now().Add(time.Minute)
	for {
		var hosts []api.Host
		r.l.RunJSON(&hosts, "host", "list")
		for _, h := range hosts {
			if h.Name == host && h.State == api.HostConnected && h.Accel != "" && len(h.GuestCPU.Flags) > 0 {
				return
			}
		}
		if time.Now().After(deadline) {
			r.t.Fatalf("host %s is not ready a minute after the fault: %+v", host, hosts)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// verifyMoved checks a successful move to host: one QEMU there, nothing left on the
// other host, the VM whole.
func (r *faultRun) verifyMoved(host string) {
	r.t.Helper()
	v := waitVM(r.t, r.l, faultVMName, func(v api.VM) bool { return v.Host == host && v.State == api.VMRunning && v.PID != 0 })
	if pids := qemuProcesses(r.vm.UUID); len(pids) != 1 || pids[0] != v.PID || !r.inNamespace(v.PID, host) {
		r.t.Errorf("QEMU processes of the VM after the move to %s: %v; want exactly %d there", host, pids, v.PID)
	}
	if tapLeft(r.l, faultOther(host), netdev.TapName(r.vm.UUID, 0)) {
		r.t.Errorf("the VM's TAP is left on %s after the move", faultOther(host))
	}
	r.echo()
	if got := getDisk(r.t, r.l, r.vm.IP, faultSlot); !bytes.Equal(got, r.record) {
		r.t.Errorf("disk slot %d changed", faultSlot)
	}
	r.checkMemory()
	r.host, r.pid = host, v.PID
}

// dumpLogs prints the end of the lab's daemon logs, for a failed test.
func (r *faultRun) dumpLogs() {
	logs, _ := filepath.Glob(filepath.Join(r.l.Dir(), "logs", "*.log"))
	for _, f := range logs {
		b, err := os.ReadFile(f)
		if err != nil {
			continue
		}
		lines := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
		if len(lines) > 40 {
			lines = lines[len(lines)-40:]
		}
		r.t.Logf("---- last lines of %s:\n%s", filepath.Base(f), strings.Join(lines, "\n"))
	}
}

// TestFaultDestinationQEMUKilled kills the destination's QEMU mid-copy: the migration
// fails with a reason and the VM runs on in its source QEMU.
func TestFaultDestinationQEMUKilled(t *testing.T) {
	t.Parallel()
	r := newFaultRun(t)
	m := r.startSlowMigration()
	pid := r.destinationQEMU(m.Destination)
	if err := syscall.Kill(pid, syscall.SIGKILL); err != nil {
		t.Fatalf("kill the destination QEMU %d: %v", pid, err)
	}
	if !processGone(pid, 10*time.Second) {
		t.Fatalf("the destination QEMU %d did not die", pid)
	}
	m = r.mustEnd(m.ID, 60*time.Second, "after the destination QEMU was killed")
	r.verify(m, false)
	r.migrateAgain()
}

// TestFaultLinkCut cuts the destination's link mid-copy. With no byte moving, the
// migration must be given up — failed with a reason, the VM still on the source — within
// faultLinkDown, even though TCP itself would wait for many minutes; then the link
// comes back and the VM can be migrated.
func TestFaultLinkCut(t *testing.T) {
	t.Parallel()
	const faultLinkDown = 30 * time.Second
	r := newFaultRun(t)
	m := r.startSlowMigration()
	r.l.LinkDown(m.Destination)
	cut := time.Now()
	end, ok := r.waitEnd(m.ID, faultLinkDown)
	if ok {
		t.Logf("migration %s ended %s after the cut, with the link still down: %s", m.ID, time.Since(cut).Round(100*time.Millisecond), faultDescribe(end))
	} else {
		t.Logf("migration %s is still %s %s after the cut; restoring the link", m.ID, faultDescribe(end), faultLinkDown)
	}
	r.l.LinkUp(m.Destination)
	if !ok {
		// The destination's agent is reachable again, so its copy can be torn down now; a
		// migration that noticed the dead link must end at once.
		end, ok = r.waitEnd(m.ID, 30*time.Second)
		switch {
		case ok && end.State == api.MigrationSucceeded:
			t.Errorf("migration %s went on after %s without a byte moving and completed once the link was back: nothing gives up a migration whose link is dead", m.ID, faultLinkDown)
		case ok:
			t.Logf("migration %s ended %s after the cut, once the link was back: %s", m.ID, time.Since(cut).Round(100*time.Millisecond), faultDescribe(end))
		default:
			t.Errorf("migration %s is still %s %s after the cut, %s of them with the link back: nothing gives up a migration whose link is dead; cancelling it",
				m.ID, faultDescribe(end), time.Since(cut).Round(time.Second), 30*time.Second)
			r.l.MustRun("migration", "cancel", m.ID)
			end = r.mustEnd(m.ID, 60*time.Second, "after a cancel")
		}
	}
	r.verify(end, false)
	r.migrateAgain()
}

// TestFaultCancel cancels a migration mid-copy, as a user does.
func TestFaultCancel(t *testing.T) {
	t.Parallel()
	r := newFaultRun(t)
	m := r.startSlowMigration()
	out := r.l.MustRun("migration", "cancel", m.ID)
	if !strings.Contains(out, m.ID) {
		t.Errorf("migration cancel printed %q; want it to name migration %s", out, m.ID)
	}
	m = r.mustEnd(m.ID, 30*time.Second, "after the cancel")
	if m.State != api.MigrationCancelled {
		t.Errorf("a migration the user cancelled ended %q; want cancelled", m.State)
	}
	r.verify(m, false)
	if _, errOut, err := r.l.Run("migration", "cancel", m.ID); err == nil || !strings.Contains(errOut, "already") {
		t.Errorf("cancelling an ended migration again: err=%v stderr=%q; want a refusal", err, errOut)
	}
	r.migrateAgain()
}

// TestFaultDestinationAgentRestart restarts the destination's agent mid-copy: killed
// (SIGKILL) and started again, then stopped gracefully and started again. The agent
// carries the encrypted stream, so the stream breaks with it and the migration fails
// (in the clear the QEMUs talk directly, and it may go on and complete); either way
// exactly one copy of the VM must run, where the outcome says, and nothing of it may be
// left on the other host.
func TestFaultDestinationAgentRestart(t *testing.T) {
	t.Parallel()
	r := newFaultRun(t)
	for _, graceful := range []bool{false, true} {
		m := r.startSlowMigration()
		if graceful {
			t.Logf("stopping the agent of %s gracefully", m.Destination)
			r.l.Stop(m.Destination)
		} else {
			t.Logf("killing the agent of %s", m.Destination)
			r.l.Crash(m.Destination)
		}
		r.l.Start(m.Destination)
		// The fault is over: let a migration that goes on finish quickly.
		r.l.Shape("host-1", "off")
		r.l.Shape("host-2", "off")
		r.dirty(0, 0)
		m = r.mustEnd(m.ID, time.Minute, "after the destination agent restarted")
		r.verify(m, true)
		r.migrateAgain()
	}
}

// TestFaultSourceAgentRestart restarts the source's agent mid-copy: killed (SIGKILL)
// and started again, then stopped gracefully and started again. The restarted agent
// cancels the migration it finds under way: the VM stays on the source.
func TestFaultSourceAgentRestart(t *testing.T) {
	t.Parallel()
	r := newFaultRun(t)
	for _, graceful := range []bool{false, true} {
		m := r.startSlowMigration()
		if graceful {
			t.Logf("stopping the agent of %s gracefully", m.Source)
			r.l.Stop(m.Source)
		} else {
			t.Logf("killing the agent of %s", m.Source)
			r.l.Crash(m.Source)
		}
		r.l.Start(m.Source)
		m = r.mustEnd(m.ID, time.Minute, "after the source agent restarted")
		r.verify(m, false)
		r.migrateAgain()
	}
}
