// Package agent is the daemon on every hypervisor host. It runs each VM as its own QEMU
// process, owns the host's bridges, TAP devices and datastores, reports the host to the
// center in heartbeats, and serves the API the center calls. VMs outlive the agent: a
// restarted agent finds them in its state directory and re-adopts them.
package agent

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/godwit/godwit/internal/api"
	"github.com/godwit/godwit/internal/metrics"
	"github.com/godwit/godwit/internal/netdev"
	"github.com/godwit/godwit/internal/pki"
	"github.com/godwit/godwit/internal/qemu"
)

// Config is an agent's configuration.
type Config struct {
	Name string
	// Listen is the address the agent's API listens on (host:port).
	Listen string
	// Advertise is the URL the center and other agents use to reach this agent.
	Advertise string
	// Center is the center's URL.
	Center string
	// JoinToken is the one-time token with which a host that has no certificate yet
	// joins the cluster; CAFingerprint ("sha256:…") or CAFile names the cluster's CA, so
	// that the agent knows it joins the right center. All three are needed only once:
	// afterwards the host's identity is in StateDir/pki.
	JoinToken     string
	CAFingerprint string
	CAFile        string
	// RenewBefore is how long before its expiry the host renews its certificate (or
	// when a third of its life is left, if sooner); 30 days when zero.
	RenewBefore time.Duration
	// StateDir keeps one directory per VM (spec, QMP socket, console log, pid file).
	StateDir string
	// Datastores maps a datastore name to its mount path.
	Datastores map[string]string
	// Networks maps a network name to the bridge that carries it on this host.
	Networks map[string]string
	// QEMU is the qemu-system binary.
	QEMU string
	// Accel is "auto" (probe), "kvm" or "tcg".
	Accel string
	// AccelCache is where the probe's answer is kept between restarts.
	AccelCache string
	// ProbeKernel is a standard Linux kernel used to probe KVM; empty: the first
	// images/*/vmlinuz found on a datastore.
	ProbeKernel string
	// CPULimit, when set, names a QEMU CPU model (e.g. "Nehalem"): the host then
	// advertises, and gives guests, only the CPUID flags that model offers, as a host of
	// that older generation would (see qemu.CPUCaps.LimitTo), and refuses VMs whose CPU
	// model needs more. The agent does not start when QEMU does not define the model.
	CPULimit string
	// Heartbeat is the interval between heartbeats.
	Heartbeat time.Duration
	// ConsoleLogMax is the size at which a VM's console log is rotated (see
	// keepConsoles); api.MaxConsoleBytes when zero.
	ConsoleLogMax int64
	// Registry receives the agent's metrics, served at GET /metrics; nil: a new one
	// with the process's Go and process metrics.
	Registry *prometheus.Registry
	Log      *slog.Logger
}

// Agent is a running host daemon.
type Agent struct {
	cfg     Config
	log     *slog.Logger
	center  *api.Client                  // set by Run, once the agent has its identity
	id      atomic.Pointer[pki.Identity] // renewed in place (renewLoop)
	trust   *trust
	anchor  *auditAnchor
	version string
	boot    time.Time
	metrics *metrics.Agent

	accelReady chan struct{}
	accel      qemu.Probe
	qemuVer    string

	// cpu is what the host can give guests' CPUs, probed once the accelerator is known.
	cpu cpuState

	mu  sync.Mutex
	vms map[string]*vm // by name

	migMu      sync.Mutex
	migrations map[string]*outgoing // by id, this host being the source
	// progress tells the progress streams which of them changed.
	progress progressHub
	// lingering carries frames of VMs that just left, by UUID (see frameSender.linger).
	lingering map[string]*frameSender

	// peers pools the connections to other hosts' agents.
	peers *api.HostClients

	// memorySlot is held while a VM's memory activity is measured: one at a time.
	memorySlot chan struct{}

	// streams holds the socket directories of the streams this agent carries
	// (streamsDir).
	streams string

	// wg tracks the goroutines that watch VM processes; they end with runCtx.
	wg     sync.WaitGroup
	runCtx context.Context

	// api serves the route table behind the guard; inProcess serves it to the trusted
	// in-process caller (Handler).
	api, inProcess *api.Mux
}

