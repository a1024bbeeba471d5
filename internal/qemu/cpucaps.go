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
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/godwit/godwit/internal/qmp"
)

// CPUCapsProbeTimeout bounds one ProbeCPUCaps run (QEMU start, all
// queries and its exit) when the caller's context allows longer. A probe
// normally takes a fraction of a second.
const CPUCapsProbeTimeout = 30 * time.Second

// ErrUnknownCPUModel is wrapped by the errors of CPUCaps.CheckModel and
// CPUCaps.LimitTo when the named CPU model is not one this host's QEMU
// defines.
var ErrUnknownCPUModel = errors.New("unknown CPU model")

// CPUModel is one named QEMU CPU model and the CPUID flags it needs.
type CPUModel struct {
	// Name is QEMU's -cpu name, e.g. "Nehalem" or "Skylake-Client-v4".
	Name string `json:"name"`
	// Flags are the CPUID flags the model gives a guest, in canonical
	// spelling (see CanonicalCPUFlag), sorted.
	Flags []string `json:"flags"`
}

// CPUCaps is what a host's QEMU can provide under one accelerator: the
// CPUID flags it can give guests and every CPU model it knows, with the
// flags each needs. It lets the center pick a baseline CPU model that
// every host of a migration supports (like VMware's EVC).
//
// The flags are CPUID feature bits (including the feature bits of the
// MSRs QEMU models, such as arch-capabilities' mds-no and the vmx-*
// capabilities) as QEMU names them. QEMU's other boolean CPU properties
// (pmu, migratable, l3-cache, x-*, hv-*, ...) are not flags, and neither
// are KVM's paravirtual features (kvm-*, kvmclock*): those depend on the
// accelerator, not on the CPU generation.
type CPUCaps struct {
	// Accel is the accelerator probed: AccelTCG or AccelKVM.
	Accel string `json:"accel"`
	// Flags are the flags the host can give guests, sorted: those of
	// QEMU's "max" model under TCG or "host" model under KVM, restricted
	// by LimitTo.
	Flags []string `json:"flags"`
	// Models is every migratable CPU model QEMU knows, sorted by name,
	// aliases (e.g. "Nehalem" for "Nehalem-v1") included. "host" and
	// "max" are not among them: their flags are whatever the host has
	// (that is Flags), so they cannot serve as a baseline.
	Models []CPUModel `json:"models"`
	// LimitedTo is the model whose flags Flags was restricted to by
	// LimitTo ("" when not limited).
	LimitedTo string `json:"limited_to,omitempty"`
}

// MissingCPUFlagsError is CheckModel's error for a known CPU model that
// needs flags the host cannot give guests.
type MissingCPUFlagsError struct {
	// Model is the CPU model checked.
	Model string
	// Accel is the accelerator of the CPUCaps checked.
	Accel string
	// LimitedTo is CPUCaps.LimitedTo ("" when the host is not limited).
	LimitedTo string
	// Missing are the flags the host lacks, sorted.
	Missing []string
}

// Error names the model and every missing flag.
func (e *MissingCPUFlagsError) Error() string {
	limit := ""
	if e.LimitedTo != "" {
		limit = fmt.Sprintf(", whose CPU is limited to %s,", e.LimitedTo)
	}
	return fmt.Sprintf("CPU model %s needs CPUID flags this host%s cannot give guests under %s: %s; "+
		"give the VM an older baseline CPU model or run it on a newer host",
		e.Model, limit, e.Accel, strings.Join(e.Missing, ", "))
}

// Model returns the model called name (QEMU's spelling, case-sensitive).
func (c CPUCaps) Model(name string) (CPUModel, bool) {
	i, ok := slices.BinarySearchFunc(c.Models, name, func(m CPUModel, n string) int { return strings.Compare(m.Name, n) })
	if ok {
		return c.Models[i], true
	}
	// Models is sorted when it comes from ProbeCPUCaps; tolerate one
	// built by hand.
	for _, m := range c.Models {
		if m.Name == name {
			return m, true
		}
	}
	return CPUModel{}, false
}

