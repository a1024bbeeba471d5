package placement

import "github.com/godwit/godwit/internal/migration"

// VM is the VM to place: one being moved, as the center knows it, or one being created.
type VM struct {
	// Name is the VM's name; messages use it.
	Name string `json:"name"`
	// Host is the VM's current (source) host. Empty means an initial placement (a VM
	// being created): there is no source, so the checks that compare a host with the
	// source (same host, accelerator, QEMU release) are skipped.
	Host string `json:"host"`
	// MemoryMiB is the guest's memory.
	MemoryMiB int `json:"memory_mib"`
	// CPUs is the number of vCPUs.
	CPUs int `json:"cpus"`
	// CPUModel is the guest CPU model, e.g. "Nehalem" or "qemu64".
	CPUModel string `json:"cpu_model"`
	// CPUFlags are the CPUID flags the model needs, computed by the caller. Empty
	// means unknown: then the host's CPUModels are checked for the model's name.
	CPUFlags []string `json:"cpu_flags"`
	// Datastores are the datastores the VM's disks live on.
	Datastores []string `json:"datastores"`
	// Networks are the networks the VM's NICs use.
	Networks []string `json:"networks"`
	// QEMUVersion is the source host's QEMU, e.g. "10.0.2".
	QEMUVersion string `json:"qemu_version"`
	// Accel is the source's accelerator, "kvm" or "tcg"; empty means unknown
	// and is not checked.
	Accel string `json:"accel"`
	// Image is the image a VM being created boots from; empty when it boots from a
	// kernel or a disk (or is not being created), and then it is not checked.
	Image string `json:"image,omitempty"`
}

// Host is one candidate destination, from its live heartbeats.
type Host struct {
	// Name is the host's name.
	Name string `json:"name"`
	// Connected reports whether the host's agent is connected to the center.
	Connected bool `json:"connected"`
	// Health is the agent's health, HealthOK or e.g. "degraded".
	Health string `json:"health"`
	// HealthReason explains a Health other than HealthOK.
	HealthReason string `json:"health_reason"`
	// Maintenance reports whether the host is in maintenance mode.
	Maintenance bool `json:"maintenance"`
	// Cores is the number of CPU cores; less than 1 counts as 1.
	Cores int `json:"cores"`
	// Load is the 1-minute load average.
	Load float64 `json:"load"`
	// MemoryMiB is the host's total memory.
	MemoryMiB int `json:"memory_mib"`
	// FreeMemoryMiB is the host's available memory.
	FreeMemoryMiB int `json:"free_memory_mib"`
	// CPUFlags are the CPUID flags the host can give guests.
	CPUFlags []string `json:"cpu_flags"`
	// CPUModels are the CPU models the host can give guests; empty means not
	// reported yet, and then model names are not checked.
	CPUModels []string `json:"cpu_models,omitempty"`
	// QEMUVersion is the host's QEMU, e.g. "10.0.2".
	QEMUVersion string `json:"qemu_version"`
	// Accel is the host's accelerator, "kvm" or "tcg"; empty while the agent
	// is still probing.
	Accel string `json:"accel"`
	// Datastores are the datastores the host can reach.
	Datastores []string `json:"datastores"`
	// Networks are the networks the host has.
	Networks []string `json:"networks"`
	// Images are the names of the images on the host's datastores.
	Images []string `json:"images,omitempty"`
	// MigrationsRunning is the number of migrations in flight on the host.
	MigrationsRunning int `json:"migrations_running"`
	// MigrationsQueued is the number of migrations waiting for a slot.
	MigrationsQueued int `json:"migrations_queued"`
	// MigrationSlots is the host's concurrent-migration limit; less than 1
	// counts as 1.
	MigrationSlots int `json:"migration_slots"`
	// LinkLoad is the share of the host's migration link in use, 0..1.
	LinkLoad float64 `json:"link_load"`
}

// HealthOK is the only Health a destination may have.
const HealthOK = "ok"

// Severities of a Finding.
const (
	// SeverityError blocks a migration to the host.
	SeverityError = "error"
	// SeverityWarning does not block; it tells the user what to expect.
	SeverityWarning = "warning"
)

