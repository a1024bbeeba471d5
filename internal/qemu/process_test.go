package qemu

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// newUUID returns a random UUID so that each test's QEMU is identifiable.
func newUUID(t *testing.T) string {
	var b [16]byte
	if _, err := rand.Read(b[:]); err != nil {
		t.Fatal(err)
	}
	b[6] = b[6]&0x0f | 0x40
	b[8] = b[8]&0x3f | 0x80
	return fmt.Sprintf("%x-%x-%x-%x-%x", b[0:4], b[4:6], b[6:8], b[8:10], b[10:])
}

// pidsWithUUID lists the live processes whose command line holds uuid
// anywhere.
func pidsWithUUID(uuid string) []int {
	entries, _ := os.ReadDir("/proc")
	var pids []int
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		b, err := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
		if err == nil && strings.Contains(string(b), uuid) && alive(pid) {
			pids = append(pids, pid)
		}
	}
	return pids
}

// killOnCleanup makes sure no QEMU of this uuid survives the test, pass or
// fail.
func killOnCleanup(t *testing.T, uuid string) {
	t.Cleanup(func() {
		for _, pid := range pidsWithUUID(uuid) {
			t.Logf("cleanup: killing leftover qemu pid %d", pid)
			unix.Kill(pid, unix.SIGKILL)
			waitGone(pid, 5*time.Second)
		}
	})
}

// testSpec is a TCG VM that boots the test kernel without an initrd, so
// it panics; panic=0 keeps it in the panic loop instead of rebooting.
func testSpec(t *testing.T, kernel string) Spec {
	uuid := newUUID(t)
	killOnCleanup(t, uuid)
	return Spec{
		Name: "gwtest", UUID: uuid, CPUs: 1, MemoryMiB: 128,
		Accel: AccelTCG, Kernel: kernel, Cmdline: "console=ttyS0 panic=0",
		RunDir: t.TempDir(),
	}
}

