package qemu

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/godwit/godwit/internal/qmp"
)

// A destination's log as QEMU 10 writes it (the trace lines of one switch-over, between
// a message and the trace lines of another process).
const destinationLog = `2026-12-06T02:19:44.347334Z qemu-system-x86_64: a warning
16205@1796523594.607700:vmstate_downtime_load type=iterable idstr=ram instance_id=0 downtime=41
16205@1796523594.607731:vmstate_downtime_load type=non-iterable idstr=0000:00:02.0/virtio-net instance_id=0 downtime=10217
16205@1796523594.583818:vmstate_downtime_load type=non-iterable idstr=0000:00:00.0/mch instance_id=0 downtime=4705
16205@1796523594.507800:vmstate_downtime_checkpoint dst-precopy-loadvm-completed
16205@1796523594.607820:vmstate_downtime_checkpoint dst-precopy-loadvm-completed
16205@1796523594.607839:vmstate_downtime_checkpoint dst-precopy-bh-enter
16205@1796523594.607898:qemu_announce_self_iter _:virtio-net-pci.0:52:54:00:12:34:56 skip: 0
16205@1796523594.607907:vmstate_downtime_checkpoint dst-precopy-bh-announced
16205@1796523594.607910:migration_block_activation active
16205@1796523594.608080:vm_state_notify running 1 reason 9 (running)
16205@1796523594.608089:vmstate_downtime_checkpoint dst-precopy-bh-vm-started
16205@1796523594.657936:qemu_announce_self_iter _:virtio-net-pci.0:52:54:00:12:34:56 skip: 0
16205@1796523594.700000:vmstate_downtime_checkpoint something-new
`

func TestParseSwitchover(t *testing.T) {
	at := func(us int64) time.Time { return time.Unix(1796523594, us*1000) }
	sw := ParseSwitchover([]byte(destinationLog), at(600000))
	want := map[string]time.Time{
		CheckpointLoadCompleted: at(607820), CheckpointBottomHalf: at(607839),
		CheckpointAnnounced: at(607907), CheckpointVMStarted: at(608089),
	}
	if len(sw.Checkpoints) != len(want) {
		t.Errorf("checkpoints = %v, want %v (earlier and unknown ones left out)", sw.Checkpoints, want)
	}
	for k, v := range want {
		if !sw.Checkpoints[k].Equal(v) {
			t.Errorf("checkpoint %s = %v, want %v", k, sw.Checkpoints[k], v)
		}
	}
	if sw.Slowest != "virtio-net (0000:00:02.0)" || sw.SlowestTime != 10217*time.Microsecond {
		t.Errorf("slowest device = %q %v", sw.Slowest, sw.SlowestTime)
	}
	if sw.MemoryFinal != 41*time.Microsecond || !sw.DisksTaken.Equal(at(607910)) || !sw.Running.Equal(at(608080)) || !sw.DisksReleased.IsZero() {
		t.Errorf("memory %v, disks taken %v, running %v, released %v", sw.MemoryFinal, sw.DisksTaken, sw.Running, sw.DisksReleased)
	}
	if !sw.FirstAnnounce.Equal(at(607898)) {
		t.Errorf("first announce = %v, want %v", sw.FirstAnnounce, at(607898))
	}
	// A migration that began later sees none of it.
	if sw := ParseSwitchover([]byte(destinationLog), at(700001)); len(sw.Checkpoints) != 0 || sw.Slowest != "" {
		t.Errorf("entries before the migration began were kept: %+v", sw)
	}
	if got := logMessage(destinationLog); got != "qemu-system-x86_64: a warning" {
		t.Errorf("logMessage = %q; want QEMU's message without its timestamp and without trace lines", got)
	}
}

