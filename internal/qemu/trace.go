package qemu

import (
	"bytes"
	"fmt"
	"io"
	"os"
	"regexp"
	"strconv"
	"strings"
	"time"
)

// QEMU (8.1 and later) marks each step of a migration's switch-over with a trace event,
// vmstate_downtime_checkpoint, and times each device's state with vmstate_downtime_save
// (source) and vmstate_downtime_load (destination); qemu_announce_self_iter marks each
// round of frames that announce the VM's MACs from its new port; migration_block_activation
// marks the source letting go of the disks and the destination taking them, and
// vm_state_notify the vCPUs starting. With QEMU's "log" trace
// backend (Debian's) they go to the -D file, stamped with the host's wall clock when
// -msg timestamp=on. traceArgs turns them on for every VM: they cost nothing until a
// migration, and then a few dozen lines.
var traceArgs = []string{
	"-msg", "timestamp=on",
	"-trace", "enable=vmstate_downtime_checkpoint",
	"-trace", "enable=vmstate_downtime_save",
	"-trace", "enable=vmstate_downtime_load",
	"-trace", "enable=qemu_announce_self_iter",
	"-trace", "enable=migration_block_activation",
	"-trace", "enable=vm_state_notify",
}

// The switch-over's checkpoints, in the order QEMU passes them.
const (
	// On the source: the switch-over begins, the vCPUs are stopped (and the disks
	// drained and flushed), the last pass of memory is sent, the devices' state is
	// sent, the source is done (disks inactivated, the stream flushed).
	CheckpointDowntimeStart    = "src-downtime-start"
	CheckpointVMStopped        = "src-vm-stopped"
	CheckpointIterableSaved    = "src-iterable-saved"
	CheckpointNonIterableSaved = "src-non-iterable-saved"
	CheckpointDowntimeEnd      = "src-downtime-end"
	CheckpointLoadCompleted    = "dst-precopy-loadvm-completed"
	CheckpointBottomHalf       = "dst-precopy-bh-enter"
	CheckpointAnnounced        = "dst-precopy-bh-announced"
	CheckpointVMStarted        = "dst-precopy-bh-vm-started"
)

// maxTraceRead is how much of the end of QEMU's log ReadSwitchover reads.
const maxTraceRead = 256 << 10

// knownCheckpoint says whether name is one of the checkpoints Switchover keeps.
func knownCheckpoint(name string) bool {
	switch name {
	case CheckpointDowntimeStart, CheckpointVMStopped, CheckpointIterableSaved, CheckpointNonIterableSaved,
		CheckpointDowntimeEnd, CheckpointLoadCompleted, CheckpointBottomHalf, CheckpointAnnounced, CheckpointVMStarted:
		return true
	}
	return false
}

// Switchover is what one QEMU's log says about the switch-over of its latest migration.
type Switchover struct {
	// Checkpoints maps each checkpoint seen to when QEMU passed it (the last time, if
	// it passed it more than once since the migration began).
	Checkpoints map[string]time.Time
	// Slowest is the device (not memory) whose state took longest to save (source) or
	// load (destination), and how long; empty when none was traced.
	Slowest     string
	SlowestTime time.Duration
	// FirstAnnounce is when the first frame announcing the VM's MACs went out after
	// the state was loaded (zero when none was traced).
	FirstAnnounce time.Time
	// MemoryFinal is how long the last pass of memory took to save (source) or load
	// (destination): QEMU's time for its "iterable" ram section at the switch-over.
	MemoryFinal time.Duration
	// DisksReleased is when the source began to inactivate its disks, DisksTaken when
	// the destination began to activate them, Running when the VM's vCPUs last
	// started (zero when not traced).
	DisksReleased, DisksTaken, Running time.Time
}

// traceLine matches one line of QEMU's log trace backend with timestamps:
// "PID@SECONDS.MICROSECONDS:EVENT ARGS".
var traceLine = regexp.MustCompile(`^(\d+)@(\d+)\.(\d{6}):(vmstate_downtime_checkpoint|vmstate_downtime_save|vmstate_downtime_load|qemu_announce_self_iter|migration_block_activation|vm_state_notify)(?: (.*))?$`)

// deviceTime matches the arguments of vmstate_downtime_save and _load: a device's
// section ("non-iterable"), or memory's ("iterable", idstr ram).
var deviceTime = regexp.MustCompile(`^type=(non-iterable|iterable) idstr=(\S{1,128}) instance_id=\d+ downtime=(\d{1,12})$`)

