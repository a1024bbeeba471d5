package agent

import (
	"context"
	"sync"
	"time"

	"github.com/godwit/godwit/internal/api"
	"github.com/godwit/godwit/internal/qmp"
)

// Why a QEMU ended. Each QEMU serves a second QMP socket for events only
// (qemu.Spec.EventsPath); while a VM's QEMU runs, the agent holds a connection to it and
// keeps the last SHUTDOWN event. When the process is gone, that event (or its absence
// while the agent was listening) says why: the guest powered itself off, QEMU was told
// to quit, a signal ended it, or it died without a word (SIGKILL, the OOM killer, a
// crash). The center restarts a VM it wants running on the last three, and respects the
// first as the guest's own wish.

// exitListener follows one QEMU's events socket.
type exitListener struct {
	done chan struct{} // closed when the connection has ended (or never came)

	mu        sync.Mutex
	connected bool
	shutdown  *qmp.ShutdownEventData
}

// eventsDialWait is how long the agent tries to reach a QEMU's events socket: QEMU
// listens on it before it daemonizes, so only a QEMU from an older agent (without the
// socket) takes this long.
const eventsDialWait = 2 * time.Second

// listenExit connects to the events socket at path and keeps QEMU's SHUTDOWN events
// until the connection ends (QEMU exits) or ctx ends. The agent's wait group owns the
// goroutine.
func (a *Agent) listenExit(ctx context.Context, path string) *exitListener {
	l := &exitListener{done: make(chan struct{})}
	a.wg.Add(1)
	go func() {
		defer a.wg.Done()
		defer close(l.done)
		var m *qmp.Monitor
		deadline := time.Now().Add(eventsDialWait)
		for {
			dctx, cancel := context.WithTimeout(ctx, time.Second)
			var err error
			m, err = qmp.Dial(dctx, path)
			cancel()
			if err == nil {
				break
			}
			if ctx.Err() != nil || time.Now().After(deadline) {
				a.log.Debug("QEMU events socket not reachable; a later exit is reported as unknown", "path", path, "err", err)
				return
			}
			select {
			case <-ctx.Done():
				return
			case <-time.After(50 * time.Millisecond):
			}
		}
		stop := context.AfterFunc(ctx, func() { m.Close() })
		defer stop()
		defer m.Close()
		l.mu.Lock()
		l.connected = true
		l.mu.Unlock()
		for ev := range m.Events() {
			if ev.Name != qmp.EventShutdown {
				continue
			}
			var d qmp.ShutdownEventData
			if err := ev.Decode(&d); err != nil {
				a.log.Warn("a SHUTDOWN event could not be read", "path", path, "err", err)
				continue
			}
			l.mu.Lock()
			l.shutdown = &d
			l.mu.Unlock()
		}
	}()
	return l
}

// verdict says why QEMU ended, once its process is gone: it waits up to wait for the
// events connection to drain (the SHUTDOWN event precedes the exit on the socket).
// wanted is set when the agent itself stopped it.
func (l *exitListener) verdict(wanted bool, wait time.Duration) string {
	if wanted {
		return api.ExitRequested
	}
	if l == nil {
		return api.ExitUnknown
	}
	select {
	case <-l.done:
	case <-time.After(wait):
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	return exitReason(l.shutdown, l.connected)
}

// listening says whether the listener is connected to QEMU's events socket.
func (l *exitListener) listening() bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.connected
}

// exitReason maps QEMU's last SHUTDOWN event (nil: none) to an api.Exit* reason;
// listened says the agent was connected to the events socket.
func exitReason(sd *qmp.ShutdownEventData, listened bool) string {
	switch {
	case sd != nil && sd.Guest:
		return api.ExitGuestPoweroff
	case sd != nil && sd.Reason == "host-signal":
		return api.ExitKilled
	case sd != nil && (sd.Reason == "host-qmp-quit" || sd.Reason == "host-qmp-system-reset"):
		return api.ExitRequested
	case sd != nil:
		return api.ExitCrashed // host-error, host-ui, …: QEMU ended on its own
	case listened:
		return api.ExitCrashed
	}
	return api.ExitUnknown
}
