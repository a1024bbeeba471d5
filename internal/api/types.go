// Package api holds the JSON types of Godwit's REST APIs — the center's public API
// (/api/v1) and the agent's API that the center calls — and the helpers both sides use to
// decode requests strictly and report errors the same way.
package api

import (
	"encoding/json"
	"time"

	"github.com/godwit/godwit/internal/migration"
	"github.com/godwit/godwit/internal/placement"
)

// VM power and lifecycle states, as the center reports them.
const (
	VMStopped  = "stopped"
	VMStarting = "starting"
	VMRunning  = "running"
	VMStopping = "stopping"
	VMError    = "error"
	// VMUnknown means the VM's host has not reported on it recently (disconnected host).
	VMUnknown = "unknown"
)

// Host connection states.
const (
	HostConnected    = "connected"
	HostDisconnected = "disconnected"
)

// DefaultImage is the name of the test guest image the lab places on its datastore.
const DefaultImage = "godwit-test"

// Disk is one virtual disk of a VM: a raw or qcow2 file on a datastore.
type Disk struct {
	// Datastore names the datastore that holds the file.
	Datastore string `json:"datastore"`
	// Path is relative to the datastore's root.
	Path string `json:"path"`
	// Format is "raw" or "qcow2".
	Format string `json:"format"`
	// SizeMiB, when the file does not exist yet, makes the host create it with this size.
	SizeMiB int `json:"size_mib,omitempty"`
}

// NIC is one virtual network card.
type NIC struct {
	// Network names the network (a bridge on each host) the NIC is plugged into.
	Network string `json:"network"`
	// MAC is the NIC's address; the center assigns one when empty.
	MAC string `json:"mac,omitempty"`
	// IP is the guest's address in CIDR form (198.18.1.100/24), when known. The center
	// assigns one from the network's pool when the network has one and IP is empty.
	IP string `json:"ip,omitempty"`
}

// Boot says how a VM boots: from a kernel (with initrd and command line) or from its
// first disk (SeaBIOS). Paths are absolute host paths or "[datastore] relative/path".
type Boot struct {
	Kernel  string `json:"kernel,omitempty"`
	Initrd  string `json:"initrd,omitempty"`
	Cmdline string `json:"cmdline,omitempty"`
	// FromDisk boots the first disk.
	FromDisk bool `json:"from_disk,omitempty"`
}

// VMSpec is a VM's complete definition.
type VMSpec struct {
	Name      string `json:"name"`
	UUID      string `json:"uuid"`
	CPUs      int    `json:"cpus"`
	MemoryMiB int    `json:"memory_mib"`
	CPUModel  string `json:"cpu_model,omitempty"`
	// Machine is the VM's machine: MachineQ35Lean, or MachineQ35 (also when empty).
	Machine string `json:"machine,omitempty"`
	Boot    Boot   `json:"boot"`
	Disks   []Disk `json:"disks,omitempty"`
	NICs    []NIC  `json:"nics,omitempty"`
	// MigrationPolicy names the convergence policy for this VM's migrations when a
	// migration does not name one.
	MigrationPolicy string `json:"migration_policy,omitempty"`
}

// The machines a VM can have. Both are QEMU's q35 (a PCIe PC); q35-lean leaves out what
// a virtio guest never uses — the built-in SATA (AHCI) and SMBus controllers and the
// vAPIC's TPR patching for old Windows — because QEMU restores each device's state at
// every migration's switch-over while the VM is paused, and those three were among the
// slowest to restore. New VMs get q35-lean; q35 keeps VMs created before it (a VM keeps
// its machine for life: both ends of a migration must have the same devices).
const (
	MachineQ35     = "q35"
	MachineQ35Lean = "q35-lean"
)

// CreateVMRequest is the body of POST /api/v1/vms.
type CreateVMRequest struct {
	Name string `json:"name"`
	Host string `json:"host,omitempty"`
	// CPUs and MemoryMiB default to 1 and 512 when absent.
	CPUs      *int   `json:"cpus,omitempty"`
	MemoryMiB *int   `json:"memory_mib,omitempty"`
	CPUModel  string `json:"cpu_model,omitempty"`
	// Machine is MachineQ35Lean (the default) or MachineQ35.
	Machine string `json:"machine,omitempty"`
	// DataDiskMiB adds an empty qcow2 data disk of this size (the test image gets 64 MiB
	// by default).
	DataDiskMiB *int `json:"data_disk_mib,omitempty"`
	// Image names an image found on a datastore (images/NAME/). Used when Boot has no
	// kernel and no disk boot; defaults to the test guest.
	Image string `json:"image,omitempty"`
	Boot  Boot   `json:"boot,omitempty"`
	Disks []Disk `json:"disks,omitempty"`
	NICs  []NIC  `json:"nics,omitempty"`
	// Start powers the VM on once it is created.
	Start bool `json:"start,omitempty"`
	// MigrationPolicy is the VM's default migration policy.
	MigrationPolicy string `json:"migration_policy,omitempty"`
}

