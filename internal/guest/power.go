package guest

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"golang.org/x/sys/unix"
)

// Linux input event constants (linux/input-event-codes.h).
const (
	evKey     = 0x01
	keyPower  = 116
	inputSize = 24 // struct input_event on 64-bit: struct timeval (16), type, code (2+2), value (4)
)

// WatchPowerButton reads every /dev/input/event* device (rescanning every second for
// new ones) and calls onPress each time one reports a KEY_POWER key press, which is how
// the kernel's ACPI button driver reports the power button. It returns when ctx is
// done, after its reader goroutines have ended.
func WatchPowerButton(ctx context.Context, log *slog.Logger, onPress func(device string)) {
	watchInputDevices(ctx, "/dev/input", log, onPress)
}

func watchInputDevices(ctx context.Context, dir string, log *slog.Logger, onPress func(string)) {
	var wg sync.WaitGroup
	defer wg.Wait()
	watched := map[string]bool{}
	for {
		paths, _ := filepath.Glob(filepath.Join(dir, "event*"))
		for _, p := range paths {
			if watched[p] {
				continue
			}
			f, err := os.Open(p)
			if err != nil {
				log.Warn("power: cannot open input device", "dev", p, "err", err)
				watched[p] = true
				continue
			}
			watched[p] = true
			name := inputDeviceName(p)
			log.Info("power: watching input device", "dev", p, "name", name)
			wg.Add(1)
			go func() {
				defer wg.Done()
				stop := context.AfterFunc(ctx, func() { f.Close() })
				defer stop()
				defer f.Close()
				err := readKeyPower(f, func() { onPress(fmt.Sprintf("%s (%s)", p, name)) })
				if ctx.Err() == nil {
					log.Warn("power: input device closed", "dev", p, "err", err)
				}
			}()
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(time.Second):
		}
	}
}

// readKeyPower reads input events from r until it fails, calling onPress for every
// KEY_POWER press (value 1).
func readKeyPower(r io.Reader, onPress func()) error {
	var ev [inputSize]byte
	for {
		if _, err := io.ReadFull(r, ev[:]); err != nil {
			if errors.Is(err, os.ErrClosed) {
				return nil
			}
			return fmt.Errorf("reading input event: %w", err)
		}
		typ := binary.LittleEndian.Uint16(ev[16:18])
		code := binary.LittleEndian.Uint16(ev[18:20])
		value := int32(binary.LittleEndian.Uint32(ev[20:24]))
		if typ == evKey && code == keyPower && value == 1 {
			onPress()
		}
	}
}

// inputDeviceName returns the kernel's name of /dev/input/eventN, e.g. "Power Button".
func inputDeviceName(dev string) string {
	b, err := os.ReadFile(filepath.Join("/sys/class/input", filepath.Base(dev), "device/name"))
	if err != nil {
		return "?"
	}
	return strings.TrimSpace(string(b))
}

// PowerOff syncs the file systems and powers the machine off. It only returns if the
// reboot system call fails (e.g. without CAP_SYS_BOOT).
func PowerOff(log *slog.Logger) error {
	log.Info("power: syncing and powering off")
	unix.Sync()
	if err := unix.Reboot(unix.LINUX_REBOOT_CMD_POWER_OFF); err != nil {
		return fmt.Errorf("power off: %w", err)
	}
	return nil
}
