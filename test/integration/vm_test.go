package integration

import (
	"bytes"
	"context"
	"crypto/rand"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/godwit/godwit/internal/api"
	"github.com/godwit/godwit/internal/guest"
	"github.com/godwit/godwit/internal/labtest"
	"github.com/godwit/godwit/internal/netdev"
)

// TestVMLifecycle creates a VM from the test image on a 2-host lab, reaches it from the
// client namespace over HTTP, TCP and UDP, writes its disk, restarts its agent and the
// center under it, then stops and deletes it and checks that nothing is left.
func TestVMLifecycle(t *testing.T) {
	l := newLab(t, 2)

	var hosts []api.Host
	l.RunJSON(&hosts, "host", "list")
	if len(hosts) != 2 {
		t.Fatalf("host list shows %d hosts, want 2", len(hosts))
	}
	for _, h := range hosts {
		if h.State != api.HostConnected || h.QEMUVersion == "" || h.CPU.Model == "" || len(h.Datastores) != 1 || len(h.Networks) != 1 {
			t.Fatalf("host %s is not fully reported: %+v", h.Name, h)
		}
	}

	var vm api.VM
	l.RunJSON(&vm, "vm", "create", "web-1", "--host", "host-1")
	if vm.State != api.VMRunning || vm.Host != "host-1" || vm.IP == "" || vm.MAC == "" || vm.PID == 0 {
		t.Fatalf("vm create returned %+v; want a running VM on host-1 with an IP, a MAC and a PID", vm)
	}
	base := "http://" + vm.IP
	boot := l.WaitHTTP("client", base+"/healthz", 90*time.Second)
	t.Logf("guest answered HTTP %s after create", boot.Round(time.Millisecond))

	st := l.Stats(vm.IP)
	if st.MemoryErrors != 0 || st.BootID == "" || st.Hostname != "web-1" {
		t.Fatalf("guest stats %+v: want no memory errors, a boot id and hostname web-1", st)
	}

	// The TCP connection stays open across the agent and center restarts below.
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	tcp, err := l.Dial(ctx, "client", "tcp", vm.IP+":7")
	if err != nil {
		t.Fatalf("TCP echo: %v", err)
	}
	defer tcp.Close()
	echoTCP(t, tcp, 64<<10)
	echoUDP(t, l, vm.IP, 50)

	record := make([]byte, 200<<10)
	_, _ = rand.Read(record)
	putDisk(t, l, vm.IP, 3, record)
	if got := getDisk(t, l, vm.IP, 3); !bytes.Equal(got, record) {
		t.Fatalf("disk slot 3 read back %d bytes that differ from the %d written", len(got), len(record))
	}

	// Restart the agent under the running VM: the VM is unaffected and re-adopted.
	l.MustRun("lab", "restart", "host-1")
	waitVM(t, l, "web-1", func(v api.VM) bool { return v.State == api.VMRunning && v.PID == vm.PID })
	if s := l.Stats(vm.IP); s.BootID != st.BootID || s.MemoryErrors != 0 {
		t.Fatalf("after the agent restart the guest reports %+v; want boot id %s and no memory errors", s, st.BootID)
	}
	echoTCP(t, tcp, 4<<10)
	// The re-adopted VM is still managed: its console is readable through the new agent.
	if out := l.MustRun("vm", "console", "web-1"); !strings.Contains(out, "godwit-guest ready") {
		t.Fatalf("vm console after the agent restart does not show the boot log:\n%s", out)
	}

	// Restart the center: the inventory is intact.
	l.MustRun("lab", "restart", "center")
	var after api.VM
	l.RunJSON(&after, "vm", "show", "web-1")
	if after.UUID != vm.UUID || after.IP != vm.IP || after.MAC != vm.MAC || after.Host != "host-1" {
		t.Fatalf("after the center restart web-1 is %+v; want UUID %s, IP %s, MAC %s on host-1", after, vm.UUID, vm.IP, vm.MAC)
	}
	waitVM(t, l, "web-1", func(v api.VM) bool { return v.State == api.VMRunning })
	var hostsAfter []api.Host
	l.RunJSON(&hostsAfter, "host", "list")
	if len(hostsAfter) != 2 {
		t.Fatalf("after the center restart host list shows %d hosts, want 2", len(hostsAfter))
	}
	echoTCP(t, tcp, 4<<10)
	if got := getDisk(t, l, vm.IP, 3); !bytes.Equal(got, record) {
		t.Fatal("disk slot 3 changed across the restarts")
	}

	// Crash the agent (SIGKILL): the VM runs on and the restarted agent re-adopts it.
	l.Crash("host-1")
	l.Start("host-1")
	waitVM(t, l, "web-1", func(v api.VM) bool { return v.State == api.VMRunning && v.PID == vm.PID })
	echoTCP(t, tcp, 4<<10)

	// While the center is down, the VM is shut down on its host (by the guest's ACPI
	// power button, through the agent): the restarted center takes the host's word.
	l.Stop("center")
	agentURL := "https://" + hosts[0].Address + ":7700/agent/v1/vms/web-1/stop?grace=20s"
	if hosts[0].Name != "host-1" {
		agentURL = "https://" + hosts[1].Address + ":7700/agent/v1/vms/web-1/stop?grace=20s"
	}
	hc := l.AsCenter("host-1")
	hc.Timeout = time.Minute
	resp, err := hc.Post(agentURL, "application/json", nil)
	if err != nil {
		pid, running := l.Lab().DaemonRunning("host-1")
		t.Fatalf("stop web-1 on its host while the center is down: %v (host-1's agent: pid %d, running %v)\n%s",
			err, pid, running, l.Lab().DaemonLogTail("host-1"))
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("stop web-1 on its host: %s", resp.Status)
	}
	l.Start("center")
	stopped := waitVM(t, l, "web-1", func(v api.VM) bool { return v.State == api.VMStopped })
	if stopped.Host != "host-1" || stopped.PID != 0 {
		t.Fatalf("after reconciliation web-1 is %+v", stopped)
	}
	if !processGone(vm.PID, 5*time.Second) {
		t.Fatalf("QEMU process %d still runs after vm stop", vm.PID)
	}
	img := filepath.Join(l.Dir(), "datastore", "vms", "web-1", "data.qcow2")
	raw := filepath.Join(t.TempDir(), "data.raw")
	if out, err := exec.Command("qemu-img", "convert", "-O", "raw", img, raw).CombinedOutput(); err != nil {
		t.Fatalf("qemu-img convert: %v\n%s", err, out)
	}
	f, err := os.Open(raw)
	if err != nil {
		t.Fatal(err)
	}
	onDisk, err := guest.DecodeDiskRecord(f, 3)
	f.Close()
	if err != nil || !bytes.Equal(onDisk, record) {
		t.Fatalf("the image file does not hold the record the guest wrote: %v", err)
	}

	l.MustRun("vm", "delete", "web-1")
	var vms []api.VM
	l.RunJSON(&vms, "vm", "list")
	if len(vms) != 0 {
		t.Fatalf("vm list after delete: %+v", vms)
	}
	if _, err := os.Stat(img); !os.IsNotExist(err) {
		t.Fatalf("the data disk %s is still there after delete", img)
	}
	tap := netdev.TapName(vm.UUID, 0)
	out, _, _ := l.Run("lab", "exec", "--name", l.Name, "host-1", "--", "ip", "-o", "link", "show")
	if strings.Contains(out, tap) {
		t.Fatalf("TAP %s is left on host-1 after delete:\n%s", tap, out)
	}
}