// Supports reports whether the host can run a guest with CPU model model:
// ok is true when every flag of the model is in c.Flags. Otherwise
// missing lists the flags the host lacks, by name and sorted; a model
// QEMU does not know gives ok false and missing nil (CheckModel tells the
// two cases apart).
func (c CPUCaps) Supports(model string) (missing []string, ok bool) {
	m, known := c.Model(model)
	if !known {
		return nil, false
	}
	missing = cpuFlagsMinus(m.Flags, c.Flags)
	return missing, len(missing) == 0
}

// CheckModel is Supports as an error: nil when the host supports model,
// an error wrapping ErrUnknownCPUModel when QEMU does not know it, and a
// *MissingCPUFlagsError naming the missing flags otherwise.
func (c CPUCaps) CheckModel(model string) error {
	if _, known := c.Model(model); !known {
		return fmt.Errorf("%w %q: this host's QEMU does not define it (`qemu-system-x86_64 -cpu help` lists the models it knows)",
			ErrUnknownCPUModel, model)
	}
	if missing, ok := c.Supports(model); !ok {
		return &MissingCPUFlagsError{Model: model, Accel: c.Accel, LimitedTo: c.LimitedTo, Missing: missing}
	}
	return nil
}

// Supported returns the names of the models whose flags are all in
// c.Flags, in the order of c.Models.
func (c CPUCaps) Supported() []string {
	have := cpuFlagSet(c.Flags)
	var names []string
	for _, m := range c.Models {
		if cpuFlagsAllIn(m.Flags, have) {
			names = append(names, m.Name)
		}
	}
	return names
}

// LimitTo returns a copy of c whose Flags are only those that model also
// has: the host then claims to be of model's (older) generation, so that
// it refuses VMs with newer baselines. Lab hosts use it (agent flag
// --cpu-limit MODEL) to advertise different CPU capabilities on identical
// hardware. Models are kept. If the host lacks some of model's flags the
// result lacks them too: it is never more capable than the host.
//
// One exception: the host keeps "svm" and "vmx", the switches of
// hardware virtualisation for guests. Whether guests get it is the
// host's configuration (KVM's nested parameter; TCG always emulates
// SVM), not its CPU generation, and QEMU's named models under KVM never
// enable either. But under TCG the AMD models, qemu64 among them, do
// enable svm, which Intel models lack: without the exception a host
// limited to Nehalem would refuse VMs with the default model qemu64. The
// virtualisation capabilities (vmx-*, npt, nrip-save, ...) are
// generational and are limited like any flag.
func (c CPUCaps) LimitTo(model string) (CPUCaps, error) {
	m, ok := c.Model(model)
	if !ok {
		return CPUCaps{}, fmt.Errorf("limit the host's CPU flags to model %q: %w: this host's QEMU does not define it (`qemu-system-x86_64 -cpu help` lists the models it knows)",
			model, ErrUnknownCPUModel)
	}
	keep := cpuFlagSet(m.Flags)
	out := c
	out.Flags = nil
	for _, f := range c.Flags {
		if keep[f] || f == "svm" || f == "vmx" {
			out.Flags = append(out.Flags, f)
		}
	}
	if out.Flags == nil {
		out.Flags = []string{}
	}
	out.Models = slices.Clone(c.Models)
	out.LimitedTo = model
	return out, nil
}

// cpuFlagSet makes a set of flags.
func cpuFlagSet(flags []string) map[string]bool {
	s := make(map[string]bool, len(flags))
	for _, f := range flags {
		s[f] = true
	}
	return s
}

// cpuFlagsAllIn reports whether every flag of need is in have.
func cpuFlagsAllIn(need []string, have map[string]bool) bool {
	for _, f := range need {
		if !have[f] {
			return false
		}
	}
	return true
}

// cpuFlagsMinus returns the flags of a that are not in b, sorted.
func cpuFlagsMinus(a, b []string) []string {
	have := cpuFlagSet(b)
	var out []string
	for _, f := range a {
		if !have[f] {
			out = append(out, f)
		}
	}
	slices.Sort(out)
	return slices.Compact(out)
}

// cpuFlagRenames maps QEMU's historical alternative names of CPUID flags
// that differ by more than punctuation to the canonical name.
var cpuFlagRenames = map[string]string{
	"sse3":     "pni",
	"pclmuldq": "pclmulqdq",
	"xd":       "nx",
	"i64":      "lm",
	"ffxsr":    "fxsr-opt",
	"sse4-1":   "sse4.1",
	"sse4-2":   "sse4.2",
}

