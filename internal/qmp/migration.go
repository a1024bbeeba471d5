package qmp

import (
	"context"
	"sort"
)

// Migration statuses (MigrationInfo.Status and MIGRATION events).
const (
	MigrationNone           = "none"
	MigrationSetup          = "setup"
	MigrationCancelling     = "cancelling"
	MigrationCancelled      = "cancelled"
	MigrationActive         = "active"
	MigrationPostcopyActive = "postcopy-active"
	// MigrationPostcopyPaused: the post-copy stream broke (or was paused with
	// migrate-pause); both ends wait for a recovery (migrate-recover on the
	// destination, migrate with resume on the source).
	MigrationPostcopyPaused = "postcopy-paused"
	// MigrationPostcopyRecoverSetup and MigrationPostcopyRecover: a recovery is
	// reconnecting the ends, then synchronising them.
	MigrationPostcopyRecoverSetup = "postcopy-recover-setup"
	MigrationPostcopyRecover      = "postcopy-recover"
	MigrationCompleted            = "completed"
	MigrationFailed               = "failed"
	MigrationPreSwitchover        = "pre-switchover"
	MigrationDevice               = "device"
	MigrationWaitUnplug           = "wait-unplug"
)

// Migration capabilities (names for MigrateSetCapabilities).
const (
	CapXBZRLE                = "xbzrle"
	CapAutoConverge          = "auto-converge"
	CapEvents                = "events"
	CapPostcopyRAM           = "postcopy-ram"
	CapReturnPath            = "return-path"
	CapPauseBeforeSwitchover = "pause-before-switchover"
	CapMultifd               = "multifd"
	CapLateBlockActivate     = "late-block-activate"
	CapValidateUUID          = "validate-uuid"
	CapZeroCopySend          = "zero-copy-send"
	CapSwitchoverAck         = "switchover-ack"
	CapDirtyLimit            = "dirty-limit"
)

// MigrationInfo is the reply of query-migrate (QEMU's MigrationInfo). The
// times are in milliseconds. Pointer fields are absent when QEMU does not
// report them in the current state.
type MigrationInfo struct {
	// Status is the migration's state, e.g. "active" or "completed";
	// empty or "none" when no migration has run.
	Status string `json:"status,omitempty"`
	// RAM holds RAM transfer statistics (absent before the first migration).
	RAM *MigrationRAMStats `json:"ram,omitempty"`
	// XBZRLECache holds XBZRLE statistics when that capability is on.
	XBZRLECache *XBZRLECacheStats `json:"xbzrle-cache,omitempty"`
	// TotalTime is the time since the migration started, or its total
	// duration once finished, in ms.
	TotalTime *int64 `json:"total-time,omitempty"`
	// ExpectedDowntime is QEMU's estimate of the final pause while the
	// migration is active, in ms.
	ExpectedDowntime *int64 `json:"expected-downtime,omitempty"`
	// Downtime is the measured pause of the guest once completed, in ms.
	Downtime *int64 `json:"downtime,omitempty"`
	// SetupTime is the time spent in the setup state, in ms.
	SetupTime *int64 `json:"setup-time,omitempty"`
	// CPUThrottlePercentage is the current vCPU throttle applied by
	// auto-converge.
	CPUThrottlePercentage *int64 `json:"cpu-throttle-percentage,omitempty"`
	// ErrorDesc says why the migration failed (status "failed").
	ErrorDesc string `json:"error-desc,omitempty"`
	// BlockedReasons lists why migration is currently impossible.
	BlockedReasons []string `json:"blocked-reasons,omitempty"`
	// PostcopyBlocktime is the total time vCPUs were blocked in postcopy, in ms.
	PostcopyBlocktime *int64 `json:"postcopy-blocktime,omitempty"`
	// DirtyLimitThrottleTimePerRound is the dirty-limit throttle time
	// per round, in microseconds.
	DirtyLimitThrottleTimePerRound *int64 `json:"dirty-limit-throttle-time-per-round,omitempty"`
	// DirtyLimitRingFullTime is the estimated time a vCPU waits for its
	// dirty ring to be reaped, in microseconds.
	DirtyLimitRingFullTime *int64 `json:"dirty-limit-ring-full-time,omitempty"`
}