// VM is a VM as the center reports it.
type VM struct {
	Name  string `json:"name"`
	UUID  string `json:"uuid"`
	Host  string `json:"host"`
	State string `json:"state"`
	// Desired is the power state the center keeps the VM in (running or stopped):
	// set by start and stop, and by the center when the guest powers itself off.
	Desired   string    `json:"desired,omitempty"`
	Error     string    `json:"error,omitempty"`
	IP        string    `json:"ip"`
	MAC       string    `json:"mac"`
	CPUs      int       `json:"cpus"`
	MemoryMiB int       `json:"memory_mib"`
	Spec      VMSpec    `json:"spec"`
	PID       int       `json:"pid,omitempty"`
	Accel     string    `json:"accel,omitempty"`
	Created   time.Time `json:"created"`
	Updated   time.Time `json:"updated"`
}

// Datastore is a storage location a host can see.
type Datastore struct {
	Name      string  `json:"name"`
	Path      string  `json:"path"`
	TotalByte uint64  `json:"total_bytes"`
	FreeByte  uint64  `json:"free_bytes"`
	Images    []Image `json:"images,omitempty"`
	// Hosts lists the hosts that see it (center inventory only).
	Hosts []string `json:"hosts,omitempty"`
}

// Image is a bootable image found in a datastore's images/NAME/ folder: a kernel
// (vmlinuz) with an initrd (initrd.img) and a default command line (cmdline), or a disk
// (disk.qcow2 or disk.raw). Paths are "[datastore] relative/path".
type Image struct {
	Name    string `json:"name"`
	Kernel  string `json:"kernel,omitempty"`
	Initrd  string `json:"initrd,omitempty"`
	Cmdline string `json:"cmdline,omitempty"`
	Disk    string `json:"disk,omitempty"`
}

// Network is a VM network: on each host, a bridge.
type Network struct {
	Name   string `json:"name"`
	Bridge string `json:"bridge,omitempty"`
	MTU    int    `json:"mtu,omitempty"`
	// Subnet and the address pool come from the center's configuration.
	Subnet string `json:"subnet,omitempty"`
	Pool   string `json:"pool,omitempty"`
	// Hosts lists the hosts that have it (center inventory only).
	Hosts []string `json:"hosts,omitempty"`
}

// CPUInfo describes a host's processor.
type CPUInfo struct {
	Model   string   `json:"model"`
	Vendor  string   `json:"vendor"`
	Cores   int      `json:"cores"`
	Flags   []string `json:"flags"`
	Threads int      `json:"threads"`
}

// HostFacts is what an agent reports in each heartbeat.
type HostFacts struct {
	Name      string  `json:"name"`
	AgentURL  string  `json:"agent_url"`
	Address   string  `json:"address"`
	Version   string  `json:"version"`
	CPU       CPUInfo `json:"cpu"`
	MemoryMiB int     `json:"memory_mib"`
	// FreeMemoryMiB is the host's available memory.
	FreeMemoryMiB int `json:"free_memory_mib"`
	// Load is the 1-minute load average.
	Load         float64     `json:"load"`
	QEMUVersion  string      `json:"qemu_version"`
	Accel        string      `json:"accel"`
	AccelReason  string      `json:"accel_reason"`
	Datastores   []Datastore `json:"datastores"`
	Networks     []Network   `json:"networks"`
	Health       string      `json:"health"`
	HealthReason string      `json:"health_reason,omitempty"`
	VMs          []VMStatus  `json:"vms"`
	BootTime     time.Time   `json:"boot_time"`
	// GuestCPU is what this host can give guests' CPUs (empty until the accelerator
	// probe has answered).
	GuestCPU GuestCPU `json:"guest_cpu"`
	// Refusals are the requests the agent refused since its last heartbeat.
	Refusals []AgentRefusal `json:"refusals,omitempty"`
	// AuditCheckpoint is the newest checkpoint of the audit trail the center sent this
	// host, which the host keeps and reports back (see AuditCheckpoint).
	AuditCheckpoint *AuditCheckpoint `json:"audit_checkpoint,omitempty"`
}

// GuestCPU is what a host can give guests' CPUs under its accelerator: the CPUID flags,
// and the QEMU CPU models all of whose flags it has. LimitedTo names the model an
// administrator limited the host to (agent --cpu-limit: "this host is of that
// generation"). Catalog is a hash of the per-model flag lists, which the center fetches
// once per distinct catalog (GET /agent/v1/cpu-models).
type GuestCPU struct {
	Accel     string   `json:"accel,omitempty"`
	LimitedTo string   `json:"limited_to,omitempty"`
	Flags     []string `json:"flags,omitempty"`
	Models    []string `json:"models,omitempty"`
	Catalog   string   `json:"catalog,omitempty"`
}

// Host is a host as the center reports it.
type Host struct {
	HostFacts
	State         string    `json:"state"`
	LastHeartbeat time.Time `json:"last_heartbeat"`
	Registered    time.Time `json:"registered"`
	VMCount       int       `json:"vm_count"`
	// Maintenance is set while the host is in maintenance mode.
	Maintenance *MaintenanceMode `json:"maintenance,omitempty"`
	// Baseline says whether the host can give guests the cluster's baseline CPU model
	// ("ok", "missing FLAGS", or "unknown" while its agent probes).
	Baseline string `json:"baseline,omitempty"`
}