// CanonicalCPUFlag returns the one spelling of a CPUID flag name that
// CPUCaps uses, which is QEMU 10's (as `-cpu help` lists it): lower case,
// words joined by "-" ("lahf_lm" becomes "lahf-lm"), "sse4.1" and
// "sse4.2" with a dot, and QEMU's older aliases mapped to the current
// name ("sse3" is "pni", "xd" is "nx", "i64" is "lm", "pclmuldq" is
// "pclmulqdq", "ffxsr" is "fxsr-opt"). Flags from hosts with different
// QEMU versions compare equal in this spelling.
func CanonicalCPUFlag(name string) string {
	n := strings.ReplaceAll(strings.ToLower(strings.TrimSpace(name)), "_", "-")
	if r, ok := cpuFlagRenames[n]; ok {
		return r
	}
	return n
}

// cpuFlagIsAccelFeature reports whether a canonical flag belongs to an
// accelerator's paravirtual interface (KVM's CPUID leaf) rather than to
// the CPU.
func cpuFlagIsAccelFeature(flag string) bool {
	return strings.HasPrefix(flag, "kvm")
}

// parseCPUFlagsHelp reads the flag names listed under "Recognized CPUID
// flags:" in `-cpu help` and returns them canonical and deduplicated
// (QEMU 10 lists some twice). Older QEMUs give alternative names as
// "pni|sse3"; every alternative is canonicalised. Accelerator features
// (kvm*) are left out.
func parseCPUFlagsHelp(out string) map[string]bool {
	flags := make(map[string]bool)
	in := false
	for line := range strings.Lines(out) {
		if !in {
			in = strings.HasPrefix(line, "Recognized CPUID flags")
			continue
		}
		if strings.TrimSpace(line) == "" || !strings.HasPrefix(line, " ") && !strings.HasPrefix(line, "\t") {
			break // end of the section
		}
		for _, field := range strings.Fields(line) {
			for _, name := range strings.Split(field, "|") {
				if f := CanonicalCPUFlag(name); f != "" && !cpuFlagIsAccelFeature(f) {
					flags[f] = true
				}
			}
		}
	}
	return flags
}

// cpuFlagNames runs `binary -cpu help` and returns its recognised CPUID
// flags (see parseCPUFlagsHelp).
func cpuFlagNames(ctx context.Context, binary string) (map[string]bool, error) {
	var stderr bytes.Buffer
	cmd := exec.CommandContext(ctx, binary, "-cpu", "help")
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return nil, fmt.Errorf("list the CPUID flags of %s (-cpu help): %w: %s", binary, err, strings.TrimSpace(stderr.String()))
	}
	flags := parseCPUFlagsHelp(string(out))
	if len(flags) == 0 {
		return nil, fmt.Errorf("list the CPUID flags of %s: `-cpu help` has no \"Recognized CPUID flags:\" section; is it an x86 QEMU?", binary)
	}
	return flags, nil
}

// cpuDefinition is one element of QMP's query-cpu-definitions reply.
type cpuDefinition struct {
	Name          string `json:"name"`
	AliasOf       string `json:"alias-of"`
	MigrationSafe *bool  `json:"migration-safe"`
	// Unavailable are the features QEMU cannot give this model here.
	Unavailable []string `json:"unavailable-features"`
}

// cpuModelExpansion is QMP's query-cpu-model-expansion reply.
type cpuModelExpansion struct {
	Model struct {
		Name  string         `json:"name"`
		Props map[string]any `json:"props"`
	} `json:"model"`
}

// cpuHostModel is the CPU model whose full expansion under accel is
// everything the host can give guests.
func cpuHostModel(accel string) string {
	if accel == AccelKVM {
		return "host"
	}
	return "max"
}

// expandCPUModel returns QEMU's full expansion of model under the
// running accelerator: all of its properties with their values.
func expandCPUModel(ctx context.Context, mon *qmp.Monitor, model string) (map[string]any, error) {
	var exp cpuModelExpansion
	args := map[string]any{"type": "full", "model": map[string]any{"name": model}}
	if err := mon.Execute(ctx, "query-cpu-model-expansion", args, &exp); err != nil {
		return nil, err
	}
	return exp.Model.Props, nil
}