// New checks the configuration and prepares an agent; Run starts it.
func New(cfg Config, version string) (*Agent, error) {
	if cfg.Name == "" {
		return nil, errors.New("the agent needs a host name (--name)")
	}
	if cfg.Name != strings.ToLower(cfg.Name) || cfg.Name == pki.CenterName {
		return nil, fmt.Errorf("--name %q: host names are lower case and never %s (certificates match names without regard to case)", cfg.Name, pki.CenterName)
	}
	if cfg.Center == "" {
		return nil, errors.New("the agent needs the center's URL (--center)")
	}
	if cfg.StateDir == "" {
		return nil, errors.New("the agent needs a state directory (--state-dir)")
	}
	if cfg.Listen == "" {
		return nil, errors.New("the agent needs an address to listen on (--listen)")
	}
	if cfg.Advertise == "" {
		cfg.Advertise = "https://" + cfg.Listen
	}
	if !strings.HasPrefix(cfg.Advertise, "https://") {
		return nil, fmt.Errorf("--advertise %q must be an https:// URL: agents serve only over TLS", cfg.Advertise)
	}
	if !strings.HasPrefix(cfg.Center, "https://") {
		return nil, fmt.Errorf("--center %q must be an https:// URL (the center's TCP address serves TLS only)", cfg.Center)
	}
	if cfg.QEMU == "" {
		cfg.QEMU = "qemu-system-x86_64"
	}
	if cfg.Accel == "" {
		cfg.Accel = "auto"
	}
	if cfg.Accel != "auto" && cfg.Accel != "kvm" && cfg.Accel != "tcg" {
		return nil, fmt.Errorf("--accel must be auto, kvm or tcg, not %q", cfg.Accel)
	}
	if cfg.RenewBefore <= 0 {
		cfg.RenewBefore = 30 * 24 * time.Hour
	}
	if cfg.Heartbeat <= 0 {
		cfg.Heartbeat = 2 * time.Second
	}
	if cfg.ConsoleLogMax <= 0 {
		cfg.ConsoleLogMax = api.MaxConsoleBytes
	}
	if cfg.Log == nil {
		cfg.Log = slog.Default()
	}
	for name, p := range cfg.Datastores {
		if st, err := os.Stat(p); err != nil || !st.IsDir() {
			return nil, fmt.Errorf("datastore %s: %s is not a directory on this host; create or mount it first", name, p)
		}
	}
	if err := os.MkdirAll(filepath.Join(cfg.StateDir, "vms"), 0o755); err != nil {
		return nil, fmt.Errorf("create state directory: %w", err)
	}
	if cfg.Registry == nil {
		cfg.Registry = metrics.NewProcessRegistry()
	}
	a := &Agent{
		cfg: cfg, log: cfg.Log.With("host", cfg.Name), version: version, streams: streamsDir(cfg.StateDir),
		boot: time.Now(), accelReady: make(chan struct{}), vms: map[string]*vm{},
		migrations: map[string]*outgoing{}, lingering: map[string]*frameSender{}, cpu: cpuState{ready: make(chan struct{})},
		memorySlot: make(chan struct{}, 1),
	}
	a.trust = newTrust(a.pkiDir())
	a.peers = api.NewHostClients(func(host string) *tls.Config { return pki.ClientTLSFrom(a.id.Load, host, a.trust.isRevoked) })
	a.anchor = newAuditAnchor(filepath.Join(cfg.StateDir, auditAnchorFile), a.log.Warn)
	var err error
	a.metrics, err = metrics.NewAgent(metrics.AgentConfig{Registry: cfg.Registry, VMs: a.statuses, Accel: a.accelInUse, Log: a.log})
	if err != nil {
		return nil, fmt.Errorf("agent metrics: %w", err)
	}
	if a.api, err = a.buildMux(false); err != nil {
		return nil, err
	}
	if a.inProcess, err = a.buildMux(true); err != nil {
		return nil, err
	}
	return a, nil
}

