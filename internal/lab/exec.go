package lab

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"syscall"
	"time"
)

// Command returns a command that runs argv inside target's network namespace (target
// is client, switch, center or host-N), through `ip netns exec`, which also mounts a
// /sys that shows the namespace's interfaces. ctx kills the command when it ends.
func (l *Lab) Command(ctx context.Context, target string, argv ...string) (*exec.Cmd, error) {
	ns, err := l.Namespace(target)
	if err != nil {
		return nil, err
	}
	if len(argv) == 0 {
		return nil, errors.New("no command given: say what to run in the lab")
	}
	if _, err := os.Stat(filepath.Join(netnsDir, ns)); err != nil {
		return nil, fmt.Errorf("network namespace %s of lab %s is missing: the lab is down or broken; run `godwit lab down --name %s` and bring it up again", ns, l.Name, l.Name)
	}
	ip, err := exec.LookPath("ip")
	if err != nil {
		return nil, fmt.Errorf("the ip command (iproute2) is missing: install it with scripts/deps.sh")
	}
	return exec.CommandContext(ctx, ip, append([]string{"netns", "exec", ns}, argv...)...), nil
}

// Exec runs argv inside target's network namespace with the given standard streams
// (nil means none) and returns its exit code. err is set only when the command could
// not be run at all; a command that runs and fails returns its non-zero code (128+N
// when killed by signal N).
func (l *Lab) Exec(ctx context.Context, target string, argv []string, stdin io.Reader, stdout, stderr io.Writer) (exitCode int, err error) {
	cmd, err := l.Command(ctx, target, argv...)
	if err != nil {
		return -1, err
	}
	cmd.Stdin, cmd.Stdout, cmd.Stderr = stdin, stdout, stderr
	// An interrupted `lab exec` passes the interrupt on, so the command can finish and
	// report (a client stream prints its counts); it is killed if it does not end soon.
	cmd.Cancel = func() error { return cmd.Process.Signal(os.Interrupt) }
	cmd.WaitDelay = 10 * time.Second
	err = cmd.Run()
	if err != nil && ctx.Err() != nil && cmd.ProcessState != nil {
		// Interrupted, and the command ended on the interrupt: report how it ended.
		if ws, ok := cmd.ProcessState.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
			return 128 + int(ws.Signal()), nil
		}
		return cmd.ProcessState.ExitCode(), nil
	}
	var exit *exec.ExitError
	if errors.As(err, &exit) {
		if ws, ok := exit.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
			return 128 + int(ws.Signal()), nil
		}
		return exit.ExitCode(), nil
	}
	if err != nil {
		return -1, fmt.Errorf("run %s in %s of lab %s: %w", argv[0], target, l.Name, err)
	}
	return 0, nil
}
