package center

import (
	"context"
	"errors"
	"fmt"
	"hash/maphash"
	"net/http"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/godwit/godwit/internal/api"
	"github.com/godwit/godwit/internal/audit"
	"github.com/godwit/godwit/internal/pki"
	"github.com/godwit/godwit/internal/store"
)

// hostName checks a host name: canonical lower case, since TLS matches names without
// regard to case (a certificate for GODWIT-CENTER would pass for the center's, HOST-1
// for host-1), and never the center's own name.
func hostName(s string) error {
	if err := nameRule("host")(s); err != nil {
		return err
	}
	if strings.EqualFold(s, pki.CenterName) {
		return api.BadRequest("%s is the center's own name, in any case; choose another host name", pki.CenterName)
	}
	if s != strings.ToLower(s) {
		return api.BadRequest("host name %q has capital letters; host names are lower case (certificates match names without regard to case): use %q", s, strings.ToLower(s))
	}
	return nil
}

// heartbeat records a host's facts, takes the VM states it reports as observed state,
// and answers with the revoked certificates and the audit trail's newest checkpoint.
func (c *Center) heartbeat(ctx context.Context, f api.HostFacts) (api.HeartbeatReply, error) {
	var rep api.HeartbeatReply
	// The host's checkpoint is the trail's (in memory), not stored with the facts: the
	// database is what it vouches for.
	held := f.AuditCheckpoint
	f.AuditCheckpoint = nil
	if err := c.heartbeat1(ctx, f); err != nil {
		return rep, err
	}
	var err error
	rep.RevokedSerials, err = c.hostCerts.revokedList(ctx, c.now(), c.store.RevokedSerials)
	if err != nil {
		return rep, err
	}
	if rep.AuditCheckpoint, err = c.trail.Checkpoint(ctx, f.Name, held); err != nil {
		c.log.Error("no audit checkpoint for a host this time", "host", f.Name, "err", err)
	}
	return rep, nil
}

// heartbeat1 saves a host's report and reconciles its VMs with it.
func (c *Center) heartbeat1(ctx context.Context, f api.HostFacts) error {
	if err := hostName(f.Name); err != nil {
		return err
	}
	if !strings.HasPrefix(f.AgentURL, "https://") {
		return api.BadRequest("heartbeat of host %s has agent_url %q; agents serve only over TLS: an https:// URL", f.Name, f.AgentURL)
	}
	if len(f.Refusals) > 0 {
		c.recordRefusals(ctx, f.Name, f.Refusals)
		f.Refusals = nil
	}
	now := c.now()
	registered, err := c.store.SaveHeartbeat(ctx, f, now)
	if err != nil {
		return err
	}
	if registered {
		c.log.Info("host registered", "host", f.Name, "agent", f.AgentURL)
	}
	// A host that reports what it reported last time, when that was found to agree with
	// the store in every way and the store has not changed since, has nothing to tell.
	sum, v0 := c.reportSum(f.VMs), c.store.Version()
	if m, ok := c.agreed.Load(f.Name); ok && m.(agreement) == (agreement{sum: sum, version: v0}) {
		return nil
	}
	c.agreed.Delete(f.Name)
	// Only this host's VMs: a heartbeat's cost must not grow with the cluster.
	vms, err := c.store.VMStatesOn(ctx, f.Name)
	if err != nil {
		return err
	}
	if err := c.reconcileHosts(ctx, f, vms, now); err != nil {
		return err
	}
	reported := map[string]api.VMStatus{}
	for _, s := range f.VMs {
		reported[s.Name] = s
	}
	// agrees stays true while every VM reported is recorded here as reported, and every
	// VM recorded here is reported, none migrating.
	agrees := len(vms) == len(reported)
	for _, r := range vms {
		if c.migrating(r.Spec.Name) {
			agrees = false
			continue // a migration's outcome, not a heartbeat, moves the VM
		}
		s, ok := reported[r.Spec.Name]
		switch {
		case ok && s.UUID == r.Spec.UUID:
			if s.State != r.State || s.Error != r.Error || s.PID != r.PID || s.Accel != r.Accel {
				agrees = false
				if err := c.store.SetState(ctx, r.Spec.Name, s, now); err != nil && !errors.Is(err, store.ErrNotFound) {
					return err
				}
			}
		case now.Sub(r.Created) > c.cfg.HeartbeatTimeout && r.State != api.VMError:
			agrees = false
			// Being defined right now is the only innocent reason for a host not to know a VM.
			msg := fmt.Sprintf("host %s does not report this VM", f.Name)
			if err := c.store.SetState(ctx, r.Spec.Name, api.VMStatus{State: api.VMError, Error: msg}, now); err != nil && !errors.Is(err, store.ErrNotFound) {
				return err
			}
		default:
			agrees = false // not reported yet, or another VM of that name
		}
	}
	if agrees && c.store.Version() == v0 {
		c.agreed.Store(f.Name, agreement{sum: sum, version: v0})
	}
	return nil
}

