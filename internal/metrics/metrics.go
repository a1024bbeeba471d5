// Package metrics holds Godwit's Prometheus metrics: those of the center (migrations,
// hosts, VMs, API requests) and those of an agent (its VMs, QEMU processes, migrations,
// accelerator, heartbeats). Every center and agent registers its metrics in a registry of
// its own, passed in, and serves it at GET /metrics in the Prometheus text format; nothing
// is kept in the process-wide default registry.
//
// Counters and histograms are updated where things happen (a migration ends, a heartbeat
// fails); inventory figures (hosts, VMs, heartbeat ages, migrations under way) are read
// from their source of truth when Prometheus scrapes, so they can never drift from it.
package metrics

import (
	"fmt"
	"log/slog"
	"net/http"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// NewProcessRegistry returns a new registry that already holds the Go runtime's and the
// process's own metrics (go_*, process_*), for a daemon that is alone in its process.
func NewProcessRegistry() *prometheus.Registry {
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return reg
}

// handler serves a registry in the Prometheus exposition format. A collector that fails
// (the center's database cannot be read, say) is logged and left out of that scrape;
// the other metrics are still served.
func handler(reg prometheus.Gatherer, log *slog.Logger) http.Handler {
	return promhttp.HandlerFor(reg, promhttp.HandlerOpts{
		ErrorLog:      errorLog{log},
		ErrorHandling: promhttp.ContinueOnError,
	})
}

// errorLog passes promhttp's error reports to a slog logger.
type errorLog struct{ log *slog.Logger }

func (e errorLog) Println(v ...any) {
	e.log.Warn("metrics scrape", "err", fmt.Sprint(v...))
}

// register registers every collector, or says which one it could not.
func register(reg prometheus.Registerer, cs ...prometheus.Collector) error {
	for _, c := range cs {
		if err := reg.Register(c); err != nil {
			return fmt.Errorf("register metrics: %w", err)
		}
	}
	return nil
}
