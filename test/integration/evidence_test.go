package integration

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/godwit/godwit/internal/api"
)

// partitionFor is how long the center is cut off from the hosts: longer than the minute
// after which the center used to give up on an unanswered source (600 polls of 100 ms
// that fail at once) and record the migration failed.
const partitionFor = 65 * time.Second

// TestMigrationOutcomeSurvivesPartition cuts the center off from both hosts right after
// a migration starts, for longer than the center ever waited, while the hosts still
// reach each other and complete it. The outcome must stay pending — the task says the
// center cannot reach the source — and once the partition heals the center must record
// what really happened: the migration succeeded, and the VM is on the destination,
// where its only QEMU runs.
func TestMigrationOutcomeSurvivesPartition(t *testing.T) {
	l := newLab(t, 2)
	var hosts []api.Host
	l.RunJSON(&hosts, "host", "list")
	addr := map[string]string{}
	for _, h := range hosts {
		addr[h.Name] = h.Address
	}
	var vm api.VM
	l.RunJSON(&vm, "vm", "create", "part-1", "--host", "host-1")
	l.WaitHTTP("client", "http://"+vm.IP+"/healthz", 90*time.Second)

	// In the center's namespace the hosts' addresses become unreachable: its calls to
	// the agents fail at once and its answers to their heartbeats are lost, while the
	// hosts' own path to each other over the switch is untouched.
	partition := func(verb string) error {
		for _, h := range []string{"host-1", "host-2"} {
			if _, errOut, err := l.Run("lab", "exec", "--name", l.Name, "center", "--", "ip", "route", verb, "unreachable", addr[h]+"/32"); err != nil {
				return fmt.Errorf("%s the route to %s in the center's namespace: %v: %s", verb, h, err, errOut)
			}
		}
		return nil
	}
	healed := false
	t.Cleanup(func() {
		if !healed {
			_ = partition("del")
		}
	})

	var m api.Migration
	l.RunJSON(&m, "vm", "migrate", "part-1", "--to", "host-2", "--detach")
	if err := partition("add"); err != nil {
		t.Fatal(err)
	}
	cut := time.Now()

	// The hosts finish the migration on their own: the VM's only QEMU is host-2's.
	deadline := time.Now().Add(partitionFor)
	var pids []int
	for time.Now().Before(deadline) {
		if pids = qemuProcesses(vm.UUID); len(pids) == 1 && runsOn(pids[0], "host-2") {
			break
		}
		time.Sleep(500 * time.Millisecond)
	}
	if len(pids) != 1 || !runsOn(pids[0], "host-2") {
		t.Fatalf("the hosts did not complete the migration during the partition: QEMU processes %v", pids)
	}
	t.Logf("the hosts completed the migration %.1f s into the partition", time.Since(cut).Seconds())

	// The center does not know, and says so: the task waits for the source (once its
	// calls on the kept-alive connection have timed out).
	var task api.Task
	for end := time.Now().Add(30 * time.Second); ; time.Sleep(500 * time.Millisecond) {
		l.RunJSON(&task, "task", "show", m.ID)
		if task.State == api.TaskRunning && strings.Contains(task.Progress.Phase, "cannot reach source host host-1") {
			break
		}
		if task.State != api.TaskRunning || time.Now().After(end) {
			t.Fatalf("task of the migration during the partition: %+v; want running, waiting for host-1", task)
		}
	}
	time.Sleep(time.Until(cut.Add(partitionFor)))
	var pending api.Migration
	l.RunJSON(&pending, "migration", "show", m.ID)
	if pending.State == api.MigrationSucceeded || pending.State == api.MigrationFailed || pending.State == api.MigrationCancelled {
		t.Fatalf("after %s without the source the migration was recorded %s (%s); want its outcome pending until a host that knows answers",
			partitionFor, pending.State, pending.Error)
	}

	if err := partition("del"); err != nil {
		t.Fatal(err)
	}
	healed = true
	var done api.Migration
	for end := time.Now().Add(60 * time.Second); time.Now().Before(end); time.Sleep(500 * time.Millisecond) {
		done = api.Migration{}
		if err := l.API().Do(context.Background(), http.MethodGet, "/api/v1/migrations/"+m.ID, nil, &done); err == nil && done.State != pending.State {
			break
		}
	}
	if done.State != api.MigrationSucceeded || done.Waiting != "" {
		t.Fatalf("after the partition healed the migration is %+v; want succeeded", done)
	}
	moved := waitVM(t, l, "part-1", func(v api.VM) bool { return v.Host == "host-2" && v.State == api.VMRunning && v.PID == pids[0] })
	var list []api.VM
	l.RunJSON(&list, "vm", "list")
	if len(list) != 1 || list[0].Host != "host-2" || list[0].PID != pids[0] || list[0].UUID != moved.UUID {
		t.Fatalf("vm list %+v; want part-1 on host-2 with QEMU pid %d", list, pids[0])
	}
	l.RunJSON(&task, "task", "show", m.ID)
	if task.State != api.TaskSucceeded {
		t.Fatalf("task of the migration after the partition: %+v; want succeeded", task)
	}
}

