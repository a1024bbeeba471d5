// Package center is Godwit's management server: the inventory of hosts, VMs, datastores
// and networks (kept in the store), the REST API (/api/v1) that the CLI
// uses, and the calls it makes to host agents. Desired state lives in the database and
// observed state arrives in heartbeats; a restarted center loses nothing and converges
// again from the next heartbeat of each host.
package center

import (
	"context"
	"crypto"
	"crypto/tls"
	"errors"
	"fmt"
	"hash/maphash"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/godwit/godwit/internal/admission"
	"github.com/godwit/godwit/internal/api"
	"github.com/godwit/godwit/internal/audit"
	"github.com/godwit/godwit/internal/metrics"
	"github.com/godwit/godwit/internal/pki"
	"github.com/godwit/godwit/internal/store"
)

// Config is the center's configuration.
type Config struct {
	// Listen is a TCP address for agents and API clients; empty: none.
	Listen string
	// Socket is a unix socket path for local API clients; empty: none.
	Socket  string
	DataDir string
	// Pools maps a network name to its subnet and address pool for VMs.
	Pools map[string]Pool
	// HeartbeatTimeout is how long after its last heartbeat a host counts as disconnected.
	HeartbeatTimeout time.Duration
	// AuditRetention is how long audit records are kept; 0: audit.DefaultRetention;
	// negative: forever.
	AuditRetention time.Duration
	// MigrationLimits are the concurrent-migration limits per host, network and
	// datastore (admission.DefaultLimits when zero). Migrations beyond them queue.
	MigrationLimits admission.Limits
	// MigrationNetwork names the network migration streams cross (every migration costs
	// a slot on it); LinkRate is its speed in bytes/s, which concurrent migrations share
	// by priority. Defaults: "migration", 10 Gbit/s.
	MigrationNetwork string
	LinkRate         int64
	// BalanceInterval is how often the balancer runs a round (default a minute).
	BalanceInterval time.Duration
	// CPUBaseline is the cluster's baseline CPU model (like VMware's EVC): VMs created
	// without a CPU model get it, so they keep one CPU definition wherever they run.
	// Default qemu64.
	CPUBaseline string
	// HostCertLifetime is how long the host certificates the CA issues are valid
	// (pki.LeafLifetime, a year, when zero); agents renew theirs when a third is left.
	HostCertLifetime time.Duration
	// TLSNames are further DNS names or addresses for the center's certificate, for API
	// clients that reach it by a name or address it does not listen on.
	TLSNames []string
	// HTTP bounds what one client may hold of the center's API server (api.ServerLimits;
	// the defaults when zero).
	HTTP api.ServerLimits
	// Registry receives the center's metrics, served at GET /metrics; nil: a new one
	// with the process's Go and process metrics.
	Registry *prometheus.Registry
	Log      *slog.Logger
}

// auditHeadReuse is how long the heartbeats' audit checkpoints reuse the trail's head as
// last read (audit.Options.HeadReuse): a host's checkpoint is at most this much behind,
// and a thousand hosts cost the database four reads a second, not five hundred.
const auditHeadReuse = 250 * time.Millisecond

