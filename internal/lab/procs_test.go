package lab

import (
	"bufio"
	"context"
	"fmt"
	"os"
	"os/exec"
	"slices"
	"strings"
	"testing"
	"time"
)

// A process with only its main thread in a lab namespace (a test opening a socket
// there, a tool peeking in) is a visitor: taking the lab down must not kill it. Missing
// this once killed the integration tests' own binary while a lab went down.
func TestDownSparesVisitors(t *testing.T) {
	name := fmt.Sprintf("gw-visit-%d", os.Getpid())
	if out, err := exec.Command("ip", "netns", "add", name).CombinedOutput(); err != nil {
		t.Fatalf("ip netns add: %v\n%s", err, out)
	}
	t.Cleanup(func() { _ = exec.Command("ip", "netns", "del", name).Run() })
	id, err := namespaceID(name)
	if err != nil {
		t.Fatal(err)
	}
	ids := map[nsID]bool{id: true}

	resident := exec.Command("ip", "netns", "exec", name, "sleep", "600")
	if err := resident.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = resident.Process.Kill() })
	waitResident := make(chan error, 1)
	go func() { waitResident <- resident.Wait() }()

	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	visitor := exec.Command(exe)
	visitor.Env = append(os.Environ(), visitorEnv+"="+netnsDir+"/"+name)
	out, err := visitor.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	visitor.Stderr = os.Stderr
	if err := visitor.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = visitor.Process.Kill(); _ = visitor.Wait() })
	line, err := bufio.NewReader(out).ReadString('\n')
	if err != nil || strings.TrimSpace(line) != "inside" {
		t.Fatalf("visitor did not enter the namespace: %q, %v", line, err)
	}

	// The visitor's main thread is inside, which is what /proc/PID/ns/net shows.
	if leader, err := statID(fmt.Sprintf("/proc/%d/ns/net", visitor.Process.Pid)); err != nil || leader != id {
		t.Fatalf("visitor's main thread is in %v (%v), want the test namespace %v", leader, err, id)
	}
	threads := threadNamespaces(visitor.Process.Pid)
	if !slices.Contains(threads, id) || !slices.ContainsFunc(threads, func(n nsID) bool { return n != id }) {
		t.Fatalf("visitor's threads are in %v, want some inside %v and some outside", threads, id)
	}

	deadline := time.Now().Add(5 * time.Second)
	for {
		got := processesIn(ids)
		if slices.Contains(got, visitor.Process.Pid) {
			t.Fatalf("processesIn counts the visitor %d as the lab's: %s", visitor.Process.Pid, describe(got))
		}
		if slices.Contains(got, resident.Process.Pid) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("processesIn does not find the resident sleep %d: %s", resident.Process.Pid, describe(got))
		}
		time.Sleep(20 * time.Millisecond)
	}

	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := killProcessesIn(ctx, ids, nil); err != nil {
		t.Fatal(err)
	}
	select {
	case <-waitResident:
	case <-time.After(10 * time.Second):
		t.Fatal("the resident process survived killProcessesIn")
	}
	if !alive(visitor.Process.Pid, false) {
		t.Fatal("killProcessesIn killed the visitor")
	}
}
