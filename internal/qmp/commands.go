package qmp

import (
	"context"
	"errors"
)

// Run states reported by query-status (StatusInfo.Status).
const (
	StatusRunning       = "running"
	StatusPaused        = "paused"
	StatusPrelaunch     = "prelaunch"
	StatusInMigrate     = "inmigrate"
	StatusPostMigrate   = "postmigrate"
	StatusFinishMigrate = "finish-migrate"
	StatusShutdown      = "shutdown"
	StatusGuestPanicked = "guest-panicked"
	StatusInternalError = "internal-error"
	StatusIOError       = "io-error"
	StatusSuspended     = "suspended"
)

// Ptr returns a pointer to v; handy for the optional fields of argument
// structs such as MigrationParameters.
func Ptr[T any](v T) *T { return &v }

// StatusInfo is the reply of query-status.
type StatusInfo struct {
	// Running is true when the vCPUs are running.
	Running bool `json:"running"`
	// Status is QEMU's run state, e.g. "running", "paused", "prelaunch",
	// "inmigrate", "postmigrate", "shutdown".
	Status string `json:"status"`
}

// QueryStatus returns the VM's run state (query-status).
func (m *Monitor) QueryStatus(ctx context.Context) (StatusInfo, error) {
	var s StatusInfo
	err := m.Execute(ctx, "query-status", nil, &s)
	return s, err
}

// Cont resumes the vCPUs (cont).
func (m *Monitor) Cont(ctx context.Context) error {
	return m.Execute(ctx, "cont", nil, nil)
}

// Stop pauses the vCPUs (stop).
func (m *Monitor) Stop(ctx context.Context) error {
	return m.Execute(ctx, "stop", nil, nil)
}

// SystemPowerdown asks the guest to power off through ACPI
// (system_powerdown). It returns once QEMU has injected the request, not
// when the guest has shut down; a guest may ignore it.
func (m *Monitor) SystemPowerdown(ctx context.Context) error {
	return m.Execute(ctx, "system_powerdown", nil, nil)
}

// SystemReset resets the machine, like pressing its reset button
// (system_reset).
func (m *Monitor) SystemReset(ctx context.Context) error {
	return m.Execute(ctx, "system_reset", nil, nil)
}

// Quit makes QEMU exit immediately without asking the guest (quit). QEMU
// replies and then closes the connection; a connection that closes before
// the reply arrives counts as success too.
func (m *Monitor) Quit(ctx context.Context) error {
	err := m.Execute(ctx, "quit", nil, nil)
	if errors.Is(err, ErrClosed) {
		return nil
	}
	return err
}

// QueryVersion returns QEMU's version (query-version).
func (m *Monitor) QueryVersion(ctx context.Context) (Version, error) {
	var v Version
	err := m.Execute(ctx, "query-version", nil, &v)
	return v, err
}

// KVMInfo is the reply of query-kvm.
type KVMInfo struct {
	// Enabled is true when this QEMU runs its guest with KVM.
	Enabled bool `json:"enabled"`
	// Present is true when this QEMU binary supports KVM.
	Present bool `json:"present"`
}

// QueryKVM reports whether KVM is supported and in use (query-kvm).
func (m *Monitor) QueryKVM(ctx context.Context) (KVMInfo, error) {
	var k KVMInfo
	err := m.Execute(ctx, "query-kvm", nil, &k)
	return k, err
}

// CPUInfoFast describes one vCPU (an element of query-cpus-fast).
type CPUInfoFast struct {
	// CPUIndex is the vCPU's index.
	CPUIndex int `json:"cpu-index"`
	// QOMPath is the vCPU's path in QEMU's object model.
	QOMPath string `json:"qom-path"`
	// ThreadID is the host thread (TID) running this vCPU.
	ThreadID int `json:"thread-id"`
	// Target is the guest architecture, e.g. "x86_64".
	Target string `json:"target"`
	// Props locates the vCPU in the CPU topology.
	Props *CPUInstanceProperties `json:"props,omitempty"`
}

// CPUInstanceProperties locates a vCPU in the topology; absent members are
// not applicable to the machine.
type CPUInstanceProperties struct {
	NodeID    *int `json:"node-id,omitempty"`
	DrawerID  *int `json:"drawer-id,omitempty"`
	BookID    *int `json:"book-id,omitempty"`
	SocketID  *int `json:"socket-id,omitempty"`
	DieID     *int `json:"die-id,omitempty"`
	ClusterID *int `json:"cluster-id,omitempty"`
	ModuleID  *int `json:"module-id,omitempty"`
	CoreID    *int `json:"core-id,omitempty"`
	ThreadID  *int `json:"thread-id,omitempty"`
}

// QueryCPUsFast lists the vCPUs without interrupting them (query-cpus-fast).
func (m *Monitor) QueryCPUsFast(ctx context.Context) ([]CPUInfoFast, error) {
	var cpus []CPUInfoFast
	err := m.Execute(ctx, "query-cpus-fast", nil, &cpus)
	return cpus, err
}

// QueryName returns the guest name given with -name, or "" (query-name).
func (m *Monitor) QueryName(ctx context.Context) (string, error) {
	var r struct {
		Name string `json:"name"`
	}
	err := m.Execute(ctx, "query-name", nil, &r)
	return r.Name, err
}

// QueryUUID returns the VM's UUID given with -uuid (query-uuid).
func (m *Monitor) QueryUUID(ctx context.Context) (string, error) {
	var r struct {
		UUID string `json:"UUID"`
	}
	err := m.Execute(ctx, "query-uuid", nil, &r)
	return r.UUID, err
}

// AnnounceParameters are the arguments of announce-self. QEMU sends
// Rounds gratuitous RARP frames per NIC, the first after Initial ms, each
// following gap growing by Step ms up to Max ms.
type AnnounceParameters struct {
	// Initial is the delay before the first round, in milliseconds.
	Initial int64 `json:"initial"`
	// Max is the longest gap between rounds, in milliseconds.
	Max int64 `json:"max"`
	// Rounds is how many announcements to send.
	Rounds int64 `json:"rounds"`
	// Step is how much the gap grows after each round, in milliseconds.
	Step int64 `json:"step"`
	// Interfaces restricts the announcement to these NIC ids (all if empty).
	Interfaces []string `json:"interfaces,omitempty"`
	// ID names this announcer, so that a later call with the same ID
	// replaces it instead of running alongside it.
	ID string `json:"id,omitempty"`
}

// DefaultAnnounce returns QEMU's own default announce timing (the
// announce-* migration parameters): first round after 50 ms, gaps growing
// by 100 ms up to 550 ms, 5 rounds.
func DefaultAnnounce() AnnounceParameters {
	return AnnounceParameters{Initial: 50, Max: 550, Rounds: 5, Step: 100}
}

// AnnounceSelf makes QEMU send gratuitous RARP frames from the guest's NICs
// so that switches learn where the VM's MAC addresses now are
// (announce-self).
func (m *Monitor) AnnounceSelf(ctx context.Context, p AnnounceParameters) error {
	return m.Execute(ctx, "announce-self", p, nil)
}
