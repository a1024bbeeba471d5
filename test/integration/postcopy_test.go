package integration

import (
	"bytes"
	"encoding/json"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/godwit/godwit/internal/api"
	"github.com/godwit/godwit/internal/migration"
)

// Post-copy, end to end. The guest rewrites postcopyDirtyMiB as fast as its vCPU can,
// far faster than the hosts' links (shaped to postcopyRate) carry, even with its vCPUs
// throttled to the safe policy's maximum of 40%: a migration allowed post-copy
// (`--postcopy`) switches to it, and its stream (encrypted, as safe requires) then lasts
// a few seconds, long enough to cut the destination's link under it.
const (
	postcopyRate     = "100mbit"
	postcopyDirtyMiB = 32
	// postcopyCut is how long the destination's link stays down: long enough for TCP's
	// retransmissions of the stream to back off well beyond the source's reconnection
	// attempts (every second once the stream stalled for PostcopyStallTimeout), so that
	// the stream comes back through Godwit's recovery, not by itself.
	postcopyCut = 15 * time.Second
)

// TestPostcopy migrates a VM with post-copy allowed twice. First host-1 → host-2: the
// migration switches to post-copy, the destination's link is cut for postcopyCut, the
// source notices the stalled stream and, once the destination's agent answers again,
// recovers it over a new connection (the destination breaks its end and listens again,
// then the source breaks its end and resumes), and the migration completes: the VM runs
// on host-2 only, whole (memory checked by the guest, disk, a TCP connection opened
// before), and the record says it went post-copy and recovered. Then host-2 → host-1:
// in post-copy the destination's link is cut and stays cut, and the user cancels: the VM
// cannot go back to host-2, whose QEMU is never resumed — the migration ends failed, the
// VM lost — and once the link is back the copy on host-1 is torn down; the VM, left
// stopped on host-2 with the reason, starts again from its disk.
func TestPostcopy(t *testing.T) {
	r := newFaultRun(t)

	// 1. A link cut during post-copy is recovered from.
	m := r.startPostcopy()
	r.l.LinkDown(m.Destination)
	cut := time.Now()
	stalled := r.waitSource(m, "the stream stalled", migration.PostcopyStallTimeout+5*time.Second, func(cur api.Migration) bool {
		return strings.Contains(cur.Progress.Note, "no data reached the destination")
	})
	t.Logf("%s after the cut: %s", time.Since(cut).Round(100*time.Millisecond), faultDescribe(stalled))
	time.Sleep(time.Until(cut.Add(postcopyCut)))
	if cur := r.waitSource(m, "still in post-copy", time.Second, func(api.Migration) bool { return true }); cur.Progress.Phase != string(migration.PhasePostcopy) {
		t.Errorf("with the destination out of reach the source's stream is %s: %s; want it left in post-copy, not broken", cur.Progress.Phase, faultDescribe(cur))
	}
	r.l.LinkUp(m.Destination)
	end := r.mustEnd(m.ID, 2*time.Minute, "after the link came back")
	if end.State != api.MigrationSucceeded || !end.Postcopy || end.PostcopyRecoveries < 1 || !end.Encrypted || end.Policy != migration.PolicySafe {
		t.Fatalf("migration %s: %+v; want succeeded, encrypted under safe, in post-copy with its stream recovered", m.ID, end)
	}
	show := r.l.MustRun("migration", "show", m.ID)
	if !strings.Contains(show, "Post-copy") || !strings.Contains(show, "recovered") {
		t.Errorf("migration show does not say the migration went post-copy and recovered:\n%s", show)
	}
	r.verifyMoved(m.Destination)

	// 2. Cancelled while the link stays down: the VM is lost, never resumed at its source.
	m = r.startPostcopy()
	srcPID := r.pid
	r.l.LinkDown(m.Destination)
	r.waitSource(m, "the stream stalled", migration.PostcopyStallTimeout+5*time.Second, func(cur api.Migration) bool {
		return strings.Contains(cur.Progress.Note, "no data reached the destination")
	})
	out := r.l.MustRun("migration", "cancel", m.ID)
	if !strings.Contains(out, "cannot go back") {
		t.Errorf("migration cancel in post-copy printed %q; want it to say the VM cannot go back", out)
	}
	end = r.mustEnd(m.ID, 30*time.Second, "after the cancel in post-copy")
	if end.State != api.MigrationFailed || !end.Postcopy || !strings.Contains(end.Error, "lost") {
		t.Errorf("migration %s cancelled in post-copy: %s; want failed, saying the VM was lost", m.ID, faultDescribe(end))
	}
	if !processGone(srcPID, 10*time.Second) {
		t.Errorf("the source QEMU %d of a VM that left in post-copy still runs", srcPID)
	}
	v := waitVM(t, r.l, faultVMName, func(v api.VM) bool { return v.Host == m.Source && v.State != api.VMRunning && v.PID == 0 })
	t.Logf("the VM on %s after the loss: %s (%s)", m.Source, v.State, v.Error)
	r.l.LinkUp(m.Destination)
	for deadline := time.Now().Add(90 * time.Second); len(qemuProcesses(r.vm.UUID)) > 0; time.Sleep(500 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("QEMU processes of the lost VM 90 s after the link came back: %v; want none", qemuProcesses(r.vm.UUID))
		}
	}
	stateDir := filepath.Join(r.l.Dir(), m.Destination, "vms", strings.ReplaceAll(r.vm.UUID, "-", ""))
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(200 * time.Millisecond) {
		if _, err := os.Stat(stateDir); os.IsNotExist(err) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the lost VM's copy is left on %s: %s", m.Destination, stateDir)
		}
	}
	r.l.Shape("host-1", "off")
	r.l.Shape("host-2", "off")
	r.l.MustRun("vm", "start", faultVMName)
	r.l.WaitHTTP("client", r.url("/healthz"), 90*time.Second)
	if s := r.stats(); s.BootID == r.bootID {
		t.Errorf("the VM answers with boot id %s, the lost run's: it was not started afresh", s.BootID)
	}
	if got := getDisk(t, r.l, r.vm.IP, faultSlot); !bytes.Equal(got, r.record) {
		t.Errorf("disk slot %d changed", faultSlot)
	}
}

