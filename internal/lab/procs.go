package lab

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"slices"
	"strconv"
	"strings"
	"time"

	"golang.org/x/sys/unix"
)

const (
	// killGrace is how long a process gets between SIGTERM and SIGKILL during Down.
	killGrace = 5 * time.Second
	// killTimeout bounds Down's wait for the lab's processes to disappear.
	killTimeout = 60 * time.Second
)

// processesIn returns the processes (other than this one) that live in the namespaces
// ids: every one of their threads is in one of them. A process with only some threads
// inside is a visitor, such as a test or tool that entered a namespace on one thread to
// open a socket: when that thread is its main thread, /proc/PID/ns/net names the lab's
// namespace, yet killing the visitor would kill whoever runs the lab, not the lab.
// Zombies have no namespace any more and are not returned.
func processesIn(ids map[nsID]bool) []int {
	entries, err := os.ReadDir("/proc")
	if err != nil {
		return nil
	}
	self := os.Getpid()
	var pids []int
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil || pid == self {
			continue
		}
		id, err := statID("/proc/" + e.Name() + "/ns/net")
		if err != nil || !ids[id] {
			continue
		}
		inside := true
		for _, t := range threadNamespaces(pid) {
			if !ids[t] {
				inside = false
				break
			}
		}
		if inside {
			pids = append(pids, pid)
		}
	}
	return pids
}

// threadNamespaces returns the network namespace of each of pid's threads that it can
// read (threads exit while it looks).
func threadNamespaces(pid int) []nsID {
	dir := fmt.Sprintf("/proc/%d/task", pid)
	tasks, err := os.ReadDir(dir)
	if err != nil {
		return nil
	}
	ids := make([]nsID, 0, len(tasks))
	for _, t := range tasks {
		if id, err := statID(dir + "/" + t.Name() + "/ns/net"); err == nil {
			ids = append(ids, id)
		}
	}
	return ids
}

// killProcessesIn stops every process in the namespaces ids: SIGTERM first, SIGKILL
// after killGrace, until none is left. Processes started meanwhile (an agent starting
// QEMU) are caught by the next scan. reap lists pids of our own children to collect.
func killProcessesIn(ctx context.Context, ids map[nsID]bool, reap []int) error {
	termed := map[int]time.Time{}
	deadline := time.Now().Add(killTimeout)
	for {
		for _, pid := range reap {
			alive(pid, true)
		}
		pids := processesIn(ids)
		if len(pids) == 0 {
			return nil
		}
		now := time.Now()
		for _, pid := range pids {
			if t, ok := termed[pid]; !ok {
				_ = unix.Kill(pid, unix.SIGTERM)
				termed[pid] = now
			} else if now.Sub(t) > killGrace {
				_ = unix.Kill(pid, unix.SIGKILL)
			}
		}
		if now.After(deadline) {
			return fmt.Errorf("processes still running in the lab after %s, even after SIGKILL: %s; check them with ps", killTimeout, describe(pids))
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("stopping the lab's processes (%s): %w", describe(pids), ctx.Err())
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// describe names processes as "pid (command)" for error messages.
func describe(pids []int) string {
	parts := make([]string, 0, len(pids))
	for _, pid := range pids {
		comm, _ := os.ReadFile(fmt.Sprintf("/proc/%d/comm", pid))
		parts = append(parts, fmt.Sprintf("%d (%s)", pid, strings.TrimSpace(string(comm))))
	}
	return strings.Join(parts, ", ")
}

// alive reports whether pid is a running process, zombies counting as dead. With reap
// set it first collects pid's exit status if pid is an exited child of ours; reap only
// processes nobody else waits for (the daemons), or their owner's Wait fails.
func alive(pid int, reap bool) bool {
	if pid <= 0 {
		return false
	}
	if reap {
		var ws unix.WaitStatus
		if got, err := unix.Wait4(pid, &ws, unix.WNOHANG, nil); err == nil && got == pid {
			return false
		}
	}
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return false
	}
	// The state follows the command name, which is in parentheses and may contain any
	// character, so look after the last ')'.
	i := bytes.LastIndexByte(b, ')')
	if i < 0 || i+2 >= len(b) {
		return false
	}
	state := b[i+2]
	if state == 'Z' {
		// A killed multi-threaded process's leader turns zombie before its other
		// threads have finished exiting, and until they have, its sockets stay open: a
		// daemon's listener would still accept connections meant for its successor.
		tasks, err := os.ReadDir(fmt.Sprintf("/proc/%d/task", pid))
		return err == nil && len(tasks) > 1
	}
	return state != 'X' && state != 'x'
}

// cmdline returns the command line of pid.
func cmdline(pid int) []string {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
	if err != nil || len(b) == 0 {
		return nil
	}
	return strings.Split(strings.TrimSuffix(string(b), "\x00"), "\x00")
}

// running reports whether d's recorded process is alive and still is d: its command
// line ends with d's arguments. That holds for the daemon, for the `ip netns exec` and
// any wrapper script that start it, and it guards against a recycled pid. An empty
// command line is accepted: the kernel shows one while the process is in execve.
func (d Daemon) running() bool {
	if !alive(d.PID, true) {
		return false
	}
	cl := cmdline(d.PID)
	args := d.Argv[1:]
	return len(cl) == 0 || len(cl) >= len(args) && slices.Equal(cl[len(cl)-len(args):], args)
}

// waitExit waits until pid has exited, ctx ends or limit passes.
func waitExit(ctx context.Context, pid int, limit time.Duration) error {
	deadline := time.Now().Add(limit)
	for alive(pid, true) {
		if time.Now().After(deadline) {
			return errors.New("timed out")
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(20 * time.Millisecond):
		}
	}
	return nil
}
