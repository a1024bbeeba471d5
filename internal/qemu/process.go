package qemu

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/godwit/godwit/internal/qmp"
)

// ErrNotRunning is wrapped by Adopt's error when the VM's QEMU is not
// running (no pidfile, a dead process, or a PID now used by something
// else): the caller should mark the VM stopped and clean up.
var ErrNotRunning = errors.New("qemu is not running")

// Process is a running VM's QEMU. It is not a child of this program (QEMU
// daemonizes), so it survives the agent. A Process holds a pidfd for the
// QEMU, which makes signals and waits immune to PID reuse, and at most one
// shared QMP connection; Close releases both without affecting QEMU.
type Process struct {
	// PID is QEMU's process ID.
	PID int
	// RunDir is the VM's run directory.
	RunDir string

	// fdMu guards pidfd: read-locked while it is used, write-locked by
	// Close, so that Close never closes it under a poll.
	fdMu  sync.RWMutex
	pidfd int
	// hasPidfd is false when pidfd_open is unavailable, after Close, and
	// in a Process not made by Start or Adopt: then the PID is used.
	hasPidfd bool

	mu      sync.Mutex // guards monitor and closed
	monitor *qmp.Monitor
	closed  bool
}

// Start validates s, starts its QEMU daemonized in a new session and
// returns once QEMU has initialised (or failed). On failure the error
// carries QEMU's own message verbatim and nothing is left running.
//
// ctx bounds the start-up only; the VM keeps running after ctx ends.
func Start(ctx context.Context, binary string, s Spec) (*Process, error) {
	if err := s.Validate(); err != nil {
		return nil, fmt.Errorf("start qemu for %s: %w", s.Name, err)
	}
	s, err := s.withDefaults()
	if err != nil {
		return nil, fmt.Errorf("start qemu for %s: %w", s.Name, err)
	}
	if err := os.MkdirAll(s.RunDir, 0o750); err != nil {
		return nil, fmt.Errorf("start qemu for %s: %w", s.Name, err)
	}
	if p, err := Adopt(ctx, s.RunDir, s.UUID); err == nil {
		p.Close()
		return nil, fmt.Errorf("start qemu for %s: already running as pid %d", s.Name, p.PID)
	}
	// Keep the previous run's log: QEMU truncates its -D file.
	if err := os.Rename(s.LogPath(), s.LogPath()+".old"); err != nil && !errors.Is(err, os.ErrNotExist) {
		return nil, fmt.Errorf("start qemu for %s: %w", s.Name, err)
	}

	args := Args(s)
	cmd := exec.CommandContext(ctx, binary, args...)
	cmd.Dir = s.RunDir
	var out bytes.Buffer
	cmd.Stdout = &out
	cmd.Stderr = &out
	// A new session: signals to the agent's process group or terminal
	// never reach the VM. QEMU's daemon child calls setsid itself too.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	// If ctx ends mid-start, kill the whole new session's process group
	// (QEMU forks twice to daemonize); cleanupFailedStart gets the rest.
	cmd.Cancel = func() error { return unix.Kill(-cmd.Process.Pid, unix.SIGKILL) }
	// The daemonized child closes its copies of stdout/stderr once
	// initialised; do not wait forever if one lingers.
	cmd.WaitDelay = 5 * time.Second

	slog.DebugContext(ctx, "starting qemu", "vm", s.Name, "binary", binary, "args", strings.Join(args, " "))
	runErr := cmd.Run()
	if runErr != nil {
		msg := qemuMessage(out.Bytes(), s.LogPath())
		cleanupFailedStart(s)
		if ctx.Err() != nil {
			return nil, fmt.Errorf("start qemu for %s: %w", s.Name, ctx.Err())
		}
		if msg == "" {
			return nil, fmt.Errorf("start qemu for %s: %w", s.Name, runErr)
		}
		return nil, fmt.Errorf("start qemu for %s: %s", s.Name, msg)
	}

	// QEMU is up: from here on ctx's end must not undo the start.
	p, err := Adopt(context.WithoutCancel(ctx), s.RunDir, s.UUID)
	if err != nil {
		cleanupFailedStart(s)
		return nil, fmt.Errorf("start qemu for %s: qemu reported success but: %w", s.Name, err)
	}
	slog.InfoContext(ctx, "qemu started", "vm", s.Name, "pid", p.PID, "accel", s.Accel)
	return p, nil
}

