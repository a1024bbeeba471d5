package metrics

import (
	"errors"
	"log/slog"
	"net"
	"net/http"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/godwit/godwit/internal/api"
)

// Outcomes of an incoming migration on the destination, the values of the outcome label
// of godwit_agent_incoming_migrations_total.
const (
	// IncomingSucceeded: the VM migrated in and runs here.
	IncomingSucceeded = "succeeded"
	// IncomingFailed: this host refused or could not prepare the copy, or the copy's QEMU
	// ended before the migration completed.
	IncomingFailed = "failed"
	// IncomingAborted: the source (or this host, having lost the source) tore the waiting
	// copy down because the migration failed or was cancelled there.
	IncomingAborted = "aborted"
)

// Frames carried across a migration's switch-over, the values of the direction label of
// godwit_agent_frames_carried_total.
const (
	// FramesSent: read from the paused source VM's TAP and sent to the destination.
	FramesSent = "sent"
	// FramesDelivered: received from the source and queued on the destination VM's TAP.
	FramesDelivered = "delivered"
	// FramesReturned: given back to the source VM's TAP after the migration failed.
	FramesReturned = "returned"
)

// Why a carried frame was dropped, the values of the reason label of
// godwit_agent_frames_dropped_total.
const (
	// FrameMalformed: a datagram too short or too long, of another version or for a NIC
	// the VM does not have.
	FrameMalformed = "malformed"
	// FrameUnauthenticated: a datagram whose tag the migration's key does not produce.
	FrameUnauthenticated = "unauthenticated"
	// FrameReplayed: an authentic datagram seen before, or older than the replay window.
	FrameReplayed = "replayed"
	// FrameUndeliverable: a frame the TAP refused, or that the source could not send.
	FrameUndeliverable = "undeliverable"
	// FrameNotKept: a frame that a failed migration could not give back to the source VM
	// because the source's bound on frames kept was reached.
	FrameNotKept = "not_kept"
)

// AgentConfig is what an agent's metrics need.
type AgentConfig struct {
	// Registry receives the metrics and is what GET /metrics serves.
	Registry *prometheus.Registry
	// VMs returns the VMs on the host now; read at every scrape.
	VMs func() []api.VMStatus
	// Accel returns the accelerator VMs use on this host ("kvm" or "tcg"), or "" while
	// the probe has not answered yet; read at every scrape.
	Accel func() string
	Log   *slog.Logger
}

// Agent is an agent's metrics. The zero value is not usable; use NewAgent.
type Agent struct {
	outgoing          *prometheus.CounterVec
	incoming          *prometheus.CounterVec
	framesCarried     *prometheus.CounterVec
	framesDropped     *prometheus.CounterVec
	heartbeatFailures prometheus.Counter
	connections       prometheus.Counter
	progressStreams   prometheus.Gauge
	progressSent      prometheus.Counter
	migrationReads    *prometheus.CounterVec
	handler           http.Handler
}

// NewAgent registers an agent's metrics in cfg.Registry.
func NewAgent(cfg AgentConfig) (*Agent, error) {
	if cfg.Registry == nil || cfg.VMs == nil || cfg.Accel == nil {
		return nil, errors.New("agent metrics need a registry, the VMs and the accelerator")
	}
	if cfg.Log == nil {
		cfg.Log = slog.Default()
	}
	a := &Agent{
		outgoing: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "godwit_agent_outgoing_migrations_total",
			Help: "Live migrations this host ran as the source that ended, by outcome (succeeded, failed, cancelled).",
		}, []string{"outcome"}),
		incoming: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "godwit_agent_incoming_migrations_total",
			Help: "Live migrations that brought a VM to this host and ended, by outcome (succeeded, failed, aborted).",
		}, []string{"outcome"}),
		framesCarried: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "godwit_agent_frames_carried_total",
			Help: "Frames that reached a VM's source host during a migration's switch-over and were carried, by direction (sent by the source, delivered by the destination, returned to the source VM after a failure).",
		}, []string{"direction"}),
		framesDropped: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "godwit_agent_frames_dropped_total",
			Help: "Frames of a migration's switch-over that were dropped, by reason (malformed, unauthenticated, replayed, undeliverable, not_kept).",
		}, []string{"reason"}),
		heartbeatFailures: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "godwit_agent_heartbeat_failures_total",
			Help: "Heartbeats to the center that failed.",
		}),
		connections: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "godwit_agent_connections_accepted_total",
			Help: "TCP connections the agent's API accepted (each one a TLS handshake); callers keep connections alive, so this grows slowly.",
		}),
		progressStreams: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "godwit_agent_progress_streams",
			Help: "Progress streams open now (GET /agent/v1/migrations/stream); the center holds one while it follows migrations this host runs.",
		}),
		progressSent: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "godwit_agent_progress_updates_total",
			Help: "Views of migrations this host runs as the source that it pushed on progress streams.",
		}),
		migrationReads: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "godwit_agent_migration_reads_total",
			Help: "Requests for one migration's view (GET /agent/v1/migrations/{id}), by caller (center, host); the center reads one only when its progress stream cannot tell it.",
		}, []string{"caller"}),
	}
	for _, o := range []string{api.MigrationSucceeded, api.MigrationFailed, api.MigrationCancelled} {
		a.outgoing.WithLabelValues(o)
	}
	a.migrationReads.WithLabelValues("center")
	a.migrationReads.WithLabelValues("host")
	for _, o := range []string{IncomingSucceeded, IncomingFailed, IncomingAborted} {
		a.incoming.WithLabelValues(o)
	}
	for _, d := range []string{FramesSent, FramesDelivered, FramesReturned} {
		a.framesCarried.WithLabelValues(d)
	}
	for _, r := range []string{FrameMalformed, FrameUnauthenticated, FrameReplayed, FrameUndeliverable, FrameNotKept} {
		a.framesDropped.WithLabelValues(r)
	}
	host := &hostCollector{
		vmsOf: cfg.VMs, accelOf: cfg.Accel,
		vms: prometheus.NewDesc("godwit_agent_vms",
			"VMs on this host, by state (running, stopped, incoming, …).", []string{"state"}, nil),
		qemu: prometheus.NewDesc("godwit_agent_qemu_processes",
			"QEMU processes this host's agent holds (one per running or incoming VM).", nil, nil),
		accel: prometheus.NewDesc("godwit_agent_accel_info",
			"The accelerator VMs use on this host, as the label accel (kvm or tcg); absent while the KVM probe runs.", []string{"accel"}, nil),
	}
	if err := register(cfg.Registry, a.outgoing, a.incoming, a.framesCarried, a.framesDropped, a.heartbeatFailures, a.connections,
		a.progressStreams, a.progressSent, a.migrationReads, host); err != nil {
		return nil, err
	}
	a.handler = handler(cfg.Registry, cfg.Log)
	return a, nil
}