// Center is a running management server.
type Center struct {
	cfg   Config
	log   *slog.Logger
	store *store.Store
	now   func() time.Time
	// newID makes the ids of tasks and migrations (randomID).
	newID func() string
	// trail is the audit trail, in the store's database.
	trail *audit.Log

	metrics *metrics.Center

	// allocMu serialises address allocation with the insert that claims it.
	allocMu sync.Mutex

	// live holds the latest view of each migration being followed (id → api.Migration);
	// runCtx and wg own the goroutines that follow them.
	live   sync.Map
	runCtx context.Context
	wg     sync.WaitGroup
	// loop drives every unfinished migration (reconcile.go), started on first use.
	loopOnce sync.Once
	loop     *migLoop
	// feeds holds the progress feed of each source host with migrations followed
	// (feed.go).
	feedMu sync.Mutex
	feeds  map[string]*feed

	// tasks publishes every change of a task to the subscribers of the task stream;
	// activeTasks holds the live view of each queued or running task (id → api.Task).
	tasks       *broadcaster
	activeTasks sync.Map

	// ca is the cluster's certificate authority; identity is the center's own key and
	// certificate, which it serves and presents to agents.
	ca       *pki.CA
	identity *pki.Identity

	// limiter admits migrations within their limits and queues the rest; tickets holds
	// each admitted migration's ticket (id → *admission.Ticket) until it ends, and
	// waiting the cancel function of each queued one (id → context.CancelFunc).
	limiter *admission.Limiter
	tickets sync.Map
	waiting sync.Map
	// caps holds the bandwidth cap last sent for each started migration (id → int64).
	caps sync.Map
	// cpuCatalogs caches hosts' CPU model catalogs by their hash (→ qemu.CPUCaps).
	cpuCatalogs sync.Map
	// links keeps what past migrations achieved between hosts, for predictions.
	links *links
	// plans is the maintenance loop's lock and wake-up (maintenance.go).
	plans *plansOf
	// balancer is the balancer loop's memory and last status (balancer.go).
	balancer *balancerState

	// agents pools the connections to each host's agent.
	agents *api.HostClients
	// revoked holds the serials of revoked certificates (serial → true): connections
	// the center opens refuse them too.
	revoked sync.Map
	// hostCerts caches verified host certificates and the list of revoked serials.
	hostCerts *hostCerts
	// agreed holds, per host, the last report of its VMs that agreed with the store
	// (host → agreement): the same report at the same store version needs no reading.
	agreed  sync.Map
	sumSeed maphash.Seed

	// mux serves the route table (Routes); openapi is its description, made once.
	mux         *api.Mux
	openapiOnce sync.Once
	openapi     []byte
	openapiErr  error

	// logins limits failed logins per source and per user.
	logins *loginLimiter
}

// New opens the center's database.
func New(ctx context.Context, cfg Config) (*Center, error) {
	if cfg.DataDir == "" {
		return nil, errors.New("the center needs a data directory (--data-dir)")
	}
	if cfg.Listen == "" && cfg.Socket == "" {
		return nil, errors.New("the center needs somewhere to listen: --listen ADDR, --socket PATH or both")
	}
	if cfg.BalanceInterval <= 0 {
		cfg.BalanceInterval = time.Minute
	}
	if cfg.HeartbeatTimeout <= 0 {
		cfg.HeartbeatTimeout = 10 * time.Second
	}
	if cfg.Log == nil {
		cfg.Log = slog.Default()
	}
	if cfg.AuditRetention == 0 {
		cfg.AuditRetention = audit.DefaultRetention
	}
	if cfg.MigrationLimits.Kinds == nil && cfg.MigrationLimits.Resources == nil {
		cfg.MigrationLimits = admission.DefaultLimits()
	}
	if cfg.MigrationNetwork == "" {
		cfg.MigrationNetwork = "migration"
	}
	if cfg.LinkRate <= 0 {
		cfg.LinkRate = admission.FastLinkBitsPerSecond / 8
	}
	if cfg.CPUBaseline == "" {
		cfg.CPUBaseline = defaultCPUModel
	}
	lim, err := admission.New(cfg.MigrationLimits)
	if err != nil {
		return nil, fmt.Errorf("migration limits: %w", err)
	}
	if err := os.MkdirAll(cfg.DataDir, 0o700); err != nil {
		return nil, fmt.Errorf("create data directory: %w", err)
	}
	st, err := store.Open(ctx, filepath.Join(cfg.DataDir, "godwit.db"))
	if err != nil {
		return nil, err
	}
	if cfg.Registry == nil {
		cfg.Registry = metrics.NewProcessRegistry()
	}
	c := &Center{cfg: cfg, log: cfg.Log, store: st, now: time.Now, newID: randomID, tasks: newBroadcaster(), limiter: lim, logins: newLoginLimiter(), hostCerts: newHostCerts(), sumSeed: maphash.MakeSeed(),
		feeds: map[string]*feed{}, links: newLinks(), plans: newPlansOf(), balancer: newBalancerState()}
	c.agents = api.NewHostClients(c.agentTLS)
	if c.trail, err = audit.Open(ctx, st.DB(), audit.Options{Logger: cfg.Log, Now: func() time.Time { return c.now() }, Reader: st.ReadDB(), HeadReuse: auditHeadReuse}); err != nil {
		st.Close()
		return nil, err
	}
	c.metrics, err = metrics.NewCenter(metrics.CenterConfig{Registry: cfg.Registry, Inventory: st,
		Connected: c.connected, Now: func() time.Time { return c.now() }, Log: cfg.Log})
	if err != nil {
		st.Close()
		return nil, fmt.Errorf("center metrics: %w", err)
	}
	if err := c.bootstrap(ctx); err != nil {
		st.Close()
		return nil, err
	}
	if err := c.setupPKI(ctx); err != nil {
		st.Close()
		return nil, err
	}
	if c.mux, err = c.buildMux(); err != nil {
		st.Close()
		return nil, err
	}
	key, ok := c.identity.Cert.PrivateKey.(crypto.Signer)
	if !ok {
		st.Close()
		return nil, fmt.Errorf("the center's key (%T) cannot sign the audit trail's checkpoints", c.identity.Cert.PrivateKey)
	}
	c.trail.SetNotary(audit.Notary{Key: key, Cert: c.identity.Leaf, Roots: c.ca.Pool()})
	return c, nil
}

