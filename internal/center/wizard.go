package center

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"sort"
	"strings"
	"time"

	"github.com/godwit/godwit/internal/admission"
	"github.com/godwit/godwit/internal/api"
	"github.com/godwit/godwit/internal/placement"
	"github.com/godwit/godwit/internal/qemu"
	"github.com/godwit/godwit/internal/store"
)

// The migration wizard: compatibility checks and recommendations by the placement
// engine (internal/placement) fed with what the center knows now — hosts' heartbeats
// (memory, load, guest CPU capabilities and models, datastores and their images,
// networks, QEMU), maintenance mode, the migration slots in use and queued (the
// admission limiter) and the migration traffic on each host's link. VM creation
// (place) feeds the same engine the same hosts. Nothing here changes anything.

// modelFlags returns the CPUID flags that model needs, as the QEMU of host h defines it.
// Catalogs are fetched from agents once per distinct catalog and kept.
func (c *Center) modelFlags(ctx context.Context, h store.HostRecord, model string) ([]string, error) {
	key := h.Facts.GuestCPU.Catalog
	if key == "" {
		return nil, fmt.Errorf("host %s has not reported its guest CPU capabilities yet", h.Facts.Name)
	}
	var caps qemu.CPUCaps
	if v, ok := c.cpuCatalogs.Load(key); ok {
		caps = v.(qemu.CPUCaps)
	} else {
		cl, err := c.agent(h, 10*time.Second)
		if err != nil {
			return nil, err
		}
		if err := cl.Do(ctx, http.MethodGet, "/agent/v1/cpu-models", nil, &caps); err != nil {
			return nil, hostError(h.Facts.Name, "list its CPU models", err)
		}
		c.cpuCatalogs.Store(key, caps)
	}
	m, ok := caps.Model(model)
	if !ok {
		return nil, fmt.Errorf("QEMU on host %s has no CPU model %q", h.Facts.Name, model)
	}
	return m.Flags, nil
}

// vmDatastores lists the datastores a VM's disks and boot files are on.
func vmDatastores(s api.VMSpec) []string {
	set := map[string]bool{}
	for _, d := range s.Disks {
		set[d.Datastore] = true
	}
	for _, p := range []string{s.Boot.Kernel, s.Boot.Initrd} {
		if name, _, ok := strings.Cut(strings.TrimPrefix(p, "["), "]"); ok && strings.HasPrefix(p, "[") {
			set[strings.TrimSpace(name)] = true
		}
	}
	return slices.Sorted(func(yield func(string) bool) {
		for k := range set {
			if k != "" && !yield(k) {
				return
			}
		}
	})
}

// vmNetworks lists the networks of a VM's NICs.
func vmNetworks(s api.VMSpec) []string {
	var n []string
	for _, nic := range s.NICs {
		if !slices.Contains(n, nic.Network) {
			n = append(n, nic.Network)
		}
	}
	sort.Strings(n)
	return n
}

// vmInput describes a VM on its source host for the placement checks.
func (c *Center) vmInput(ctx context.Context, r store.VMRecord, src store.HostRecord) placement.VM {
	v := placement.VM{
		Name: r.Spec.Name, Host: r.Host, MemoryMiB: r.Spec.MemoryMiB, CPUs: r.Spec.CPUs, CPUModel: r.Spec.CPUModel,
		Datastores: vmDatastores(r.Spec), Networks: vmNetworks(r.Spec),
		QEMUVersion: src.Facts.QEMUVersion, Accel: src.Facts.Accel,
	}
	if v.CPUModel != "" {
		if flags, err := c.modelFlags(ctx, src, v.CPUModel); err == nil {
			v.CPUFlags = flags
		} else {
			c.log.Warn("the flags of the VM's CPU model are not known; the CPU check is limited to model names", "vm", v.Name, "err", err)
		}
	}
	return v
}

// hostInputs describes every host as a destination, with live load and migration slots.
func (c *Center) hostInputs(ctx context.Context, hosts []store.HostRecord) ([]placement.Host, error) {
	maint, err := c.store.Maintenances(ctx)
	if err != nil {
		return nil, err
	}
	snap := c.limiter.Snapshot()
	slots := map[string]admission.ResourceState{}
	for _, rs := range snap.Resources {
		slots[rs.Resource] = rs
	}
	linkBytes := map[string]float64{}
	c.live.Range(func(_, v any) bool {
		m := v.(api.Migration)
		if m.State == api.MigrationRunning {
			linkBytes[m.Source] += m.Progress.TransferRate
			linkBytes[m.Destination] += m.Progress.TransferRate
		}
		return true
	})
	out := make([]placement.Host, 0, len(hosts))
	for _, h := range hosts {
		f := h.Facts
		res := admission.Host(f.Name)
		limit, _ := c.cfg.MigrationLimits.Limit(res)
		ph := placement.Host{
			Name: f.Name, Connected: c.connected(h), Health: f.Health, HealthReason: f.HealthReason,
			Cores: max(f.CPU.Threads, f.CPU.Cores), Load: f.Load, MemoryMiB: f.MemoryMiB, FreeMemoryMiB: f.FreeMemoryMiB,
			CPUFlags: f.GuestCPU.Flags, CPUModels: f.GuestCPU.Models, QEMUVersion: f.QEMUVersion, Accel: f.Accel,
			MigrationsRunning: slots[res].InUse, MigrationsQueued: len(slots[res].Waiting), MigrationSlots: limit,
			LinkLoad: linkBytes[f.Name] / float64(c.cfg.LinkRate),
		}
		_, ph.Maintenance = maint[f.Name]
		for _, d := range f.Datastores {
			ph.Datastores = append(ph.Datastores, d.Name)
			for _, img := range d.Images {
				ph.Images = append(ph.Images, img.Name)
			}
		}
		for _, n := range f.Networks {
			ph.Networks = append(ph.Networks, n.Name)
		}
		out = append(out, ph)
	}
	return out, nil
}

