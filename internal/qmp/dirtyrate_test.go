package qmp

import (
	"testing"
	"time"
)

// TestDirtyRate measures a paused guest's dirty rate by page sampling under TCG: the
// measurement runs through its states, its arguments come back as given, a paused guest
// dirties nothing, and QEMU's bounds and its one-measurement-at-a-time rule are errors.
func TestDirtyRate(t *testing.T) {
	q := startQEMU(t, "-machine", "q35", "-accel", "tcg", "-m", "256", "-S")
	m := dial(t, q)
	ctx := tctx(t, 20*time.Second)

	info, err := m.QueryDirtyRate(ctx, "")
	if err != nil || info.Status != DirtyRateUnstarted || info.DirtyRate != nil {
		t.Fatalf("QueryDirtyRate before any measurement = %+v, %v; want unstarted without a rate", info, err)
	}
	args := DirtyRateArgs{CalcTime: 200, CalcTimeUnit: TimeUnitMillisecond, SamplePages: MaxDirtyRateSamplePages, Mode: DirtyRatePageSampling}
	if err := m.CalcDirtyRate(ctx, args); err != nil {
		t.Fatalf("CalcDirtyRate: %v", err)
	}
	// QEMU's measuring thread marks the measurement as running a moment after the command
	// returns; only then is a second one refused.
	for {
		info, err = m.QueryDirtyRate(ctx, TimeUnitMillisecond)
		if err != nil {
			t.Fatalf("QueryDirtyRate: %v", err)
		}
		if info.Status != DirtyRateUnstarted {
			break
		}
		time.Sleep(time.Millisecond)
	}
	if info.Status == DirtyRateMeasuring {
		if err := m.CalcDirtyRate(ctx, args); !IsClass(err, ClassGenericError) {
			t.Errorf("a second measurement while one runs: %v, want GenericError", err)
		}
	} else {
		t.Logf("the 200 ms measurement ended before the test saw it run (%s); the one-at-a-time rule was not tried", info.Status)
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		info, err = m.QueryDirtyRate(ctx, TimeUnitMillisecond)
		if err != nil {
			t.Fatalf("QueryDirtyRate: %v", err)
		}
		if info.Status == DirtyRateMeasured {
			break
		}
		if info.Status != DirtyRateMeasuring || time.Now().After(deadline) {
			t.Fatalf("measurement state = %+v; want measuring, then measured", info)
		}
		time.Sleep(20 * time.Millisecond)
	}
	if info.DirtyRate == nil || *info.DirtyRate != 0 {
		t.Errorf("measured paused guest = %+v (rate %v); want a rate of 0", info, info.DirtyRate)
	}
	if info.CalcTime < 200 || info.CalcTime > 1000 || info.CalcTimeUnit != TimeUnitMillisecond ||
		info.SamplePages != MaxDirtyRateSamplePages || info.Mode != DirtyRatePageSampling {
		t.Errorf("measured paused guest = %+v; want about 200 ms measured with %d sample pages", info, MaxDirtyRateSamplePages)
	}
	if s, err := m.QueryDirtyRate(ctx, ""); err != nil || s.CalcTime != 0 || s.CalcTimeUnit != TimeUnitSecond {
		t.Errorf("QueryDirtyRate in seconds = %+v, %v; want calc-time 0 s (200 ms rounded down)", s, err)
	}

	for _, bad := range []DirtyRateArgs{
		{CalcTime: MinDirtyRateCalcMS - 1, CalcTimeUnit: TimeUnitMillisecond},
		{CalcTime: MaxDirtyRateCalcMS + 1, CalcTimeUnit: TimeUnitMillisecond},
		{CalcTime: 1, SamplePages: MinDirtyRateSamplePages - 1},
		{CalcTime: 1, SamplePages: MaxDirtyRateSamplePages + 1},
		{CalcTime: 1, CalcTimeUnit: "minute"},
	} {
		if err := m.CalcDirtyRate(ctx, bad); !IsClass(err, ClassGenericError) {
			t.Errorf("CalcDirtyRate(%+v) = %v, want GenericError", bad, err)
		} else {
			t.Logf("QEMU refuses %+v: %v", bad, err)
		}
	}
}
