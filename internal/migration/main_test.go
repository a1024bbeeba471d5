package migration

import (
	"context"
	"crypto/rand"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/godwit/godwit/internal/qemu"
	"github.com/godwit/godwit/internal/qmp"
)

// guestBuildDir is where TestMain builds the test guest when
// $GODWIT_GUEST_DIR does not name one.
const guestBuildDir = "/tmp/gw-guest-mig"

// testGuest is the test guest's directory (vmlinuz, initrd.img, cmdline), or
// why there is none; set once by TestMain, read-only afterwards.
var testGuest struct {
	dir string
	err error
}

// TestMain finds the test guest ($GODWIT_GUEST_DIR, as `make guest` builds it
// in build/guest) or builds it with scripts/build-guest.sh.
func TestMain(m *testing.M) {
	testGuest.dir, testGuest.err = findGuest()
	os.Exit(m.Run())
}

func findGuest() (string, error) {
	if d := os.Getenv("GODWIT_GUEST_DIR"); d != "" {
		if st, err := os.Stat(d); err == nil && st.IsDir() {
			return d, nil
		}
	}
	script, err := filepath.Abs("../../scripts/build-guest.sh")
	if err != nil {
		return "", err
	}
	cmd := exec.Command("bash", script, guestBuildDir)
	cmd.Dir = filepath.Dir(filepath.Dir(script))
	if out, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("$GODWIT_GUEST_DIR is not set (or does not exist) and building the test guest with %s %s failed: %v\n%s",
			script, guestBuildDir, err, out)
	}
	return guestBuildDir, nil
}

// guestDir returns the test guest's directory or fails the test.
func guestDir(t testing.TB) string {
	t.Helper()
	if testGuest.err != nil {
		t.Fatalf("no test guest: %v", testGuest.err)
	}
	return testGuest.dir
}

// qemuBinary returns the QEMU to test with ($GODWIT_QEMU or
// qemu-system-x86_64 on PATH) or fails the test.
func qemuBinary(t testing.TB) string {
	t.Helper()
	bin := os.Getenv("GODWIT_QEMU")
	if bin == "" {
		bin = "qemu-system-x86_64"
	}
	p, err := exec.LookPath(bin)
	if err != nil {
		t.Fatalf("no QEMU to test with (install it with `make deps`, or set $GODWIT_QEMU): %v", err)
	}
	return p
}

// newUUID returns a random UUID.
func newUUID(t testing.TB) string {
	var b [16]byte
	if _, err := rand.Read(b[:]); err != nil {
		t.Fatal(err)
	}
	b[6] = b[6]&0x0f | 0x40
	b[8] = b[8]&0x3f | 0x80
	return fmt.Sprintf("%x-%x-%x-%x-%x", b[0:4], b[4:6], b[6:8], b[8:10], b[10:])
}

// testVM is one QEMU started by a test.
type testVM struct {
	spec qemu.Spec
	proc *qemu.Process
	mon  *qmp.Monitor
}

// guestSpec is the spec of a test VM booting the test guest under TCG, with
// extra appended to the guest's kernel command line; no disks, no NICs.
func guestSpec(t testing.TB, memMiB int, extra string) qemu.Spec {
	dir := guestDir(t)
	cmdline, err := os.ReadFile(filepath.Join(dir, "cmdline"))
	if err != nil {
		t.Fatalf("reading the test guest's command line: %v", err)
	}
	return qemu.Spec{
		Name: "gw-mig", UUID: newUUID(t), CPUs: 1, MemoryMiB: memMiB, Accel: qemu.AccelTCG,
		Kernel:  filepath.Join(dir, "vmlinuz"),
		Initrd:  filepath.Join(dir, "initrd.img"),
		Cmdline: strings.TrimSpace(strings.TrimSpace(string(cmdline)) + " " + extra),
	}
}

// startVM starts a QEMU for spec in a fresh run directory (as a destination
// waiting for migrate-incoming when incoming is set) and makes sure it is
// killed when the test ends, pass or fail. Only this QEMU's PID (held as a
// pidfd) is ever killed.
func startVM(t testing.TB, spec qemu.Spec, incoming bool) *testVM {
	t.Helper()
	spec.RunDir = t.TempDir()
	if incoming {
		spec.Incoming = qemu.IncomingDefer
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	p, err := qemu.Start(ctx, qemuBinary(t), spec)
	if err != nil {
		t.Fatalf("starting QEMU: %v", err)
	}
	t.Cleanup(func() {
		if p.Alive() {
			if err := p.Kill(); err != nil {
				t.Errorf("killing QEMU pid %d: %v", p.PID, err)
			}
		}
		p.Close()
	})
	mon, err := p.Monitor(ctx)
	if err != nil {
		t.Fatalf("connecting to QEMU's monitor: %v", err)
	}
	return &testVM{spec: spec, proc: p, mon: mon}
}

// bootGuest starts a source VM and waits until the test guest is ready.
func bootGuest(t testing.TB, spec qemu.Spec) *testVM {
	t.Helper()
	v := startVM(t, spec, false)
	waitConsole(t, v, "godwit-guest ready", 60*time.Second)
	return v
}

// waitConsole waits until the VM's console log contains want.
func waitConsole(t testing.TB, v *testVM, want string, d time.Duration) {
	t.Helper()
	path := v.spec.ConsoleLogPath()
	deadline := time.Now().Add(d)
	for {
		b, _ := os.ReadFile(path)
		if strings.Contains(string(b), want) {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s did not show %q within %v; it holds:\n%s", path, want, d, b)
		}
		if !v.proc.Alive() {
			t.Fatalf("QEMU exited while waiting for %q on its console; console:\n%s\nQEMU log:\n%s", want, b, readFile(v.spec.LogPath()))
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func readFile(path string) string {
	b, _ := os.ReadFile(path)
	return string(b)
}

// freePort returns a TCP port on 127.0.0.1 that was free a moment ago.
func freePort(t testing.TB) int {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port
}

// startDestination starts a destination QEMU for spec, prepares it for
// policy p (unless p is nil: QEMU's defaults) and makes it listen; it returns
// the VM and the URI to migrate to.
func startDestination(t testing.TB, spec qemu.Spec, p *Policy, exitOnError bool) (*testVM, string) {
	t.Helper()
	v := startVM(t, spec, true)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if p != nil {
		if err := PrepareDestination(ctx, v.mon, *p); err != nil {
			t.Fatalf("PrepareDestination: %v", err)
		}
	}
	uri := fmt.Sprintf("tcp:127.0.0.1:%d", freePort(t))
	if err := v.mon.MigrateIncoming(ctx, uri, exitOnError); err != nil {
		t.Fatalf("migrate-incoming %s: %v", uri, err)
	}
	return v, uri
}

// status returns the VM's run state.
func status(t testing.TB, v *testVM) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	s, err := v.mon.QueryStatus(ctx)
	if err != nil {
		t.Fatalf("query-status: %v", err)
	}
	return s.Status
}

// waitStatus waits until the VM's run state is want.
func waitStatus(t testing.TB, v *testVM, want string, d time.Duration) {
	t.Helper()
	deadline := time.Now().Add(d)
	for {
		got := status(t, v)
		if got == want {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("the VM's run state is %q, not %q, after %v", got, want, d)
		}
		time.Sleep(20 * time.Millisecond)
	}
}
