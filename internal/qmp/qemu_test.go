package qmp

import (
	"bytes"
	"context"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"syscall"
	"testing"
	"time"
)

// qemuBinary is the QEMU the tests run; GODWIT_QEMU overrides it.
func qemuBinary(t *testing.T) string {
	t.Helper()
	bin := os.Getenv("GODWIT_QEMU")
	if bin == "" {
		bin = "qemu-system-x86_64"
	}
	path, err := exec.LookPath(bin)
	if err != nil {
		t.Fatalf("QEMU not available: %v", err)
	}
	return path
}

// testQEMU is a QEMU process started by a test, killed by t.Cleanup.
type testQEMU struct {
	cmd    *exec.Cmd
	socket string
	dir    string
	stderr *bytes.Buffer
}

// startQEMU runs QEMU as a child of the test with a QMP socket and the given
// extra arguments. The process is killed when the test ends, pass or fail.
func startQEMU(t *testing.T, extra ...string) *testQEMU {
	t.Helper()
	dir := t.TempDir()
	sock := filepath.Join(dir, "qmp.sock")
	args := append([]string{
		"-nodefaults", "-no-user-config", "-display", "none",
		"-qmp", "unix:" + sock + ",server=on,wait=off",
	}, extra...)
	cmd := exec.Command(qemuBinary(t), args...)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		t.Fatalf("start qemu: %v", err)
	}
	exited := make(chan struct{})
	go func() {
		cmd.Wait()
		close(exited)
	}()
	t.Cleanup(func() {
		cmd.Process.Signal(syscall.SIGCONT) // in case a test stopped it
		cmd.Process.Kill()
		<-exited
	})
	q := &testQEMU{cmd: cmd, socket: sock, dir: dir, stderr: &stderr}
	// Wait for the socket to appear.
	deadline := time.Now().Add(10 * time.Second)
	for {
		if _, err := os.Stat(sock); err == nil {
			return q
		}
		select {
		case <-exited:
			t.Fatalf("qemu exited early: %s", stderr.String())
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("qmp socket %s did not appear; stderr: %s", sock, stderr.String())
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// dial connects a Monitor to q and closes it when the test ends.
func dial(t *testing.T, q *testQEMU) *Monitor {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	// QEMU creates the socket file a moment before it listens on it.
	for {
		m, err := Dial(ctx, q.socket)
		if err == nil {
			t.Cleanup(func() { m.Close() })
			return m
		}
		if !errors.Is(err, syscall.ECONNREFUSED) || ctx.Err() != nil {
			t.Fatalf("Dial: %v", err)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// tctx returns a context that ends with the test or after d.
func tctx(t *testing.T, d time.Duration) context.Context {
	ctx, cancel := context.WithTimeout(t.Context(), d)
	t.Cleanup(cancel)
	return ctx
}

// waitEvent reads events until one named name arrives.
func waitEvent(t *testing.T, m *Monitor, name string, d time.Duration) Event {
	t.Helper()
	timer := time.NewTimer(d)
	defer timer.Stop()
	for {
		select {
		case ev, ok := <-m.Events():
			if !ok {
				t.Fatalf("events closed while waiting for %s", name)
			}
			if ev.Name == name {
				return ev
			}
		case <-timer.C:
			t.Fatalf("no %s event within %v", name, d)
		}
	}
}

// isClosed reports whether err says the monitor connection closed.
func isClosed(err error) bool { return errors.Is(err, ErrClosed) }