// qemuMessage returns what QEMU printed before failing: its stderr, plus
// its log file, where it writes once -D is parsed.
func qemuMessage(stderr []byte, logPath string) string {
	parts := []string{strings.TrimSpace(string(stderr))}
	if b, err := os.ReadFile(logPath); err == nil {
		parts = append(parts, logMessage(string(b)))
	}
	var kept []string
	for _, p := range parts {
		if p != "" {
			kept = append(kept, p)
		}
	}
	return strings.Join(kept, "\n")
}

// cleanupFailedStart makes sure a failed start leaves nothing running and
// no stale files: any QEMU of this VM and run directory that outlived its
// failing parent (e.g. when ctx was cancelled mid-start) is killed. Other
// QEMUs of the same VM, such as the source of a migration to this host,
// have another run directory and are left alone.
func cleanupFailedStart(s Spec) {
	for _, pid := range pidsOfVM(s.UUID, s.RunDir) {
		slog.Warn("killing qemu left by a failed start", "vm", s.Name, "pid", pid)
		unix.Kill(pid, unix.SIGKILL)
		waitGone(pid, 5*time.Second)
	}
	os.Remove(s.PIDPath())
	os.Remove(s.QMPPath())
	os.Remove(s.ConsoleSocketPath())
}

// pidsOfVM lists the live QEMUs of the VM uuid with run directory runDir.
func pidsOfVM(uuid, runDir string) []int {
	entries, err := os.ReadDir("/proc")
	if err != nil {
		return nil
	}
	var pids []int
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err == nil && isVMProcess(pid, uuid, runDir) && alive(pid) {
			pids = append(pids, pid)
		}
	}
	return pids
}

// Adopt re-attaches to the running QEMU of the VM whose run directory is
// runDir, e.g. after an agent restart. It reads the pidfile and checks that
// the process is alive and really is this VM's QEMU (its command line
// holds "-uuid uuid" and its pidfile is in runDir); otherwise the error
// wraps ErrNotRunning.
func Adopt(ctx context.Context, runDir, uuid string) (*Process, error) {
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("adopt qemu in %s: %w", runDir, err)
	}
	pidPath := filepath.Join(runDir, "qemu.pid")
	pid, err := readPID(pidPath)
	if errors.Is(err, os.ErrNotExist) {
		return nil, fmt.Errorf("adopt qemu in %s: no pidfile: %w", runDir, ErrNotRunning)
	}
	if err != nil {
		return nil, fmt.Errorf("adopt qemu in %s: %w (%w)", runDir, err, ErrNotRunning)
	}
	// Open the pidfd before checking the identity, so that the checked
	// process is the one the pidfd refers to.
	pidfd, err := unix.PidfdOpen(pid, 0)
	if err != nil {
		if errors.Is(err, unix.ESRCH) {
			return nil, fmt.Errorf("adopt qemu in %s: pid %d has exited: %w", runDir, pid, ErrNotRunning)
		}
		pidfd = -1 // old kernel: fall back to the PID
	}
	if !isVMProcess(pid, uuid, runDir) || !alive(pid) {
		if pidfd >= 0 {
			unix.Close(pidfd)
		}
		return nil, fmt.Errorf("adopt qemu in %s: pid %d is not the qemu of VM %s: %w", runDir, pid, uuid, ErrNotRunning)
	}
	return &Process{PID: pid, RunDir: runDir, pidfd: pidfd, hasPidfd: pidfd >= 0}, nil
}

// readPID reads a pidfile.
func readPID(path string) (int, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return 0, err
	}
	pid, err := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil || pid <= 0 {
		return 0, fmt.Errorf("pidfile %s holds %q, not a pid", path, b)
	}
	return pid, nil
}

