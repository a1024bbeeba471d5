package agent

import (
	"fmt"
	"time"

	"github.com/godwit/godwit/internal/api"
	"github.com/godwit/godwit/internal/qemu"
)

// switchoverTrace is what the destination reports of a switch-over its QEMU traced (see
// qemu.ReadSwitchover); nil when nothing was traced.
func switchoverTrace(p *qemu.Process) *api.SwitchoverTrace {
	sw, err := qemu.ReadSwitchover(qemu.Spec{RunDir: p.RunDir}.LogPath(), time.Time{})
	if err != nil || len(sw.Checkpoints) == 0 {
		return nil
	}
	t := &api.SwitchoverTrace{Checkpoints: sw.Checkpoints}
	if !sw.FirstAnnounce.IsZero() {
		t.FirstAnnounce = &sw.FirstAnnounce
	}
	if sw.Slowest != "" {
		t.SlowestLoad = fmt.Sprintf("%s %.1f ms", sw.Slowest, ms(sw.SlowestTime))
	}
	if !sw.DisksTaken.IsZero() {
		t.DisksTaken = &sw.DisksTaken
	}
	if !sw.Running.IsZero() {
		t.Running = &sw.Running
	}
	return t
}

// pauseBreakdown divides the pause into its parts from the source's switch-over and
// the destination's trace, or returns nil when a checkpoint is missing or the two
// hosts' times cannot be one switch-over.
//
// The source passes downtime-start, vm-stopped (vCPUs stopped, disks drained and
// flushed), then lets go of the disks (DisksReleased) and saves the last pass of memory
// (MemoryFinal long), iterable-saved, the devices, non-iterable-saved. The destination
// loads as the stream arrives: loadvm-completed, bh-enter, bh-announced (first
// announce sent), takes the disks (DisksTaken), starts the vCPUs (Running) and passes
// vm-started. The parts add up to downtime-start → vm-started; the disk hand-over is
// the source's release plus the destination's activation, each taken out of the step
// around it (the last pass, the resume) when its marks were traced.
func pauseBreakdown(src qemu.Switchover, dst *api.SwitchoverTrace) *api.PauseBreakdown {
	if dst == nil {
		return nil
	}
	c := func(cp map[string]time.Time, names ...string) ([]time.Time, bool) {
		var ts []time.Time
		for _, n := range names {
			t, ok := cp[n]
			if !ok || (len(ts) > 0 && t.Before(ts[len(ts)-1])) {
				return nil, false
			}
			ts = append(ts, t)
		}
		return ts, true
	}
	s, ok1 := c(src.Checkpoints, qemu.CheckpointDowntimeStart, qemu.CheckpointVMStopped, qemu.CheckpointIterableSaved,
		qemu.CheckpointNonIterableSaved)
	d, ok2 := c(dst.Checkpoints, qemu.CheckpointLoadCompleted, qemu.CheckpointBottomHalf, qemu.CheckpointAnnounced,
		qemu.CheckpointVMStarted)
	// The destination cannot finish loading before the source sent its devices.
	if !ok1 || !ok2 || d[0].Before(s[3]) || d[3].Sub(s[0]) > time.Minute {
		return nil
	}
	// within returns the part of [from, to) that lies inside [lo, hi].
	within := func(from, to, lo, hi time.Time) time.Duration {
		if from.Before(lo) {
			from = lo
		}
		if to.After(hi) {
			to = hi
		}
		return max(to.Sub(from), 0)
	}
	var release, take time.Duration
	if !src.DisksReleased.IsZero() {
		release = within(src.DisksReleased, s[2].Add(-src.MemoryFinal), s[1], s[2])
	}
	if dst.DisksTaken != nil && dst.Running != nil {
		take = within(*dst.DisksTaken, *dst.Running, d[2], d[3])
	}
	b := &api.PauseBreakdown{
		TotalMS:           ms(d[3].Sub(s[0])),
		StopMS:            ms(s[1].Sub(s[0])),
		LastPassMS:        ms(s[2].Sub(s[1]) - release),
		DeviceStateMS:     ms(s[3].Sub(s[2])),
		DiskHandoverMS:    ms(release + take),
		DestinationLoadMS: ms(d[0].Sub(s[3])),
		ResumeMS:          ms(d[3].Sub(d[0]) - take),
		SlowestLoad:       api.Truncate(dst.SlowestLoad, maxDeviceNote),
	}
	if dst.FirstAnnounce != nil {
		a := ms(dst.FirstAnnounce.Sub(d[3]))
		b.AnnounceMS = &a
	}
	if src.Slowest != "" {
		b.SlowestSave = fmt.Sprintf("%s %.1f ms", src.Slowest, ms(src.SlowestTime))
	}
	return b
}

// maxDeviceNote bounds the destination's note on its slowest device.
const maxDeviceNote = 160