// Handler returns the agent's API for in-process callers (tests): no certificate or
// ticket is asked for; the caller counts as the center. Run serves the API behind mutual
// TLS, each route behind its guard.
func (a *Agent) Handler() http.Handler { return a.inProcess }

// accelInUse is the accelerator the probe chose, or "" while it runs.
func (a *Agent) accelInUse() string {
	select {
	case <-a.accelReady:
		return a.accel.Accel
	default:
		return ""
	}
}

// Run serves until ctx ends, or until the probe of the CPU capabilities finds that
// --cpu-limit cannot be applied (that error). VMs keep running after it returns.
func (a *Agent) Run(ctx context.Context) error {
	// runCtx ends when Run returns, for every goroutine the agent owns.
	runCtx, stopRun := context.WithCancel(ctx)
	defer stopRun()
	a.runCtx = runCtx
	ver, err := qemu.Version(ctx, a.cfg.QEMU)
	if err != nil {
		return fmt.Errorf("QEMU at %s does not run; install it (make deps): %w", a.cfg.QEMU, err)
	}
	a.qemuVer = ver
	if err := a.checkCPULimit(ctx); err != nil {
		return err
	}
	if err := a.ensureIdentity(ctx); err != nil {
		return err
	}
	if a.center, err = api.NewClient(a.cfg.Center, 10*time.Second, api.WithTLS(pki.ClientTLSFrom(a.id.Load, pki.CenterName, a.trust.isRevoked))); err != nil {
		return fmt.Errorf("center: %w", err)
	}
	for name, br := range a.cfg.Networks {
		if err := netdev.EnsureBridge(br); err != nil {
			return fmt.Errorf("network %s: %w", name, err)
		}
	}
	// Streams this agent carried died with its last run (carry.go), and die with this one.
	_ = os.RemoveAll(a.streams)
	defer os.RemoveAll(a.streams)
	a.loadRecords()
	if err := a.adoptAll(ctx); err != nil {
		return err
	}
	ln, err := net.Listen("tcp", a.cfg.Listen)
	if err != nil {
		return fmt.Errorf("listen on %s: %w", a.cfg.Listen, err)
	}
	// serveCtx also ends when the host's probes find the configuration unusable (the
	// cause); bgCtx also ends when serving fails, so the background loops stop with it.
	serveCtx, stopServing := context.WithCancelCause(ctx)
	defer stopServing(nil)
	bgCtx, stopBG := context.WithCancel(ctx)
	var wg sync.WaitGroup
	wg.Add(5)
	go func() { defer wg.Done(); a.renewLoop(bgCtx) }()
	go func() { defer wg.Done(); a.measureLoop(bgCtx) }()
	go func() { defer wg.Done(); a.keepConsoles(bgCtx) }()
	go func() {
		defer wg.Done()
		if err := a.probeHost(bgCtx); err != nil {
			a.log.Error("the agent cannot run with this configuration; stopping", "err", err)
			stopServing(err)
		}
	}()
	go func() { defer wg.Done(); a.heartbeatLoop(bgCtx) }()
	a.log.Info("agent running", "listen", a.cfg.Listen, "center", a.cfg.Center, "qemu", ver, "cpu_limit", a.cfg.CPULimit)
	runErr := api.Serve(serveCtx, a.authenticate(a.api), tls.NewListener(a.metrics.Counting(ln), pki.ServerTLSFrom(a.id.Load)))
	if runErr == nil && ctx.Err() == nil {
		runErr = context.Cause(serveCtx)
	}
	stopBG()
	wg.Wait()
	stopRun()
	a.wg.Wait()
	a.log.Info("agent stopped; its VMs keep running")
	return runErr
}

