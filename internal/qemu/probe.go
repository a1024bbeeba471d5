package qemu

import (
	"bufio"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// DefaultProbeTimeout is how long ProbeAccel gives a standard kernel to
// reach its root-mount panic under KVM. On working KVM it takes well
// under a second; paravirtual KVM (PVM) never gets there.
const DefaultProbeTimeout = 8 * time.Second

// probeMarker is the console line that proves a kernel ran far: booted
// without an initrd or root disk, a Linux kernel panics with
// "Kernel panic - not syncing: VFS: Unable to mount root fs on ...", after
// all of its early (upper-half, 64-bit) initialisation.
const probeMarker = "Kernel panic - not syncing"

// Probe is the outcome of ProbeAccel.
type Probe struct {
	// Accel is AccelKVM or AccelTCG.
	Accel string `json:"accel"`
	// Reason explains the choice in words for the operator.
	Reason string `json:"reason"`
	// Elapsed is how long the deciding KVM boot ran (0 when none ran).
	Elapsed time.Duration `json:"elapsed"`
}

// ProbeAccel decides whether VMs on this host run with KVM or TCG by
// probing, never by the mere presence of /dev/kvm: when the device exists
// and opens, it boots kernel (a standard Linux kernel image, no initrd)
// under KVM and waits up to timeout (DefaultProbeTimeout when 0) for the
// kernel's root-mount panic on the serial console. KVM is chosen only if
// the kernel gets there. If QEMU itself refuses "-cpu host" the probe
// retries with the default CPU model. The probe QEMU is always killed.
//
// The error is for problems with the probe itself (missing kernel or
// QEMU, ctx ended); a KVM that does not work is a TCG Probe, not an error.
func ProbeAccel(ctx context.Context, binary, kernel string, timeout time.Duration) (Probe, error) {
	return probeAccel(ctx, binary, kernel, kvmDevice, timeout)
}

// kvmDevice is where a host's KVM device lives.
const kvmDevice = "/dev/kvm"

// probeAccel is ProbeAccel with the KVM device at device, so that tests can show each
// kind of host (no device, a device that cannot be opened, a device that may or may not
// run guests) on any machine.
func probeAccel(ctx context.Context, binary, kernel, device string, timeout time.Duration) (Probe, error) {
	if timeout <= 0 {
		timeout = DefaultProbeTimeout
	}
	if _, err := os.Stat(kernel); err != nil {
		return Probe{}, fmt.Errorf("probe accelerator: kernel: %w", err)
	}
	if _, err := exec.LookPath(binary); err != nil {
		return Probe{}, fmt.Errorf("probe accelerator: %w", err)
	}

	fd, err := unix.Open(device, unix.O_RDWR|unix.O_CLOEXEC, 0)
	if errors.Is(err, unix.ENOENT) {
		return Probe{Accel: AccelTCG, Reason: fmt.Sprintf("no %s on this host", device)}, nil
	}
	if err != nil {
		return Probe{Accel: AccelTCG, Reason: fmt.Sprintf("%s cannot be opened: %v", device, err)}, nil
	}
	unix.Close(fd)

	res, err := bootToPanic(ctx, binary, kernel, AccelKVM, "host", timeout)
	if err != nil {
		return Probe{}, fmt.Errorf("probe accelerator: %w", err)
	}
	slog.DebugContext(ctx, "kvm probe", "cpu", "host", "result", res)
	note := ""
	if res.exited && !res.reached {
		// QEMU gave up at once (e.g. an MSR the host refuses for -cpu
		// host): that says nothing about KVM with an ordinary model.
		note = fmt.Sprintf(" (with -cpu host QEMU failed after %v: %s)", res.elapsed.Round(time.Millisecond), res.failure())
		res, err = bootToPanic(ctx, binary, kernel, AccelKVM, DefaultCPUModel, timeout)
		if err != nil {
			return Probe{}, fmt.Errorf("probe accelerator: %w", err)
		}
		slog.DebugContext(ctx, "kvm probe", "cpu", DefaultCPUModel, "result", res)
	}

	switch {
	case res.reached:
		return Probe{Accel: AccelKVM, Elapsed: res.elapsed, Reason: fmt.Sprintf(
			"a standard kernel reached its root-mount panic in %v under KVM%s",
			res.elapsed.Round(time.Millisecond), note)}, nil
	case res.exited:
		return Probe{Accel: AccelTCG, Elapsed: res.elapsed, Reason: fmt.Sprintf(
			"KVM present but QEMU could not run a standard kernel with it: %s%s", res.failure(), note)}, nil
	default:
		last := ""
		if res.lastLine != "" {
			last = fmt.Sprintf("; last console line: %q", res.lastLine)
		}
		return Probe{Accel: AccelTCG, Elapsed: res.elapsed, Reason: fmt.Sprintf(
			"KVM present but a standard kernel made no progress in %v (paravirtual KVM?)%s%s",
			timeout, last, note)}, nil
	}
}

// bootResult is what one probe boot showed.
type bootResult struct {
	reached  bool          // the console showed probeMarker
	exited   bool          // QEMU exited on its own before that
	elapsed  time.Duration // until the marker, the exit or the time limit
	lastLine string        // last console line seen
	stderr   string        // QEMU's messages
	exitErr  error         // QEMU's exit status when it exited on its own
}

// failure describes why QEMU exited, preferring its own message.
func (r bootResult) failure() string {
	if r.stderr != "" {
		return strings.Join(strings.Fields(strings.ReplaceAll(r.stderr, "\n", " / ")), " ")
	}
	if r.exitErr != nil {
		return r.exitErr.Error()
	}
	return "exited without reaching the kernel panic"
}

// LogValue makes bootResult readable in slog output.
func (r bootResult) LogValue() slog.Value {
	return slog.GroupValue(
		slog.Bool("reached", r.reached), slog.Bool("exited", r.exited),
		slog.Duration("elapsed", r.elapsed), slog.String("last_line", r.lastLine),
		slog.String("stderr", r.stderr))
}

// bootToPanic boots kernel without an initrd under accel with cpu and
// watches the serial console (QEMU's stdout) for probeMarker, for at most
// limit. The QEMU is killed and reaped before it returns. Only a failure
// to run QEMU or the end of ctx is an error.
func bootToPanic(ctx context.Context, binary, kernel, accel, cpu string, limit time.Duration) (bootResult, error) {
	bctx, cancel := context.WithTimeout(ctx, limit)
	defer cancel()
	cmd := exec.CommandContext(bctx, binary,
		"-machine", DefaultMachine, "-accel", accel, "-cpu", cpu,
		"-m", "256", "-smp", "1",
		"-nodefaults", "-no-user-config", "-display", "none", "-no-reboot",
		"-serial", "stdio",
		"-kernel", kernel,
		"-append", "console=ttyS0 earlyprintk=ttyS0 panic=-1")
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	cmd.Stdin = nil // /dev/null
	// Never outlive the agent, nor share its process group.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	cmd.WaitDelay = 2 * time.Second
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		return bootResult{}, err
	}
	start := time.Now()
	if err := cmd.Start(); err != nil {
		return bootResult{}, fmt.Errorf("run %s: %w", binary, err)
	}

	found := make(chan time.Duration, 1)
	readDone := make(chan struct{})
	var lastLine string
	go func() { // owned by this function: it ends when QEMU's stdout closes
		defer close(readDone)
		sc := bufio.NewScanner(stdout)
		sc.Buffer(make([]byte, 64<<10), 1<<20)
		for sc.Scan() {
			line := strings.TrimSpace(strings.ToValidUTF8(sc.Text(), ""))
			if line != "" {
				lastLine = line
			}
			if strings.Contains(line, probeMarker) {
				select {
				case found <- time.Since(start):
				default:
				}
			}
		}
	}()

	var res bootResult
	select {
	case res.elapsed = <-found:
		res.reached = true
	case <-readDone:
		res.elapsed = time.Since(start)
		select {
		case res.elapsed = <-found:
			res.reached = true
		default:
			res.exited = bctx.Err() == nil
		}
	case <-bctx.Done():
		res.elapsed = time.Since(start)
	}
	cmd.Process.Kill()
	<-readDone
	waitErr := cmd.Wait()
	res.lastLine = lastLine
	res.stderr = strings.TrimSpace(stderr.String())
	if res.exited {
		res.exitErr = waitErr
	}
	if !res.reached && ctx.Err() != nil {
		return res, ctx.Err()
	}
	return res, nil
}

