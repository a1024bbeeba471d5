package qmp

import (
	"os"
	"path/filepath"
	"testing"
	"time"
)

func TestQueryCommands(t *testing.T) {
	q := startQEMU(t, "-machine", "q35", "-accel", "tcg", "-m", "64", "-smp", "2", "-S", "-name", "guest=qmptest", "-uuid", "6f1c7a52-0d3e-4b8e-9a51-2f3c4d5e6f70")
	m := dial(t, q)
	ctx := tctx(t, 10*time.Second)

	kvm, err := m.QueryKVM(ctx)
	if err != nil || kvm.Enabled {
		t.Errorf("QueryKVM = %+v, %v; want not enabled under tcg", kvm, err)
	}
	cpus, err := m.QueryCPUsFast(ctx)
	if err != nil {
		t.Fatalf("QueryCPUsFast: %v", err)
	}
	if len(cpus) != 2 || cpus[1].CPUIndex != 1 || cpus[0].Target != "x86_64" || cpus[0].ThreadID == 0 || cpus[0].Props == nil {
		t.Errorf("QueryCPUsFast = %+v", cpus)
	}
	if name, err := m.QueryName(ctx); err != nil || name != "qmptest" {
		t.Errorf("QueryName = %q, %v", name, err)
	}
	if uuid, err := m.QueryUUID(ctx); err != nil || uuid != "6f1c7a52-0d3e-4b8e-9a51-2f3c4d5e6f70" {
		t.Errorf("QueryUUID = %q, %v", uuid, err)
	}
	if err := m.AnnounceSelf(ctx, DefaultAnnounce()); err != nil {
		t.Errorf("AnnounceSelf: %v", err)
	}
}

func TestMigrationSettings(t *testing.T) {
	q := startQEMU(t, "-machine", "none", "-S")
	m := dial(t, q)
	ctx := tctx(t, 10*time.Second)

	info, err := m.QueryMigrate(ctx)
	if err != nil {
		t.Fatalf("QueryMigrate: %v", err)
	}
	if info.Status != "" && info.Status != MigrationNone {
		t.Errorf("fresh QueryMigrate = %+v", info)
	}

	if err := m.MigrateSetCapabilities(ctx, map[string]bool{CapEvents: true, CapPauseBeforeSwitchover: true}); err != nil {
		t.Fatalf("MigrateSetCapabilities: %v", err)
	}
	caps, err := m.QueryMigrateCapabilities(ctx)
	if err != nil || !caps[CapEvents] || !caps[CapPauseBeforeSwitchover] || caps[CapMultifd] {
		t.Errorf("QueryMigrateCapabilities = %v, %v", caps, err)
	}
	if err := m.MigrateSetCapabilities(ctx, map[string]bool{"no-such-cap": true}); !IsClass(err, ClassGenericError) {
		t.Errorf("unknown capability: %v, want GenericError", err)
	}

	set := MigrationParameters{
		DowntimeLimit:            Ptr[int64](5),
		MaxBandwidth:             Ptr[int64](10 << 30),
		AvailSwitchoverBandwidth: Ptr[int64](1 << 30),
		MultifdChannels:          Ptr[int64](4),
		CPUThrottleInitial:       Ptr[int64](30),
		CPUThrottleIncrement:     Ptr[int64](15),
		AnnounceInitial:          Ptr[int64](10),
		AnnounceMax:              Ptr[int64](100),
		AnnounceRounds:           Ptr[int64](8),
		AnnounceStep:             Ptr[int64](20),
	}
	if err := m.MigrateSetParameters(ctx, set); err != nil {
		t.Fatalf("MigrateSetParameters: %v", err)
	}
	got, err := m.QueryMigrateParameters(ctx)
	if err != nil {
		t.Fatalf("QueryMigrateParameters: %v", err)
	}
	check := func(name string, got, want *int64) {
		if got == nil || *got != *want {
			t.Errorf("%s = %v, want %d", name, got, *want)
		}
	}
	check("downtime-limit", got.DowntimeLimit, set.DowntimeLimit)
	check("max-bandwidth", got.MaxBandwidth, set.MaxBandwidth)
	check("avail-switchover-bandwidth", got.AvailSwitchoverBandwidth, set.AvailSwitchoverBandwidth)
	check("multifd-channels", got.MultifdChannels, set.MultifdChannels)
	check("cpu-throttle-initial", got.CPUThrottleInitial, set.CPUThrottleInitial)
	check("cpu-throttle-increment", got.CPUThrottleIncrement, set.CPUThrottleIncrement)
	check("announce-initial", got.AnnounceInitial, set.AnnounceInitial)
	check("announce-max", got.AnnounceMax, set.AnnounceMax)
	check("announce-rounds", got.AnnounceRounds, set.AnnounceRounds)
	check("announce-step", got.AnnounceStep, set.AnnounceStep)
	if got.Mode == nil || *got.Mode != "normal" {
		t.Errorf("mode = %v", got.Mode)
	}

	// Out-of-range values are rejected by QEMU with its own message.
	if err := m.MigrateSetParameters(ctx, MigrationParameters{CPUThrottleInitial: Ptr[int64](500)}); !IsClass(err, ClassGenericError) {
		t.Errorf("cpu-throttle-initial=500: %v, want GenericError", err)
	} else {
		t.Logf("QEMU rejects: %v", err)
	}
}