// MigrationRAMStats is QEMU's MigrationStats (the "ram" member).
type MigrationRAMStats struct {
	// Transferred is the number of bytes sent so far.
	Transferred int64 `json:"transferred"`
	// Remaining is the number of bytes still to send in this pass.
	Remaining int64 `json:"remaining"`
	// Total is the guest's RAM size in bytes.
	Total int64 `json:"total"`
	// Duplicate is the number of zero pages found (sent as markers).
	Duplicate int64 `json:"duplicate"`
	// Normal is the number of whole pages sent.
	Normal int64 `json:"normal"`
	// NormalBytes is the number of bytes sent in whole pages.
	NormalBytes int64 `json:"normal-bytes"`
	// DirtyPagesRate is how many pages the guest dirties per second.
	DirtyPagesRate int64 `json:"dirty-pages-rate"`
	// Mbps is the current throughput in megabits per second.
	Mbps float64 `json:"mbps"`
	// DirtySyncCount is the number of dirty-bitmap syncs (passes) so far.
	DirtySyncCount int64 `json:"dirty-sync-count"`
	// PostcopyRequests is the number of page requests from the destination.
	PostcopyRequests int64 `json:"postcopy-requests"`
	// PageSize is the target page size in bytes.
	PageSize int64 `json:"page-size"`
	// MultifdBytes is the number of bytes sent over multifd channels.
	MultifdBytes int64 `json:"multifd-bytes"`
	// PagesPerSecond is the current page transfer rate.
	PagesPerSecond int64 `json:"pages-per-second"`
	// PrecopyBytes is the number of bytes sent in the pre-copy phase.
	PrecopyBytes int64 `json:"precopy-bytes"`
	// DowntimeBytes is the number of bytes sent while the guest was paused.
	DowntimeBytes int64 `json:"downtime-bytes"`
	// PostcopyBytes is the number of bytes sent during postcopy.
	PostcopyBytes int64 `json:"postcopy-bytes"`
	// DirtySyncMissedZeroCopy counts dirty syncs that had to flush
	// zero-copy sends.
	DirtySyncMissedZeroCopy int64 `json:"dirty-sync-missed-zero-copy"`
}

// XBZRLECacheStats is QEMU's XBZRLECacheStats.
type XBZRLECacheStats struct {
	CacheSize     int64   `json:"cache-size"`
	Bytes         int64   `json:"bytes"`
	Pages         int64   `json:"pages"`
	CacheMiss     int64   `json:"cache-miss"`
	CacheMissRate float64 `json:"cache-miss-rate"`
	EncodingRate  float64 `json:"encoding-rate"`
	Overflow      int64   `json:"overflow"`
}

// QueryMigrate returns the state and statistics of the current or last
// migration (query-migrate). It works on source and destination.
func (m *Monitor) QueryMigrate(ctx context.Context) (MigrationInfo, error) {
	var info MigrationInfo
	err := m.Execute(ctx, "query-migrate", nil, &info)
	return info, err
}

// MigrationCapability is one capability and its state.
type MigrationCapability struct {
	Capability string `json:"capability"`
	State      bool   `json:"state"`
}

// MigrateSetCapabilities switches migration capabilities on or off
// (migrate-set-capabilities), e.g. {"events": true}. Capabilities not
// named keep their state. They must be set before the migration starts,
// on both sides where QEMU requires it (e.g. multifd, return-path).
func (m *Monitor) MigrateSetCapabilities(ctx context.Context, caps map[string]bool) error {
	list := make([]MigrationCapability, 0, len(caps))
	for name, on := range caps {
		list = append(list, MigrationCapability{Capability: name, State: on})
	}
	sort.Slice(list, func(i, j int) bool { return list[i].Capability < list[j].Capability })
	args := struct {
		Capabilities []MigrationCapability `json:"capabilities"`
	}{list}
	return m.Execute(ctx, "migrate-set-capabilities", args, nil)
}

