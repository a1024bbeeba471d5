package placement

import (
	"fmt"
	"math"
	"strings"
)

// Memory accounting and warning thresholds; doc.go explains them.
const (
	// HostReserveMiB is the free memory a destination keeps for its own
	// kernel, agent and page cache; it is never given to a VM.
	HostReserveMiB = 1024
	// VMOverheadMiB is what a VM costs a host beyond its guest memory: the
	// QEMU process, its device state, and the receive buffers of an incoming
	// migration.
	VMOverheadMiB = 256
	// LoadPerCoreThreshold is the 1-minute load per core above which a
	// destination is reported as loaded.
	LoadPerCoreThreshold = 0.8
	// MemoryTightFraction is the share of a destination's memory below which
	// its free memory after the move is reported as tight.
	MemoryTightFraction = 0.10
	// LinkBusyThreshold is the share of a destination's migration link in use
	// above which the link is reported as busy.
	LinkBusyThreshold = 0.7
)

// MemoryNeedMiB is what a VM of vmMiB of guest memory needs of a host: that memory plus
// VMOverheadMiB. It saturates rather than overflow.
func MemoryNeedMiB(vmMiB int) int {
	if vmMiB > math.MaxInt-VMOverheadMiB {
		return math.MaxInt
	}
	return vmMiB + VMOverheadMiB
}

// MemoryFits is the one memory rule of placement: a host with freeMiB of available
// memory can take a VM of vmMiB when, after keeping HostReserveMiB for itself, what is
// left holds MemoryNeedMiB(vmMiB). VM creation, the migration wizard and a destination
// agent's preflight all use it.
func MemoryFits(freeMiB, vmMiB int) bool {
	return freeMiB >= HostReserveMiB && freeMiB-HostReserveMiB >= MemoryNeedMiB(vmMiB)
}

// Check returns what stands between vm and host h: errors that forbid placing vm there,
// then warnings that do not. Errors come in the order of the Code constants, with one
// finding per missing datastore or network in name order; warnings in the order
// host_loaded, memory_tight, slots_full, link_busy. It returns nil when nothing is
// wrong. Check is DefaultEngine().Check; it has no side effects.
func Check(vm VM, h Host) []Finding {
	return defaultEngine.Check(vm, h)
}

// checkSameHost reports the VM's source host.
func checkSameHost(p *prepared, e *entry, _ *metrics, fs []Finding) []Finding {
	if p.vm.Host != "" && e.host.Name == p.vm.Host {
		fs = append(fs, errorf(CodeSameHost,
			"%s already runs on %s; choose a different destination host.", vmLabel(p.vm.Name), hostLabel(e.host.Name)))
	}
	return fs
}

// checkConnected reports a host whose agent is not connected.
func checkConnected(_ *prepared, e *entry, _ *metrics, fs []Finding) []Finding {
	if !e.host.Connected {
		fs = append(fs, errorf(CodeHostDisconnected,
			"%s is not connected to the center; wait for its agent to reconnect or choose another host.", hostLabel(e.host.Name)))
	}
	return fs
}

// checkHealth reports a host whose health is not HealthOK.
func checkHealth(_ *prepared, e *entry, _ *metrics, fs []Finding) []Finding {
	if e.host.Health != HealthOK {
		fs = append(fs, unhealthy(&e.host))
	}
	return fs
}

// checkMaintenance reports a host in maintenance mode.
func checkMaintenance(_ *prepared, e *entry, _ *metrics, fs []Finding) []Finding {
	if e.host.Maintenance {
		fs = append(fs, errorf(CodeHostMaintenance,
			"%s is in maintenance mode; take it out of maintenance or choose another host.", hostLabel(e.host.Name)))
	}
	return fs
}