func TestBlockNodes(t *testing.T) {
	dir := t.TempDir()
	img := filepath.Join(dir, "d0.raw")
	if err := os.WriteFile(img, make([]byte, 1<<20), 0o644); err != nil {
		t.Fatal(err)
	}
	q := startQEMU(t, "-machine", "none", "-S",
		"-blockdev", "driver=file,node-name=d0-file,filename="+img+",cache.direct=on,aio=threads",
		"-blockdev", "driver=raw,node-name=d0,file=d0-file")
	m := dial(t, q)
	ctx := tctx(t, 10*time.Second)

	nodes, err := m.QueryNamedBlockNodes(ctx)
	if err != nil {
		t.Fatalf("QueryNamedBlockNodes: %v", err)
	}
	byName := map[string]BlockDeviceInfo{}
	for _, n := range nodes {
		byName[n.NodeName] = n
	}
	f, ok := byName["d0-file"]
	if !ok || f.Drv != "file" || !f.Cache.Direct || f.File != img || !f.Active {
		t.Errorf("file node = %+v (all: %+v)", f, nodes)
	}
	if r, ok := byName["d0"]; !ok || r.Drv != "raw" || r.Image.VirtualSize != 1<<20 {
		t.Errorf("raw node = %+v", r)
	}

	if err := m.BlockdevAdd(ctx, map[string]any{
		"driver": "file", "node-name": "extra", "filename": img, "read-only": true,
		"cache": map[string]any{"direct": true},
	}); err != nil {
		t.Fatalf("BlockdevAdd: %v", err)
	}
	if err := m.BlockdevDel(ctx, "extra"); err != nil {
		t.Errorf("BlockdevDel: %v", err)
	}
	if err := m.BlockdevSetActive(ctx, "", false); err != nil {
		t.Errorf("BlockdevSetActive(all, false): %v", err)
	}
	nodes, err = m.QueryNamedBlockNodes(ctx)
	for _, n := range nodes {
		if n.Active {
			t.Errorf("node %s still active after inactivation", n.NodeName)
		}
	}
	if err != nil {
		t.Error(err)
	}
	if _, err := m.QueryBlock(ctx); err != nil {
		t.Errorf("QueryBlock: %v", err)
	}
}

// TestLocalMigration migrates a tiny paused machine between two QEMUs over
// a unix socket and checks the statistics decode.
func TestLocalMigration(t *testing.T) {
	common := []string{"-machine", "q35", "-accel", "tcg", "-m", "32", "-S"}
	src := startQEMU(t, common...)
	dst := startQEMU(t, append(common, "-incoming", "defer")...)
	ms, md := dial(t, src), dial(t, dst)
	ctx := tctx(t, 30*time.Second)

	if st, err := md.QueryStatus(ctx); err != nil || st.Status != StatusInMigrate {
		t.Fatalf("destination status = %+v, %v; want inmigrate", st, err)
	}
	uri := "unix:" + filepath.Join(dst.dir, "mig.sock")
	for _, mon := range []*Monitor{ms, md} {
		if err := mon.MigrateSetCapabilities(ctx, map[string]bool{CapEvents: true}); err != nil {
			t.Fatal(err)
		}
	}
	if err := md.MigrateIncoming(ctx, uri, false); err != nil {
		t.Fatalf("MigrateIncoming: %v", err)
	}
	if err := ms.Migrate(ctx, uri); err != nil {
		t.Fatalf("Migrate: %v", err)
	}
	var info MigrationInfo
	for {
		var err error
		info, err = ms.QueryMigrate(ctx)
		if err != nil {
			t.Fatalf("QueryMigrate: %v", err)
		}
		if info.Status == MigrationCompleted || info.Status == MigrationFailed {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	if info.Status != MigrationCompleted {
		t.Fatalf("migration %s: %s", info.Status, info.ErrorDesc)
	}
	if info.RAM == nil || info.RAM.Total < 32<<20 || info.RAM.Transferred == 0 || info.TotalTime == nil || info.Downtime == nil || info.SetupTime == nil {
		t.Errorf("completed MigrationInfo incomplete: %+v ram=%+v", info, info.RAM)
	} else {
		t.Logf("migrated: total %d ms, downtime %d ms, %d bytes, %d syncs", *info.TotalTime, *info.Downtime, info.RAM.Transferred, info.RAM.DirtySyncCount)
	}
	// The source completes before the destination has loaded the last
	// section; the destination's own "completed" event says it has.
	for {
		ev := waitEvent(t, md, EventMigration, 10*time.Second)
		var d MigrationEventData
		if err := ev.Decode(&d); err != nil || d.Status == "" {
			t.Fatalf("MIGRATION event = %s, %v", ev.Data, err)
		}
		if d.Status == MigrationFailed {
			t.Fatalf("destination reports the migration failed: %s", ev.Data)
		}
		if d.Status == MigrationCompleted {
			break
		}
	}
	// The run state travels with the migration: a source that was never
	// started arrives as "prelaunch"; the source ends in "postmigrate".
	if st, err := md.QueryStatus(ctx); err != nil || st.Running || st.Status != StatusPrelaunch {
		t.Errorf("destination after migration = %+v, %v", st, err)
	}
	if st, err := ms.QueryStatus(ctx); err != nil || st.Status != StatusPostMigrate {
		t.Errorf("source after migration = %+v, %v", st, err)
	}
}