// agreement is what a host last reported of its VMs (a hash) when it agreed with the
// store at a store version.
type agreement struct {
	sum     uint64
	version uint64
}

// reportSum hashes what a heartbeat reports of each VM that the center compares.
func (c *Center) reportSum(vms []api.VMStatus) uint64 {
	var h maphash.Hash
	h.SetSeed(c.sumSeed)
	for _, s := range vms {
		for _, f := range []string{s.Name, s.UUID, s.State, s.Error, s.Accel, strconv.Itoa(s.PID)} {
			h.WriteString(f)
			h.WriteByte(0)
		}
	}
	return h.Sum64()
}

// reconcileHosts corrects the host of each VM that host f reports running while the
// center records it on another host, when the evidence leaves no doubt: no migration of
// the VM is under way, and the recorded host is connected, has reported since the VM's
// record last changed (so a report sent before a migration moved the VM is not taken
// for news) and does not run it. This is how the inventory comes to match where QEMU
// really runs after a partition or a lost outcome. Each correction is logged and
// recorded in the audit trail.
//
// here are the VMs recorded on host f: only a VM reported but not among them is looked up.
func (c *Center) reconcileHosts(ctx context.Context, f api.HostFacts, here []store.VMRecord, now time.Time) error {
	mine := make(map[string]bool, len(here))
	for _, r := range here {
		mine[r.Spec.Name] = true
	}
	for _, s := range f.VMs {
		if mine[s.Name] || s.State != api.VMRunning || c.migrating(s.Name) {
			continue
		}
		r, err := c.store.VM(ctx, s.Name)
		if errors.Is(err, store.ErrNotFound) {
			continue
		}
		if err != nil {
			return err
		}
		if r.Host == f.Name || !strings.EqualFold(r.Spec.UUID, s.UUID) {
			continue
		}
		active, err := c.store.Migrations(ctx, s.Name, true, 1)
		if err != nil {
			return err
		}
		if len(active) > 0 {
			continue // the migration's outcome moves the VM
		}
		there, known := c.reports(ctx, r.Host, r.Spec.UUID, r.Updated)
		if !known || there != nil && there.State != api.VMStopped && there.State != api.VMError {
			continue // the recorded host is silent, or has the VM too: no correction on doubt
		}
		rec := audit.Record{Actor: audit.CenterActor, ActorKind: audit.KindSystem, Action: "vm.reconcile", Target: s.Name,
			Outcome: audit.Succeeded}
		rec.Params, _ = audit.EncodeParams(map[string]any{"recorded_host": r.Host, "runs_on": f.Name, "uuid": s.UUID, "pid": s.PID,
			"reason": fmt.Sprintf("host %s reports VM %s running, host %s does not, and no migration of it is under way", f.Name, s.Name, r.Host)})
		// The correction and its record commit together.
		if err := c.store.Move(store.WithTxHook(ctx, c.trail.AppendHook(rec)), s.Name, f.Name, s, now); err != nil {
			if errors.Is(err, store.ErrNotFound) {
				continue
			}
			return fmt.Errorf("correct the host of VM %s: %w", s.Name, err)
		}
		c.log.Warn("VM runs on another host than recorded; record corrected", "vm", s.Name, "recorded", r.Host, "runs_on", f.Name, "pid", s.PID)
	}
	return nil
}

func (c *Center) hostView(ctx context.Context, h store.HostRecord, vmCount map[string]int, maint map[string]store.Maintenance) api.Host {
	out := api.Host{HostFacts: h.Facts, LastHeartbeat: h.LastHeartbeat, Registered: h.Registered, State: api.HostDisconnected}
	if c.connected(h) {
		out.State = api.HostConnected
	}
	if m, ok := maint[h.Facts.Name]; ok {
		out.Maintenance = c.maintenanceView(ctx, h.Facts.Name, m)
	}
	out.Baseline = "unknown"
	if err := c.providesModel(ctx, h, c.cfg.CPUBaseline); err == nil {
		out.Baseline = "ok"
	} else if !errors.Is(err, errCPUUnknown) {
		out.Baseline = err.Error()
	}
	out.VMCount = vmCount[h.Facts.Name]
	return out
}