// QueryMigrateCapabilities returns every migration capability and its
// state (query-migrate-capabilities).
func (m *Monitor) QueryMigrateCapabilities(ctx context.Context) (map[string]bool, error) {
	var list []MigrationCapability
	if err := m.Execute(ctx, "query-migrate-capabilities", nil, &list); err != nil {
		return nil, err
	}
	caps := make(map[string]bool, len(list))
	for _, c := range list {
		caps[c.Capability] = c.State
	}
	return caps, nil
}

// MigrationParameters are QEMU's migration parameters. As arguments of
// MigrateSetParameters only the non-nil fields are sent; as the reply of
// QueryMigrateParameters QEMU fills in all it knows.
//
// Units: times in milliseconds, bandwidths in bytes per second, throttle
// values in percent. The announce-* parameters act on the destination
// QEMU, which sends the announcements after it resumes the guest.
type MigrationParameters struct {
	AnnounceInitial          *int64  `json:"announce-initial,omitempty"`
	AnnounceMax              *int64  `json:"announce-max,omitempty"`
	AnnounceRounds           *int64  `json:"announce-rounds,omitempty"`
	AnnounceStep             *int64  `json:"announce-step,omitempty"`
	ThrottleTriggerThreshold *int64  `json:"throttle-trigger-threshold,omitempty"`
	CPUThrottleInitial       *int64  `json:"cpu-throttle-initial,omitempty"`
	CPUThrottleIncrement     *int64  `json:"cpu-throttle-increment,omitempty"`
	CPUThrottleTailslow      *bool   `json:"cpu-throttle-tailslow,omitempty"`
	TLSCreds                 *string `json:"tls-creds,omitempty"`
	TLSHostname              *string `json:"tls-hostname,omitempty"`
	TLSAuthz                 *string `json:"tls-authz,omitempty"`
	// MaxBandwidth caps the migration stream, in bytes per second.
	MaxBandwidth *int64 `json:"max-bandwidth,omitempty"`
	// AvailSwitchoverBandwidth is the bandwidth QEMU may assume for the
	// final switchover, in bytes per second (0: use the measured rate).
	AvailSwitchoverBandwidth *int64 `json:"avail-switchover-bandwidth,omitempty"`
	// DowntimeLimit is the longest acceptable final pause, in ms.
	DowntimeLimit         *int64  `json:"downtime-limit,omitempty"`
	XCheckpointDelay      *int64  `json:"x-checkpoint-delay,omitempty"`
	MultifdChannels       *int64  `json:"multifd-channels,omitempty"`
	XBZRLECacheSize       *int64  `json:"xbzrle-cache-size,omitempty"`
	MaxPostcopyBandwidth  *int64  `json:"max-postcopy-bandwidth,omitempty"`
	MaxCPUThrottle        *int64  `json:"max-cpu-throttle,omitempty"`
	MultifdCompression    *string `json:"multifd-compression,omitempty"`
	MultifdZlibLevel      *int64  `json:"multifd-zlib-level,omitempty"`
	MultifdQatzipLevel    *int64  `json:"multifd-qatzip-level,omitempty"`
	MultifdZstdLevel      *int64  `json:"multifd-zstd-level,omitempty"`
	XVCPUDirtyLimitPeriod *int64  `json:"x-vcpu-dirty-limit-period,omitempty"`
	VCPUDirtyLimit        *int64  `json:"vcpu-dirty-limit,omitempty"`
	// Mode is "normal", "cpr-reboot" or "cpr-transfer".
	Mode *string `json:"mode,omitempty"`
	// ZeroPageDetection is "none", "legacy" or "multifd".
	ZeroPageDetection *string `json:"zero-page-detection,omitempty"`
	DirectIO          *bool   `json:"direct-io,omitempty"`
}