// probeHost answers the host's probes: the accelerator, then the CPU capabilities under
// it, again every cpuRetry while that probe fails. It returns when ctx ends (nil) or
// when --cpu-limit cannot be applied (that error).
func (a *Agent) probeHost(ctx context.Context) error {
	if err := a.probeAccel(ctx); err != nil {
		return err
	}
	t := time.NewTicker(cpuRetry)
	defer t.Stop()
	for !a.cpuKnown() {
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
		if err := a.probeCPU(ctx, a.accel.Accel); err != nil {
			return err
		}
	}
	return nil
}

// probeAccel decides between KVM and TCG once, by probing, and caches the answer; then it
// probes the CPU capabilities under that accelerator once (see probeCPU). accelReady is
// closed when the accelerator is known, cpu.ready when the CPU probe has answered. The
// error is a --cpu-limit that cannot be applied.
func (a *Agent) probeAccel(ctx context.Context) error {
	a.accel = a.chooseAccel(ctx)
	close(a.accelReady)
	defer close(a.cpu.ready)
	return a.probeCPU(ctx, a.accel.Accel)
}

// chooseAccel decides between KVM and TCG: as --accel says, or by probing (cached).
func (a *Agent) chooseAccel(ctx context.Context) qemu.Probe {
	if a.cfg.Accel != "auto" {
		return qemu.Probe{Accel: a.cfg.Accel, Reason: "set by --accel"}
	}
	kernel := a.cfg.ProbeKernel
	if kernel == "" {
		kernel = a.findProbeKernel()
	}
	if kernel == "" {
		p := qemu.Probe{Accel: "tcg", Reason: "no standard kernel to probe KVM with (images/*/vmlinuz on a datastore, or --probe-kernel); using TCG"}
		a.log.Warn("accelerator", "accel", p.Accel, "reason", p.Reason)
		return p
	}
	var p qemu.Probe
	var err error
	if a.cfg.AccelCache == "" {
		p, err = qemu.ProbeAccel(ctx, a.cfg.QEMU, kernel, 0)
	} else if err = os.MkdirAll(filepath.Dir(a.cfg.AccelCache), 0o755); err == nil {
		p, _, err = qemu.CachedProbeAccel(ctx, a.cfg.QEMU, kernel, a.cfg.AccelCache, 0)
	}
	if err != nil {
		p = qemu.Probe{Accel: "tcg", Reason: "KVM probe failed: " + err.Error()}
	}
	a.log.Info("accelerator", "accel", p.Accel, "reason", p.Reason)
	return p
}

func (a *Agent) findProbeKernel() string {
	for _, name := range a.datastoreNames() {
		m, _ := filepath.Glob(filepath.Join(a.cfg.Datastores[name], "images", "*", "vmlinuz"))
		if len(m) > 0 {
			return m[0]
		}
	}
	return ""
}

// waitAccel waits for the probe's answer.
func (a *Agent) waitAccel(ctx context.Context) (qemu.Probe, error) {
	select {
	case <-a.accelReady:
		return a.accel, nil
	case <-ctx.Done():
		return qemu.Probe{}, fmt.Errorf("waiting for the accelerator probe: %w", ctx.Err())
	}
}

func (a *Agent) datastoreNames() []string {
	var n []string
	for k := range a.cfg.Datastores {
		n = append(n, k)
	}
	sort.Strings(n)
	return n
}

