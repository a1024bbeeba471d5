package guest

import (
	"context"
	"os"
	"syscall"
	"testing"
	"time"
)

func TestReapChildren(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		ReapChildren(ctx)
	}()
	defer func() {
		cancel()
		<-done
	}()
	sh := "/bin/sh"
	if _, err := os.Stat(sh); err != nil {
		t.Fatal("no /bin/sh")
	}
	// A child nobody waits for: without the reaper it stays a zombie, which kill(pid, 0)
	// still finds.
	pid, err := syscall.ForkExec(sh, []string{sh, "-c", "exit 0"}, &syscall.ProcAttr{})
	if err != nil {
		t.Fatal(err)
	}
	waitFor(t, 5*time.Second, "the child to be reaped", func() bool {
		return syscall.Kill(pid, 0) == syscall.ESRCH
	})
}