// MigrateSetParameters sets the non-nil migration parameters
// (migrate-set-parameters).
func (m *Monitor) MigrateSetParameters(ctx context.Context, p MigrationParameters) error {
	return m.Execute(ctx, "migrate-set-parameters", p, nil)
}

// QueryMigrateParameters returns the current migration parameters
// (query-migrate-parameters).
func (m *Monitor) QueryMigrateParameters(ctx context.Context) (MigrationParameters, error) {
	var p MigrationParameters
	err := m.Execute(ctx, "query-migrate-parameters", nil, &p)
	return p, err
}

// Migrate starts an outgoing migration to uri, e.g. "tcp:198.18.0.2:4444"
// (migrate). It returns once the migration has started; follow it with
// QueryMigrate or MIGRATION events.
func (m *Monitor) Migrate(ctx context.Context, uri string) error {
	args := struct {
		URI string `json:"uri"`
	}{uri}
	return m.Execute(ctx, "migrate", args, nil)
}

// MigrateIncoming makes a QEMU started with "-incoming defer" listen for
// the migration stream on uri, e.g. "tcp:0.0.0.0:4444" (migrate-incoming).
// With exitOnError (QEMU's default) the destination QEMU exits when the
// incoming migration fails; without it QEMU stays up so the failure can be
// read with QueryMigrate, and the caller must quit it.
func (m *Monitor) MigrateIncoming(ctx context.Context, uri string, exitOnError bool) error {
	args := struct {
		URI         string `json:"uri"`
		ExitOnError bool   `json:"exit-on-error"`
	}{uri, exitOnError}
	return m.Execute(ctx, "migrate-incoming", args, nil)
}

// MigrateStartPostcopy switches a running migration to post-copy
// (migrate-start-postcopy): the destination runs the guest from then on and
// fetches the pages it still lacks from the source. Both ends need the
// postcopy-ram capability, set before the migration started.
func (m *Monitor) MigrateStartPostcopy(ctx context.Context) error {
	return m.Execute(ctx, "migrate-start-postcopy", nil, nil)
}

// MigratePause breaks a post-copy migration's stream on purpose (migrate-pause),
// on either end; both ends then wait in postcopy-paused for a recovery. QEMU
// accepts it only in postcopy-active (and, on the source, postcopy-recover).
// It runs out of band: a destination's main loop may be blocked on a page that
// the broken stream does not bring.
func (m *Monitor) MigratePause(ctx context.Context) error {
	return m.ExecuteOOB(ctx, "migrate-pause", nil, nil)
}

// MigrateRecover makes a destination whose post-copy migration is paused
// listen for the source's new stream on uri (migrate-recover); called again, it
// listens on the new uri instead. It runs out of band, like MigratePause.
func (m *Monitor) MigrateRecover(ctx context.Context, uri string) error {
	args := struct {
		URI string `json:"uri"`
	}{uri}
	return m.ExecuteOOB(ctx, "migrate-recover", args, nil)
}

// MigrateResume reconnects a source whose post-copy migration is paused to the
// destination listening at uri after MigrateRecover (migrate with resume). If
// it cannot connect, the migration stays paused and query-migrate says why.
func (m *Monitor) MigrateResume(ctx context.Context, uri string) error {
	args := struct {
		URI    string `json:"uri"`
		Resume bool   `json:"resume"`
	}{uri, true}
	return m.Execute(ctx, "migrate", args, nil)
}

// MigrateCancel cancels the current outgoing migration (migrate_cancel);
// the source guest keeps running.
func (m *Monitor) MigrateCancel(ctx context.Context) error {
	return m.Execute(ctx, "migrate_cancel", nil, nil)
}

// MigrateContinue resumes a migration paused in state (e.g.
// "pre-switchover" with the pause-before-switchover capability)
// (migrate-continue).
func (m *Monitor) MigrateContinue(ctx context.Context, state string) error {
	args := struct {
		State string `json:"state"`
	}{state}
	return m.Execute(ctx, "migrate-continue", args, nil)
}