// Facts gathers what the heartbeat reports.
func (a *Agent) Facts() api.HostFacts {
	a.sampleCPU(time.Now())
	f := api.HostFacts{
		Name: a.cfg.Name, AgentURL: a.cfg.Advertise, Version: a.version,
		QEMUVersion: a.qemuVer, BootTime: a.boot, Health: "ok",
	}
	if host, _, err := net.SplitHostPort(a.cfg.Listen); err == nil {
		f.Address = host
	}
	if cpu, err := readCPUInfo("/proc/cpuinfo"); err == nil {
		f.CPU = cpu
	}
	f.MemoryMiB, f.FreeMemoryMiB, _ = readMemInfo("/proc/meminfo")
	f.Load = readLoad("/proc/loadavg")
	select {
	case <-a.accelReady:
		f.Accel, f.AccelReason = a.accel.Accel, a.accel.Reason
	default:
		f.Accel, f.AccelReason = "", "probing"
	}
	if g, err := a.guestCPUFacts(); err != nil {
		f.Health, f.HealthReason = "degraded", fmt.Sprintf("the CPUs this host can give guests are unknown: probing QEMU failed (%v); retrying every %v", err, cpuRetry)
	} else {
		f.GuestCPU = g
	}
	for _, name := range a.datastoreNames() {
		ds, err := datastoreFacts(name, a.cfg.Datastores[name])
		if err != nil {
			f.Health, f.HealthReason = "degraded", err.Error()
			continue
		}
		f.Datastores = append(f.Datastores, ds)
	}
	var nets []string
	for n := range a.cfg.Networks {
		nets = append(nets, n)
	}
	sort.Strings(nets)
	for _, n := range nets {
		nw := api.Network{Name: n, Bridge: a.cfg.Networks[n]}
		if b, err := netdev.BridgeInfo(nw.Bridge); err == nil {
			nw.MTU = b.MTU
			if !b.Up {
				f.Health, f.HealthReason = "degraded", fmt.Sprintf("bridge %s of network %s is down", b.Name, n)
			}
		} else {
			f.Health, f.HealthReason = "degraded", err.Error()
		}
		f.Networks = append(f.Networks, nw)
	}
	f.VMs = a.statuses()
	return f
}

func (a *Agent) heartbeatLoop(ctx context.Context) {
	t := time.NewTicker(a.cfg.Heartbeat)
	defer t.Stop()
	failing := false
	for {
		hctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		err := a.sendHeartbeat(hctx)
		cancel()
		if err != nil && ctx.Err() == nil {
			a.metrics.HeartbeatFailed()
		}
		switch {
		case err != nil && ctx.Err() == nil && !failing:
			a.log.Warn("heartbeat to center failed; retrying", "err", err)
			failing = true
		case err == nil && failing:
			a.log.Info("heartbeat to center restored")
			failing = false
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// kick sends a heartbeat now so the center sees a state change without waiting.
func (a *Agent) kick() {
	if a.center == nil {
		return // not joined: no center to tell
	}
	ctx, cancel := context.WithTimeout(a.runCtx, 3*time.Second)
	defer cancel()
	if err := a.sendHeartbeat(ctx); err != nil && a.runCtx.Err() == nil {
		a.metrics.HeartbeatFailed()
	}
}

// sendHeartbeat sends one heartbeat, with the requests refused since the last one and
// the audit checkpoint held, and takes the center's list of revoked certificates and its
// newest audit checkpoint from the answer.
func (a *Agent) sendHeartbeat(ctx context.Context) error {
	f := a.Facts()
	f.Refusals = a.trust.takeRefusals()
	f.AuditCheckpoint = a.anchor.current()
	var rep api.HeartbeatReply
	if err := a.center.Do(ctx, http.MethodPost, "/api/v1/hosts/heartbeat", f, &rep); err != nil {
		a.trust.putBack(f.Refusals)
		return err
	}
	changed, err := a.trust.setRevoked(rep.RevokedSerials)
	if err != nil {
		a.log.Warn("could not keep the revoked certificates on disk", "err", err)
	}
	if changed {
		a.peers.ForgetAll()
		a.center.CloseIdle()
	}
	if err := a.anchor.offer(rep.AuditCheckpoint, a.id.Load().Pool()); err != nil {
		a.log.Warn("the center's audit checkpoint is not kept", "err", err)
	}
	return nil
}
