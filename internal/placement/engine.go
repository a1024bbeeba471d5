package placement

import (
	"fmt"
	"slices"
	"strings"
)

// Checker names, in the order an Engine runs them. The error checkers come first, each
// refusing a host with findings of its codes; the warning checkers follow.
const (
	// CheckerSameHost refuses the VM's source host (same_host). Needs a source.
	CheckerSameHost = "same-host"
	// CheckerConnected refuses a host whose agent is not connected (host_disconnected).
	CheckerConnected = "connected"
	// CheckerHealth refuses a host whose health is not HealthOK (host_unhealthy).
	CheckerHealth = "health"
	// CheckerMaintenance refuses a host in maintenance mode (host_maintenance).
	CheckerMaintenance = "maintenance"
	// CheckerAccel refuses a host whose accelerator is not the source's
	// (accel_mismatch). Needs a source.
	CheckerAccel = "accel"
	// CheckerQEMU refuses a host whose QEMU is not the source's release
	// (qemu_incompatible). Needs a source.
	CheckerQEMU = "qemu-release"
	// CheckerCPUFlags refuses a host that lacks CPU flags the VM's model needs
	// (cpu_unsupported).
	CheckerCPUFlags = "cpu-flags"
	// CheckerCPUModel refuses, when the VM's CPU flags are unknown, a host that lists
	// its CPU models without the VM's (cpu_unsupported).
	CheckerCPUModel = "cpu-model"
	// CheckerMemory refuses a host whose free memory does not fit the VM, by
	// MemoryFits (memory_short).
	CheckerMemory = "memory"
	// CheckerDatastores refuses a host that cannot reach a datastore of the VM
	// (datastore_missing), one finding per datastore.
	CheckerDatastores = "datastores"
	// CheckerNetworks refuses a host that lacks a network of the VM
	// (network_missing), one finding per network.
	CheckerNetworks = "networks"
	// CheckerImage refuses a host that does not hold the image a VM being created
	// boots from (image_missing).
	CheckerImage = "image"
	// CheckerLoad warns of a loaded host (host_loaded).
	CheckerLoad = "load"
	// CheckerMemoryTight warns of a host left with little free memory
	// (memory_tight).
	CheckerMemoryTight = "memory-tight"
	// CheckerSlots warns of a host whose migration slots are all in use
	// (slots_full).
	CheckerSlots = "slots"
	// CheckerLink warns of a busy migration link (link_busy).
	CheckerLink = "link"
)

// checkFunc appends the findings of one check of the VM p against host e, whose
// measures are m.
type checkFunc func(p *prepared, e *entry, m *metrics, fs []Finding) []Finding

// checker is one named check of an Engine.
type checker struct {
	name string
	// source means the check compares the host with the VM's source host; it is
	// skipped for an initial placement (VM.Host empty), which has none.
	source bool
	// warns means the check only gives warnings; Recommend skips it for a host
	// already refused.
	warns bool
	check checkFunc
}

// allCheckers are every checker, in the order they run: the errors in the order of the
// Code constants, then the warnings.
var allCheckers = []checker{
	{name: CheckerSameHost, source: true, check: checkSameHost},
	{name: CheckerConnected, check: checkConnected},
	{name: CheckerHealth, check: checkHealth},
	{name: CheckerMaintenance, check: checkMaintenance},
	{name: CheckerAccel, source: true, check: checkAccel},
	{name: CheckerQEMU, source: true, check: checkQEMU},
	{name: CheckerCPUFlags, check: checkCPUFlags},
	{name: CheckerCPUModel, check: checkCPUModel},
	{name: CheckerMemory, check: checkMemory},
	{name: CheckerDatastores, check: checkDatastores},
	{name: CheckerNetworks, check: checkNetworks},
	{name: CheckerImage, check: checkImage},
	{name: CheckerLoad, warns: true, check: warnLoad},
	{name: CheckerMemoryTight, warns: true, check: warnMemoryTight},
	{name: CheckerSlots, warns: true, check: warnSlots},
	{name: CheckerLink, warns: true, check: warnLink},
}

