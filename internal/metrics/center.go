package metrics

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/godwit/godwit/internal/api"
	"github.com/godwit/godwit/internal/store"
)

// Inventory is the part of the center's store that the center's scrape-time collector
// reads; *store.Store provides it.
type Inventory interface {
	Hosts(ctx context.Context) ([]store.HostRecord, error)
	VMs(ctx context.Context) ([]store.VMRecord, error)
	Migrations(ctx context.Context, vm string, active bool, limit int) ([]api.Migration, error)
}

// CenterConfig is what the center's metrics need.
type CenterConfig struct {
	// Registry receives the metrics and is what GET /metrics serves.
	Registry *prometheus.Registry
	// Inventory is read at every scrape for hosts, VMs and migrations under way.
	Inventory Inventory
	// Connected says whether a host counts as connected (its last heartbeat is recent).
	Connected func(store.HostRecord) bool
	// Now is the center's clock; nil: time.Now.
	Now func() time.Time
	// ScrapeTimeout bounds the inventory reads of one scrape; zero: 5 s.
	ScrapeTimeout time.Duration
	Log           *slog.Logger
}

// maxActiveMigrations bounds how many unfinished migrations one scrape reads.
const maxActiveMigrations = 10000

// Center is the center's metrics. The zero value is not usable; use NewCenter.
type Center struct {
	migrations *prometheus.CounterVec
	duration   prometheus.Histogram
	downtime   prometheus.Histogram
	bytes      prometheus.Counter
	requests   *prometheus.CounterVec
	handler    http.Handler
}

// NewCenter registers the center's metrics in cfg.Registry.
func NewCenter(cfg CenterConfig) (*Center, error) {
	if cfg.Registry == nil || cfg.Inventory == nil || cfg.Connected == nil {
		return nil, errors.New("center metrics need a registry, an inventory and a connected test")
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.ScrapeTimeout <= 0 {
		cfg.ScrapeTimeout = 5 * time.Second
	}
	if cfg.Log == nil {
		cfg.Log = slog.Default()
	}
	c := &Center{
		migrations: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "godwit_migrations_total",
			Help: "Live migrations that ended, by outcome (succeeded, failed, cancelled).",
		}, []string{"outcome"}),
		duration: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name: "godwit_migration_duration_seconds",
			Help: "Time from the start of a live migration to its end, whatever the outcome.",
			// 10 ms to 10 minutes.
			Buckets: []float64{0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 20, 30, 60, 120, 300, 600},
		}),
		downtime: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name: "godwit_migration_downtime_seconds",
			Help: "Downtime of each successful live migration, as QEMU reports it (vCPUs stopped on the source until the destination runs).",
			// 1 ms to 10 s.
			Buckets: []float64{0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10},
		}),
		bytes: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "godwit_migration_bytes_total",
			Help: "Bytes live migrations sent from source to destination, counted when each migration ends.",
		}),
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "godwit_api_requests_total",
			Help: "HTTP requests the center answered, by method, route pattern (not the raw path) and status code.",
		}, []string{"method", "route", "status"}),
	}
	for _, o := range []string{api.MigrationSucceeded, api.MigrationFailed, api.MigrationCancelled} {
		c.migrations.WithLabelValues(o) // present from the start, at 0
	}
	inv := &inventoryCollector{
		inv: cfg.Inventory, connected: cfg.Connected, now: cfg.Now, timeout: cfg.ScrapeTimeout,
		heartbeatAge: prometheus.NewDesc("godwit_host_heartbeat_age_seconds",
			"Seconds since each host's last heartbeat reached the center.", []string{"host"}, nil),
		hosts: prometheus.NewDesc("godwit_hosts",
			"Registered hosts, by state (connected, disconnected).", []string{"state"}, nil),
		vms: prometheus.NewDesc("godwit_vms",
			"VMs in the inventory, by state as last observed (running, stopped, error, …).", []string{"state"}, nil),
		running: prometheus.NewDesc("godwit_migrations_running",
			"Live migrations under way (preparing or running).", nil, nil),
		queued: prometheus.NewDesc("godwit_tasks_queued",
			"Migrations waiting to start (state queued). The center has no task queue yet, so this is 0.", nil, nil),
	}
	if err := register(cfg.Registry, c.migrations, c.duration, c.downtime, c.bytes, c.requests, inv); err != nil {
		return nil, err
	}
	c.handler = handler(cfg.Registry, cfg.Log)
	return c, nil
}