// MaintenanceMode is a host's maintenance mode: no VM is placed or migrated onto it,
// and the center moves its running VMs away by a plan.
type MaintenanceMode struct {
	Reason string    `json:"reason,omitempty"`
	Since  time.Time `json:"since"`
	// State is one of the Maintenance* states: entering while VMs still run on the
	// host, blocked when a VM cannot move (Blocked says which and why), in maintenance
	// once the host's last QEMU has exited.
	State string `json:"state,omitempty"`
	// Plan is the evacuation plan's id (`godwit plan show ID`).
	Plan string `json:"plan,omitempty"`
	// Blocked are the moves that cannot go on, with their typed reasons.
	Blocked []PlanMove `json:"blocked,omitempty"`
}

// Maintenance states of a host.
const (
	MaintenanceEntering = "entering"
	MaintenanceBlocked  = "blocked"
	MaintenanceIn       = "in_maintenance"
)

// Plan is an automatic action of the center: ordered moves, each with its destination,
// reason and prediction. A maintenance plan empties a host. The center follows a plan
// until each of its VMs has left the host (or is stopped), resumes it after a restart
// without moving any VM twice, and cancels it when the host leaves maintenance.
type Plan struct {
	ID   string `json:"id"`
	Kind string `json:"kind"`
	// Host is the host the plan is about (the one entering maintenance).
	Host   string `json:"host"`
	Reason string `json:"reason"`
	// State is one of the Plan* states.
	State     string     `json:"state"`
	Initiator string     `json:"initiator,omitempty"`
	Created   time.Time  `json:"created"`
	Finished  *time.Time `json:"finished,omitempty"`
	Moves     []PlanMove `json:"moves"`
	// PredictedMakespanMS is how long the moves are expected to take together, with
	// the migration slots there are; ActualMakespanMS how long they took.
	PredictedMakespanMS float64 `json:"predicted_makespan_ms"`
	ActualMakespanMS    float64 `json:"actual_makespan_ms,omitempty"`
	// Note says what the plan waits for, when it does.
	Note string `json:"note,omitempty"`
	// Explanation is why the balancer made it (balance plans).
	Explanation *BalanceExplanation `json:"explanation,omitempty"`
}

// BalancerSettings are the balancer's desired state: its mode (off, recommend or
// automatic) and its aggressiveness, level 1 (only mandatory moves) to 5.
type BalancerSettings struct {
	Mode  string `json:"mode"`
	Level int    `json:"level"`
}

// Balancer modes.
const (
	BalancerOff       = "off"
	BalancerRecommend = "recommend"
	BalancerAutomatic = "automatic"
)

// BalancerStatus is the balancer's settings and what its last round saw.
type BalancerStatus struct {
	BalancerSettings
	// Imbalance is the standard deviation of the hosts' loads, Target what the level
	// tolerates; RoundsOver how many rounds in a row it has been over (a move needs
	// HoldRounds).
	Imbalance  float64    `json:"imbalance"`
	Target     float64    `json:"target"`
	RoundsOver int        `json:"rounds_over"`
	HoldRounds int        `json:"hold_rounds"`
	LastRound  *time.Time `json:"last_round,omitempty"`
	Hosts      []HostLoad `json:"hosts"`
	// Note says what the last round decided, in words.
	Note string `json:"note,omitempty"`
}

// HostLoad is one host's load as the balancer sees it: max(CPU, memory).
type HostLoad struct {
	Host string  `json:"host"`
	Load float64 `json:"load"`
	VMs  int     `json:"vms"`
}

// BalanceExplanation is why the balancer recommends a move, in numbers.
type BalanceExplanation struct {
	Level          int     `json:"level"`
	Imbalance      float64 `json:"imbalance"`
	ImbalanceAfter float64 `json:"imbalance_after"`
	Target         float64 `json:"target"`
	RoundsOver     int     `json:"rounds_over"`
	// The loads of the source and the destination, before and after.
	SourceLoad           float64 `json:"source_load"`
	SourceLoadAfter      float64 `json:"source_load_after"`
	DestinationLoad      float64 `json:"destination_load"`
	DestinationLoadAfter float64 `json:"destination_load_after"`
	// Rejected are the best moves turned down, each with why.
	Rejected []RejectedMove `json:"rejected,omitempty"`
}

// RejectedMove is a move the balancer considered and turned down.
type RejectedMove struct {
	VM             string  `json:"vm"`
	To             string  `json:"to"`
	ImbalanceAfter float64 `json:"imbalance_after"`
	Reason         string  `json:"reason"`
}

// Plan kinds and states.
const (
	PlanMaintenance = "maintenance"
	PlanBalance     = "balance" // a move of the balancer
	PlanReturn      = "return"  // the VMs a maintenance plan moved, moved back

	PlanProposed    = "proposed"    // a dry run: shown, not stored
	PlanRecommended = "recommended" // the balancer's, in recommend mode: stored, applied on request
	PlanRunning     = "running"
	PlanBlocked     = "blocked"
	PlanDone        = "done"
	PlanCancelled   = "cancelled"
)

// PlanMove is one VM's move in a plan.
type PlanMove struct {
	VM        string `json:"vm"`
	From      string `json:"from"`
	To        string `json:"to,omitempty"`
	MemoryMiB int    `json:"memory_mib"`
	// State is one of the Move* states.
	State string `json:"state"`
	// Migration is the move's current (or last) migration; Attempts how many the plan
	// started for this VM.
	Migration string `json:"migration,omitempty"`
	Attempts  int    `json:"attempts,omitempty"`
	// Code and Error say why a move is blocked or its last attempt failed: Code is a
	// placement finding's code (placement.Code*) or migration_failed.
	Code  string `json:"code,omitempty"`
	Error string `json:"error,omitempty"`
	// Prediction is what the move is expected to take; ActualTotalMS and
	// ActualDowntimeMS what it took.
	Prediction       *Prediction `json:"prediction,omitempty"`
	ActualTotalMS    float64     `json:"actual_total_ms,omitempty"`
	ActualDowntimeMS float64     `json:"actual_downtime_ms,omitempty"`
}