// runsOn reports whether QEMU process pid belongs to lab host host: its run directory
// is in that host's state directory.
func runsOn(pid int, host string) bool {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
	return err == nil && bytes.Contains(b, []byte("/"+host+"/vms/"))
}

// TestAgentKeepsVMWhoseStateIsTorn tears both copies of a running VM's definition and
// restarts its agent: the agent must keep the QEMU (same process, not killed, not
// forgotten), report the VM with an error that says what happened, write a definition
// rebuilt from QEMU's command line, and go on managing the VM: stop it and start it
// again. The lab's agents also must not carry their join tokens on their command lines,
// where every local user can read them, and every secret file of the cluster — the
// center's database and credentials, keys, join tokens — is readable by its owner only.
func TestAgentKeepsVMWhoseStateIsTorn(t *testing.T) {
	l := newLab(t, 1)
	rec := l.Lab()
	for _, target := range []string{"center", "host-1"} {
		pid, running := rec.DaemonRunning(target)
		cmdline, err := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
		if !running || err != nil {
			t.Fatalf("%s daemon (pid %d): running %v, %v", target, pid, running, err)
		}
		if bytes.Contains(cmdline, []byte("gwjoin_")) {
			t.Fatalf("the %s daemon's command line holds a join token: %q", target, cmdline)
		}
	}

	var vm api.VM
	l.RunJSON(&vm, "vm", "create", "torn-1", "--host", "host-1")
	if vm.State != api.VMRunning || vm.PID == 0 {
		t.Fatalf("vm create returned %+v; want a running VM", vm)
	}
	dir := filepath.Join(rec.Hosts[0].StateDir, "vms", strings.ReplaceAll(vm.UUID, "-", ""))
	if _, err := os.Stat(filepath.Join(dir, "qmp.sock")); err != nil {
		t.Fatalf("the VM's run directory is not named by its whole UUID: %v", err)
	}

	// The agent stops; both copies of the definition are torn; the agent starts again.
	l.Stop("host-1")
	for _, f := range []string{"vm.json", "vm.json.bak"} {
		if err := os.Truncate(filepath.Join(dir, f), 20); err != nil {
			t.Fatal(err)
		}
	}
	l.Start("host-1")
	kept := waitVM(t, l, "torn-1", func(v api.VM) bool { return strings.Contains(v.Error, "definition could not be read") })
	if kept.State != api.VMRunning || kept.Host != "host-1" || kept.PID != vm.PID || processGone(vm.PID, 0) ||
		!strings.Contains(kept.Error, fmt.Sprintf("found its QEMU (pid %d) running and keeps it", vm.PID)) {
		t.Fatalf("VM after the restart: %+v; want the same QEMU (pid %d) running, with an error saying what happened", kept, vm.PID)
	}
	var def struct {
		Spec api.VMSpec `json:"spec"`
	}
	b, err := os.ReadFile(filepath.Join(dir, "vm.json"))
	if err != nil || json.Unmarshal(b, &def) != nil || def.Spec.UUID != vm.UUID || def.Spec.Name != "torn-1" ||
		def.Spec.Boot.Kernel != vm.Spec.Boot.Kernel || def.Spec.Boot.Cmdline != vm.Spec.Boot.Cmdline ||
		len(def.Spec.NICs) != 1 || def.Spec.NICs[0].MAC != vm.MAC || def.Spec.NICs[0].Network != vm.Spec.NICs[0].Network ||
		len(def.Spec.Disks) != len(vm.Spec.Disks) {
		t.Fatalf("vm.json after the restart: %s (%v); want the definition rebuilt from QEMU's command line", b, err)
	}

	// Still managed: stopped through the center, and started again from the rebuilt
	// definition.
	l.MustRun("vm", "stop", "torn-1", "--force")
	if !processGone(vm.PID, 10*time.Second) {
		t.Fatalf("QEMU %d still runs after vm stop", vm.PID)
	}
	var again api.VM
	l.RunJSON(&again, "vm", "start", "torn-1")
	if again.State != api.VMRunning || again.PID == 0 || again.PID == vm.PID || again.Error != "" {
		t.Fatalf("vm start after the recovery: %+v; want a new QEMU running, no error", again)
	}
	l.WaitHTTP("client", "http://"+vm.IP+"/healthz", 90*time.Second)

	secrets := map[string]int{}
	err = filepath.WalkDir(l.Dir(), func(path string, d os.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		name := d.Name()
		kind := ""
		switch {
		case strings.HasPrefix(name, "godwit.db"):
			kind = "database"
		case name == "admin-credentials" || strings.HasSuffix(name, ".join-token"):
			kind = "credentials"
		case strings.Contains(name, "key") || name == "host.pem":
			kind = "keys"
		default:
			return nil
		}
		secrets[kind]++
		st, err := d.Info()
		if err != nil {
			return err
		}
		if st.Mode().Perm() != 0o600 {
			t.Errorf("secret file %s has mode %v; want 0600", path, st.Mode().Perm())
		}
		return nil
	})
	if err != nil || secrets["database"] < 2 || secrets["credentials"] < 2 || secrets["keys"] < 3 {
		t.Fatalf("secret files found: %v (%v); want the database with its journal, the credentials and the keys", secrets, err)
	}
}