// ReadSwitchover reads what QEMU wrote to its log at path about the switch-over of the
// migration that began at since (entries before it are ignored). The log is one
// process's: Start moves the previous run's aside. Only its last 256 KiB are read.
func ReadSwitchover(path string, since time.Time) (Switchover, error) {
	f, err := os.Open(path)
	if err != nil {
		return Switchover{}, fmt.Errorf("read the switch-over from QEMU's log: %w", err)
	}
	defer f.Close()
	if st, err := f.Stat(); err == nil && st.Size() > maxTraceRead {
		if _, err := f.Seek(st.Size()-maxTraceRead, io.SeekStart); err != nil {
			return Switchover{}, fmt.Errorf("read the switch-over from QEMU's log: %w", err)
		}
	}
	data, err := io.ReadAll(io.LimitReader(f, maxTraceRead))
	if err != nil {
		return Switchover{}, fmt.Errorf("read the switch-over from QEMU's log: %w", err)
	}
	return ParseSwitchover(data, since), nil
}

// ParseSwitchover reads the switch-over of the migration that began at since from
// QEMU's log data (see ReadSwitchover). Lines it does not know or from before since
// are skipped; it never fails. (The number before "@" in a trace line is the thread's
// id, not the process's: the source's lines come from its migration thread.)
func ParseSwitchover(data []byte, since time.Time) Switchover {
	sw := Switchover{Checkpoints: map[string]time.Time{}}
	for line := range bytes.Lines(data) {
		m := traceLine.FindSubmatch(bytes.TrimRight(line, "\r\n"))
		if m == nil {
			continue
		}
		sec, err1 := strconv.ParseInt(string(m[2]), 10, 64)
		usec, err2 := strconv.ParseInt(string(m[3]), 10, 64)
		if err1 != nil || err2 != nil || sec > 1<<40 {
			continue
		}
		at := time.Unix(sec, usec*1000)
		if at.Before(since) {
			continue
		}
		args := string(m[5])
		switch string(m[4]) {
		case "vmstate_downtime_checkpoint":
			if knownCheckpoint(args) {
				sw.Checkpoints[args] = at
			}
		case "vmstate_downtime_save", "vmstate_downtime_load":
			d := deviceTime.FindStringSubmatch(args)
			if d == nil {
				continue
			}
			us, err := strconv.ParseInt(d[3], 10, 64)
			if err != nil {
				continue
			}
			t := time.Duration(us) * time.Microsecond
			switch {
			case d[1] == "iterable" && d[2] == "ram":
				sw.MemoryFinal = t
			case d[1] == "non-iterable" && t > sw.SlowestTime:
				sw.Slowest, sw.SlowestTime = deviceName(d[2]), t
			}
		case "migration_block_activation":
			switch args {
			case "inactive":
				sw.DisksReleased = at
			case "active":
				sw.DisksTaken = at
			}
		case "vm_state_notify":
			if strings.HasPrefix(args, "running 1 ") {
				sw.Running = at
			}
		case "qemu_announce_self_iter":
			if _, loaded := sw.Checkpoints[CheckpointLoadCompleted]; loaded && sw.FirstAnnounce.IsZero() {
				sw.FirstAnnounce = at
			}
		}
	}
	return sw
}

// deviceName turns QEMU's section id ("0000:00:02.0/virtio-net") into the device's
// kind with its PCI address ("virtio-net (0000:00:02.0)").
func deviceName(idstr string) string {
	if addr, kind, ok := strings.Cut(idstr, "/"); ok && kind != "" {
		return kind + " (" + addr + ")"
	}
	return idstr
}

// logMessage drops the timestamp -msg timestamp=on puts before QEMU's messages
// ("2026-12-06T02:19:44.349307Z qemu-system-x86_64: …") and the trace lines, so that an
// error reads as QEMU wrote it.
func logMessage(log string) string {
	var kept []string
	for _, l := range strings.Split(log, "\n") {
		if traceLine.MatchString(l) {
			continue
		}
		if ts, rest, ok := strings.Cut(l, " "); ok && len(ts) > 20 && ts[4] == '-' && strings.HasSuffix(ts, "Z") {
			if _, err := time.Parse(time.RFC3339Nano, ts); err == nil {
				l = rest
			}
		}
		kept = append(kept, l)
	}
	return strings.TrimSpace(strings.Join(kept, "\n"))
}