// unhealthy is the host_unhealthy finding of h.
func unhealthy(h *Host) Finding {
	name := hostLabel(h.Name)
	switch {
	case h.Health == "":
		return errorf(CodeHostUnhealthy,
			"%s has not reported its health; wait for its next heartbeat or choose another host.", name)
	case h.HealthReason == "":
		return errorf(CodeHostUnhealthy,
			"%s is %s and gave no reason; check its agent or choose another host.", name, h.Health)
	default:
		return errorf(CodeHostUnhealthy,
			"%s is %s (%s); fix the host or choose another one.", name, h.Health, h.HealthReason)
	}
}

// checkAccel reports a host whose accelerator differs from the source's.
// An unknown source accelerator is not checked.
func checkAccel(p *prepared, e *entry, _ *metrics, fs []Finding) []Finding {
	src := normAccel(p.vm.Accel)
	dst := normAccel(e.host.Accel)
	switch {
	case src == "" || src == dst:
		return fs
	case dst == "":
		return append(fs, errorf(CodeAccelMismatch,
			"%s has not reported its accelerator yet, so it cannot be matched to %s's %s; wait for its agent to finish probing.",
			hostLabel(e.host.Name), vmLabel(p.vm.Name), src))
	default:
		return append(fs, errorf(CodeAccelMismatch,
			"%s runs guests with %s but %s runs with %s, and a VM cannot migrate between accelerators.",
			hostLabel(e.host.Name), dst, vmLabel(p.vm.Name), src))
	}
}

// normAccel returns an accelerator name in lower case without spaces.
func normAccel(a string) string { return strings.ToLower(strings.TrimSpace(a)) }

// checkQEMU reports a destination QEMU of another release (major.minor) than the
// source's — older ones can never read the stream, newer ones define the unversioned
// machine type differently — and versions that cannot be parsed.
func checkQEMU(p *prepared, e *entry, _ *metrics, fs []Finding) []Finding {
	name := hostLabel(e.host.Name)
	switch {
	case p.qemuErr != nil:
		return append(fs, errorf(CodeQEMUIncompatible,
			"%s's source QEMU version %q cannot be parsed, so compatibility with %s cannot be verified.",
			vmLabel(p.vm.Name), p.vm.QEMUVersion, name))
	case e.qemuErr != nil && strings.TrimSpace(e.host.QEMUVersion) == "":
		return append(fs, errorf(CodeQEMUIncompatible,
			"%s has not reported its QEMU version, so migration compatibility cannot be verified.", name))
	case e.qemuErr != nil:
		return append(fs, errorf(CodeQEMUIncompatible,
			"%s reports QEMU version %q, which cannot be parsed, so migration compatibility cannot be verified.",
			name, e.host.QEMUVersion))
	case e.qemu.olderStream(p.qemu):
		return append(fs, errorf(CodeQEMUIncompatible,
			"%s runs QEMU %s, older than %s's source QEMU %s, and a migration stream cannot go back to an older QEMU; upgrade the host first.",
			name, e.host.QEMUVersion, vmLabel(p.vm.Name), p.vm.QEMUVersion))
	case !e.qemu.sameMachines(p.qemu):
		return append(fs, errorf(CodeQEMUIncompatible,
			"%s runs QEMU %s and %s's source runs %s: VMs run the unversioned q35 machine, which QEMU %d.%d and %d.%d define differently, so they migrate only between the same QEMU release; upgrade the source too.",
			name, e.host.QEMUVersion, vmLabel(p.vm.Name), p.vm.QEMUVersion, e.qemu.major, e.qemu.minor, p.qemu.major, p.qemu.minor))
	}
	return fs
}

// cpuModelLabel names the VM's CPU model in a message.
func (p *prepared) cpuModelLabel() string {
	if p.vm.CPUModel != "" {
		return "CPU model " + p.vm.CPUModel
	}
	return "the VM's CPU baseline"
}

// checkCPUFlags reports the CPU flags the VM's model needs and the host lacks, or a
// host that has reported no CPU flags at all while the VM needs some.
func checkCPUFlags(p *prepared, e *entry, _ *metrics, fs []Finding) []Finding {
	missing := p.flags.missing(e.flags)
	switch {
	case len(missing) == 0:
		return fs
	case len(e.flags) == 0:
		return append(fs, errorf(CodeCPUUnsupported,
			"%s has not reported the CPU flags it can give guests, so it cannot be matched to %s; wait for its agent to finish probing its CPUs.",
			hostLabel(e.host.Name), p.cpuModelLabel()))
	}
	return append(fs, errorf(CodeCPUUnsupported, "%s cannot provide %s: it lacks %s.",
		hostLabel(e.host.Name), p.cpuModelLabel(), strings.Join(missing, ", ")))
}

