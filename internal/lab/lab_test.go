package lab

import (
	"bytes"
	"context"
	"crypto/rand"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// labNet is the range every lab address must come from.
var labNet = &net.IPNet{IP: net.IPv4(198, 18, 0, 0), Mask: net.CIDRMask(15, 32)}

// needLab skips tests that build real labs where that is impossible.
func needLab(t *testing.T) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Fatal("needs root to create network namespaces")
	}
	if _, err := exec.LookPath("ip"); err != nil {
		t.Fatal("needs iproute2")
	}
}

// uniqueName returns a lab name no other test run uses.
func uniqueName() string {
	const letters = "abcdefghijklmnopqrstuvwxyz0123456789"
	b := make([]byte, 7)
	_, _ = rand.Read(b)
	for i := range b {
		b[i] = letters[int(b[i])%len(letters)]
	}
	return "t" + string(b)
}

// upLab brings a lab up with the stand-in daemons and takes it down when the test ends.
func upLab(t *testing.T, o Options) *Lab {
	t.Helper()
	if o.Name == "" {
		o.Name = uniqueName()
	}
	t.Cleanup(func() { downQuietly(t, o.Root, o.Name) })
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	l, err := Up(ctx, o)
	if err != nil {
		t.Fatalf("Up(%s): %v", o.Name, err)
	}
	return l
}

// downQuietly takes a lab down at the end of a test, if it is still there.
func downQuietly(t *testing.T, root, name string) {
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	if err := Down(ctx, root, name); err != nil && !strings.Contains(err.Error(), "no lab named") {
		t.Errorf("cleanup: Down(%s): %v", name, err)
	}
}

// run runs argv in target and fails the test unless it exits 0; it returns stdout.
func run(t *testing.T, l *Lab, target string, argv ...string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	var out, errb bytes.Buffer
	code, err := l.Exec(ctx, target, argv, nil, &out, &errb)
	if err != nil || code != 0 {
		t.Fatalf("%s: %v: exit %d, err %v\n%s%s", target, argv, code, err, out.String(), errb.String())
	}
	return out.String()
}

// assertGone checks that nothing of the lab is left: no namespace, no directory and
// none of the given processes.
func assertGone(t *testing.T, root, name string, pids []int) {
	t.Helper()
	if ns, _ := labNamespaces(name); len(ns) != 0 {
		t.Errorf("namespaces left after Down: %v", ns)
	}
	if _, err := os.Stat(labDir(root, name)); !os.IsNotExist(err) {
		t.Errorf("lab directory left after Down (stat: %v)", err)
	}
	for _, pid := range pids {
		if alive(pid, true) {
			t.Errorf("process %d (%v) still runs after Down", pid, cmdline(pid))
		}
	}
}

func TestOptionsAndNamesRejected(t *testing.T) {
	root := t.TempDir()
	ctx := context.Background()
	for _, name := range []string{"UPPER", "toolongname", "a-b", "a/b", "..", "x y"} {
		if _, err := Up(ctx, Options{Name: name, Root: root}); err == nil || !strings.Contains(err.Error(), "invalid lab name") {
			t.Errorf("Up(name %q): err = %v, want invalid lab name", name, err)
		}
		if err := Down(ctx, root, name); err == nil || !strings.Contains(err.Error(), "invalid lab name") {
			t.Errorf("Down(%q): err = %v", name, err)
		}
	}
	for _, hosts := range []int{-1, 9} {
		if _, err := Up(ctx, Options{Name: "x", Root: root, Hosts: hosts}); err == nil || !strings.Contains(err.Error(), "1 to 8 hosts") {
			t.Errorf("Up(hosts %d): err = %v", hosts, err)
		}
	}
	if err := Down(ctx, root, "nosuch"); err == nil || !strings.Contains(err.Error(), "no lab named nosuch") || !strings.Contains(err.Error(), "godwit lab list") {
		t.Errorf("Down of a missing lab: err = %v", err)
	}
	if _, err := Load(root, "nosuch"); err == nil || !strings.Contains(err.Error(), "no lab named nosuch") {
		t.Errorf("Load of a missing lab: err = %v", err)
	}
	if labs, err := List(root); err != nil || len(labs) != 0 {
		t.Errorf("List of an empty root = %v, %v", labs, err)
	}
	if _, err := Up(ctx, Options{Name: "x", Root: root, Binary: "/nonexistent/godwit"}); err == nil || !strings.Contains(err.Error(), "/nonexistent/godwit") {
		t.Errorf("Up with a missing binary: err = %v", err)
	}
	long := filepath.Join(root, strings.Repeat("d", 100))
	if _, err := Up(ctx, Options{Name: "x", Root: long, Binary: "/bin/true"}); err == nil || !strings.Contains(err.Error(), "shorter state root") {
		t.Errorf("Up with a root too long for the socket: err = %v", err)
	}
	if _, err := os.Stat(filepath.Join(root, "labs", "x")); !os.IsNotExist(err) {
		t.Errorf("a rejected Up left a lab directory behind")
	}
}