// Counting returns ln, counting every connection it accepts.
func (a *Agent) Counting(ln net.Listener) net.Listener {
	return countingListener{Listener: ln, n: a.connections}
}

type countingListener struct {
	net.Listener
	n prometheus.Counter
}

func (l countingListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err == nil {
		l.n.Inc()
	}
	return c, err
}

// Handler serves the agent's registry at GET /metrics.
func (a *Agent) Handler() http.Handler { return a.handler }

// OutgoingEnded counts a migration this host ran as the source, by its final state
// (api.MigrationSucceeded, api.MigrationFailed or api.MigrationCancelled); any other
// state is ignored.
func (a *Agent) OutgoingEnded(state string) {
	switch state {
	case api.MigrationSucceeded, api.MigrationFailed, api.MigrationCancelled:
		a.outgoing.WithLabelValues(state).Inc()
	}
}

// IncomingEnded counts a migration that brought (or tried to bring) a VM here, by
// outcome: IncomingSucceeded, IncomingFailed or IncomingAborted; any other is ignored.
func (a *Agent) IncomingEnded(outcome string) {
	switch outcome {
	case IncomingSucceeded, IncomingFailed, IncomingAborted:
		a.incoming.WithLabelValues(outcome).Inc()
	}
}

// FramesCarried counts n frames carried in direction (FramesSent, FramesDelivered or
// FramesReturned).
func (a *Agent) FramesCarried(direction string, n int) {
	a.framesCarried.WithLabelValues(direction).Add(float64(n))
}

// FrameDropped counts a dropped frame by reason (FrameMalformed, …).
func (a *Agent) FrameDropped(reason string) { a.framesDropped.WithLabelValues(reason).Inc() }

// HeartbeatFailed counts a heartbeat to the center that failed.
func (a *Agent) HeartbeatFailed() { a.heartbeatFailures.Inc() }

// ProgressStreamOpened and ProgressStreamClosed count the progress streams open.
func (a *Agent) ProgressStreamOpened() { a.progressStreams.Inc() }

// ProgressStreamClosed: see ProgressStreamOpened.
func (a *Agent) ProgressStreamClosed() { a.progressStreams.Dec() }

// ProgressSent counts n migration views pushed on a progress stream.
func (a *Agent) ProgressSent(n int) { a.progressSent.Add(float64(n)) }

// MigrationRead counts a request for one migration's view, by the center or by a host.
func (a *Agent) MigrationRead(byCenter bool) {
	caller := "host"
	if byCenter {
		caller = "center"
	}
	a.migrationReads.WithLabelValues(caller).Inc()
}

// hostCollector reads, at each scrape, the host's VMs and its accelerator.
type hostCollector struct {
	vmsOf            func() []api.VMStatus
	accelOf          func() string
	vms, qemu, accel *prometheus.Desc
}

// Describe implements prometheus.Collector.
func (hc *hostCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- hc.vms
	ch <- hc.qemu
	ch <- hc.accel
}

// Collect implements prometheus.Collector.
func (hc *hostCollector) Collect(ch chan<- prometheus.Metric) {
	byState := map[string]int{api.VMStopped: 0, api.VMStarting: 0, api.VMRunning: 0,
		api.VMStopping: 0, api.VMError: 0, api.VMIncoming: 0}
	procs := 0
	for _, v := range hc.vmsOf() {
		byState[v.State]++
		if v.PID != 0 {
			procs++
		}
	}
	emitCounts(ch, hc.vms, byState)
	ch <- prometheus.MustNewConstMetric(hc.qemu, prometheus.GaugeValue, float64(procs))
	if accel := hc.accelOf(); accel != "" {
		ch <- prometheus.MustNewConstMetric(hc.accel, prometheus.GaugeValue, 1, accel)
	}
}
