package agent

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/godwit/godwit/internal/api"
	"github.com/godwit/godwit/internal/qemu"
)

// Guest CPU capabilities.
//
// Once the accelerator is known, the agent asks QEMU which CPUID flags it can give guests
// under it and which flags each of its CPU models needs (qemu.CachedProbeCPUCaps, cached
// next to the accelerator probe's answer). With --cpu-limit MODEL the host claims only
// the flags MODEL has, as a host of that older generation would (qemu.CPUCaps.LimitTo).
// Heartbeats report the flags and the models the host can run (api.HostFacts.GuestCPU),
// GET /agent/v1/cpu-models serves the whole catalog, and the host refuses to start or
// receive a VM whose CPU model needs flags it lacks, naming them.

// cpuCapsFile is the CPU capabilities cache, kept in the directory of Config.AccelCache.
const cpuCapsFile = "cpucaps.json"

// cpuRetry is the wait between probes of the CPU capabilities while they fail.
const cpuRetry = 30 * time.Second

// Error codes of CPU refusals.
const (
	// codeCPUUnsupported: the VM's CPU model needs CPUID flags the host cannot give.
	codeCPUUnsupported = "cpu_unsupported"
	// codeCPUUnknown: the host does not know its CPU capabilities (the probe failed).
	codeCPUUnknown = "cpu_caps_unknown"
)

// cpuState is what the agent knows of the CPUs it can give guests. ready is closed once
// the first probe has answered, successfully or not; the fields are guarded by mu.
type cpuState struct {
	ready chan struct{}

	mu sync.Mutex
	// caps are the capabilities, limited by Config.CPULimit (nil until a probe succeeds);
	// guest is what heartbeats report of them.
	caps  *qemu.CPUCaps
	guest api.GuestCPU
	// err is why the latest probe failed, while caps is nil.
	err error
}

// checkCPULimit refuses a --cpu-limit that this host's QEMU does not define, at start-up
// rather than once the capabilities are probed. (probeCPU checks again, exactly.)
func (a *Agent) checkCPULimit(ctx context.Context) error {
	limit := a.cfg.CPULimit
	if limit == "" {
		return nil
	}
	if limit == "host" || limit == "max" {
		return fmt.Errorf("--cpu-limit %s: %q stands for whatever this host's CPU offers, not for a CPU generation; name an older model such as Nehalem", limit, limit)
	}
	models, err := qemu.CPUModels(ctx, a.cfg.QEMU)
	if err != nil {
		return fmt.Errorf("check --cpu-limit %s: %w", limit, err)
	}
	if !slices.Contains(models, limit) {
		return fmt.Errorf("--cpu-limit %s: QEMU (%s) does not define this CPU model; `%s -cpu help` lists the models it knows (the names are case-sensitive)",
			limit, a.cfg.QEMU, a.cfg.QEMU)
	}
	return nil
}

// cpuCapsCache is where the CPU capabilities are cached: next to the accelerator probe's
// answer, or nowhere ("") without one.
func (a *Agent) cpuCapsCache() string {
	if a.cfg.AccelCache == "" {
		return ""
	}
	return filepath.Join(filepath.Dir(a.cfg.AccelCache), cpuCapsFile)
}

// probeCPU asks QEMU which CPU flags and models it can give guests under accel, limits
// them to Config.CPULimit and keeps them. A failed probe is logged and kept (see
// waitCPUCaps); its error is returned only for a --cpu-limit that QEMU does not define
// among its CPU models, with which the agent cannot run.
func (a *Agent) probeCPU(ctx context.Context, accel string) error {
	var caps qemu.CPUCaps
	var err error
	if cache := a.cpuCapsCache(); cache == "" {
		caps, err = qemu.ProbeCPUCaps(ctx, a.cfg.QEMU, accel)
	} else {
		if err = os.MkdirAll(filepath.Dir(cache), 0o755); err == nil {
			caps, err = qemu.CachedProbeCPUCaps(ctx, a.cfg.QEMU, accel, cache)
		}
		if err != nil && len(caps.Models) > 0 {
			// Probed, but the cache could not be written: the next start probes again.
			a.log.Warn("could not cache the CPU capabilities", "path", cache, "err", err)
			err = nil
		}
	}
	if err == nil && a.cfg.CPULimit != "" {
		if caps, err = caps.LimitTo(a.cfg.CPULimit); err != nil {
			return fmt.Errorf("--cpu-limit %s cannot be applied: %w", a.cfg.CPULimit, err)
		}
	}
	a.cpu.mu.Lock()
	defer a.cpu.mu.Unlock()
	if err != nil {
		a.cpu.err = err
		if ctx.Err() == nil {
			a.log.Warn("could not probe which CPUs QEMU can give guests; VMs cannot start or come in until a probe succeeds",
				"retry_in", cpuRetry, "err", err)
		}
		return nil
	}
	g := guestCPU(caps)
	a.cpu.caps, a.cpu.guest, a.cpu.err = &caps, g, nil
	a.log.Info("guest CPU capabilities", "accel", caps.Accel, "flags", len(caps.Flags), "models", len(caps.Models),
		"supported_models", len(g.Models), "limited_to", caps.LimitedTo, "catalog", g.Catalog)
	return nil
}

