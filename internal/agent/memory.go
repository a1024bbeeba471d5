package agent

import (
	"context"
	"fmt"
	"time"

	"github.com/godwit/godwit/internal/api"
	"github.com/godwit/godwit/internal/migration"
	"github.com/godwit/godwit/internal/qemu"
)

// Memory activity of the running VMs, which the center's predictions of migrations need
// (migration.Predict): how much memory each guest dirties over 0.1, 1 and 4 s (QEMU's
// page sampling, about 5.1 s per measurement, see migration.MeasureDirtyRate) and how
// much of its memory holds data (a sample of its resident pages read from QEMU's
// process, see qemu.ReadGuestRAM). The agent measures every running VM every
// MemoryEvery, one VM at a time on the host (so with many VMs each is measured less
// often), reports the latest measurement in heartbeats, and measures again on the
// center's request when it is older than the center asks for.
const (
	// MemoryEvery is how often each running VM is measured.
	MemoryEvery = 30 * time.Second
	// memoryTick is how often the agent looks for a VM due for a measurement.
	memoryTick = 2 * time.Second
	// dataSamples is how many of a guest's resident pages are read to estimate how much
	// of its memory holds data (16 MiB at most): within a few percent.
	dataSamples = 4096
)

// measureLoop measures the running VMs' memory activity, the one measured longest ago
// first, until ctx ends.
func (a *Agent) measureLoop(ctx context.Context) {
	t := time.NewTicker(memoryTick)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		v := a.dueForMeasuring(time.Now())
		if v == nil {
			continue
		}
		if _, err := a.measureMemory(ctx, v, MemoryEvery); err != nil && ctx.Err() == nil {
			a.log.Debug("could not measure a VM's memory activity", "vm", v.spec.Name, "err", err)
		}
	}
}

// dueForMeasuring returns the running VM whose memory activity is oldest, if it is older
// than MemoryEvery, and not one that is migrating.
func (a *Agent) dueForMeasuring(now time.Time) *vm {
	a.mu.Lock()
	defer a.mu.Unlock()
	var due *vm
	var dueAt time.Time
	for _, v := range a.vms {
		if !measurable(v) {
			continue
		}
		var at time.Time
		if v.memory != nil {
			at = v.memory.Measured
		}
		if now.Sub(at) >= MemoryEvery && (due == nil || at.Before(dueAt)) {
			due, dueAt = v, at
		}
	}
	return due
}

// measurable says whether a VM's memory can be measured now: it runs here and is not
// being migrated. The caller holds a.mu.
func measurable(v *vm) bool {
	return v.proc != nil && v.state == api.VMRunning && v.outgoing == nil && v.incoming == ""
}

// MemoryActivity returns a running VM's memory activity no older than maxAge, measuring
// it now (waiting for the host's measurement in progress, if any) when the latest is
// older. 404 for a VM this host does not have, 409 for one that does not run here or is
// being migrated.
func (a *Agent) MemoryActivity(ctx context.Context, name string, maxAge time.Duration) (api.MemoryActivity, error) {
	v, err := a.get(name)
	if err != nil {
		return api.MemoryActivity{}, err
	}
	return a.measureMemory(ctx, v, maxAge)
}

// measureMemory measures v's memory activity unless a measurement younger than maxAge is
// kept, with the host's one measurement slot held, and keeps it for heartbeats.
func (a *Agent) measureMemory(ctx context.Context, v *vm, maxAge time.Duration) (api.MemoryActivity, error) {
	if m, ok := a.freshMemory(v, maxAge); ok {
		return m, nil
	}
	select {
	case a.memorySlot <- struct{}{}:
	case <-ctx.Done():
		return api.MemoryActivity{}, fmt.Errorf("waiting for this host's measurement of another VM: %w", ctx.Err())
	}
	defer func() { <-a.memorySlot }()
	// Another request may have measured it while this one waited.
	if m, ok := a.freshMemory(v, maxAge); ok {
		return m, nil
	}
	a.mu.Lock()
	p, ok, state, migrating := v.proc, measurable(v), v.state, v.outgoing != nil || v.incoming != ""
	a.mu.Unlock()
	switch {
	case migrating:
		return api.MemoryActivity{}, api.Conflict("VM %s is being migrated; its memory activity is measured while it runs on one host", v.spec.Name)
	case !ok:
		return api.MemoryActivity{}, api.Conflict("VM %s is %s; its memory activity is measured only while it runs", v.spec.Name, state)
	}
	mon, err := p.Monitor(ctx)
	if err != nil {
		return api.MemoryActivity{}, fmt.Errorf("measure the memory activity of VM %s: %w", v.spec.Name, err)
	}
	m, err := migration.MeasureDirtyRate(ctx, mon)
	if err != nil {
		return api.MemoryActivity{}, fmt.Errorf("measure the memory activity of VM %s: %w", v.spec.Name, err)
	}
	m.Host = a.cfg.Name
	if g, err := qemu.ReadGuestRAM(p.PID, int64(v.spec.MemoryMiB)<<20, dataSamples); err == nil {
		m.NonzeroBytes = float64(g.Nonzero)
	} else {
		a.log.Warn("how much of the VM's memory holds data is unknown; predictions count all of it", "vm", v.spec.Name, "err", err)
	}
	a.mu.Lock()
	if v.proc == p {
		v.memory = &m
	}
	a.mu.Unlock()
	return m, nil
}

// freshMemory returns v's kept measurement if it is younger than maxAge.
func (a *Agent) freshMemory(v *vm, maxAge time.Duration) (api.MemoryActivity, bool) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if v.memory == nil || time.Since(v.memory.Measured) > maxAge {
		return api.MemoryActivity{}, false
	}
	return *v.memory, true
}