// checkCPUModel is the CPU check when the flags of the VM's model are unknown: a host
// that lists the CPU models it provides, without the VM's, cannot take it. A host that
// has listed none yet is not checked.
func checkCPUModel(p *prepared, e *entry, _ *metrics, fs []Finding) []Finding {
	if len(p.flags.names) > 0 || p.vm.CPUModel == "" || len(e.models) == 0 || p.model.in(e.models) {
		return fs
	}
	return append(fs, errorf(CodeCPUUnsupported, "%s cannot provide CPU model %s: it provides only %s.",
		hostLabel(e.host.Name), p.vm.CPUModel, strings.Join(p.models.namesOf(e.models), ", ")))
}

// checkMemory reports a host whose free memory does not fit the VM (MemoryFits).
func checkMemory(p *prepared, e *entry, m *metrics, fs []Finding) []Finding {
	if !m.short {
		return fs
	}
	h := &e.host
	if h.FreeMemoryMiB < HostReserveMiB {
		return append(fs, errorf(CodeMemoryShort,
			"%s has only %d MiB free, less than its %d MiB reserve, and %s needs %d MiB (%d MiB of memory plus %d MiB overhead).",
			hostLabel(h.Name), h.FreeMemoryMiB, HostReserveMiB,
			vmLabel(p.vm.Name), p.needMiB, p.vm.MemoryMiB, VMOverheadMiB))
	}
	return append(fs, errorf(CodeMemoryShort,
		"%s has %d MiB free, %d MiB after its %d MiB reserve, but %s needs %d MiB (%d MiB of memory plus %d MiB overhead).",
		hostLabel(h.Name), h.FreeMemoryMiB, h.FreeMemoryMiB-HostReserveMiB, HostReserveMiB,
		vmLabel(p.vm.Name), p.needMiB, p.vm.MemoryMiB, VMOverheadMiB))
}

// checkDatastores reports each datastore of the VM the host cannot reach.
func checkDatastores(p *prepared, e *entry, _ *metrics, fs []Finding) []Finding {
	for _, ds := range p.datastores.missing(e.datastores) {
		fs = append(fs, errorf(CodeDatastoreMissing,
			"%s cannot reach datastore %s, which %s's disks live on; attach the datastore to the host or move the disks first.",
			hostLabel(e.host.Name), ds, vmLabel(p.vm.Name)))
	}
	return fs
}

// checkNetworks reports each network of the VM the host lacks.
func checkNetworks(p *prepared, e *entry, _ *metrics, fs []Finding) []Finding {
	for _, n := range p.networks.missing(e.networks) {
		fs = append(fs, errorf(CodeNetworkMissing,
			"%s has no network %s, which %s's NICs use; add the network to the host first.",
			hostLabel(e.host.Name), n, vmLabel(p.vm.Name)))
	}
	return fs
}

// checkImage reports a host that does not hold the image a VM being created boots
// from. A VM that names no image (it boots from a kernel or a disk) is not checked.
func checkImage(p *prepared, e *entry, _ *metrics, fs []Finding) []Finding {
	if p.vm.Image == "" || p.image.in(e.images) {
		return fs
	}
	return append(fs, errorf(CodeImageMissing,
		"%s has no image %s on its datastores, which %s boots from; copy the image to a datastore of the host or choose another host.",
		hostLabel(e.host.Name), p.vm.Image, vmLabel(p.vm.Name)))
}