// Error codes: each blocks placing the VM on the host (a migration there, or creating it
// there).
const (
	// CodeSameHost: the host is the VM's source host.
	CodeSameHost = "same_host"
	// CodeHostDisconnected: the host's agent is not connected.
	CodeHostDisconnected = "host_disconnected"
	// CodeHostUnhealthy: the host's health is not HealthOK.
	CodeHostUnhealthy = "host_unhealthy"
	// CodeHostMaintenance: the host is in maintenance mode.
	CodeHostMaintenance = "host_maintenance"
	// CodeAccelMismatch: the host's accelerator differs from the source's.
	CodeAccelMismatch = "accel_mismatch"
	// CodeQEMUIncompatible: the host's QEMU is older than the source's by
	// major.minor, or a version cannot be parsed.
	CodeQEMUIncompatible = "qemu_incompatible"
	// CodeCPUUnsupported: the host lacks CPU flags the VM's CPU model needs or,
	// when those flags are unknown, does not list the model among its CPU models.
	CodeCPUUnsupported = "cpu_unsupported"
	// CodeMemoryShort: the host's free memory does not fit the VM (see
	// MemoryFits): free memory minus HostReserveMiB is less than the VM's memory
	// plus VMOverheadMiB.
	CodeMemoryShort = "memory_short"
	// CodeDatastoreMissing: the host cannot reach a datastore of the VM.
	CodeDatastoreMissing = "datastore_missing"
	// CodeNetworkMissing: the host lacks a network of the VM.
	CodeNetworkMissing = "network_missing"
	// CodeImageMissing: no datastore of the host holds the image a VM being created
	// boots from.
	CodeImageMissing = "image_missing"
)

// Warning codes: each leaves the host usable.
const (
	// CodeHostLoaded: load per core is above LoadPerCoreThreshold.
	CodeHostLoaded = "host_loaded"
	// CodeMemoryTight: after the move less than MemoryTightFraction of the
	// host's memory would be free.
	CodeMemoryTight = "memory_tight"
	// CodeSlotsFull: every migration slot of the host is in use.
	CodeSlotsFull = "slots_full"
	// CodeLinkBusy: the migration link is busier than LinkBusyThreshold.
	CodeLinkBusy = "link_busy"
)

// Finding is one reason a host cannot take the VM (an error) or one thing the
// user should know about moving it there (a warning).
type Finding struct {
	// Code is one of the Code constants.
	Code string `json:"code"`
	// Severity is SeverityError or SeverityWarning.
	Severity string `json:"severity"`
	// Message is one English sentence: what is wrong and what to do.
	Message string `json:"message"`
}

// Blocking reports whether the finding forbids the migration.
func (f Finding) Blocking() bool { return f.Severity == SeverityError }

// Blocked reports whether any of the findings forbids the migration.
func Blocked(findings []Finding) bool {
	for _, f := range findings {
		if f.Blocking() {
			return true
		}
	}
	return false
}

// Criterion is one line of a candidate's score breakdown.
type Criterion struct {
	// Name is the criterion: "cpu", "memory", "migrations" or "link".
	Name string `json:"name"`
	// Value is the raw measure in words, e.g. "load 0.35/core".
	Value string `json:"value"`
	// Score is the criterion's score, 0..100, higher is better.
	Score float64 `json:"score"`
	// Weight is the criterion's normalized weight; the weights sum to 1.
	Weight float64 `json:"weight"`
	// Contribution is Score times Weight: the points it adds to the total.
	Contribution float64 `json:"contribution"`
}

// Candidate is a host that can take the VM.
type Candidate struct {
	// Host is the host's name.
	Host string `json:"host"`
	// Score is 0..100, higher is better: the sum of the contributions.
	Score float64 `json:"score"`
	// Stars is a 1..5 rating derived from Score (see Stars).
	Stars int `json:"stars"`
	// Breakdown explains Score, one criterion per line, in a fixed order.
	Breakdown []Criterion `json:"breakdown"`
	// Warnings are the host's non-blocking findings.
	Warnings []Finding `json:"warnings"`
	// Prediction is what a migration there is expected to take, when the caller made one.
	Prediction *migration.Prediction `json:"prediction,omitempty"`
}

// Refusal is a host that cannot take the VM.
type Refusal struct {
	// Host is the host's name.
	Host string `json:"host"`
	// Errors are the blocking findings, at least one.
	Errors []Finding `json:"errors"`
}

// Recommendation ranks the destinations for one VM.
type Recommendation struct {
	// VM is the VM's name.
	VM string `json:"vm"`
	// Source is the VM's current host.
	Source string `json:"source"`
	// Weights are the normalized weights the scores used.
	Weights Weights `json:"weights"`
	// Candidates are the compatible hosts, best first.
	Candidates []Candidate `json:"candidates"`
	// Refused are the incompatible hosts, by name.
	Refused []Refusal `json:"refused"`
}

// Best returns the top candidate, or false when no host can take the VM.
func (r Recommendation) Best() (Candidate, bool) {
	if len(r.Candidates) == 0 {
		return Candidate{}, false
	}
	return r.Candidates[0], true
}