// Move states.
const (
	MovePending   = "pending"   // not started yet
	MoveMigrating = "migrating" // its migration is queued or running
	MoveDone      = "done"      // the VM left the host by this plan's migration
	MoveLeft      = "left"      // the VM left the host otherwise (moved by someone else, or deleted)
	MoveStopped   = "stopped"   // the VM is powered off on the host: nothing to move
	MoveBlocked   = "blocked"   // it cannot move: Code and Error say why
	MoveCancelled = "cancelled" // the plan was cancelled before it moved
)

// MaintenanceRequest is the body of POST /api/v1/hosts/{name}/maintenance.
type MaintenanceRequest struct {
	Enter  bool   `json:"enter"`
	Reason string `json:"reason,omitempty"`
	// Return, on leaving maintenance, moves the VMs the host's last maintenance plan
	// took away back to it, by a plan of kind return.
	Return bool `json:"return,omitempty"`
}

// MigrationCheck is the answer of GET /api/v1/vms/{name}/migrate/check: for each
// candidate host (or the one asked about), what blocks a migration there (errors) and
// what the user should know (warnings). Nothing changes.
type MigrationCheck struct {
	VM     string      `json:"vm"`
	Source string      `json:"source"`
	Hosts  []HostCheck `json:"hosts"`
}

// HostCheck is one host's verdict in a MigrationCheck.
type HostCheck struct {
	Host       string              `json:"host"`
	Compatible bool                `json:"compatible"`
	Errors     []placement.Finding `json:"errors"`
	Warnings   []placement.Finding `json:"warnings"`
	// Prediction is what a migration there is expected to take (compatible hosts).
	Prediction *Prediction `json:"prediction,omitempty"`
}

// Prediction is a migration's expected total time and downtime, and whether it converges
// without throttling, made from the VM's measured memory activity and the link between
// the hosts (see migration.Predict).
type Prediction = migration.Prediction

// MemoryActivity is how much memory a running VM dirties over time and how much of its
// memory holds data, as a host measured it (see migration.MemoryActivity).
type MemoryActivity = migration.MemoryActivity

// Recommendation is the answer of GET /api/v1/vms/{name}/migrate/recommend.
type Recommendation = placement.Recommendation

// BulkMigrateRequest is the body of POST /api/v1/migrations: several VMs moved by one
// request, to one host (To) or each to the wizard's best host (Auto).
type BulkMigrateRequest struct {
	VMs        []string `json:"vms"`
	To         string   `json:"to,omitempty"`
	Auto       bool     `json:"auto,omitempty"`
	Policy     string   `json:"policy,omitempty"`
	Encryption string   `json:"encryption,omitempty"`
	Priority   string   `json:"priority,omitempty"`
	// Postcopy allows each migration to switch to post-copy (see MigrateRequest).
	Postcopy bool `json:"postcopy,omitempty"`
}

// BulkMigrateReply lists the migrations a bulk request started (or queued), and the VMs
// it could not move, with why.
type BulkMigrateReply struct {
	Migrations []Migration   `json:"migrations"`
	Refused    []BulkRefusal `json:"refused"`
}

// BulkRefusal is a VM of a bulk request that was not moved.
type BulkRefusal struct {
	VM    string `json:"vm"`
	Error string `json:"error"`
	Code  string `json:"code,omitempty"`
}

// VMStatus is an agent's view of one VM it holds.
type VMStatus struct {
	Name  string `json:"name"`
	UUID  string `json:"uuid"`
	State string `json:"state"`
	Error string `json:"error,omitempty"`
	PID   int    `json:"pid,omitempty"`
	Accel string `json:"accel,omitempty"`
	// Memory is the VM's latest measured memory activity (running VMs, measured by
	// their host every 30 s).
	Memory *MemoryActivity `json:"memory,omitempty"`
	// Exit says why the VM's QEMU last ended (one of the Exit* reasons; empty while
	// it runs, or when it never ran on this host), and ExitedAt when.
	Exit     string     `json:"exit,omitempty"`
	ExitedAt *time.Time `json:"exited_at,omitempty"`
	// CPU is the cores its QEMU uses (running VMs), averaged over about a minute.
	CPU float64 `json:"cpu,omitempty"`
}

// Why a VM's QEMU ended, as its host saw it (VMStatus.Exit). The center restarts a VM
// it wants running when its QEMU crashed, was killed or was lost, and takes a guest's
// own power-off as the guest's wish.
const (
	// ExitRequested: stopped by its host on request (a stop, or the end of an
	// outgoing migration).
	ExitRequested = "requested"
	// ExitGuestPoweroff: the guest powered itself off (QEMU's SHUTDOWN event from the
	// guest).
	ExitGuestPoweroff = "guest_poweroff"
	// ExitKilled: a signal from someone on the host ended QEMU (SHUTDOWN, host-signal).
	ExitKilled = "killed"
	// ExitCrashed: QEMU ended without a shutdown (killed by SIGKILL or the OOM killer,
	// or crashed), or with an error.
	ExitCrashed = "crashed"
	// ExitLost: QEMU was gone when the agent started, though it ran when the agent
	// last saw it (the host restarted, or QEMU ended while the agent was down).
	ExitLost = "lost"
	// ExitUnknown: QEMU ended while its host could not follow its events.
	ExitUnknown = "unknown"
)