// processGone waits until pid has exited: it is gone or a zombie waiting for init.
func processGone(pid int, timeout time.Duration) bool {
	deadline := time.Now().Add(timeout)
	for {
		b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
		if err != nil {
			return true
		}
		if i := bytes.LastIndexByte(b, ')'); i > 0 && len(b) > i+2 && b[i+2] == 'Z' {
			return true
		}
		if time.Now().After(deadline) {
			return false
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func waitVM(t *testing.T, l *labtest.Lab, name string, ok func(api.VM) bool) api.VM {
	t.Helper()
	var last api.VM
	deadline := time.Now().Add(30 * time.Second)
	for time.Now().Before(deadline) {
		var v api.VM // fresh each time: fields left out of the JSON must read as zero
		if err := l.API().Do(context.Background(), http.MethodGet, "/api/v1/vms/"+name, nil, &v); err == nil {
			if ok(v) {
				return v
			}
			last = v
		}
		time.Sleep(200 * time.Millisecond)
	}
	v := last
	t.Fatalf("VM %s did not reach the expected state; last seen %+v", name, v)
	return v
}

func echoTCP(t *testing.T, c io.ReadWriter, n int) {
	t.Helper()
	msg := make([]byte, n)
	_, _ = rand.Read(msg)
	errc := make(chan error, 1)
	go func() { _, err := c.Write(msg); errc <- err }()
	got := make([]byte, n)
	if _, err := io.ReadFull(c, got); err != nil {
		t.Fatalf("TCP echo: read: %v", err)
	}
	if err := <-errc; err != nil {
		t.Fatalf("TCP echo: write: %v", err)
	}
	if !bytes.Equal(got, msg) {
		t.Fatal("TCP echo returned different bytes")
	}
}

func echoUDP(t *testing.T, l *labtest.Lab, ip string, n int) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	c, err := l.Dial(ctx, "client", "udp", ip+":7")
	if err != nil {
		t.Fatalf("UDP echo: %v", err)
	}
	defer c.Close()
	got := 0
	buf := make([]byte, 2048)
	for i := 0; i < n; i++ {
		msg := []byte(fmt.Sprintf("godwit-udp-%d-%s", i, labtest.RandHex(8)))
		if _, err := c.Write(msg); err != nil {
			t.Fatalf("UDP echo: write: %v", err)
		}
		_ = c.SetReadDeadline(time.Now().Add(time.Second))
		k, err := c.Read(buf)
		if err == nil && bytes.Equal(buf[:k], msg) {
			got++
		}
	}
	if got < n*9/10 {
		t.Fatalf("UDP echo: %d of %d datagrams came back", got, n)
	}
}

func putDisk(t *testing.T, l *labtest.Lab, ip string, slot int, data []byte) {
	t.Helper()
	req, _ := http.NewRequest(http.MethodPut, fmt.Sprintf("http://%s/disk/%d", ip, slot), bytes.NewReader(data))
	resp, err := l.HTTP("client").Do(req)
	if err != nil {
		t.Fatalf("PUT /disk/%d: %v", slot, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		b, _ := io.ReadAll(resp.Body)
		t.Fatalf("PUT /disk/%d: %s: %s", slot, resp.Status, b)
	}
}

func getDisk(t *testing.T, l *labtest.Lab, ip string, slot int) []byte {
	t.Helper()
	resp, err := l.HTTP("client").Get(fmt.Sprintf("http://%s/disk/%d", ip, slot))
	if err != nil {
		t.Fatalf("GET /disk/%d: %v", slot, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("GET /disk/%d: %s: %s", slot, resp.Status, b)
	}
	return b
}
