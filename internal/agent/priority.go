package agent

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"time"

	"golang.org/x/sys/unix"

	"github.com/godwit/godwit/internal/admission"
	"github.com/godwit/godwit/internal/api"
	"github.com/godwit/godwit/internal/migration"
	"github.com/godwit/godwit/internal/qmp"
)

// Migration priority on the source host. The center decides a migration's priority and
// its share of the network (api.AgentMigrateRequest.Priority and MaxBandwidth, then
// POST /agent/v1/migrations/{id}/bandwidth); the source agent applies them: the cap to
// QEMU's max-bandwidth (migration.Options.BandwidthCap), the priority to the CPU share of
// the source QEMU's migration thread, the thread that reads the guest's memory and sends
// it, and competes for the host's CPUs with every vCPU and with other migrations.

// Nice levels of the source QEMU's migration thread by priority. Under contention Linux
// gives a thread about 1.25× the CPU time of one a nice level above it: at -5 a high
// priority migration's thread gets about three times the share of a thread at 0 (the
// vCPUs, normal migrations), and at 10 a low priority one about a tenth, so it mostly
// uses what the rest leaves. A normal migration keeps QEMU's own level, 0.
const (
	NiceHigh   = -5
	NiceNormal = 0
	NiceLow    = 10
)

// MigrationNice returns the nice level of the source QEMU's migration thread for a
// migration of priority p: NiceHigh, NiceLow, or NiceNormal for anything else.
func MigrationNice(p admission.Priority) int {
	switch p {
	case admission.High:
		return NiceHigh
	case admission.Low:
		return NiceLow
	}
	return NiceNormal
}

// parsePriority reads a migration request's priority: high, normal or low, normal when
// empty. Anything else is a 422 that lists the valid ones.
func parsePriority(s string) (admission.Priority, error) {
	if strings.TrimSpace(s) == "" {
		return admission.Normal, nil
	}
	p, err := admission.ParsePriority(s)
	if err != nil {
		return "", api.Errorf(422, "invalid_priority", "%v: a migration's priority is high, normal or low (normal when not given)", err)
	}
	return p, nil
}

// migrationThreadWait bounds the search for the source QEMU's migration thread. QEMU
// creates the thread once it has connected to the destination, after the TLS handshake
// when the stream is encrypted: normally within a fraction of a second.
const migrationThreadWait = 15 * time.Second

// migrationThreadPoll is the interval of that search.
const migrationThreadPoll = 50 * time.Millisecond

// reniceMigration gives the source QEMU's (pid's) migration thread the nice level of
// priority p, in the background, as soon as QEMU has started the migration, and records
// the level in the migration's ThreadNice. It returns a function that ends the search
// (if it still runs) and waits for it; call it when the migration has ended. Failing to
// find or renice the thread is a warning in the log, not a failed migration: the
// migration then runs at QEMU's own level and ThreadNice stays nil.
func (a *Agent) reniceMigration(ctx context.Context, mon *qmp.Monitor, pid int, p admission.Priority, o *outgoing, log *slog.Logger) (stop func()) {
	ctx, cancel := context.WithTimeout(ctx, migrationThreadWait)
	done := make(chan struct{})
	nice := MigrationNice(p)
	go func() { // owned by the caller, which waits for it through stop
		defer close(done)
		tid, err := findMigrationThread(ctx, mon, pid)
		if err != nil {
			if !errors.Is(err, context.Canceled) {
				log.Warn("could not find the source QEMU's migration thread; it keeps QEMU's priority", "priority", p, "err", err)
			}
			return
		}
		if err := setThreadNice(pid, tid, nice); err != nil {
			log.Warn("could not set the priority of the source QEMU's migration thread; it keeps QEMU's", "priority", p, "tid", tid, "err", err)
			return
		}
		o.update(func(m *api.Migration) { m.ThreadNice = &nice })
		log.Info("migration thread reniced", "priority", p, "tid", tid, "nice", nice)
	}()
	return func() {
		cancel()
		<-done
	}
}

// findMigrationThread waits until QEMU process pid runs a migration thread and returns
// its thread id. It asks QEMU (query-migrationthreads) and, should QEMU not say, looks
// for a thread of pid named like one (QEMU names its threads with -name
// debug-threads=on). It gives up when ctx ends.
func findMigrationThread(ctx context.Context, mon *qmp.Monitor, pid int) (int, error) {
	var lastErr error
	for {
		tid, ok, err := migration.MigrationThread(ctx, mon)
		if err == nil && ok && isThreadOf(pid, tid) {
			return tid, nil
		}
		if err != nil {
			lastErr = err
		}
		if tid, ok := namedMigrationThread(pid); ok {
			return tid, nil
		}
		select {
		case <-ctx.Done():
			if lastErr != nil {
				return 0, fmt.Errorf("QEMU (pid %d) showed no migration thread: %w (%w)", pid, ctx.Err(), lastErr)
			}
			return 0, fmt.Errorf("QEMU (pid %d) showed no migration thread (query-migrationthreads named none, and no thread is called so): %w", pid, ctx.Err())
		case <-time.After(migrationThreadPoll):
		}
	}
}

// isThreadOf reports whether tid is a thread of process pid now.
func isThreadOf(pid, tid int) bool {
	_, err := os.Stat(fmt.Sprintf("/proc/%d/task/%d", pid, tid))
	return err == nil
}

// namedMigrationThread returns the thread of process pid whose name
// (/proc/PID/task/TID/comm) is that of QEMU's migration thread, if any.
func namedMigrationThread(pid int) (int, bool) {
	comms, _ := filepath.Glob(fmt.Sprintf("/proc/%d/task/*/comm", pid))
	for _, c := range comms {
		b, err := os.ReadFile(c)
		if err != nil || !migration.IsMigrationThread(strings.TrimSpace(string(b))) {
			continue
		}
		var tid int
		if _, err := fmt.Sscanf(filepath.Base(filepath.Dir(c)), "%d", &tid); err == nil && tid > 0 {
			return tid, true
		}
	}
	return 0, false
}

// setThreadNice sets the nice level of thread tid of process pid. On Linux,
// setpriority(PRIO_PROCESS, tid) acts on that one thread, not on its whole process. The
// thread is checked to belong to pid first, so that a thread id the kernel reused for
// another process is never touched. A level below the thread's current one needs
// CAP_SYS_NICE.
func setThreadNice(pid, tid, nice int) error {
	if !isThreadOf(pid, tid) {
		return fmt.Errorf("thread %d is not a thread of process %d (any more)", tid, pid)
	}
	if err := unix.Setpriority(unix.PRIO_PROCESS, tid, nice); err != nil {
		return fmt.Errorf("set the nice level of thread %d of process %d to %d: %w (a level below the current one needs CAP_SYS_NICE)", tid, pid, nice, err)
	}
	return nil
}