// isVMProcess reports whether process pid is the QEMU of VM uuid in run
// directory runDir: started with "-uuid uuid" and "-pidfile
// runDir/qemu.pid" as Args writes them. Both are compared as given (runDir
// made absolute), so use one spelling throughout. The run directory
// matters when two QEMUs of one VM run on one machine, as the source and
// destination of a migration do.
func isVMProcess(pid int, uuid, runDir string) bool {
	if uuid == "" || runDir == "" {
		return false
	}
	abs, err := filepath.Abs(runDir)
	if err != nil {
		return false
	}
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
	if err != nil {
		return false
	}
	return bytes.Contains(b, []byte("\x00-uuid\x00"+uuid+"\x00")) &&
		bytes.Contains(b, []byte("\x00-pidfile\x00"+filepath.Join(abs, "qemu.pid")+"\x00"))
}

// alive reports whether pid exists and is not a zombie.
func alive(pid int) bool {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return false
	}
	// The state follows the parenthesised command name, which may
	// itself contain ") ".
	i := bytes.LastIndexByte(b, ')')
	if i < 0 || i+2 >= len(b) {
		return false
	}
	state := b[i+2]
	return state != 'Z' && state != 'X'
}

// waitGone polls until pid has gone or timeout passes.
func waitGone(pid int, timeout time.Duration) bool {
	deadline := time.Now().Add(timeout)
	for alive(pid) {
		if time.Now().After(deadline) {
			return false
		}
		time.Sleep(10 * time.Millisecond)
	}
	return true
}

// Alive reports whether QEMU is still running.
func (p *Process) Alive() bool {
	p.fdMu.RLock()
	defer p.fdMu.RUnlock()
	if p.hasPidfd {
		fds := []unix.PollFd{{Fd: int32(p.pidfd), Events: unix.POLLIN}}
		n, err := unix.Poll(fds, 0)
		if err == nil && n > 0 {
			return false // the pidfd is readable once the process has exited
		}
	}
	return alive(p.PID)
}

// Wait waits until QEMU has exited or ctx ends. QEMU is not a child of
// this program, so Wait cannot learn its exit status: it only reports that
// the process is gone. It uses the process's pidfd and falls back to
// polling /proc on kernels without pidfd_open.
func (p *Process) Wait(ctx context.Context) error {
	const slice = 100 // ms per poll, so that ctx is checked regularly
	for {
		exited, err := p.pollExit(slice)
		if err != nil {
			return fmt.Errorf("wait for qemu pid %d: %w", p.PID, err)
		}
		if exited {
			return nil
		}
		// A zombie (when this program is the reaper) counts as exited.
		if !alive(p.PID) {
			return nil
		}
		if err := ctx.Err(); err != nil {
			return fmt.Errorf("wait for qemu pid %d: %w", p.PID, err)
		}
	}
}

// pollExit waits up to ms milliseconds for the process to exit, on its
// pidfd or, without one, by sleeping and checking /proc.
func (p *Process) pollExit(ms int) (bool, error) {
	p.fdMu.RLock()
	defer p.fdMu.RUnlock()
	if !p.hasPidfd {
		if !alive(p.PID) {
			return true, nil
		}
		time.Sleep(time.Duration(ms) * time.Millisecond)
		return false, nil
	}
	fds := []unix.PollFd{{Fd: int32(p.pidfd), Events: unix.POLLIN}}
	n, err := unix.Poll(fds, ms)
	if err != nil && !errors.Is(err, unix.EINTR) {
		return false, fmt.Errorf("poll pidfd: %w", err)
	}
	return n > 0, nil
}

// signal sends sig to QEMU, through the pidfd when there is one.
func (p *Process) signal(sig unix.Signal) error {
	p.fdMu.RLock()
	defer p.fdMu.RUnlock()
	var err error
	if p.hasPidfd {
		err = unix.PidfdSendSignal(p.pidfd, sig, nil, 0)
	} else {
		err = unix.Kill(p.PID, sig)
	}
	if errors.Is(err, unix.ESRCH) {
		return nil // already gone
	}
	return err
}