// Engine is the one placement engine, in the manner of Nomad's scheduler: a list of
// named feasibility checkers, each refusing a host with typed findings (Finding and its
// Code) or warning about it, then a list of named scorers that rank the hosts no checker
// refused, each keeping its criterion's score in the candidate's breakdown. VM creation,
// the migration wizard (check, recommend, bulk and scheduled --auto moves) and a
// destination agent's preflight all decide with it. An Engine is immutable and safe for
// concurrent use.
type Engine struct {
	checkers []checker
	scorers  []scorer
}

// defaultEngine runs every checker and every scorer.
var defaultEngine = &Engine{checkers: allCheckers, scorers: allScorers}

// DefaultEngine returns the engine with every checker and every scorer: the one Check,
// Recommend and NewIndex use.
func DefaultEngine() *Engine { return defaultEngine }

// NewEngine returns an engine that runs only the named checkers (the Checker
// constants), in their usual order, and every scorer; without names, every checker. A
// host checking a VM itself, for example, has no center to be connected to and no
// other hosts to compare. Unknown names are an error.
func NewEngine(checkers ...string) (*Engine, error) {
	if len(checkers) == 0 {
		return defaultEngine, nil
	}
	var unknown []string
	for _, n := range checkers {
		if !slices.ContainsFunc(allCheckers, func(c checker) bool { return c.name == n }) {
			unknown = append(unknown, fmt.Sprintf("%q", n))
		}
	}
	if len(unknown) > 0 {
		return nil, fmt.Errorf("placement engine: no checker named %s; the checkers are %s",
			strings.Join(unknown, ", "), strings.Join(defaultEngine.Checkers(), ", "))
	}
	en := &Engine{scorers: allScorers}
	for _, c := range allCheckers {
		if slices.Contains(checkers, c.name) {
			en.checkers = append(en.checkers, c)
		}
	}
	return en, nil
}

// Checkers returns the names of the engine's checkers, in the order they run.
func (en *Engine) Checkers() []string {
	out := make([]string, len(en.checkers))
	for i, c := range en.checkers {
		out[i] = c.name
	}
	return out
}

// Scorers returns the names of the engine's scorers, in breakdown order.
func (en *Engine) Scorers() []string {
	out := make([]string, len(en.scorers))
	for i, s := range en.scorers {
		out[i] = s.name
	}
	return out
}

// Index prepares hosts for checking and ranking VMs with the engine.
func (en *Engine) Index(hosts []Host) *Index {
	ix := newIndex(hosts)
	ix.engine = en
	return ix
}

// Check returns what stands between vm and host h by the engine's checkers: errors that
// forbid placing vm there, then warnings that do not (see the package Check).
func (en *Engine) Check(vm VM, h Host) []Finding {
	return en.Index([]Host{h}).Check(vm)[0]
}

// Recommend checks every host for vm with the engine and ranks the compatible ones with
// its scorers (see Index.Recommend).
func (en *Engine) Recommend(vm VM, hosts []Host, w Weights) (Recommendation, error) {
	return en.Index(hosts).Recommend(vm, w)
}

// evaluate runs the engine's checkers on one host; it also returns the measures the
// findings came from, which scoring reuses. With errorsOnly, it stops before the
// warnings once a checker refused the host.
func (en *Engine) evaluate(p *prepared, e *entry, errorsOnly bool) ([]Finding, metrics) {
	m := measure(&e.host, p.vm.MemoryMiB)
	var fs []Finding
	initial := p.vm.Host == ""
	for i := range en.checkers {
		c := &en.checkers[i]
		switch {
		case c.source && initial:
			continue
		case c.warns && errorsOnly && len(fs) > 0 && fs[0].Blocking():
			return fs, m // the warnings run after the errors, so fs holds only errors
		}
		fs = c.check(p, e, &m, fs)
	}
	return fs, m
}
