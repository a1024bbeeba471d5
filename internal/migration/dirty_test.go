package migration

import (
	"context"
	"testing"
	"time"
)

// TestMeasureDirtyRate measures, under TCG, a guest that sweeps 64 MiB at 32 MiB/s: it
// dirties about 8 MiB in a quarter of a second and 32 MiB in a second, but in four
// seconds only the 64 MiB it keeps rewriting, not 128.
func TestMeasureDirtyRate(t *testing.T) {
	v := bootGuest(t, guestSpec(t, 512, "godwit.dirty_mib=64 godwit.dirty_rate=32"))
	time.Sleep(3 * time.Second) // the guest's start-up writes, measured at once, look like a burst
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	a, err := MeasureDirtyRate(ctx, v.mon)
	if err != nil {
		t.Fatalf("MeasureDirtyRate: %v", err)
	}
	t.Logf("measured: %+v; rate %.1f MiB/s", a.Dirtied, a.Rate()/mib)
	if a.Measured.IsZero() || time.Since(a.Measured) > 10*time.Second {
		t.Errorf("Measured = %v; want just now", a.Measured)
	}
	if len(a.Dirtied) != 3 || a.Dirtied[0].PeriodMS != 100 || a.Dirtied[1].PeriodMS != 1000 || a.Dirtied[2].PeriodMS != 4000 {
		t.Fatalf("samples %+v; want 100 ms, 1 s and 4 s", a.Dirtied)
	}
	second, four := a.Dirtied[1].Bytes, a.Dirtied[2].Bytes
	if second < 16*mib || second > 64*mib {
		t.Errorf("dirtied in 1 s: %.1f MiB; want about 32", second/mib)
	}
	if four < 40*mib || four > 100*mib || four > 2.5*second {
		t.Errorf("dirtied in 4 s: %.1f MiB (%.1f MiB in 1 s); want about the 64 MiB working set", four/mib, second/mib)
	}
	if r := a.Rate(); r < 16*mib || r > 96*mib {
		t.Errorf("rate %.1f MiB/s; want about 32", r/mib)
	}
	// A second measurement right after the first is QEMU's to make: nothing is left running.
	if _, err := MeasureDirtyRate(ctx, v.mon); err != nil {
		t.Errorf("a second measurement: %v", err)
	}
}