// Kill sends SIGKILL to QEMU and waits (up to 10 s) for it to exit. The
// guest gets no chance to shut down cleanly.
func (p *Process) Kill() error {
	if err := p.signal(unix.SIGKILL); err != nil {
		return fmt.Errorf("kill qemu pid %d: %w", p.PID, err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := p.Wait(ctx); err != nil {
		return fmt.Errorf("kill qemu pid %d: %w", p.PID, err)
	}
	return nil
}

// Monitor returns the process's QMP connection, dialling it when there is
// none or the previous one has closed. The Monitor is shared: QEMU serves
// one QMP client at a time, so callers must not Close it (Process.Close
// does).
func (p *Process) Monitor(ctx context.Context) (*qmp.Monitor, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed {
		return nil, fmt.Errorf("qmp for qemu pid %d: process handle closed", p.PID)
	}
	if p.monitor != nil {
		select {
		case <-p.monitor.Done():
			p.monitor.Close()
			p.monitor = nil
		default:
			return p.monitor, nil
		}
	}
	m, err := qmp.Dial(ctx, filepath.Join(p.RunDir, "qmp.sock"))
	if err != nil {
		return nil, fmt.Errorf("qmp for qemu pid %d: %w", p.PID, err)
	}
	p.monitor = m
	return m, nil
}

// Shutdown stops QEMU as gently as possible: it asks the guest to power
// off (ACPI, system_powerdown) and waits up to grace; then tells QEMU to
// quit; then, as a last resort, sends SIGKILL. It returns when QEMU has
// exited. If ctx ends first, Shutdown stops escalating and returns ctx's
// error; QEMU may then still be running.
func (p *Process) Shutdown(ctx context.Context, grace time.Duration) error {
	if !p.Alive() {
		return nil
	}
	log := slog.With("pid", p.PID, "rundir", p.RunDir)

	// 1. ACPI power button: the guest shuts down cleanly if it listens.
	err := p.qmpCall(ctx, 5*time.Second, (*qmp.Monitor).SystemPowerdown)
	if err == nil {
		if p.waitFor(ctx, grace) {
			log.InfoContext(ctx, "qemu: guest powered off")
			return nil
		}
		log.InfoContext(ctx, "qemu: guest did not power off in time; quitting", "grace", grace)
	} else {
		log.WarnContext(ctx, "qemu: powerdown request failed; quitting", "err", err)
	}

	if err := ctx.Err(); err != nil {
		return fmt.Errorf("shutdown qemu pid %d: %w", p.PID, err)
	}

	// 2. Tell QEMU to exit now.
	err = p.qmpCall(ctx, 5*time.Second, (*qmp.Monitor).Quit)
	if err == nil && p.waitFor(ctx, 5*time.Second) {
		return nil
	}
	if err == nil {
		err = errors.New("still running 5s after quit")
	}
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("shutdown qemu pid %d: %w", p.PID, err)
	}
	log.WarnContext(ctx, "qemu: quit failed; killing", "err", err)

	// 3. Last resort.
	if err := p.Kill(); err != nil {
		return fmt.Errorf("shutdown qemu pid %d: %w", p.PID, err)
	}
	return nil
}

// qmpCall runs one QMP command on the shared monitor, with a time limit
// covering the dial too.
func (p *Process) qmpCall(ctx context.Context, limit time.Duration, call func(*qmp.Monitor, context.Context) error) error {
	ctx, cancel := context.WithTimeout(ctx, limit)
	defer cancel()
	mon, err := p.Monitor(ctx)
	if err != nil {
		return err
	}
	return call(mon, ctx)
}

// waitFor waits up to d for QEMU to exit and reports whether it did.
func (p *Process) waitFor(ctx context.Context, d time.Duration) bool {
	ctx, cancel := context.WithTimeout(ctx, d)
	defer cancel()
	return p.Wait(ctx) == nil
}

// Close releases the QMP connection and the pidfd. QEMU keeps running.
func (p *Process) Close() error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed {
		return nil
	}
	p.closed = true
	if p.monitor != nil {
		p.monitor.Close()
		p.monitor = nil
	}
	p.fdMu.Lock()
	if p.hasPidfd {
		unix.Close(p.pidfd)
		p.hasPidfd = false
	}
	p.fdMu.Unlock()
	return nil
}