// cpuKnown reports whether a probe of the CPU capabilities has succeeded.
func (a *Agent) cpuKnown() bool {
	a.cpu.mu.Lock()
	defer a.cpu.mu.Unlock()
	return a.cpu.caps != nil
}

// guestCPU is what heartbeats report of caps.
func guestCPU(caps qemu.CPUCaps) api.GuestCPU {
	return api.GuestCPU{
		Accel: caps.Accel, LimitedTo: caps.LimitedTo, Flags: caps.Flags,
		Models: caps.Supported(), Catalog: cpuCatalog(caps.Models),
	}
}

// cpuCatalog is a short hash (16 hex digits of SHA-256) of every model's name and flags.
// Hosts with the same catalog know the same models with the same flags, whatever their
// own flags or limit, so the center fetches each distinct catalog once.
func cpuCatalog(models []qemu.CPUModel) string {
	lines := make([]string, 0, len(models))
	for _, m := range models {
		lines = append(lines, m.Name+"="+strings.Join(m.Flags, ","))
	}
	slices.Sort(lines)
	sum := sha256.Sum256([]byte(strings.Join(lines, "\n")))
	return hex.EncodeToString(sum[:8])
}

// guestCPUFacts returns what heartbeats report of the CPU capabilities: empty while the
// first probe runs, and the error of the latest probe while none succeeded.
func (a *Agent) guestCPUFacts() (api.GuestCPU, error) {
	a.cpu.mu.Lock()
	defer a.cpu.mu.Unlock()
	if a.cpu.caps == nil {
		return api.GuestCPU{}, a.cpu.err
	}
	return a.cpu.guest, nil
}

// CPUCaps returns the CPU capabilities of this host: every model QEMU knows with its
// flags, and the flags the host gives guests (limited by --cpu-limit). It does not wait:
// while they are not known it returns a 503 that says why.
func (a *Agent) CPUCaps() (qemu.CPUCaps, error) {
	a.cpu.mu.Lock()
	defer a.cpu.mu.Unlock()
	switch {
	case a.cpu.caps != nil:
		return *a.cpu.caps, nil
	case a.cpu.err != nil:
		return qemu.CPUCaps{}, a.cpuUnknownLocked()
	}
	return qemu.CPUCaps{}, api.Errorf(http.StatusServiceUnavailable, "probing",
		"host %s is still probing which CPUs QEMU can give guests; ask again in a few seconds", a.cfg.Name)
}

// cpuUnknownLocked is the refusal of anything that needs the CPU capabilities after the
// probe failed. a.cpu.mu is held.
func (a *Agent) cpuUnknownLocked() error {
	return api.Errorf(http.StatusServiceUnavailable, codeCPUUnknown,
		"host %s does not know which CPUs it can give guests: probing QEMU failed (%v); it tries again every %v, check that QEMU runs on the host",
		a.cfg.Name, a.cpu.err, cpuRetry)
}

// waitCPUCaps waits for the first probe of the CPU capabilities and returns them, or a
// 503 when no probe has succeeded.
func (a *Agent) waitCPUCaps(ctx context.Context) (qemu.CPUCaps, error) {
	select {
	case <-a.cpu.ready:
	case <-ctx.Done():
		return qemu.CPUCaps{}, fmt.Errorf("waiting for the probe of the CPUs this host can give guests: %w", ctx.Err())
	}
	a.cpu.mu.Lock()
	defer a.cpu.mu.Unlock()
	if a.cpu.caps == nil {
		return qemu.CPUCaps{}, a.cpuUnknownLocked()
	}
	return *a.cpu.caps, nil
}

// checkCPU checks that this host can give a guest CPU model model (QEMU's default when
// empty); it waits for the first probe. It returns nil when it can; a 422 with code
// cpu_unsupported naming the CPUID flags the host lacks (or, under --cpu-limit, does
// not offer); a 503 when the host's capabilities are unknown; and an error wrapping
// qemu.ErrUnknownCPUModel for a model outside QEMU's catalog of baselines — "host",
// "max" or a name QEMU does not define — which callers leave to QEMU itself.
func (a *Agent) checkCPU(ctx context.Context, model string) error {
	if model == "" {
		model = qemu.DefaultCPUModel
	}
	caps, err := a.waitCPUCaps(ctx)
	if err != nil {
		return err
	}
	err = caps.CheckModel(model)
	var missing *qemu.MissingCPUFlagsError
	if errors.As(err, &missing) {
		return api.Errorf(http.StatusUnprocessableEntity, codeCPUUnsupported, "%v", err)
	}
	return err
}