// TestLab brings two labs up at once in one root and exercises one of them.
func TestLab(t *testing.T) {
	needLab(t)
	root := t.TempDir()
	bin := standInBinary(t)
	guest := t.TempDir()
	for _, f := range guestFiles {
		if err := os.WriteFile(filepath.Join(guest, f), []byte("test "+f), 0o644); err != nil {
			t.Fatal(err)
		}
	}

	// Two Ups at the same time must get different lab numbers.
	type result struct {
		l   *Lab
		err error
	}
	optsA := Options{Name: uniqueName(), Root: root, Binary: bin, GuestDir: guest, Hosts: 2}
	optsB := Options{Name: uniqueName(), Root: root, Binary: bin, Hosts: 1}
	t.Cleanup(func() { downQuietly(t, root, optsA.Name) })
	t.Cleanup(func() { downQuietly(t, root, optsB.Name) })
	results := make(chan result, 2)
	for _, o := range []Options{optsA, optsB} {
		go func() {
			ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
			defer cancel()
			l, err := Up(ctx, o)
			results <- result{l, err}
		}()
	}
	var a, b *Lab
	for range 2 {
		r := <-results
		if r.err != nil {
			t.Fatalf("Up: %v", r.err)
		}
		if r.l.Name == optsA.Name {
			a = r.l
		} else {
			b = r.l
		}
	}
	if a.Index == b.Index {
		t.Fatalf("two labs got the same number %d", a.Index)
	}
	t.Logf("lab %s is 198.18.%d.0/24, lab %s is 198.18.%d.0/24", a.Name, a.Index, b.Name, b.Index)

	t.Run("record", func(t *testing.T) {
		loaded, err := Load(root, a.Name)
		if err != nil {
			t.Fatal(err)
		}
		if loaded.State != StateReady || loaded.Index != a.Index || len(loaded.Hosts) != 2 || len(loaded.Namespaces) != 5 {
			t.Errorf("lab.json = %+v", loaded)
		}
		if want := fmt.Sprintf("https://198.18.%d.2:7443", a.Index); a.CenterURL != want {
			t.Errorf("CenterURL = %s, want %s", a.CenterURL, want)
		}
		if h := a.Hosts[1]; h.Name != "host-2" || h.Address != fmt.Sprintf("198.18.%d.12", a.Index) ||
			h.AgentURL != fmt.Sprintf("https://198.18.%d.12:7700", a.Index) || h.Namespace != "gw-"+a.Name+"-h2" {
			t.Errorf("host-2 = %+v", h)
		}
		labs, err := List(root)
		if err != nil || len(labs) != 2 {
			t.Fatalf("List = %v, %v", labs, err)
		}
		for _, f := range guestFiles {
			got, err := os.ReadFile(filepath.Join(a.Datastore, "images", "godwit-test", f))
			if err != nil || string(got) != "test "+f {
				t.Errorf("guest file %s in the datastore: %q, %v", f, got, err)
			}
		}
		log, _ := os.ReadFile(filepath.Join(a.Dir, "logs", "host-2.log"))
		for _, want := range []string{`"--name" "host-2"`, `"--listen" "198.18.` + fmt.Sprint(a.Index) + `.12:7700"`,
			`"--datastore" "shared=` + a.Datastore + `"`, `"--network" "lab=br0"`, `"--center" "` + a.CenterURL + `"`} {
			if !bytes.Contains(log, []byte(want)) {
				t.Errorf("host-2 was not started with %s:\n%s", want, log)
			}
		}
		// The join tokens went to the agents in files; neither the lab's record nor the
		// logs that quote the command lines hold one.
		for _, f := range []string{stateFile, "logs/host-1.log", "logs/host-2.log"} {
			if b, err := os.ReadFile(filepath.Join(a.Dir, f)); err != nil || bytes.Contains(b, []byte("gwjoin_")) {
				t.Errorf("%s holds a join token (or cannot be read: %v):\n%s", f, err, b)
			}
		}
		log, _ = os.ReadFile(filepath.Join(a.Dir, "logs", "center.log"))
		wantPool := fmt.Sprintf(`"--ip-pool" "lab=198.18.%d.0/24,198.18.%d.100-198.18.%d.199"`, a.Index, a.Index, a.Index)
		if !bytes.Contains(log, []byte(wantPool)) || !bytes.Contains(log, []byte(`"--socket" "`+a.CenterSocket+`"`)) {
			t.Errorf("center flags wrong:\n%s", log)
		}
		for _, d := range a.Daemons {
			// Each daemon leads its own session, so it outlives whoever started it.
			if sid, err := unix.Getsid(d.PID); err != nil || sid != d.PID {
				t.Errorf("%s (pid %d) is not a session leader: sid %d, %v", d.Target, d.PID, sid, err)
			}
		}
	})

	t.Run("addresses and routes", func(t *testing.T) {
		for _, target := range a.Targets() {
			out := run(t, a, target, "ip", "-4", "-o", "addr", "show")
			for _, line := range strings.Split(strings.TrimSpace(out), "\n") {
				f := strings.Fields(line)
				if len(f) < 4 || f[1] == "lo" {
					continue
				}
				ip, _, err := net.ParseCIDR(f[3])
				if err != nil || !labNet.Contains(ip) {
					t.Errorf("%s has address %s outside 198.18.0.0/15", target, f[3])
				}
			}
			if routes := run(t, a, target, "ip", "route", "show", "default"); strings.TrimSpace(routes) != "" {
				t.Errorf("%s has a default route: %s", target, routes)
			}
			if fwd := run(t, a, target, "cat", "/proc/sys/net/ipv4/ip_forward"); strings.TrimSpace(fwd) != "0" {
				t.Errorf("%s forwards IPv4", target)
			}
			if v6 := run(t, a, target, "cat", "/proc/sys/net/ipv6/conf/all/disable_ipv6"); strings.TrimSpace(v6) != "1" {
				t.Errorf("%s has IPv6 enabled", target)
			}
		}
		ports := run(t, a, "switch", "ip", "-o", "link", "show", "master", "sw0")
		for _, p := range []string{" h1@", " h2@", " c@", " cl@"} {
			if !strings.Contains(ports, p) {
				t.Errorf("switch port %s missing from sw0:\n%s", strings.Trim(p, " @"), ports)
			}
		}
		if up := run(t, a, "host-1", "ip", "-o", "link", "show", "master", "br0"); !strings.Contains(up, "uplink0@") {
			t.Errorf("uplink0 not on br0 in host-1: %s", up)
		}
	})

	t.Run("ping across the switch", func(t *testing.T) {
		if _, err := os.Stat("/bin/busybox"); err != nil {
			t.Fatal("busybox is not installed; run scripts/deps.sh")
		}
		h2 := a.Hosts[1].Address
		run(t, a, "client", "busybox", "ping", "-c", "2", "-W", "2", h2)
		run(t, a, "host-1", "busybox", "ping", "-c", "2", "-W", "2", h2)
		run(t, a, "center", "busybox", "ping", "-c", "1", "-W", "2", a.Hosts[0].Address)
		// The agent of host-2 answers over TCP from the client (the stand-in serves
		// plain HTTP).
		if out := run(t, a, "client", "busybox", "wget", "-q", "-O", "-", strings.Replace(a.Hosts[1].AgentURL, "https://", "http://", 1)); strings.TrimSpace(out) != "host-2" {
			t.Errorf("agent of host-2 answered %q", out)
		}
		// Labs are separate networks: lab B has no way to lab A.
		var out bytes.Buffer
		code, err := b.Exec(context.Background(), "client", []string{"busybox", "ping", "-c", "1", "-W", "1", h2}, nil, &out, &out)
		if err != nil || code == 0 {
			t.Errorf("lab %s reached lab %s's host: exit %d, %v", b.Name, a.Name, code, err)
		}
	})

	t.Run("exec", func(t *testing.T) {
		var out bytes.Buffer
		code, err := a.Exec(context.Background(), "host-2", []string{"sh", "-c", "read x; echo got $x; exit 3"}, strings.NewReader("hello\n"), &out, &out)
		if err != nil || code != 3 || strings.TrimSpace(out.String()) != "got hello" {
			t.Errorf("Exec = %d, %v, output %q; want 3, nil, 'got hello'", code, err, out.String())
		}
		if _, err := a.Exec(context.Background(), "host-9", []string{"true"}, nil, nil, nil); err == nil ||
			!strings.Contains(err.Error(), "client, switch, center, host-1, host-2") {
			t.Errorf("unknown target: err = %v", err)
		}
		if _, err := a.Command(context.Background(), "client"); err == nil {
			t.Error("Command without argv was accepted")
		}
		cmd, err := a.Command(context.Background(), "center", "ip", "-o", "-4", "addr", "show", "eth0")
		if err != nil {
			t.Fatal(err)
		}
		if out, err := cmd.Output(); err != nil || !strings.Contains(string(out), fmt.Sprintf("198.18.%d.2/24", a.Index)) {
			t.Errorf("center eth0: %s, %v", out, err)
		}
	})

	t.Run("daemons", func(t *testing.T) {
		ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
		defer cancel()
		if err := a.StopDaemon(ctx, "client"); err == nil || !strings.Contains(err.Error(), "center, host-1, host-2") {
			t.Errorf("StopDaemon(client): err = %v", err)
		}
		old, running := a.DaemonRunning("host-1")
		if !running {
			t.Fatal("host-1 agent is not running")
		}
		if err := a.StopDaemon(ctx, "host-1"); err != nil {
			t.Fatal(err)
		}
		if alive(old, true) {
			t.Fatalf("agent pid %d still alive after StopDaemon", old)
		}
		if _, running := a.DaemonRunning("host-1"); running {
			t.Error("DaemonRunning says host-1 runs after StopDaemon")
		}
		if err := a.StopDaemon(ctx, "host-1"); err != nil {
			t.Errorf("StopDaemon of a stopped daemon: %v", err)
		}
		if err := a.StartDaemon(ctx, "host-1"); err != nil {
			t.Fatal(err)
		}
		pid, running := a.DaemonRunning("host-1")
		if !running || pid == old {
			t.Errorf("after StartDaemon: pid %d (old %d), running %v", pid, old, running)
		}
		if err := a.StartDaemon(ctx, "host-1"); err == nil || !strings.Contains(err.Error(), "already running") {
			t.Errorf("StartDaemon of a running daemon: err = %v", err)
		}
		// Another process sees the new pid in lab.json.
		if loaded, _ := Load(root, a.Name); loaded == nil || loaded.Daemons[1].PID != pid {
			t.Errorf("lab.json does not record the new agent pid %d", pid)
		}
		oldCenter, _ := a.DaemonRunning("center")
		if err := a.RestartDaemon(ctx, "center"); err != nil {
			t.Fatal(err)
		}
		if pid, running := a.DaemonRunning("center"); !running || pid == oldCenter {
			t.Errorf("center after restart: pid %d (old %d), running %v", pid, oldCenter, running)
		}
		// Restarts of different daemons may run at once.
		errs := make(chan error, 2)
		for _, h := range []string{"host-1", "host-2"} {
			go func() { errs <- a.RestartDaemon(ctx, h) }()
		}
		for range 2 {
			if err := <-errs; err != nil {
				t.Errorf("concurrent restart: %v", err)
			}
		}
		if loaded, _ := Load(root, a.Name); loaded != nil {
			for _, d := range loaded.Daemons {
				if !d.running() {
					t.Errorf("after concurrent restarts lab.json records %s with pid %d, which is not running", d.Target, d.PID)
				}
			}
		}
		// The agents find the restarted center again.
		if err := a.waitReady(ctx, 20*time.Second); err != nil {
			t.Errorf("hosts did not reconnect to the restarted center: %v", err)
		}
	})

	t.Run("up again refused", func(t *testing.T) {
		_, err := Up(context.Background(), Options{Name: a.Name, Root: root, Binary: bin})
		if err == nil || !strings.Contains(err.Error(), "godwit lab down --name "+a.Name) {
			t.Fatalf("Up of an existing name: err = %v", err)
		}
		if _, running := a.DaemonRunning("center"); !running {
			t.Error("a refused Up disturbed the existing lab")
		}
	})

	t.Run("down", func(t *testing.T) {
		var pids []int
		for _, d := range a.daemons() {
			pids = append(pids, d.PID)
		}
		if err := Down(context.Background(), root, a.Name); err != nil {
			t.Fatal(err)
		}
		assertGone(t, root, a.Name, pids)
		if err := Down(context.Background(), root, a.Name); err == nil || !strings.Contains(err.Error(), "no lab named") {
			t.Errorf("second Down: err = %v", err)
		}
		if _, err := a.Exec(context.Background(), "client", []string{"true"}, nil, nil, nil); err == nil || !strings.Contains(err.Error(), "missing") {
			t.Errorf("Exec in a lab that is down: err = %v", err)
		}
		if _, running := b.DaemonRunning("center"); !running {
			t.Error("taking one lab down stopped the other")
		}
	})
}