// Handler returns the center's HTTP API for in-process callers (tests): every request
// counts as the administrator's, and no credentials are asked for. Run serves the API
// with authentication.
func (c *Center) Handler() http.Handler { return c.routes(true) }

// Run serves until ctx ends.
func (c *Center) Run(ctx context.Context) error {
	defer c.store.Close()
	c.runCtx = ctx
	defer c.wg.Wait()
	if err := c.recoverTasks(ctx); err != nil {
		return err
	}
	if err := c.seedLinks(ctx); err != nil {
		c.log.Warn("predictions start without the links' history", "err", err)
	}
	if err := c.resumeMigrations(ctx); err != nil {
		return err
	}
	var lns []net.Listener
	if c.cfg.Listen != "" {
		ln, err := net.Listen("tcp", c.cfg.Listen)
		if err != nil {
			return fmt.Errorf("listen on %s: %w", c.cfg.Listen, err)
		}
		lns = append(lns, tls.NewListener(ln, c.serverTLS()))
	}
	if c.cfg.Socket != "" {
		_ = os.Remove(c.cfg.Socket)
		ln, err := net.Listen("unix", c.cfg.Socket)
		if err != nil {
			for _, l := range lns {
				l.Close()
			}
			return fmt.Errorf("listen on %s: %w", c.cfg.Socket, err)
		}
		_ = os.Chmod(c.cfg.Socket, 0o600)
		lns = append(lns, audit.PeerListener(ln)) // the audit trail names the Unix user of each client
	}
	// The audit trail is trimmed now and daily, schedules run when due, and bandwidth
	// caps follow the migrations admitted, until Run returns.
	bgCtx, stopBG := context.WithCancel(ctx)
	defer stopBG()
	c.wg.Add(6)
	go func() {
		defer c.wg.Done()
		c.trail.Retain(bgCtx, c.cfg.AuditRetention)
	}()
	go func() {
		defer c.wg.Done()
		c.runSchedules(bgCtx)
	}()
	go func() {
		defer c.wg.Done()
		c.rebalance(bgCtx)
	}()
	go func() {
		defer c.wg.Done()
		c.runPlans(bgCtx)
	}()
	go func() {
		defer c.wg.Done()
		c.runPower(bgCtx)
	}()
	go func() {
		defer c.wg.Done()
		c.runBalancer(bgCtx)
	}()
	c.log.Info("center running", "listen", c.cfg.Listen, "socket", c.cfg.Socket, "data", c.cfg.DataDir, "ca", c.ca.Fingerprint())
	runErr := c.cfg.HTTP.Serve(ctx, c.routes(false), lns...)
	if c.cfg.Socket != "" {
		_ = os.Remove(c.cfg.Socket)
	}
	return runErr
}

// agent returns a client for a host's agent: over mutual TLS, expecting the host's own
// certificate, not revoked. Calls to one host share a pool of keep-alive connections
// (one TLS handshake, not one per call); the pool is replaced when the host's URL
// changes and dropped when its certificates are revoked.
func (c *Center) agent(h store.HostRecord, timeout time.Duration) (*api.Client, error) {
	return c.agents.Get(h.Facts.Name, h.Facts.AgentURL, timeout)
}

// CAFingerprint is the fingerprint of the cluster's CA.
func (c *Center) CAFingerprint() string { return c.ca.Fingerprint() }

func (c *Center) connected(h store.HostRecord) bool {
	return c.now().Sub(h.LastHeartbeat) < c.cfg.HeartbeatTimeout
}