// wizardInputs gathers the VM and every host for the checks.
func (c *Center) wizardInputs(ctx context.Context, name string) (store.VMRecord, placement.VM, []placement.Host, map[string]store.HostRecord, error) {
	r, err := c.record(ctx, name)
	if err != nil {
		return r, placement.VM{}, nil, nil, err
	}
	recs, err := c.store.Hosts(ctx)
	if err != nil {
		return r, placement.VM{}, nil, nil, err
	}
	byName := map[string]store.HostRecord{}
	for _, h := range recs {
		byName[h.Facts.Name] = h
	}
	src, ok := byName[r.Host]
	if !ok {
		return r, placement.VM{}, nil, nil, api.Conflict("VM %s is on host %s, which the center does not know", name, r.Host)
	}
	hosts, err := c.hostInputs(ctx, recs)
	if err != nil {
		return r, placement.VM{}, nil, nil, err
	}
	return r, c.vmInput(ctx, r, src), hosts, byName, nil
}

// checkMigration checks every host (or only to) as a destination for VM name.
func (c *Center) checkMigration(ctx context.Context, name, to string) (api.MigrationCheck, error) {
	r, v, hosts, byName, err := c.wizardInputs(ctx, name)
	if err != nil {
		return api.MigrationCheck{}, err
	}
	if to != "" {
		if _, ok := byName[to]; !ok {
			return api.MigrationCheck{}, invalid("there is no host named %q; `godwit host list` shows the hosts", to)
		}
	}
	if to != "" {
		hosts = slices.DeleteFunc(hosts, func(h placement.Host) bool { return h.Name != to })
	}
	out := api.MigrationCheck{VM: name, Source: r.Host, Hosts: []api.HostCheck{}}
	for i, fs := range placement.NewIndex(hosts).Check(v) {
		hc := api.HostCheck{Host: hosts[i].Name, Errors: []placement.Finding{}, Warnings: []placement.Finding{}}
		for _, f := range fs {
			if f.Blocking() {
				hc.Errors = append(hc.Errors, f)
			} else {
				hc.Warnings = append(hc.Warnings, f)
			}
		}
		hc.Compatible = len(hc.Errors) == 0
		out.Hosts = append(out.Hosts, hc)
	}
	return out, nil
}

// recommend ranks the destinations for VM name.
func (c *Center) recommend(ctx context.Context, name string) (api.Recommendation, error) {
	_, v, hosts, _, err := c.wizardInputs(ctx, name)
	if err != nil {
		return api.Recommendation{}, err
	}
	return placement.Recommend(v, hosts, placement.DefaultWeights())
}

// destinationFindings checks one destination for a migration about to be asked for; an
// error says why it is refused, in the findings' words.
func (c *Center) destinationFindings(ctx context.Context, name, to string) ([]placement.Finding, error) {
	chk, err := c.checkMigration(ctx, name, to)
	if err != nil {
		return nil, err
	}
	if len(chk.Hosts) != 1 {
		return nil, invalid("there is no host named %q; `godwit host list` shows the hosts", to)
	}
	hc := chk.Hosts[0]
	if !hc.Compatible {
		msgs := make([]string, len(hc.Errors))
		codes := make([]string, len(hc.Errors))
		for i, f := range hc.Errors {
			msgs[i], codes[i] = f.Message, f.Code
		}
		return nil, api.Errorf(422, hc.Errors[0].Code, "host %s cannot take VM %s: %s (`godwit vm migrate %s --check` shows every host)",
			to, name, strings.Join(msgs, " "), name)
	}
	return hc.Warnings, nil
}

// errCPUUnknown means a host has not reported its guest CPU capabilities yet.
var errCPUUnknown = errors.New("the host has not reported its guest CPU capabilities yet")

// providesModel says whether host h can give guests CPU model; if not, the error names
// the flags it lacks.
func (c *Center) providesModel(ctx context.Context, h store.HostRecord, model string) error {
	g := h.Facts.GuestCPU
	if len(g.Models) == 0 {
		return errCPUUnknown
	}
	if slices.Contains(g.Models, model) {
		return nil
	}
	flags, err := c.modelFlags(ctx, h, model)
	if err != nil {
		return fmt.Errorf("host %s cannot provide CPU model %s (%v)", h.Facts.Name, model, err)
	}
	var missing []string
	for _, f := range flags {
		if !slices.Contains(g.Flags, f) {
			missing = append(missing, f)
		}
	}
	limited := ""
	if g.LimitedTo != "" {
		limited = " (it is limited to " + g.LimitedTo + ")"
	}
	return fmt.Errorf("host %s cannot provide CPU model %s%s: it lacks %s", h.Facts.Name, model, limited, strings.Join(missing, ", "))
}
