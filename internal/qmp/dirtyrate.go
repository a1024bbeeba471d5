package qmp

import "context"

// Dirty-rate measurement states (DirtyRateInfo.Status).
const (
	DirtyRateUnstarted = "unstarted"
	DirtyRateMeasuring = "measuring"
	DirtyRateMeasured  = "measured"
)

// Dirty-rate measurement modes (DirtyRateArgs.Mode). Page sampling hashes a sample of
// the guest's pages before and after the period and works under every accelerator;
// dirty-bitmap and dirty-ring read KVM's dirty log (dirty-bitmap reports 0 under TCG).
const (
	DirtyRatePageSampling = "page-sampling"
	DirtyRateDirtyBitmap  = "dirty-bitmap"
	DirtyRateDirtyRing    = "dirty-ring"
)

// Time units of calc-dirty-rate and query-dirty-rate.
const (
	TimeUnitSecond      = "second"
	TimeUnitMillisecond = "millisecond"
)

// Bounds QEMU (10.0) puts on calc-dirty-rate's arguments.
const (
	// MinDirtyRateCalcMS and MaxDirtyRateCalcMS bound the measuring period.
	MinDirtyRateCalcMS = 50
	MaxDirtyRateCalcMS = 60000
	// MinDirtyRateSamplePages and MaxDirtyRateSamplePages bound the pages sampled per
	// GiB of guest memory in page-sampling mode (QEMU's default is 512).
	MinDirtyRateSamplePages = 128
	MaxDirtyRateSamplePages = 16384
)

// DirtyRateArgs are the arguments of calc-dirty-rate. CalcTime is in CalcTimeUnit
// (QEMU's default: seconds); SamplePages is per GiB of guest memory (page sampling
// only; 0: QEMU's default); Mode empty is page sampling.
type DirtyRateArgs struct {
	CalcTime     int64  `json:"calc-time"`
	CalcTimeUnit string `json:"calc-time-unit,omitempty"`
	SamplePages  int64  `json:"sample-pages,omitempty"`
	Mode         string `json:"mode,omitempty"`
}

// DirtyRateInfo is the reply of query-dirty-rate (QEMU's DirtyRateInfo).
type DirtyRateInfo struct {
	// DirtyRate is the guest's dirty rate in MiB/s (QEMU says MB/s and means
	// 2^20 bytes), present once Status is "measured".
	DirtyRate *int64 `json:"dirty-rate,omitempty"`
	// Status is "unstarted", "measuring" or "measured".
	Status string `json:"status"`
	// StartTime is when the last measurement started, in seconds of QEMU's
	// monotonic clock.
	StartTime int64 `json:"start-time"`
	// CalcTime is the period measured, in CalcTimeUnit (QEMU's own timing: a
	// little longer than asked for, rounded down to the unit).
	CalcTime     int64  `json:"calc-time"`
	CalcTimeUnit string `json:"calc-time-unit"`
	// SamplePages is the pages sampled per GiB (page sampling; 0 otherwise).
	SamplePages int64  `json:"sample-pages"`
	Mode        string `json:"mode"`
	// VCPUDirtyRate is the per-vCPU rate (dirty-ring mode only).
	VCPUDirtyRate []VCPUDirtyRate `json:"vcpu-dirty-rate,omitempty"`
}

// VCPUDirtyRate is one vCPU's dirty rate in MiB/s.
type VCPUDirtyRate struct {
	ID        int64 `json:"id"`
	DirtyRate int64 `json:"dirty-rate"`
}

// CalcDirtyRate starts measuring how fast the guest dirties its memory
// (calc-dirty-rate). It returns at once; QueryDirtyRate reports "measured" and the rate
// once the period has passed. QEMU runs one measurement at a time and refuses another
// while one runs.
func (m *Monitor) CalcDirtyRate(ctx context.Context, a DirtyRateArgs) error {
	return m.Execute(ctx, "calc-dirty-rate", a, nil)
}

// QueryDirtyRate returns the state and result of the latest dirty-rate measurement
// (query-dirty-rate), with CalcTime in unit (empty: seconds).
func (m *Monitor) QueryDirtyRate(ctx context.Context, unit string) (DirtyRateInfo, error) {
	args := struct {
		Unit string `json:"calc-time-unit,omitempty"`
	}{unit}
	var info DirtyRateInfo
	err := m.Execute(ctx, "query-dirty-rate", args, &info)
	return info, err
}