// Error is the body of every error response.
type Error struct {
	Error string `json:"error"`
	// Code is a short machine-readable code such as "invalid_spec" or "not_found".
	Code string `json:"code,omitempty"`
}

// Migration phases as the API reports them.
const (
	MigrationQueued    = "queued"
	MigrationPreparing = "preparing"
	MigrationRunning   = "running"
	MigrationSucceeded = "succeeded"
	MigrationFailed    = "failed"
	MigrationCancelled = "cancelled"
)

// VMIncoming is the state of a VM on the destination while a migration brings it in.
const VMIncoming = "incoming"

// MigrateRequest is the body of POST /api/v1/vms/{name}/migrate.
type MigrateRequest struct {
	// To names the destination host.
	To string `json:"to"`
	// Policy names the convergence policy; empty: the VM's or the cluster's default.
	Policy string `json:"policy,omitempty"`
	// Encryption overrides the policy's encryption of the memory stream: required,
	// opportunistic or off.
	Encryption string `json:"encryption,omitempty"`
	// Priority is high, normal (the default) or low: see the admission package.
	Priority string `json:"priority,omitempty"`
	// Postcopy allows switching to post-copy as a last resort, whatever the
	// policy says: when throttling at the policy's maximum still needs more
	// downtime than it allows. Once in post-copy the VM cannot return to the
	// source; should the source or the link die for good, the VM is lost.
	Postcopy bool `json:"postcopy,omitempty"`
}

// MigrationProgress is a live view of a running migration.
type MigrationProgress struct {
	Phase            string  `json:"phase"`
	Pass             int     `json:"pass"`
	PercentSent      float64 `json:"percent_sent"`
	TransferredBytes uint64  `json:"transferred_bytes"`
	RemainingBytes   uint64  `json:"remaining_bytes"`
	TotalBytes       uint64  `json:"total_bytes"`
	// TransferRate and DirtyRate are in bytes per second.
	TransferRate       float64 `json:"transfer_rate"`
	DirtyRate          float64 `json:"dirty_rate"`
	ExpectedDowntimeMS float64 `json:"expected_downtime_ms"`
	ThrottlePercent    int     `json:"throttle_percent"`
	ElapsedMS          float64 `json:"elapsed_ms"`
	Note               string  `json:"note,omitempty"`
}

// Migration is one live migration, as the center and the source agent report it.
type Migration struct {
	ID          string `json:"id"`
	VM          string `json:"vm"`
	Source      string `json:"source"`
	Destination string `json:"destination"`
	Policy      string `json:"policy"`
	// State is one of the Migration* phases.
	State    string            `json:"state"`
	Progress MigrationProgress `json:"progress"`
	// Error says why a migration failed or was cancelled.
	Error    string     `json:"error,omitempty"`
	Started  time.Time  `json:"started"`
	Finished *time.Time `json:"finished,omitempty"`
	// The summary, once finished.
	TotalMS    float64 `json:"total_ms"`
	DowntimeMS float64 `json:"downtime_ms"`
	// PauseMS is the switch-over as the hosts saw it: from QEMU's STOP event on the
	// source to its RESUME event on the destination (host clocks).
	PauseMS float64 `json:"pause_ms,omitempty"`
	// Pause is where the pause went, from QEMU's own switch-over checkpoints on both
	// hosts; nil when they could not be read.
	Pause  *PauseBreakdown `json:"pause,omitempty"`
	Bytes  uint64          `json:"bytes"`
	Passes int             `json:"passes"`
	// Encryption is the mode asked for (required, opportunistic, off); Encrypted says
	// whether the memory stream was in fact encrypted (TLS).
	Encryption string `json:"encryption,omitempty"`
	Encrypted  bool   `json:"encrypted"`
	// Priority is high, normal or low (normal when empty).
	Priority string `json:"priority,omitempty"`
	// BandwidthCap is the cap on the stream the center set (bytes/s; 0: none), its
	// share of the network by priority; ThreadNice is the nice level of the source
	// QEMU's migration thread.
	BandwidthCap int64 `json:"bandwidth_cap,omitempty"`
	ThreadNice   *int  `json:"thread_nice,omitempty"`
	// Waiting says what a queued migration waits for (a host's or a network's slots),
	// or, for a started one, why its outcome is not known yet (its source does not
	// answer).
	Waiting string `json:"waiting,omitempty"`
	// Initiator is who asked for it: a user, or "schedule NAME (created by USER)".
	Initiator string `json:"initiator,omitempty"`
	// PostcopyAllowed says the migration may switch to post-copy (its policy's
	// or the request's word); Postcopy that it did — the VM ran on the
	// destination from then on and could not return to the source, whatever
	// the outcome; PostcopyRecoveries how often its broken stream was recovered.
	PostcopyAllowed    bool `json:"postcopy_allowed,omitempty"`
	Postcopy           bool `json:"postcopy,omitempty"`
	PostcopyRecoveries int  `json:"postcopy_recoveries,omitempty"`
	// Prediction is what the migration was expected to take when it was admitted.
	Prediction *Prediction `json:"prediction,omitempty"`
	// Plan names the plan the migration is a move of (empty: asked for by itself), and
	// Reason why the plan moves the VM.
	Plan   string `json:"plan,omitempty"`
	Reason string `json:"reason,omitempty"`
}