// startPostcopy shapes the links, makes the guest dirty memory and migrates it to the
// other host with post-copy allowed; it returns once the migration is in post-copy and
// has moved some memory there (the destination runs the guest).
func (r *faultRun) startPostcopy() api.Migration {
	r.t.Helper()
	r.l.Shape("host-1", postcopyRate)
	r.l.Shape("host-2", postcopyRate)
	r.dirty(postcopyDirtyMiB, 0)
	to := faultOther(r.host)
	var m api.Migration
	r.l.RunJSON(&m, "vm", "migrate", faultVMName, "--to", to, "--policy", migration.PolicySafe, "--postcopy", "--detach")
	if m.ID == "" || m.Source != r.host || m.Destination != to || !m.PostcopyAllowed {
		r.t.Fatalf("vm migrate --postcopy --detach printed %+v; want a migration %s → %s allowed post-copy", m, r.host, to)
	}
	r.started = m
	inPostcopy := func(cur api.Migration) bool { return cur.Progress.Phase == string(migration.PhasePostcopy) }
	cur := r.waitSource(m, "post-copy", 4*time.Minute, inPostcopy)
	from := cur.Progress.TransferredBytes
	r.waitSource(m, "post-copy moving memory", 30*time.Second, func(cur api.Migration) bool {
		return inPostcopy(cur) && cur.Progress.TransferredBytes >= from+4e6
	})
	r.t.Logf("migration %s %s → %s in post-copy: %s", m.ID, m.Source, m.Destination, faultDescribe(cur))
	return m
}

// waitSource polls the source agent's record of the migration (as the center does,
// without the center's delay) until ok accepts it.
func (r *faultRun) waitSource(m api.Migration, what string, timeout time.Duration, ok func(api.Migration) bool) api.Migration {
	r.t.Helper()
	hc := r.l.AsCenter(m.Source)
	url := "https://" + r.addrs[m.Source] + ":7700/agent/v1/migrations/" + m.ID
	deadline := time.Now().Add(timeout)
	var cur api.Migration
	for {
		if resp, err := hc.Get(url); err == nil {
			cur = api.Migration{}
			err = json.NewDecoder(resp.Body).Decode(&cur)
			resp.Body.Close()
			if err == nil && resp.StatusCode == http.StatusOK && ok(cur) {
				return cur
			}
		}
		if faultEnded(cur) {
			r.t.Fatalf("migration %s ended while waiting for %s: %s", m.ID, what, faultDescribe(cur))
		}
		if time.Now().After(deadline) {
			r.t.Fatalf("migration %s: no %s within %v: %s", m.ID, what, timeout, faultDescribe(cur))
		}
		time.Sleep(20 * time.Millisecond)
	}
}