// listHosts returns a page of hosts (see api.Page), and how many there are.
func (c *Center) listHosts(ctx context.Context, p api.Page) ([]api.Host, int, error) {
	hosts, total, err := c.store.HostsPage(ctx, p.After, p.Limit)
	if err != nil {
		return nil, 0, err
	}
	vms, err := c.store.VMCounts(ctx)
	if err != nil {
		return nil, 0, err
	}
	maint, err := c.store.Maintenances(ctx)
	if err != nil {
		return nil, 0, err
	}
	out := make([]api.Host, 0, len(hosts))
	for _, h := range hosts {
		out = append(out, c.hostView(ctx, h, vms, maint))
	}
	return out, total, nil
}

func (c *Center) getHost(ctx context.Context, name string) (api.Host, error) {
	h, err := c.store.Host(ctx, name)
	if errors.Is(err, store.ErrNotFound) {
		return api.Host{}, api.NotFound("no host named %s; `godwit host list` shows the hosts", name)
	}
	if err != nil {
		return api.Host{}, err
	}
	vms, err := c.store.VMCounts(ctx)
	if err != nil {
		return api.Host{}, err
	}
	maint, err := c.store.Maintenances(ctx)
	if err != nil {
		return api.Host{}, err
	}
	return c.hostView(ctx, h, vms, maint), nil
}

// datastores aggregates the datastores the hosts report, by name.
func (c *Center) datastores(ctx context.Context) ([]api.Datastore, error) {
	hosts, err := c.store.Hosts(ctx)
	if err != nil {
		return nil, err
	}
	byName := map[string]*api.Datastore{}
	for _, h := range hosts {
		for _, d := range h.Facts.Datastores {
			ds, ok := byName[d.Name]
			if !ok {
				cp := d
				cp.Hosts = nil
				ds = &cp
				byName[d.Name] = ds
			}
			ds.Hosts = append(ds.Hosts, h.Facts.Name)
		}
	}
	out := make([]api.Datastore, 0, len(byName))
	for _, d := range byName {
		out = append(out, *d)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out, nil
}

// networks aggregates the networks the hosts report, with the center's address pools.
func (c *Center) networks(ctx context.Context) ([]api.Network, error) {
	hosts, err := c.store.Hosts(ctx)
	if err != nil {
		return nil, err
	}
	byName := map[string]*api.Network{}
	for _, h := range hosts {
		for _, n := range h.Facts.Networks {
			nw, ok := byName[n.Name]
			if !ok {
				nw = &api.Network{Name: n.Name, MTU: n.MTU}
				byName[n.Name] = nw
			}
			nw.Hosts = append(nw.Hosts, h.Facts.Name)
		}
	}
	for name, p := range c.cfg.Pools {
		nw, ok := byName[name]
		if !ok {
			nw = &api.Network{Name: name}
			byName[name] = nw
		}
		nw.Subnet = p.Subnet.String()
		nw.Pool = fmt.Sprintf("%s-%s", p.First, p.Last)
	}
	out := make([]api.Network, 0, len(byName))
	for _, n := range byName {
		out = append(out, *n)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out, nil
}

// nameRule returns a validator for names of the given kind: 1–63 characters, letters,
// digits, '-', '_' and '.', starting with a letter or digit.
func nameRule(kind string) func(string) error {
	return func(s string) error {
		if s == "" {
			return api.BadRequest("the %s name is empty", kind)
		}
		if len(s) > 63 {
			return api.BadRequest("%s name %q is longer than 63 characters", kind, s)
		}
		for i, r := range s {
			ok := r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || (i > 0 && strings.ContainsRune("-_.", r))
			if !ok {
				return api.BadRequest("%s name %q may hold only letters, digits, '-', '_' and '.', and must start with a letter or digit", kind, s)
			}
		}
		return nil
	}
}

func writeResult(w http.ResponseWriter, status int, v any, err error) {
	if err != nil {
		api.WriteError(w, err)
		return
	}
	api.WriteJSON(w, status, v)
}