// cpuFlagsOf returns the CPUID flags that props (a model expansion) turns
// on, canonical, restricted to known and sorted.
func cpuFlagsOf(props map[string]any, known map[string]bool) []string {
	flags := []string{}
	for k, v := range props {
		if v != true {
			continue
		}
		if f := CanonicalCPUFlag(k); known[f] {
			flags = append(flags, f)
		}
	}
	slices.Sort(flags)
	return slices.Compact(flags)
}

// ProbeCPUCaps asks binary which CPU flags and models it can give guests
// under accel (AccelTCG or AccelKVM). It runs one short-lived QEMU
// (-machine none, paused, no devices) with a QMP socket in a temporary
// directory, reads the models from query-cpu-definitions and the flags of
// the host ("max" under TCG, "host" under KVM) and of every model from
// query-cpu-model-expansion, keeping only the flags `binary -cpu help`
// lists as CPUID flags. The QEMU is always killed and the directory
// removed. It takes well under a second; see CachedProbeCPUCaps to do it
// once per QEMU binary.
func ProbeCPUCaps(ctx context.Context, binary, accel string) (CPUCaps, error) {
	caps, _, err := probeCPUCaps(ctx, binary, accel)
	return caps, err
}

// probeCPUCaps is ProbeCPUCaps that also returns QEMU's CPU definitions.
func probeCPUCaps(ctx context.Context, binary, accel string) (CPUCaps, []cpuDefinition, error) {
	fail := func(err error) (CPUCaps, []cpuDefinition, error) {
		return CPUCaps{}, nil, fmt.Errorf("probe the CPU capabilities of %s under %s: %w", binary, accel, err)
	}
	if accel != AccelTCG && accel != AccelKVM {
		return fail(fmt.Errorf("accelerator %q: want %q or %q", accel, AccelTCG, AccelKVM))
	}
	path, err := exec.LookPath(binary)
	if err != nil {
		return fail(fmt.Errorf("QEMU not found (install qemu-system-x86 or give the path of qemu-system-x86_64): %w", err))
	}
	ctx, cancel := context.WithTimeout(ctx, CPUCapsProbeTimeout)
	defer cancel()
	start := time.Now()

	known, err := cpuFlagNames(ctx, path)
	if err != nil {
		return fail(err)
	}
	var (
		caps = CPUCaps{Accel: accel}
		defs []cpuDefinition
	)
	err = withCPUProbeQEMU(ctx, path, accel, func(ctx context.Context, mon *qmp.Monitor) error {
		if err := mon.Execute(ctx, "query-cpu-definitions", nil, &defs); err != nil {
			return err
		}
		host := cpuHostModel(accel)
		props, err := expandCPUModel(ctx, mon, host)
		if err != nil {
			return fmt.Errorf("expand the host's CPU model %q: %w", host, err)
		}
		caps.Flags = cpuFlagsOf(props, known)
		if len(caps.Flags) == 0 {
			return fmt.Errorf("CPU model %q expands to no CPUID flags", host)
		}

		// An alias has the flags of the model it names: expand each
		// model once.
		defined := make(map[string]bool, len(defs))
		for _, d := range defs {
			defined[d.Name] = true
		}
		flagsOf := make(map[string][]string, len(defs))
		for _, d := range defs {
			if !cpuModelIsBaseline(d) || d.AliasOf != "" && defined[d.AliasOf] {
				continue
			}
			props, err := expandCPUModel(ctx, mon, d.Name)
			if err != nil {
				if ctx.Err() != nil || errors.Is(err, qmp.ErrClosed) {
					return fmt.Errorf("expand CPU model %s: %w", d.Name, err)
				}
				slog.WarnContext(ctx, "cpu caps: leaving out a CPU model QEMU cannot expand",
					"model", d.Name, "accel", accel, "err", err)
				continue
			}
			flagsOf[d.Name] = cpuFlagsOf(props, known)
		}
		for _, d := range defs {
			if !cpuModelIsBaseline(d) {
				continue
			}
			target := d.Name
			if d.AliasOf != "" && defined[d.AliasOf] {
				target = d.AliasOf
			}
			if flags, ok := flagsOf[target]; ok {
				caps.Models = append(caps.Models, CPUModel{Name: d.Name, Flags: flags})
			}
		}
		return nil
	})
	if err != nil {
		return fail(err)
	}
	if len(caps.Models) == 0 {
		return fail(errors.New("QEMU reported no CPU models"))
	}
	slices.SortFunc(caps.Models, func(a, b CPUModel) int { return strings.Compare(a.Name, b.Name) })
	slog.DebugContext(ctx, "cpu caps probed", "binary", path, "accel", accel,
		"flags", len(caps.Flags), "models", len(caps.Models), "elapsed", time.Since(start))
	return caps, defs, nil
}

