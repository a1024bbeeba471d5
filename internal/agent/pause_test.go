package agent

import (
	"math"
	"testing"
	"time"

	"github.com/godwit/godwit/internal/api"
	"github.com/godwit/godwit/internal/qemu"
)

func TestPauseBreakdown(t *testing.T) {
	t0 := time.Date(2026, 12, 6, 2, 0, 0, 0, time.UTC)
	at := func(us int) time.Time { return t0.Add(time.Duration(us) * time.Microsecond) }
	src := qemu.Switchover{Checkpoints: map[string]time.Time{
		qemu.CheckpointDowntimeStart: at(0), qemu.CheckpointVMStopped: at(500), qemu.CheckpointIterableSaved: at(1500),
		qemu.CheckpointNonIterableSaved: at(3500), qemu.CheckpointDowntimeEnd: at(22000),
	}, Slowest: "virtio-net (0000:00:02.0)", SlowestTime: 400 * time.Microsecond,
		DisksReleased: at(510), MemoryFinal: 800 * time.Microsecond}
	taken, running := at(21150), at(21250)
	announce := at(21000)
	dst := &api.SwitchoverTrace{Checkpoints: map[string]time.Time{
		qemu.CheckpointLoadCompleted: at(20000), qemu.CheckpointBottomHalf: at(20100),
		qemu.CheckpointAnnounced: at(21100), qemu.CheckpointVMStarted: at(21300),
	}, FirstAnnounce: &announce, SlowestLoad: "virtio-net (0000:00:02.0) 10.2 ms", DisksTaken: &taken, Running: &running}
	b := pauseBreakdown(src, dst)
	if b == nil {
		t.Fatal("no breakdown from complete traces")
	}
	// The source released the disks from 0.51 to 0.7 ms (the last pass took 0.8 ms of
	// the 1 ms to iterable-saved); the destination took them from 21.15 to 21.25 ms.
	want := api.PauseBreakdown{TotalMS: 21.3, StopMS: 0.5, LastPassMS: 0.81, DeviceStateMS: 2, DiskHandoverMS: 0.19 + 0.1,
		DestinationLoadMS: 16.5, ResumeMS: 1.3 - 0.1}
	near := func(a, b float64) bool { return math.Abs(a-b) < 1e-9 }
	if !near(b.TotalMS, want.TotalMS) || !near(b.StopMS, want.StopMS) || !near(b.LastPassMS, want.LastPassMS) ||
		!near(b.DeviceStateMS, want.DeviceStateMS) || !near(b.DiskHandoverMS, want.DiskHandoverMS) ||
		!near(b.DestinationLoadMS, want.DestinationLoadMS) || !near(b.ResumeMS, want.ResumeMS) {
		t.Errorf("breakdown = %+v, want %+v", *b, want)
	}
	sum := b.StopMS + b.LastPassMS + b.DeviceStateMS + b.DiskHandoverMS + b.DestinationLoadMS + b.ResumeMS
	if !near(sum, b.TotalMS) {
		t.Errorf("parts add up to %v, total %v", sum, b.TotalMS)
	}
	if b.AnnounceMS == nil || !near(*b.AnnounceMS, -0.3) {
		t.Errorf("announce = %v, want -0.3 ms (before the resume)", b.AnnounceMS)
	}
	if b.SlowestSave != "virtio-net (0000:00:02.0) 0.4 ms" || b.SlowestLoad != dst.SlowestLoad {
		t.Errorf("slowest devices = %q, %q", b.SlowestSave, b.SlowestLoad)
	}

	// Nothing is made up: a missing checkpoint, or times that cannot be one switch-over.
	missing := map[string]time.Time{}
	for k, v := range src.Checkpoints {
		if k != qemu.CheckpointIterableSaved {
			missing[k] = v
		}
	}
	if b := pauseBreakdown(qemu.Switchover{Checkpoints: missing}, dst); b != nil {
		t.Errorf("breakdown without the last pass's checkpoint: %+v", *b)
	}
	if b := pauseBreakdown(src, nil); b != nil {
		t.Errorf("breakdown without the destination's trace: %+v", *b)
	}
	early := &api.SwitchoverTrace{Checkpoints: map[string]time.Time{}}
	for k, v := range dst.Checkpoints {
		early.Checkpoints[k] = v.Add(-20 * time.Millisecond)
	}
	if b := pauseBreakdown(src, early); b != nil {
		t.Errorf("breakdown of a destination that loaded before the source sent its devices: %+v", *b)
	}
}
