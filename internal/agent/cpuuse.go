package agent

import (
	"bytes"
	"fmt"
	"math"
	"os"
	"strconv"
	"time"

	"github.com/godwit/godwit/internal/api"
)

// A VM's CPU demand: the cores its QEMU uses, from the process's user and system time
// in /proc/PID/stat, smoothed over about a minute (an exponentially weighted moving
// average, so that a single busy second moves it little). The center's balancer reads
// it from the heartbeat; a host's own load average cannot tell its VMs apart.

// cpuSmoothing is the time constant of the average; cpuWarmup is how long after its
// QEMU starts a VM's CPU use is not counted at all: a boot, or the warm-up of a guest
// that has just come in by migration, is not the demand a balancer should act on.
const (
	cpuSmoothing = time.Minute
	cpuWarmup    = 30 * time.Second
)

// userHZ is the unit of the times in /proc/PID/stat (USER_HZ, 100 on every Linux ABI).
const userHZ = 100

// cpuSample is the last reading of one QEMU's CPU time, and the average so far.
type cpuSample struct {
	pid   int
	ticks uint64
	at    time.Time
	cores float64
	ok    bool // cores holds at least one measurement
}

// next takes a new reading (ticks of CPU time at time at) of process pid and returns
// the updated sample. A new process starts the average afresh.
func (s cpuSample) next(pid int, ticks uint64, at time.Time) cpuSample {
	if s.pid != pid || s.at.IsZero() || ticks < s.ticks || !at.After(s.at) {
		return cpuSample{pid: pid, ticks: ticks, at: at}
	}
	dt := at.Sub(s.at)
	used := float64(ticks-s.ticks) / userHZ / dt.Seconds()
	out := cpuSample{pid: pid, ticks: ticks, at: at, ok: true}
	if !s.ok {
		out.cores = used
	} else {
		w := 1 - math.Exp(-dt.Seconds()/cpuSmoothing.Seconds())
		out.cores = s.cores + w*(used-s.cores)
	}
	return out
}

// processTicks reads the user plus system time of process pid, in clock ticks, and how
// long ago it started.
func processTicks(pid int) (ticks uint64, age time.Duration, err error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, 0, err
	}
	ticks, start, err := parseStatTicks(b)
	if err != nil {
		return 0, 0, err
	}
	up, err := os.ReadFile("/proc/uptime")
	if err != nil {
		return 0, 0, err
	}
	f := bytes.Fields(up)
	if len(f) == 0 {
		return 0, 0, fmt.Errorf("/proc/uptime is empty")
	}
	secs, err := strconv.ParseFloat(string(f[0]), 64)
	if err != nil {
		return 0, 0, fmt.Errorf("/proc/uptime: %w", err)
	}
	return ticks, time.Duration((secs - float64(start)/userHZ) * float64(time.Second)), nil
}

// parseStatTicks reads utime and stime (fields 14 and 15) and starttime (field 22) from
// a /proc/PID/stat line.
func parseStatTicks(b []byte) (ticks, start uint64, err error) {
	i := bytes.LastIndexByte(b, ')') // the command name may hold spaces and parentheses
	if i < 0 {
		return 0, 0, fmt.Errorf("/proc stat line without a command name")
	}
	f := bytes.Fields(b[i+1:])
	// f[0] is field 3 (state); utime is field 14, stime 15, starttime 22.
	if len(f) < 20 {
		return 0, 0, fmt.Errorf("/proc stat line with %d fields after the command name", len(f))
	}
	u, err1 := strconv.ParseUint(string(f[11]), 10, 64)
	s, err2 := strconv.ParseUint(string(f[12]), 10, 64)
	st, err3 := strconv.ParseUint(string(f[19]), 10, 64)
	if err1 != nil || err2 != nil || err3 != nil {
		return 0, 0, fmt.Errorf("/proc stat line with unreadable times %q %q %q", f[11], f[12], f[19])
	}
	return u + s, st, nil
}

// sampleCPU takes a reading of every running VM's QEMU; the heartbeat calls it.
func (a *Agent) sampleCPU(now time.Time) {
	a.mu.Lock()
	defer a.mu.Unlock()
	for _, v := range a.vms {
		if v.proc == nil || v.state != api.VMRunning {
			v.cpu = cpuSample{}
			continue
		}
		ticks, age, err := processTicks(v.proc.PID)
		if err != nil {
			continue
		}
		if age < cpuWarmup {
			v.cpu = cpuSample{}
			continue
		}
		v.cpu = v.cpu.next(v.proc.PID, ticks, now)
	}
}