// waitFile waits until the file at path contains want.
func waitFile(t *testing.T, path, want string, d time.Duration) {
	t.Helper()
	deadline := time.Now().Add(d)
	for {
		b, _ := os.ReadFile(path)
		if strings.Contains(string(b), want) {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s did not show %q within %v; it holds:\n%s", path, want, d, b)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func TestStartAdoptShutdown(t *testing.T) {
	bin, kernel := qemuBinary(t), testKernel(t)
	s := testSpec(t, kernel)
	disk := filepath.Join(t.TempDir(), "d0.raw")
	if err := os.WriteFile(disk, make([]byte, 1<<20), 0o644); err != nil {
		t.Fatal(err)
	}
	s.Disks = []Disk{{ID: "d0", Path: disk, Format: FormatRaw}}
	s.RNG = true
	if tap := makeTap(t); tap != "" {
		s.NICs = []NIC{{ID: "net0", MAC: "52:54:00:12:34:56", Tap: tap}}
	}

	// The VM must outlive the context it was started with.
	startCtx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	t0 := time.Now()
	p, err := Start(startCtx, bin, s)
	cancel()
	if err != nil {
		t.Fatalf("Start: %v", err)
	}
	defer p.Close()
	t.Logf("Start returned after %v, pid %d", time.Since(t0), p.PID)

	time.Sleep(100 * time.Millisecond)
	if !p.Alive() {
		t.Fatal("QEMU died after Start's context ended")
	}
	// Not our child, in a session of its own, named after the VM.
	if ppid := readPPID(t, p.PID); ppid == os.Getpid() {
		t.Errorf("QEMU is a child of the test process")
	}
	if sid, _ := unix.Getsid(p.PID); sid == unix.Getpid() || sid == mustGetsid(t) {
		t.Errorf("QEMU shares our session %d", sid)
	}
	if comm, _ := os.ReadFile(fmt.Sprintf("/proc/%d/comm", p.PID)); strings.TrimSpace(string(comm)) != "qemu-gwtest" {
		t.Errorf("process name = %q, want qemu-gwtest", comm)
	}

	// The console log receives the kernel's boot output.
	waitFile(t, s.ConsoleLogPath(), "Kernel panic - not syncing", 30*time.Second)
	t.Logf("console.log shows the kernel panic %v after Start", time.Since(t0))
	b, _ := os.ReadFile(s.ConsoleLogPath())
	if !strings.Contains(string(b), "Linux version") {
		t.Errorf("console.log lacks the boot banner")
	}

	ctx, cancelCtx := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancelCtx()
	mon, err := p.Monitor(ctx)
	if err != nil {
		t.Fatalf("Monitor: %v", err)
	}
	// Stop the vCPU: the panic loop spins at 100% under TCG.
	if err := mon.Stop(ctx); err != nil {
		t.Errorf("stop: %v", err)
	}
	if uuid, err := mon.QueryUUID(ctx); err != nil || uuid != s.UUID {
		t.Errorf("QueryUUID = %q, %v", uuid, err)
	}
	nodes, err := mon.QueryNamedBlockNodes(ctx)
	if err != nil {
		t.Fatalf("QueryNamedBlockNodes: %v", err)
	}
	for _, n := range nodes {
		if n.NodeName == "d0-file" && !n.Cache.Direct {
			t.Errorf("disk file node not O_DIRECT: %+v", n)
		}
	}
	if m2, err := p.Monitor(ctx); err != nil || m2 != mon {
		t.Errorf("Monitor is not shared: %v", err)
	}

	// The console socket can be attached interactively.
	if c, err := net.Dial("unix", s.ConsoleSocketPath()); err != nil {
		t.Errorf("attach console: %v", err)
	} else {
		c.Close()
	}

	// Adopt finds it by UUID; a wrong UUID is not adopted.
	a, err := Adopt(ctx, s.RunDir, s.UUID)
	if err != nil {
		t.Fatalf("Adopt: %v", err)
	}
	if a.PID != p.PID || !a.Alive() {
		t.Errorf("Adopt found pid %d, want %d", a.PID, p.PID)
	}
	a.Close()
	if _, err := Adopt(ctx, s.RunDir, newUUID(t)); !errors.Is(err, ErrNotRunning) {
		t.Errorf("Adopt with a wrong UUID = %v, want ErrNotRunning", err)
	}

	// Another run directory whose pidfile names this QEMU is not its home.
	other := t.TempDir()
	pidText, _ := os.ReadFile(s.PIDPath())
	os.WriteFile(filepath.Join(other, "qemu.pid"), pidText, 0o644)
	if _, err := Adopt(ctx, other, s.UUID); !errors.Is(err, ErrNotRunning) {
		t.Errorf("Adopt from another run directory = %v, want ErrNotRunning", err)
	}
	// A failed start of the same VM elsewhere (as a migration destination
	// on this machine would be) leaves this QEMU alone.
	dst := s
	dst.RunDir = t.TempDir()
	bad := filepath.Join(dst.RunDir, "bad.img")
	os.WriteFile(bad, make([]byte, 4096), 0o644)
	dst.Disks = []Disk{{ID: "d0", Path: bad, Format: FormatQCOW2}}
	if _, err := Start(ctx, bin, dst); err == nil {
		t.Error("Start with a bad qcow2 succeeded")
	}
	if !p.Alive() {
		t.Fatal("a failed start of the same VM in another run directory killed the running QEMU")
	}

	// Starting it again in the same run directory is refused.
	if _, err := Start(ctx, bin, s); err == nil || !strings.Contains(err.Error(), "already running") {
		t.Errorf("second Start = %v, want already running", err)
	}

	// A panicked guest ignores ACPI: Shutdown falls back to quit.
	t1 := time.Now()
	if err := p.Shutdown(ctx, 500*time.Millisecond); err != nil {
		t.Fatalf("Shutdown: %v", err)
	}
	t.Logf("Shutdown took %v", time.Since(t1))
	if p.Alive() {
		t.Error("still alive after Shutdown")
	}
	if err := p.Wait(ctx); err != nil {
		t.Errorf("Wait after Shutdown: %v", err)
	}
	if _, err := Adopt(ctx, s.RunDir, s.UUID); !errors.Is(err, ErrNotRunning) {
		t.Errorf("Adopt after Shutdown = %v, want ErrNotRunning", err)
	}
	if pids := pidsWithUUID(s.UUID); len(pids) > 0 {
		t.Errorf("processes left: %v", pids)
	}
}

func TestKillAndWait(t *testing.T) {
	bin, kernel := qemuBinary(t), testKernel(t)
	s := testSpec(t, kernel)
	s.Paused = true // no CPU burnt
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	p, err := Start(ctx, bin, s)
	if err != nil {
		t.Fatalf("Start: %v", err)
	}
	defer p.Close()

	waited := make(chan error, 1)
	go func() { waited <- p.Wait(ctx) }()
	select {
	case err := <-waited:
		t.Fatalf("Wait returned while QEMU runs: %v", err)
	case <-time.After(200 * time.Millisecond):
	}
	shortCtx, shortCancel := context.WithTimeout(ctx, 100*time.Millisecond)
	if err := p.Wait(shortCtx); !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("Wait with a short deadline = %v", err)
	}
	shortCancel()

	// A Process without a pidfd (as on kernels without pidfd_open)
	// watches the PID instead.
	byPID := &Process{PID: p.PID, RunDir: p.RunDir}
	if !byPID.Alive() {
		t.Error("PID-based Alive = false for a running QEMU")
	}
	waitedByPID := make(chan error, 1)
	go func() { waitedByPID <- byPID.Wait(ctx) }()

	if err := p.Kill(); err != nil {
		t.Fatalf("Kill: %v", err)
	}
	select {
	case err := <-waitedByPID:
		if err != nil {
			t.Errorf("PID-based Wait = %v", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("PID-based Wait did not return after Kill")
	}
	select {
	case err := <-waited:
		if err != nil {
			t.Errorf("Wait = %v", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Wait did not return after Kill")
	}
	if p.Alive() {
		t.Error("alive after Kill")
	}
	if err := p.Kill(); err != nil {
		t.Errorf("second Kill = %v, want nil", err)
	}
}

func TestStartFailures(t *testing.T) {
	bin, kernel := qemuBinary(t), testKernel(t)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()

	// A missing disk is caught before QEMU runs.
	s := testSpec(t, kernel)
	s.Disks = []Disk{{ID: "d0", Path: "/nonexistent/disk.raw", Format: FormatRaw}}
	_, err := Start(ctx, bin, s)
	if err == nil || !strings.Contains(err.Error(), "/nonexistent/disk.raw does not exist") {
		t.Errorf("Start with a missing disk = %v", err)
	}

	// What only QEMU can see comes back in QEMU's own words.
	s = testSpec(t, kernel)
	disk := filepath.Join(t.TempDir(), "not-qcow2.img")
	if err := os.WriteFile(disk, make([]byte, 1<<20), 0o644); err != nil {
		t.Fatal(err)
	}
	s.Disks = []Disk{{ID: "d0", Path: disk, Format: FormatQCOW2}}
	_, err = Start(ctx, bin, s)
	if err == nil {
		t.Fatal("Start with a raw image declared qcow2 succeeded")
	}
	t.Logf("QEMU's error: %v", err)
	for _, want := range []string{"qemu-system-x86_64: -blockdev driver=qcow2,node-name=d0", "Image is not in qcow2 format"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error lacks QEMU's message %q: %v", want, err)
		}
	}
	if pids := pidsWithUUID(s.UUID); len(pids) > 0 {
		t.Errorf("failed Start left processes: %v", pids)
	}
	for _, f := range []string{s.PIDPath(), s.QMPPath(), s.ConsoleSocketPath()} {
		if _, err := os.Stat(f); err == nil {
			t.Errorf("failed Start left %s", f)
		}
	}
	if _, err := Adopt(ctx, s.RunDir, s.UUID); !errors.Is(err, ErrNotRunning) {
		t.Errorf("Adopt after failed start = %v", err)
	}

	// A missing QEMU binary.
	s = testSpec(t, kernel)
	if _, err := Start(ctx, "/nonexistent/qemu", s); err == nil {
		t.Error("Start with a missing binary succeeded")
	}
}

func TestAdoptNotRunning(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	uuid := newUUID(t)
	if _, err := Adopt(ctx, dir, uuid); !errors.Is(err, ErrNotRunning) {
		t.Errorf("no pidfile: %v", err)
	}
	// A live process that is not this VM's QEMU (the test itself).
	os.WriteFile(filepath.Join(dir, "qemu.pid"), []byte(strconv.Itoa(os.Getpid())+"\n"), 0o644)
	if _, err := Adopt(ctx, dir, uuid); !errors.Is(err, ErrNotRunning) {
		t.Errorf("pid of another process: %v", err)
	}
	// A dead PID.
	cmd := exec.Command("true")
	if err := cmd.Run(); err != nil {
		t.Fatal(err)
	}
	os.WriteFile(filepath.Join(dir, "qemu.pid"), []byte(strconv.Itoa(cmd.Process.Pid)), 0o644)
	if _, err := Adopt(ctx, dir, uuid); !errors.Is(err, ErrNotRunning) {
		t.Errorf("dead pid: %v", err)
	}
	// Garbage.
	os.WriteFile(filepath.Join(dir, "qemu.pid"), []byte("garbage"), 0o644)
	if _, err := Adopt(ctx, dir, uuid); !errors.Is(err, ErrNotRunning) {
		t.Errorf("garbage pidfile: %v", err)
	}
}

func TestVersion(t *testing.T) {
	v, err := Version(context.Background(), qemuBinary(t))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := strconv.Atoi(strings.Split(v, ".")[0]); err != nil || strings.Count(v, ".") < 1 {
		t.Errorf("Version = %q", v)
	}
	t.Logf("QEMU %s", v)
}

// makeTap creates a persistent TAP device for the test and deletes it
// afterwards; "" when that is not possible here.
func makeTap(t *testing.T) string {
	name := fmt.Sprintf("gwq%d", os.Getpid()%100000)
	if out, err := exec.Command("ip", "tuntap", "add", "dev", name, "mode", "tap").CombinedOutput(); err != nil {
		t.Logf("no TAP device for the test (%v: %s); testing without a NIC", err, out)
		return ""
	}
	t.Cleanup(func() { exec.Command("ip", "link", "del", name).Run() })
	return name
}

func readPPID(t *testing.T, pid int) int {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		t.Fatal(err)
	}
	f := strings.Fields(string(b[strings.LastIndexByte(string(b), ')')+2:]))
	ppid, _ := strconv.Atoi(f[1])
	return ppid
}

func mustGetsid(t *testing.T) int {
	sid, err := unix.Getsid(0)
	if err != nil {
		t.Fatal(err)
	}
	return sid
}