// TestDownAfterCrash brings a lab up from a process that exits (as the CLI does), then
// simulates a crash: the daemons die, a QEMU-like orphan keeps running in a host
// namespace, and lab.json is lost. Down must still remove everything.
func TestDownAfterCrash(t *testing.T) {
	needLab(t)
	root := t.TempDir()
	bin := standInBinary(t)
	name := uniqueName()
	t.Cleanup(func() { downQuietly(t, root, name) })

	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	up := exec.Command(exe)
	up.Env = append(os.Environ(), upEnv+"="+strings.Join([]string{root, name, bin}, ","))
	if out, err := up.CombinedOutput(); err != nil {
		t.Fatalf("Up in a child process: %v\n%s", err, out)
	}
	l, err := Load(root, name)
	if err != nil {
		t.Fatal(err)
	}
	var pids []int
	for _, d := range l.Daemons {
		if !d.running() {
			t.Fatalf("%s daemon did not survive the exit of the process that started it", d.Target)
		}
		pids = append(pids, d.PID)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := l.waitReady(ctx, 10*time.Second); err != nil {
		t.Fatalf("lab not ready after the starting process exited: %v", err)
	}

	// A process started by the agent (QEMU, in real life): orphaned, in host-1's namespace.
	run(t, l, "host-1", "sh", "-c", "setsid sleep 600 >/dev/null 2>&1 < /dev/null &")
	id, _ := namespaceID(l.Hosts[0].Namespace)
	var sleeper int
	for deadline := time.Now().Add(5 * time.Second); sleeper == 0; time.Sleep(20 * time.Millisecond) {
		orphans := processesIn(map[nsID]bool{id: true})
		for _, p := range orphans {
			if c := cmdline(p); len(c) > 0 && c[0] == "sleep" {
				sleeper = p
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("no orphan sleep in host-1 (processes there: %s)", describe(orphans))
		}
	}
	pids = append(pids, sleeper)

	for _, d := range l.Daemons {
		_ = syscall.Kill(d.PID, syscall.SIGKILL)
	}
	if err := os.Remove(filepath.Join(l.Dir, stateFile)); err != nil {
		t.Fatal(err)
	}
	if labs, _ := List(root); len(labs) != 1 || labs[0].State != StateBroken {
		t.Errorf("List shows a lab without lab.json as %+v, want it broken", labs)
	}
	if err := Down(ctx, root, name); err != nil {
		t.Fatalf("Down after a crash: %v", err)
	}
	assertGone(t, root, name, pids)
}

// TestDownPartial removes namespaces of a lab whose directory is gone, and checks that
// Up does not reuse them.
func TestDownPartial(t *testing.T) {
	needLab(t)
	root := t.TempDir()
	name := uniqueName()
	t.Cleanup(func() { downQuietly(t, root, name) })
	if err := shareNetnsDir(); err != nil {
		t.Fatal(err)
	}
	for _, role := range []string{"sw", "h1"} {
		if err := createNamespace(nsName(name, role)); err != nil {
			t.Fatal(err)
		}
	}
	// A similar name of another lab must survive.
	other := nsName(name, "x")
	if err := createNamespace(other); err != nil {
		t.Fatal(err)
	}
	defer deleteNamespace(other)
	// Up refuses a name whose namespaces exist, and leaves them alone.
	_, err := Up(context.Background(), Options{Name: name, Root: root, Binary: "/bin/true"})
	if err == nil || !strings.Contains(err.Error(), "godwit lab down --name "+name) {
		t.Errorf("Up over leftover namespaces: err = %v", err)
	}
	if ns, _ := labNamespaces(name); len(ns) != 2 {
		t.Errorf("a refused Up changed the leftover namespaces: %v", ns)
	}
	if err := Down(context.Background(), root, name); err != nil {
		t.Fatalf("Down of a partial lab: %v", err)
	}
	assertGone(t, root, name, nil)
	if _, err := os.Stat(filepath.Join(netnsDir, other)); err != nil {
		t.Errorf("Down removed %s, which is not one of the lab's: %v", other, err)
	}
}

// TestUpFailureCleansUp checks that an Up whose daemons fail removes everything and
// quotes the logs.
func TestUpFailureCleansUp(t *testing.T) {
	needLab(t)
	root := t.TempDir()
	for _, tc := range []struct {
		name, script, want  string
		timeout, ctxTimeout time.Duration
	}{
		{"daemon exits", "#!/bin/sh\necho \"boom: cannot open the database\"\nexit 1\n", "boom: cannot open the database", 30 * time.Second, time.Minute},
		{"never ready", "#!/bin/sh\necho \"waiting for godot\"\nsleep 600\n", "is not ready after 1s", time.Second, time.Minute},
		{"context ends", "#!/bin/sh\nsleep 600\n", "context deadline exceeded", time.Minute, 700 * time.Millisecond},
	} {
		t.Run(tc.name, func(t *testing.T) {
			bin := filepath.Join(t.TempDir(), "godwit")
			if err := os.WriteFile(bin, []byte(tc.script), 0o755); err != nil {
				t.Fatal(err)
			}
			name := uniqueName()
			t.Cleanup(func() { downQuietly(t, root, name) })
			ctx, cancel := context.WithTimeout(context.Background(), tc.ctxTimeout)
			defer cancel()
			_, err := Up(ctx, Options{Name: name, Root: root, Binary: bin, Hosts: 1, ReadyTimeout: tc.timeout})
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("Up: err = %v, want it to contain %q", err, tc.want)
			}
			t.Logf("Up failed as expected:\n%v", err)
			assertGone(t, root, name, nil)
		})
	}
}