// ProbeKey identifies the conditions a Probe was made under; a cached
// Probe is reused only while all of them are unchanged.
type ProbeKey struct {
	// QEMUVersion is the first line of `qemu --version`.
	QEMUVersion string `json:"qemu_version"`
	// HostKernel is the host's kernel release (uname -r).
	HostKernel string `json:"host_kernel"`
	// KVMModules lists the loaded KVM modules (e.g. "kvm,kvm_intel").
	KVMModules string `json:"kvm_modules"`
	// KernelSHA256 identifies the probe kernel by content, so copies of one kernel
	// (every lab's datastore holds its own) share one probe.
	KernelSHA256 string `json:"kernel_sha256"`
	KernelSize   int64  `json:"kernel_size"`
}

// ProbeKeyFor computes the ProbeKey for probing with binary and kernel on
// this host now.
func ProbeKeyFor(ctx context.Context, binary, kernel string) (ProbeKey, error) {
	v, err := versionLine(ctx, binary)
	if err != nil {
		return ProbeKey{}, fmt.Errorf("probe key: %w", err)
	}
	var uts unix.Utsname
	if err := unix.Uname(&uts); err != nil {
		return ProbeKey{}, fmt.Errorf("probe key: uname: %w", err)
	}
	f, err := os.Open(kernel)
	if err != nil {
		return ProbeKey{}, fmt.Errorf("probe key: kernel: %w", err)
	}
	defer f.Close()
	h := sha256.New()
	size, err := io.Copy(h, f)
	if err != nil {
		return ProbeKey{}, fmt.Errorf("probe key: read kernel: %w", err)
	}
	var mods []string
	for _, m := range []string{"kvm", "kvm_intel", "kvm_amd", "kvm_pvm"} {
		if _, err := os.Stat(filepath.Join("/sys/module", m)); err == nil {
			mods = append(mods, m)
		}
	}
	return ProbeKey{
		QEMUVersion:  v,
		HostKernel:   unix.ByteSliceToString(uts.Release[:]),
		KVMModules:   strings.Join(mods, ","),
		KernelSHA256: hex.EncodeToString(h.Sum(nil)),
		KernelSize:   size,
	}, nil
}

