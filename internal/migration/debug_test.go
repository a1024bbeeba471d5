package migration

import (
	"context"
	"testing"
	"time"
)

func TestDebugIdle(t *testing.T) {
	spec := guestSpec(t, 512, "")
	src := bootGuest(t, spec)
	time.Sleep(2 * time.Second)
	for i := 0; i < 4; i++ {
		p, _ := LookupPolicy("")
		dst, uri := startDestination(t, spec, &p, true)
		ctx := context.Background()
		if err := src.mon.MigrateSetCapabilities(ctx, SourceCapabilities(p)); err != nil {
			t.Fatal(err)
		}
		if err := src.mon.MigrateSetParameters(ctx, SourceParameters(p)); err != nil {
			t.Fatal(err)
		}
		t0 := time.Now()
		src.mon.Migrate(ctx, uri)
		for {
			q0 := time.Now()
			info, _ := src.mon.QueryMigrate(ctx)
			qd := time.Since(q0)
			r := info.RAM
			if r != nil {
				t.Logf("%5dms q=%4dms %s sync=%d rem=%d xfer=%d mbps=%.0f exp=%v", time.Since(t0).Milliseconds(), qd.Milliseconds(), info.Status, r.DirtySyncCount, r.Remaining, r.Transferred, r.Mbps, ms(info.ExpectedDowntime))
			} else {
				t.Logf("%5dms q=%4dms %s", time.Since(t0).Milliseconds(), qd.Milliseconds(), info.Status)
			}
			if info.Status == "completed" || info.Status == "failed" {
				t.Logf("downtime %v total %v", ms(info.Downtime), ms(info.TotalTime))
				break
			}
			time.Sleep(10 * time.Millisecond)
		}
		src.mon.Quit(ctx)
		src = dst
		time.Sleep(time.Second)
	}
}