// TestSwitchoverTrace migrates a VM between two real QEMUs started by Start and reads
// both logs: every checkpoint of the switch-over is there, in order, on the host clock.
func TestSwitchoverTrace(t *testing.T) {
	bin, kernel := qemuBinary(t), testKernel(t)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	srcSpec := testSpec(t, kernel)
	dstSpec := srcSpec
	dstSpec.RunDir, dstSpec.Incoming = t.TempDir(), "defer"
	src, err := Start(ctx, bin, srcSpec)
	if err != nil {
		t.Fatal(err)
	}
	defer src.Kill()
	dst, err := Start(ctx, bin, dstSpec)
	if err != nil {
		t.Fatal(err)
	}
	defer dst.Kill()
	ms, err := src.Monitor(ctx)
	if err != nil {
		t.Fatal(err)
	}
	md, err := dst.Monitor(ctx)
	if err != nil {
		t.Fatal(err)
	}
	uri := "unix:" + filepath.Join(dstSpec.RunDir, "mig.sock")
	if err := md.MigrateIncoming(ctx, uri, false); err != nil {
		t.Fatal(err)
	}
	began := time.Now()
	if err := ms.Migrate(ctx, uri); err != nil {
		t.Fatal(err)
	}
	for {
		st, err := md.QueryStatus(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if st.Running {
			break
		}
		if info, err := ms.QueryMigrate(ctx); err != nil || info.Status == qmp.MigrationFailed {
			t.Fatalf("migration failed: %+v, %v", info, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
	s, err := ReadSwitchover(srcSpec.LogPath(), began)
	if err != nil {
		t.Fatal(err)
	}
	d, err := ReadSwitchover(dstSpec.LogPath(), began)
	if err != nil {
		t.Fatal(err)
	}
	order := []struct {
		sw   Switchover
		name string
	}{
		{s, CheckpointDowntimeStart}, {s, CheckpointVMStopped}, {s, CheckpointIterableSaved},
		{s, CheckpointNonIterableSaved}, {s, CheckpointDowntimeEnd},
		{d, CheckpointLoadCompleted}, {d, CheckpointBottomHalf}, {d, CheckpointAnnounced}, {d, CheckpointVMStarted},
	}
	var prev time.Time
	for _, o := range order {
		at, ok := o.sw.Checkpoints[o.name]
		if !ok {
			t.Fatalf("checkpoint %s missing; source %v, destination %v", o.name, s.Checkpoints, d.Checkpoints)
		}
		if at.Before(began) || at.Before(prev) || time.Since(at) > time.Minute {
			t.Errorf("checkpoint %s at %v: out of order (previous %v, migration began %v)", o.name, at, prev, began)
		}
		prev = at
	}
	if s.DisksReleased.IsZero() || d.Running.IsZero() || s.MemoryFinal <= 0 {
		t.Errorf("source released its disks at %v after a last pass of %v; destination ran at %v", s.DisksReleased, s.MemoryFinal, d.Running)
	}
	t.Logf("switch-over %v; slowest device saved %s (%v), loaded %s (%v)",
		d.Checkpoints[CheckpointVMStarted].Sub(s.Checkpoints[CheckpointDowntimeStart]), s.Slowest, s.SlowestTime, d.Slowest, d.SlowestTime)
	if s.Slowest == "" || d.Slowest == "" {
		t.Errorf("no device times traced: source %q, destination %q", s.Slowest, d.Slowest)
	}
	for _, l := range strings.Split(logMessage(readAll(t, dstSpec.LogPath())), "\n") {
		if traceLine.MatchString(l) {
			t.Errorf("logMessage kept a trace line: %q", l)
		}
	}
}

func FuzzParseSwitchover(f *testing.F) {
	f.Add([]byte(destinationLog), int64(0))
	f.Add([]byte("1@1.000001:vmstate_downtime_checkpoint src-vm-stopped\n"), int64(0))
	f.Fuzz(func(t *testing.T, data []byte, since int64) {
		sw := ParseSwitchover(data, time.Unix(since, 0))
		for k := range sw.Checkpoints {
			if !knownCheckpoint(k) {
				t.Fatalf("unknown checkpoint %q kept", k)
			}
		}
		if len(sw.Slowest) > 160 || sw.SlowestTime < 0 {
			t.Fatalf("slowest device %q %v", sw.Slowest, sw.SlowestTime)
		}
	})
}

func readAll(t *testing.T, path string) string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}