// cpuModelIsBaseline reports whether a CPU definition belongs in
// CPUCaps.Models: every model that is migration-safe, i.e. all named
// models (deprecated ones and aliases included), but not "host" and "max".
func cpuModelIsBaseline(d cpuDefinition) bool {
	if d.Name == "host" || d.Name == "max" {
		return false
	}
	return d.MigrationSafe == nil || *d.MigrationSafe
}

// withCPUProbeQEMU starts a paused QEMU without a machine (-machine none)
// under accel, connects to its QMP monitor and calls f. The monitor
// socket is a listening socket this function creates in a temporary
// directory and hands to QEMU (as libvirt does), so the connection never
// races QEMU's start-up. QEMU is killed and reaped, and the directory
// removed, before it returns. When QEMU fails to start, the error carries
// its own message. (Versionless model names such as "Haswell" are
// aliases whose version the machine type may choose; in QEMU 10
// "-machine none" picks the same, -v1, as the VMs' q35.)
func withCPUProbeQEMU(ctx context.Context, binary, accel string, f func(context.Context, *qmp.Monitor) error) error {
	// A QEMU whose monitor does not answer in probeDialTimeout (seen once in CI, on a
	// loaded machine: the greeting came, the reply to qmp_capabilities never did) is
	// killed and another one started, as long as ctx allows.
	for attempt := 1; ; attempt++ {
		mon, stop, err := startCPUProbeQEMU(ctx, binary, accel)
		if err != nil {
			if ctx.Err() == nil && attempt < probeAttempts && errors.Is(err, errProbeNoAnswer) {
				slog.WarnContext(ctx, "cpu caps: the probe QEMU's monitor did not answer; starting another", "attempt", attempt, "err", err)
				continue
			}
			return err
		}
		err = f(ctx, mon)
		mon.Close()
		msg := stop()
		if err != nil && msg != "" {
			return fmt.Errorf("%w (QEMU said: %s)", err, msg)
		}
		return err
	}
}

// probeDialTimeout bounds one probe QEMU's start-up to an answering monitor;
// probeAttempts is how many QEMUs a probe starts at most.
const (
	probeDialTimeout = 10 * time.Second
	probeAttempts    = 3
)

// errProbeNoAnswer marks a probe QEMU that ran but whose monitor did not answer in
// time.
var errProbeNoAnswer = errors.New("its monitor did not answer")