// probeCache is the JSON stored by SaveProbe.
type probeCache struct {
	Key      ProbeKey  `json:"key"`
	Probe    Probe     `json:"probe"`
	ProbedAt time.Time `json:"probed_at"`
}

// SaveProbe stores p under key in the file at path (written atomically).
func SaveProbe(path string, key ProbeKey, p Probe) error {
	return writeJSONFile(path, "probe", probeCache{Key: key, Probe: p, ProbedAt: time.Now().UTC()})
}

// LoadProbe returns the Probe stored at path if it was made under key.
// ok is false when there is no cache file or it is for other conditions;
// an unreadable or corrupt file is an error.
func LoadProbe(path string, key ProbeKey) (p Probe, ok bool, err error) {
	var c probeCache
	if found, err := readJSONFile(path, "the accelerator probe cache", &c); !found || err != nil {
		return Probe{}, false, err
	}
	if !c.Key.equal(key) || (c.Probe.Accel != AccelKVM && c.Probe.Accel != AccelTCG) {
		return Probe{}, false, nil
	}
	return c.Probe, true, nil
}

// equal compares keys, times by instant.
func (k ProbeKey) equal(o ProbeKey) bool {
	return k.QEMUVersion == o.QEMUVersion && k.HostKernel == o.HostKernel &&
		k.KVMModules == o.KVMModules && k.KernelSHA256 == o.KernelSHA256 && k.KernelSize == o.KernelSize
}

// CachedProbeAccel returns the Probe cached at cachePath when it is still
// valid for this host, QEMU and kernel; otherwise it runs ProbeAccel and
// caches the result. cached reports whether the cache answered.
func CachedProbeAccel(ctx context.Context, binary, kernel, cachePath string, timeout time.Duration) (p Probe, cached bool, err error) {
	key, err := ProbeKeyFor(ctx, binary, kernel)
	if err != nil {
		return Probe{}, false, err
	}
	p, ok, err := LoadProbe(cachePath, key)
	if err != nil {
		slog.WarnContext(ctx, "ignoring accelerator probe cache", "path", cachePath, "err", err)
	}
	if ok {
		return p, true, nil
	}
	p, err = ProbeAccel(ctx, binary, kernel, timeout)
	if err != nil {
		return Probe{}, false, err
	}
	if err := SaveProbe(cachePath, key, p); err != nil {
		return p, false, err
	}
	return p, false, nil
}
