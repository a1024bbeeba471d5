package migration

import (
	"context"
	"testing"
	"time"
)

// TestMeasureDirtyRate measures, under TCG, a guest that sweeps 128 MiB at 32 MiB/s:
// about 32 MiB/s over both periods, so no working set below the guest's memory.
func TestMeasureDirtyRate(t *testing.T) {
	v := bootGuest(t, guestSpec(t, 512, "godwit.dirty_mib=128 godwit.dirty_rate=32"))
	time.Sleep(3 * time.Second) // the guest's start-up writes, measured at once, look like a burst
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	a, err := MeasureDirtyRate(ctx, v.mon)
	if err != nil {
		t.Fatalf("MeasureDirtyRate: %v", err)
	}
	t.Logf("measured: %.1f MiB/s over %v, %.1f MiB/s over %v; working set %.1f MiB",
		a.DirtyRate/(1<<20), RateWindow, a.BurstDirtyRate/(1<<20), BurstWindow, a.workingSet()/(1<<20))
	if a.Measured.IsZero() || time.Since(a.Measured) > 10*time.Second {
		t.Errorf("Measured = %v; want just now", a.Measured)
	}
	if a.DirtyRate < 16<<20 || a.DirtyRate > 64<<20 || a.BurstDirtyRate < 8<<20 || a.BurstDirtyRate > 128<<20 {
		t.Errorf("dirty rates %.1f MiB/s over %v and %.1f MiB/s over %v; want about 32 MiB/s over both",
			a.DirtyRate/(1<<20), RateWindow, a.BurstDirtyRate/(1<<20), BurstWindow)
	}
	if ws := a.workingSet(); ws != 0 {
		t.Errorf("working set = %.1f MiB; want none (a steady sweep of 128 MiB shows the same rate over both periods)", ws/(1<<20))
	}
	// A second measurement right after the first is QEMU's to make: nothing is left running.
	if _, err := MeasureDirtyRate(ctx, v.mon); err != nil {
		t.Errorf("a second measurement: %v", err)
	}
}
