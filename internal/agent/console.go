package agent

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"time"

	"github.com/godwit/godwit/internal/api"
	"github.com/godwit/godwit/internal/pki"
	"github.com/godwit/godwit/internal/qemu"
)

// Console logs. QEMU appends everything a guest writes to its serial console to the
// VM's console.log (qemu.Spec.ConsoleLogPath), on its own, whether the agent runs or
// not. The agent keeps each log bounded: every consoleCheckEvery, a log that has reached
// Config.ConsoleLogMax moves to console.log.1 (its newest ConsoleLogMax bytes, replacing
// the older one) and is emptied; QEMU, which opened it for appending, goes on writing at
// its new end. So a VM's console takes at most twice ConsoleLogMax on disk, plus what
// its guest writes in consoleCheckEvery (a few bytes written while the log is emptied may be
// lost). GET …/console answers at most api.MaxConsoleBytes of the newest output, from
// both files.

// consoleCheckEvery is how often the agent checks the size of its VMs' console logs.
const consoleCheckEvery = 250 * time.Millisecond

// consoleLogs is a VM's console log and its older part.
func consoleLogs(dir string) (current, older string) {
	p := qemu.Spec{RunDir: dir}.ConsoleLogPath()
	return p, p + ".1"
}

// keepConsoles rotates the console logs of this host's VMs until ctx ends.
func (a *Agent) keepConsoles(ctx context.Context) {
	t := time.NewTicker(consoleCheckEvery)
	defer t.Stop()
	for {
		a.mu.Lock()
		dirs := make([]string, 0, len(a.vms))
		for _, v := range a.vms {
			dirs = append(dirs, v.dir)
		}
		a.mu.Unlock()
		for _, d := range dirs {
			if err := rotateConsole(d, a.cfg.ConsoleLogMax); err != nil {
				a.log.Warn("could not rotate a VM's console log", "dir", d, "err", err)
			}
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// rotateConsole moves the newest limit bytes of the console log in dir to its older part
// and empties it, if it holds limit bytes or more.
func rotateConsole(dir string, limit int64) error {
	current, older := consoleLogs(dir)
	f, err := os.OpenFile(current, os.O_RDWR, 0)
	if errors.Is(err, os.ErrNotExist) {
		return nil // no output yet, or the VM was just deleted
	}
	if err != nil {
		return fmt.Errorf("open console log: %w", err)
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil || st.Size() < limit {
		return err
	}
	// Read to the end, including what the guest wrote since Stat (within reason), and
	// empty the file at once, so that little output falls between the two.
	keep, err := io.ReadAll(io.NewSectionReader(f, st.Size()-limit, 2*limit))
	if err != nil {
		return fmt.Errorf("read console log: %w", err)
	}
	if err := f.Truncate(0); err != nil {
		return fmt.Errorf("empty console log: %w", err)
	}
	keep = keep[max(int64(len(keep))-limit, 0):]
	return pki.WriteFileAtomic(older, keep, 0o644)
}

// Console returns the newest n bytes of a VM's serial console output (at most
// api.MaxConsoleBytes; n ≤ 0 means that many): the end of console.log, preceded by the
// end of console.log.1 when console.log holds fewer.
func (a *Agent) Console(name string, n int64) ([]byte, error) {
	v, err := a.get(name)
	if err != nil {
		return nil, err
	}
	if n <= 0 || n > api.MaxConsoleBytes {
		n = api.MaxConsoleBytes
	}
	current, older := consoleLogs(v.dir)
	out, err := tailFile(current, n)
	if err != nil {
		return nil, fmt.Errorf("console log of %s: %w", name, err)
	}
	if rest := n - int64(len(out)); rest > 0 {
		prev, err := tailFile(older, rest)
		if err != nil {
			return nil, fmt.Errorf("console log of %s: %w", name, err)
		}
		out = append(prev, out...)
	}
	return out, nil
}

// tailFile returns the last n bytes of the file at path (none if it does not exist).
func tailFile(path string, n int64) ([]byte, error) {
	f, err := os.Open(path)
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return nil, err
	}
	return io.ReadAll(io.NewSectionReader(f, max(st.Size()-n, 0), n))
}