// PauseBreakdown divides a migration's pause, from the moment the source began to stop
// the VM to the moment the destination ran it, into its parts (milliseconds). The parts
// add up to TotalMS. Times on the two hosts are compared by their clocks (in a lab they
// are one clock; across machines, as good as their time synchronisation).
type PauseBreakdown struct {
	TotalMS float64 `json:"total_ms"`
	// StopMS: the source stops the vCPUs and drains and flushes the disks.
	StopMS float64 `json:"stop_ms"`
	// LastPassMS: the last pass of memory, sent while the VM is stopped.
	LastPassMS float64 `json:"last_pass_ms"`
	// DeviceStateMS: the source saves and sends the devices' state.
	DeviceStateMS float64 `json:"device_state_ms"`
	// DiskHandoverMS: the source lets go of the disks (inactivates them) and the
	// destination takes them (activates them).
	DiskHandoverMS float64 `json:"disk_handover_ms"`
	// DestinationLoadMS: the destination still loads the state after the source is done.
	DestinationLoadMS float64 `json:"destination_load_ms"`
	// ResumeMS: from the state loaded to the VM running on the destination.
	ResumeMS float64 `json:"resume_ms"`
	// AnnounceMS is when the first frame announcing the VM's MACs left the new port,
	// relative to the resume (negative: before it); nil when not traced.
	AnnounceMS *float64 `json:"announce_ms,omitempty"`
	// SlowestSave and SlowestLoad name the device whose state took longest to save on
	// the source and to load on the destination, with the time ("virtio-net (…) 10.2 ms").
	SlowestSave string `json:"slowest_save,omitempty"`
	SlowestLoad string `json:"slowest_load,omitempty"`
}

// SwitchoverTrace is what the destination's QEMU traced of a switch-over: its
// checkpoints (QEMU's names, e.g. "dst-precopy-bh-vm-started") and when it passed
// them, when it first announced the VM's MACs, and its slowest device load.
type SwitchoverTrace struct {
	Checkpoints   map[string]time.Time `json:"checkpoints,omitempty"`
	FirstAnnounce *time.Time           `json:"first_announce,omitempty"`
	SlowestLoad   string               `json:"slowest_load,omitempty"`
	// DisksTaken is when the destination began to activate the disks, Running when
	// its vCPUs started.
	DisksTaken *time.Time `json:"disks_taken,omitempty"`
	Running    *time.Time `json:"running,omitempty"`
}

// FinishReply is the destination's answer when it takes over a migrated VM.
type FinishReply struct {
	// ResumedAt is when the destination QEMU resumed the VM (its RESUME event).
	ResumedAt time.Time `json:"resumed_at"`
	// Switchover is what the destination's QEMU traced of the switch-over.
	Switchover *SwitchoverTrace `json:"switchover,omitempty"`
}

// AgentMigrateRequest is what the center asks of the source agent.
type AgentMigrateRequest struct {
	ID              string `json:"id"`
	Destination     string `json:"destination"`
	DestinationURL  string `json:"destination_url"`
	DestinationAddr string `json:"destination_addr"`
	Policy          string `json:"policy,omitempty"`
	Encryption      string `json:"encryption,omitempty"`
	// Priority is high, normal or low: the source's migration thread runs at a matching
	// nice level (see MigrationNice).
	Priority string `json:"priority,omitempty"`
	// MaxBandwidth caps the stream in bytes/s (its share of the network); 0: none beyond
	// the policy's.
	MaxBandwidth int64 `json:"max_bandwidth,omitempty"`
	// Postcopy allows switching to post-copy (the center's word, also in the ticket).
	Postcopy bool `json:"postcopy,omitempty"`
	// Ticket is the center's signed word for this migration (internal/ticket); the
	// source presents it to the destination, which acts on nothing else.
	Ticket string `json:"ticket"`
	// Prediction is the center's, made when it admitted the migration; the source keeps
	// it in the migration's record.
	Prediction *Prediction `json:"prediction,omitempty"`
}

// BandwidthRequest is the body of POST /agent/v1/migrations/{id}/bandwidth: a new cap
// for a running migration's stream, in bytes/s (0: none beyond the policy's).
type BandwidthRequest struct {
	MaxBandwidth int64 `json:"max_bandwidth"`
}

// IncomingRequest is what the source agent asks of the destination agent: prepare a QEMU
// that waits for the VM's state.
type IncomingRequest struct {
	ID     string `json:"id"`
	Source string `json:"source"`
	// SourceURL is the source agent's URL, which the destination asks about the
	// migration while its copy waits.
	SourceURL string `json:"source_url,omitempty"`
	Spec      VMSpec `json:"spec"`
	// OwnedDisks lists the indices of Spec.Disks that Godwit created for the VM (deleted
	// with it), so ownership moves with the VM.
	OwnedDisks  []int  `json:"owned_disks,omitempty"`
	QEMUVersion string `json:"qemu_version"`
	Policy      string `json:"policy,omitempty"`
	// Address is where the destination QEMU listens for the migration stream.
	Address string `json:"address"`
	// Encryption is the stream's encryption mode: required, opportunistic or off.
	Encryption string `json:"encryption,omitempty"`
	// Postcopy: the migration may switch to post-copy, so the destination QEMU must
	// be able to (postcopy-ram); it must match the ticket.
	Postcopy bool `json:"postcopy,omitempty"`
	// Memory is the VM's latest measured memory activity, which moves with it.
	Memory *MemoryActivity `json:"memory,omitempty"`
}