// warnLoad warns of a load per core above LoadPerCoreThreshold.
func warnLoad(_ *prepared, e *entry, m *metrics, fs []Finding) []Finding {
	if !(m.loadPerCore <= LoadPerCoreThreshold) {
		fs = append(fs, warnf(CodeHostLoaded,
			"%s is busy with a load of %.2f per core (above %.2f), so the VM may run slower there.",
			hostLabel(e.host.Name), m.loadPerCore, LoadPerCoreThreshold))
	}
	return fs
}

// warnMemoryTight warns of a host left with less than MemoryTightFraction of its memory
// free. Memory is not called tight when it is already short.
func warnMemoryTight(_ *prepared, e *entry, m *metrics, fs []Finding) []Finding {
	if !m.short && m.freeShare < MemoryTightFraction {
		fs = append(fs, warnf(CodeMemoryTight,
			"%s would have only %d MiB (%.0f%%) of its %d MiB of memory free after the move, below the %.0f%% margin.",
			hostLabel(e.host.Name), m.freeAfterMiB, 100*m.freeShare, m.totalMiB, 100*MemoryTightFraction))
	}
	return fs
}

// warnSlots warns of a host whose migration slots are all in use.
func warnSlots(_ *prepared, e *entry, m *metrics, fs []Finding) []Finding {
	if m.running >= m.slots {
		fs = append(fs, warnf(CodeSlotsFull,
			"%s has no free migration slot (%d running, %s), so the migration will queue until a slot frees.",
			hostLabel(e.host.Name), m.running, plural(m.slots, "slot", "slots")))
	}
	return fs
}

// warnLink warns of a migration link busier than LinkBusyThreshold.
func warnLink(_ *prepared, e *entry, m *metrics, fs []Finding) []Finding {
	if !(m.link <= LinkBusyThreshold) {
		fs = append(fs, warnf(CodeLinkBusy,
			"%s's migration link is %.0f%% busy (above %.0f%%), so the migration will be slower and may struggle to converge.",
			hostLabel(e.host.Name), 100*m.link, 100*LinkBusyThreshold))
	}
	return fs
}

// metrics are the measures of a host that its warnings and scores share.
type metrics struct {
	loadPerCore  float64
	totalMiB     int     // total memory, at least the free memory
	freeAfterMiB int     // free memory after the move, less the VM and overhead
	freeShare    float64 // freeAfterMiB / totalMiB; 0 when there is no memory
	short        bool    // memory_short applies
	running      int
	queued       int
	slots        int // at least 1
	link         float64
}

// measure computes the metrics of h for a VM of vmMiB.
func measure(h *Host, vmMiB int) metrics {
	m := metrics{
		loadPerCore:  h.Load / float64(max(h.Cores, 1)),
		totalMiB:     max(h.MemoryMiB, h.FreeMemoryMiB),
		freeAfterMiB: h.FreeMemoryMiB - MemoryNeedMiB(vmMiB),
		short:        !MemoryFits(h.FreeMemoryMiB, vmMiB),
		running:      max(h.MigrationsRunning, 0),
		queued:       max(h.MigrationsQueued, 0),
		slots:        max(h.MigrationSlots, 1),
		link:         h.LinkLoad,
	}
	if m.totalMiB > 0 {
		m.freeShare = float64(m.freeAfterMiB) / float64(m.totalMiB)
	}
	return m
}

// errorf returns a blocking finding.
func errorf(code, format string, args ...any) Finding {
	return Finding{Code: code, Severity: SeverityError, Message: fmt.Sprintf(format, args...)}
}

// warnf returns a non-blocking finding.
func warnf(code, format string, args ...any) Finding {
	return Finding{Code: code, Severity: SeverityWarning, Message: fmt.Sprintf(format, args...)}
}

// hostLabel names a host in a message.
func hostLabel(name string) string {
	if name == "" {
		return "the unnamed host"
	}
	return name
}

// vmLabel names a VM in a message.
func vmLabel(name string) string {
	if name == "" {
		return "the VM"
	}
	return name
}

// plural returns "1 thing" or "n things".
func plural(n int, one, many string) string {
	if n == 1 {
		return "1 " + one
	}
	return fmt.Sprintf("%d %s", n, many)
}