// startCPUProbeQEMU starts one probe QEMU (see withCPUProbeQEMU) and connects to its
// monitor; stop kills QEMU, waits for it and returns what it said.
func startCPUProbeQEMU(ctx context.Context, binary, accel string) (mon *qmp.Monitor, stop func() string, err error) {
	dir, err := os.MkdirTemp("", "godwit-cpucaps-")
	if err != nil {
		return nil, nil, fmt.Errorf("make a directory for the QMP socket (check $TMPDIR): %w", err)
	}
	sock := filepath.Join(dir, "qmp.sock")
	l, err := net.ListenUnix("unix", &net.UnixAddr{Name: sock, Net: "unix"})
	if err != nil {
		os.RemoveAll(dir)
		return nil, nil, fmt.Errorf("listen on the QMP socket: %w", err)
	}
	// QEMU gets its own copy of the socket; ours is closed below without
	// removing the name, which the monitor connection dials.
	l.SetUnlinkOnClose(false)
	lf, err := l.File()
	l.Close()
	if err != nil {
		os.RemoveAll(dir)
		return nil, nil, fmt.Errorf("listen on the QMP socket: %w", err)
	}

	cmd := exec.CommandContext(ctx, binary,
		"-machine", "none", "-accel", accel,
		"-nodefaults", "-no-user-config", "-display", "none", "-S",
		"-chardev", "socket,id=godwit-qmp,fd=3,server=on,wait=off",
		"-mon", "chardev=godwit-qmp,mode=control")
	cmd.ExtraFiles = []*os.File{lf} // fd 3
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	// Never outlive the agent, nor share its process group.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	cmd.WaitDelay = 2 * time.Second
	err = cmd.Start()
	lf.Close()
	if err != nil {
		os.RemoveAll(dir)
		return nil, nil, fmt.Errorf("run QEMU: %w", err)
	}
	exited := make(chan struct{})
	go func() { // owned by stop, which waits for it
		cmd.Wait()
		close(exited)
	}()
	stop = func() string {
		cmd.Process.Kill()
		<-exited
		os.RemoveAll(dir)
		return strings.Join(strings.Fields(strings.ReplaceAll(strings.TrimSpace(stderr.String()), "\n", " / ")), " ")
	}

	dctx, cancel := context.WithTimeout(ctx, probeDialTimeout)
	defer cancel()
	mon, err = qmp.Dial(dctx, sock)
	if err != nil {
		if ctx.Err() == nil {
			// Most likely QEMU is exiting: give it a moment to say why.
			select {
			case <-exited:
			case <-time.After(time.Second):
			}
		}
		if msg := stop(); msg != "" {
			return nil, nil, fmt.Errorf("QEMU failed: %s", msg)
		}
		if dctx.Err() != nil && ctx.Err() == nil {
			return nil, nil, fmt.Errorf("connect to QEMU's monitor: %w: %w", errProbeNoAnswer, err)
		}
		return nil, nil, fmt.Errorf("connect to QEMU's monitor: %w", err)
	}
	return mon, stop, nil
}

// cpuCapsCacheFormat changes whenever the meaning of cached CPUCaps does
// (e.g. which properties count as flags), so that old caches are redone.
const cpuCapsCacheFormat = 1

// cpuCapsKey identifies the conditions a CPUCaps was probed under.
type cpuCapsKey struct {
	Format int `json:"format"`
	// BinarySHA256 identifies the QEMU binary by content.
	BinarySHA256 string `json:"binary_sha256"`
	Accel        string `json:"accel"`
	// HostKernel and HostCPU matter under KVM only, whose flags are the
	// host CPU's as the kernel exposes them (microcode updates can
	// remove flags): the kernel release and a hash of the CPU's identity
	// and flags in /proc/cpuinfo.
	HostKernel string `json:"host_kernel,omitempty"`
	HostCPU    string `json:"host_cpu,omitempty"`
}

// cpuCapsCache is the JSON file CachedProbeCPUCaps keeps.
type cpuCapsCache struct {
	Key      cpuCapsKey `json:"key"`
	Caps     CPUCaps    `json:"caps"`
	ProbedAt time.Time  `json:"probed_at"`
}

// cpuCapsKeyFor computes the cache key for probing binary under accel on
// this host now.
func cpuCapsKeyFor(ctx context.Context, binary, accel string) (cpuCapsKey, error) {
	path, err := exec.LookPath(binary)
	if err != nil {
		return cpuCapsKey{}, fmt.Errorf("QEMU not found (install qemu-system-x86 or give the path of qemu-system-x86_64): %w", err)
	}
	f, err := os.Open(path)
	if err != nil {
		return cpuCapsKey{}, fmt.Errorf("read the QEMU binary to identify it: %w", err)
	}
	defer f.Close()
	h := sha256.New()
	if _, err := io.Copy(h, cpuCapsCtxReader{ctx, f}); err != nil {
		return cpuCapsKey{}, fmt.Errorf("read the QEMU binary %s to identify it: %w", path, err)
	}
	key := cpuCapsKey{Format: cpuCapsCacheFormat, BinarySHA256: hex.EncodeToString(h.Sum(nil)), Accel: accel}
	if accel == AccelKVM {
		var uts unix.Utsname
		if err := unix.Uname(&uts); err != nil {
			return cpuCapsKey{}, fmt.Errorf("uname: %w", err)
		}
		key.HostKernel = unix.ByteSliceToString(uts.Release[:])
		key.HostCPU, err = hostCPUIdentity()
		if err != nil {
			return cpuCapsKey{}, err
		}
	}
	return key, nil
}