// RecoverRequest asks a destination whose post-copy stream broke to listen for it
// again, on Address (its migration address, as for the first stream).
type RecoverRequest struct {
	Address string `json:"address"`
	// Carried: the agents carry the stream (encrypted): the copy listens on its
	// private socket again, and the source brings the stream to the stream route.
	Carried bool `json:"carried,omitempty"`
}

// RecoverReply tells the source where to resume the post-copy stream.
type RecoverReply struct {
	URI string `json:"uri"`
}

// IncomingReply tells the source where to send the migration stream. With TLS the
// stream is encrypted: the agents carry it over mutual TLS, the source's to the
// destination's stream route (POST /agent/v1/vms/{name}/incoming/{id}/stream), and URI
// is empty; otherwise the source QEMU sends it to URI in the clear, and TLSNote says
// why when encryption was asked for.
type IncomingReply struct {
	URI     string `json:"uri,omitempty"`
	TLS     bool   `json:"tls"`
	TLSNote string `json:"tls_note,omitempty"`
	// FramePort is the UDP port on the destination's migration address that takes the
	// frames reaching the source during the switch-over (0: none).
	FramePort int `json:"frame_port,omitempty"`
}

// Task states. Queued and running tasks are active; the others are final.
const (
	TaskQueued    = "queued"
	TaskRunning   = "running"
	TaskSucceeded = "succeeded"
	TaskFailed    = "failed"
	TaskCancelled = "cancelled"
)

// TaskHeader is the response header in which the center names the task an operation
// became (vm create, start, stop, delete, migrate).
const TaskHeader = "X-Godwit-Task"

// TaskEnded reports whether a task in this state has finished.
func TaskEnded(state string) bool {
	return state == TaskSucceeded || state == TaskFailed || state == TaskCancelled
}

// TaskProgress is how far a task has come: a share of the work done and the phase it is
// in (for a migration: "preparing", "precopy", …).
type TaskProgress struct {
	Percent float64 `json:"percent"`
	Phase   string  `json:"phase,omitempty"`
}

// Task is one operation that takes time: a VM's create, start, stop, delete or live
// migration. A migration's task has the migration's id.
type Task struct {
	ID string `json:"id"`
	// Kind names the operation: vm.create, vm.start, vm.stop, vm.delete, vm.migrate.
	Kind string `json:"kind"`
	// Target is what the operation acts on (a VM's name).
	Target string `json:"target"`
	// Initiator is who asked for it, as the audit trail names them.
	Initiator string `json:"initiator"`
	// State is one of the Task* states.
	State    string       `json:"state"`
	Progress TaskProgress `json:"progress"`
	// Queued, Started and Finished are UTC.
	Queued   time.Time  `json:"queued"`
	Started  *time.Time `json:"started,omitempty"`
	Finished *time.Time `json:"finished,omitempty"`
	// Result is what a succeeded task produced (JSON; its shape depends on Kind).
	Result json.RawMessage `json:"result,omitempty"`
	// Error says why a task failed or was cancelled.
	Error string `json:"error,omitempty"`
}

// Roles of users. A role allows what the roles after it allow, and more: admin
// everything; operator powers VMs on and off, migrates them and cancels tasks; viewer
// reads. The agent role is for hosts' agents and may only send heartbeats.
const (
	RoleAdmin    = "admin"
	RoleOperator = "operator"
	RoleViewer   = "viewer"
	RoleAgent    = "agent"
)

// User is a user of the center, as the API shows it (never with a password).
type User struct {
	Name    string    `json:"name"`
	Role    string    `json:"role"`
	Created time.Time `json:"created"`
}

// CreateUserRequest is the body of POST /api/v1/users.
type CreateUserRequest struct {
	Name     string `json:"name"`
	Role     string `json:"role"`
	Password string `json:"password"`
}

// LoginRequest is the body of POST /api/v1/login.
type LoginRequest struct {
	User     string `json:"user"`
	Password string `json:"password"`
}

// CreateTokenRequest is the body of POST /api/v1/tokens. User empty: the caller.
// Expires is a Go duration ("12h") or a number of days ("30d"); empty: 12h. Every token
// expires: at most 365 days for an admin, 90 days for anyone else.
type CreateTokenRequest struct {
	User    string `json:"user,omitempty"`
	Expires string `json:"expires,omitempty"`
}

// Token is an API token as POST /api/v1/login and POST /api/v1/tokens return it. Secret
// is the whole bearer token; it is shown once, and the center keeps only its hash.
type Token struct {
	ID      string     `json:"id"`
	User    string     `json:"user"`
	Role    string     `json:"role"`
	Created time.Time  `json:"created"`
	Expires *time.Time `json:"expires,omitempty"`
	Secret  string     `json:"secret,omitempty"`
}