// Handler serves the center's registry at GET /metrics.
func (c *Center) Handler() http.Handler { return c.handler }

// RecordMigration counts a migration that ended: its outcome, how long it took, its
// downtime (if it succeeded and QEMU reported one) and the bytes it sent. The center
// calls it once per migration, when it records the outcome; a migration that has not
// ended is ignored.
func (c *Center) RecordMigration(m api.Migration) {
	switch m.State {
	case api.MigrationSucceeded, api.MigrationFailed, api.MigrationCancelled:
	default:
		return
	}
	c.migrations.WithLabelValues(m.State).Inc()
	total := m.TotalMS / 1000
	if total <= 0 && m.Finished != nil && !m.Started.IsZero() {
		total = m.Finished.Sub(m.Started).Seconds()
	}
	if total > 0 {
		c.duration.Observe(total)
	}
	if m.State == api.MigrationSucceeded && m.DowntimeMS > 0 {
		c.downtime.Observe(m.DowntimeMS / 1000)
	}
	c.bytes.Add(float64(m.Bytes))
}

// inventoryCollector computes, at each scrape, the figures whose truth is the center's
// store: heartbeat ages, hosts and VMs by state, migrations under way and queued.
type inventoryCollector struct {
	inv       Inventory
	connected func(store.HostRecord) bool
	now       func() time.Time
	timeout   time.Duration

	heartbeatAge, hosts, vms, running *prometheus.Desc
	// queued counts migrations waiting to start. There is no task queue yet: today
	// migrateVM refuses a second migration of a VM (409) rather than queueing it. When
	// it queues instead — storing the migration with State api.MigrationQueued before
	// it starts — this gauge counts it with no change here.
	queued *prometheus.Desc
}

// Describe implements prometheus.Collector.
func (ic *inventoryCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{ic.heartbeatAge, ic.hosts, ic.vms, ic.running, ic.queued} {
		ch <- d
	}
}

// Collect implements prometheus.Collector. A read that fails is reported as an invalid
// metric: the handler logs it and serves everything else.
func (ic *inventoryCollector) Collect(ch chan<- prometheus.Metric) {
	ctx, cancel := context.WithTimeout(context.Background(), ic.timeout)
	defer cancel()
	now := ic.now()

	if hosts, err := ic.inv.Hosts(ctx); err != nil {
		ch <- prometheus.NewInvalidMetric(ic.hosts, fmt.Errorf("read the hosts for metrics: %w", err))
	} else {
		byState := map[string]int{api.HostConnected: 0, api.HostDisconnected: 0}
		for _, h := range hosts {
			age := max(now.Sub(h.LastHeartbeat).Seconds(), 0)
			ch <- prometheus.MustNewConstMetric(ic.heartbeatAge, prometheus.GaugeValue, age, h.Facts.Name)
			if ic.connected(h) {
				byState[api.HostConnected]++
			} else {
				byState[api.HostDisconnected]++
			}
		}
		emitCounts(ch, ic.hosts, byState)
	}

	if vms, err := ic.inv.VMs(ctx); err != nil {
		ch <- prometheus.NewInvalidMetric(ic.vms, fmt.Errorf("read the VMs for metrics: %w", err))
	} else {
		byState := map[string]int{api.VMStopped: 0, api.VMStarting: 0, api.VMRunning: 0,
			api.VMStopping: 0, api.VMError: 0, api.VMUnknown: 0}
		for _, v := range vms {
			byState[v.State]++
		}
		emitCounts(ch, ic.vms, byState)
	}

	if ms, err := ic.inv.Migrations(ctx, "", true, maxActiveMigrations); err != nil {
		err = fmt.Errorf("read the unfinished migrations for metrics: %w", err)
		ch <- prometheus.NewInvalidMetric(ic.running, err)
		ch <- prometheus.NewInvalidMetric(ic.queued, err)
	} else {
		running, queued := 0, 0
		for _, m := range ms {
			if m.State == api.MigrationQueued {
				queued++
			} else {
				running++
			}
		}
		ch <- prometheus.MustNewConstMetric(ic.running, prometheus.GaugeValue, float64(running))
		ch <- prometheus.MustNewConstMetric(ic.queued, prometheus.GaugeValue, float64(queued))
	}
}

// emitCounts sends one gauge per state.
func emitCounts(ch chan<- prometheus.Metric, d *prometheus.Desc, byState map[string]int) {
	for st, n := range byState {
		ch <- prometheus.MustNewConstMetric(d, prometheus.GaugeValue, float64(n), st)
	}
}