// cpuCapsCtxReader stops a long read when ctx ends.
type cpuCapsCtxReader struct {
	ctx context.Context
	r   io.Reader
}

func (r cpuCapsCtxReader) Read(p []byte) (int, error) {
	if err := r.ctx.Err(); err != nil {
		return 0, err
	}
	return r.r.Read(p)
}

// hostCPUIdentity hashes the first CPU's vendor, family, model, stepping,
// microcode and flags from /proc/cpuinfo.
func hostCPUIdentity() (string, error) {
	f, err := os.Open("/proc/cpuinfo")
	if err != nil {
		return "", fmt.Errorf("identify the host CPU: %w", err)
	}
	defer f.Close()
	h := sha256.New()
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if strings.TrimSpace(line) == "" {
			break // end of the first processor's block
		}
		name, _, _ := strings.Cut(line, ":")
		switch strings.TrimSpace(name) {
		case "vendor_id", "cpu family", "model", "model name", "stepping", "microcode", "flags":
			io.WriteString(h, line+"\n")
		}
	}
	if err := sc.Err(); err != nil {
		return "", fmt.Errorf("identify the host CPU: read /proc/cpuinfo: %w", err)
	}
	return hex.EncodeToString(h.Sum(nil)), nil
}

// loadCPUCaps returns the CPUCaps cached at path if they were probed under
// key. ok is false when there is no cache or it is for other conditions;
// an unreadable or corrupt file is an error.
func loadCPUCaps(path string, key cpuCapsKey) (caps CPUCaps, ok bool, err error) {
	var c cpuCapsCache
	if found, err := readJSONFile(path, "the CPU capabilities cache", &c); !found || err != nil {
		return CPUCaps{}, false, err
	}
	if c.Key != key {
		return CPUCaps{}, false, nil
	}
	if c.Caps.Accel != key.Accel || len(c.Caps.Flags) == 0 || len(c.Caps.Models) == 0 {
		return CPUCaps{}, false, fmt.Errorf("CPU capabilities cache %s holds incomplete capabilities", path)
	}
	return c.Caps, true, nil
}

// saveCPUCaps writes caps under key to path atomically.
func saveCPUCaps(path string, key cpuCapsKey, caps CPUCaps) error {
	return writeJSONFile(path, "the CPU capabilities cache", cpuCapsCache{Key: key, Caps: caps, ProbedAt: time.Now().UTC()})
}

// CachedProbeCPUCaps returns the CPUCaps cached in the file cachePath when
// they were probed from the same QEMU binary (by SHA-256 of its content)
// under the same accelerator (and, under KVM, the same host kernel and
// CPU); otherwise it runs ProbeCPUCaps and rewrites the file. A corrupt
// cache is logged and redone. If the new cache cannot be written, the
// probed caps are returned together with the error.
func CachedProbeCPUCaps(ctx context.Context, binary, accel, cachePath string) (CPUCaps, error) {
	if accel != AccelTCG && accel != AccelKVM {
		return CPUCaps{}, fmt.Errorf("probe the CPU capabilities of %s: accelerator %q: want %q or %q", binary, accel, AccelTCG, AccelKVM)
	}
	key, err := cpuCapsKeyFor(ctx, binary, accel)
	if err != nil {
		return CPUCaps{}, fmt.Errorf("probe the CPU capabilities of %s under %s: %w", binary, accel, err)
	}
	caps, ok, err := loadCPUCaps(cachePath, key)
	if err != nil {
		slog.WarnContext(ctx, "ignoring the CPU capabilities cache", "path", cachePath, "err", err)
	}
	if ok {
		return caps, nil
	}
	caps, err = ProbeCPUCaps(ctx, binary, accel)
	if err != nil {
		return CPUCaps{}, err
	}
	if err := saveCPUCaps(cachePath, key, caps); err != nil {
		return caps, fmt.Errorf("%w (%s)", err, cachePath)
	}
	return caps, nil
}