// CAInfo is the cluster's CA certificate, GET /api/v1/pki/ca (public).
type CAInfo struct {
	// Certificate is PEM.
	Certificate string `json:"certificate"`
	// Fingerprint is "sha256:" and the hex SHA-256 of its DER bytes.
	Fingerprint string `json:"fingerprint"`
}

// CreateJoinTokenRequest is the body of POST /api/v1/join-tokens. Host, when set, is the
// only host name that may join with the token; Expires is a duration ("1h", default 1h).
type CreateJoinTokenRequest struct {
	Host    string `json:"host,omitempty"`
	Expires string `json:"expires,omitempty"`
}

// JoinToken is a one-time token with which a host joins the cluster. Secret is the whole
// token, shown once when it is created.
type JoinToken struct {
	ID        string     `json:"id"`
	Host      string     `json:"host,omitempty"`
	Created   time.Time  `json:"created"`
	CreatedBy string     `json:"created_by"`
	Expires   time.Time  `json:"expires"`
	Used      *time.Time `json:"used,omitempty"`
	UsedBy    string     `json:"used_by,omitempty"`
	Revoked   *time.Time `json:"revoked,omitempty"`
	Secret    string     `json:"secret,omitempty"`
	// CAFingerprint pins the center's CA for the joining agent (--ca-fingerprint).
	CAFingerprint string `json:"ca_fingerprint"`
}

// JoinRequest is the body of POST /api/v1/hosts/join: a host's name, its one-time join
// token, and a certificate signing request (PEM) for the key it generated.
type JoinRequest struct {
	Name  string `json:"name"`
	Token string `json:"token"`
	CSR   string `json:"csr"`
}

// RenewRequest is the body of POST /api/v1/hosts/renew: a host's certificate signing
// request (PEM) for a new key, sent over mutual TLS with its current certificate.
type RenewRequest struct {
	CSR string `json:"csr"`
}

// JoinReply is the certificate a joining host receives, with the cluster's CA (PEM).
type JoinReply struct {
	Certificate string    `json:"certificate"`
	CA          string    `json:"ca"`
	Serial      string    `json:"serial"`
	Expires     time.Time `json:"expires"`
}

// Certificate is a certificate the cluster's CA issued.
type Certificate struct {
	Serial        string     `json:"serial"`
	Name          string     `json:"name"`
	Kind          string     `json:"kind"`
	NotBefore     time.Time  `json:"not_before"`
	NotAfter      time.Time  `json:"not_after"`
	Revoked       *time.Time `json:"revoked,omitempty"`
	RevokedReason string     `json:"revoked_reason,omitempty"`
}

// RevokeRequest is the body of POST /api/v1/hosts/{name}/revoke.
type RevokeRequest struct {
	Reason string `json:"reason,omitempty"`
}

// HeartbeatReply is the center's answer to a heartbeat: the serials of the revoked
// certificates, which agents refuse from then on, and the newest checkpoint of the audit
// trail (absent when there is nothing newer to send, or when the host's own checkpoint
// shows that the trail lost records: the host then keeps its evidence).
type HeartbeatReply struct {
	RevokedSerials  []string         `json:"revoked_serials"`
	AuditCheckpoint *AuditCheckpoint `json:"audit_checkpoint,omitempty"`
}

// AuditCheckpoint is the center's signed word that its audit trail held record ID, with
// hash Hash, at Time. Hosts keep the newest one outside the center's database and report
// it in heartbeats, so that `godwit audit verify` notices when the newest records were
// deleted and the chain's head rewritten. See audit.SignCheckpoint for what is signed.
type AuditCheckpoint struct {
	ID   int64     `json:"id"`
	Hash string    `json:"hash"`
	Time time.Time `json:"time"`
	// Certificate is the center's certificate (DER), whose key made Signature.
	Certificate []byte `json:"certificate"`
	// Signature is the center's ECDSA signature (ASN.1 DER) over the checkpoint.
	Signature []byte `json:"signature"`
}

// AgentRefusal is a request an agent refused (a bad certificate, the wrong peer); agents
// report them in heartbeats and the center writes them to the audit trail. Both bound
// them (see MaxAgentRefusals and Bounded).
type AgentRefusal struct {
	Time   time.Time `json:"time"`
	From   string    `json:"from"`
	Method string    `json:"method"`
	Path   string    `json:"path"`
	// Subject is the name the client's certificate claimed, if any.
	Subject string `json:"subject,omitempty"`
	Reason  string `json:"reason"`
	// Dropped counts the refusals just before this one that were not kept because
	// more than MaxAgentRefusals waited to be reported.
	Dropped int `json:"dropped,omitempty"`
}

// MigrationSlots is GET /api/v1/migration-slots: the concurrent-migration limits in use.
type MigrationSlots struct {
	Resources []SlotState `json:"resources"`
	// Admitted are the migrations holding slots; Queue those waiting, in admission order.
	Admitted []string `json:"admitted"`
	Queue    []string `json:"queue"`
}

// SlotState is one resource (host:NAME, network:NAME, datastore:NAME) and its slots.
type SlotState struct {
	Resource string   `json:"resource"`
	Limit    int      `json:"limit"`
	InUse    int      `json:"in_use"`
	Holders  []string `json:"holders,omitempty"`
	Waiting  []string `json:"waiting,omitempty"`
}
