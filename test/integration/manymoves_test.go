package integration

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	"github.com/godwit/godwit/internal/api"
	"github.com/godwit/godwit/internal/labtest"
	"github.com/godwit/godwit/internal/probe"
)

// downtimes is one migration's pause seen three ways.
type downtimes struct {
	qemu, guest, client time.Duration
}

// migrateMeasured migrates a VM while a client in the client namespace sends a UDP echo
// request every millisecond, and returns the summary with the pause as QEMU, the guest
// and the client saw it.
func migrateMeasured(t *testing.T, l *labtest.Lab, vm api.VM, to string) (migrationSummary, downtimes) {
	t.Helper()
	resetStats(t, l, vm.IP)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	conn, err := l.Dial(ctx, "client", "udp", vm.IP+":7")
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	sctx, stop := context.WithCancel(ctx)
	resc := make(chan probe.UDPResult, 1)
	go func() {
		res, _ := probe.UDPStream(sctx, conn, time.Millisecond)
		resc <- res
	}()
	time.Sleep(200 * time.Millisecond)
	var sum migrationSummary
	l.RunJSON(&sum, "vm", "migrate", vm.Name, "--to", to)
	time.Sleep(300 * time.Millisecond)
	stop()
	res := <-resc
	st := l.Stats(vm.IP)
	return sum, downtimes{
		qemu:   time.Duration(sum.DowntimeMS * float64(time.Millisecond)),
		guest:  time.Duration(st.MaxPauseMS * float64(time.Millisecond)),
		client: res.MaxGap,
	}
}

func resetStats(t *testing.T, l *labtest.Lab, ip string) {
	t.Helper()
	resp, err := l.HTTP("client").Post("http://"+ip+"/stats/reset", "application/json", nil)
	if err != nil {
		t.Fatalf("reset guest stats: %v", err)
	}
	resp.Body.Close()
}

func dirty(t *testing.T, l *labtest.Lab, ip string, mib, rate int) {
	t.Helper()
	resp, err := l.HTTP("client").Post(fmt.Sprintf("http://%s/dirty?mib=%d&rate=%d", ip, mib, rate), "application/json", nil)
	if err != nil {
		t.Fatalf("start dirtying: %v", err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("start dirtying: %s: %s", resp.Status, b)
	}
}

// TestManyMoves migrates a VM that keeps dirtying memory back and forth 20 times. Through
// all of it the guest's memory checker finds no error, a record written to the disk just
// before each switch-over reads back intact, and the guest's clock never steps back.
func TestManyMoves(t *testing.T) {
	const moves = 20
	l := newLab(t, 2)
	var vm api.VM
	l.RunJSON(&vm, "vm", "create", "mover", "--host", "host-1")
	l.WaitHTTP("client", "http://"+vm.IP+"/healthz", 90*time.Second)
	boot := l.Stats(vm.IP).BootID
	dirty(t, l, vm.IP, 64, 32)

	var qemuMax, guestMax, clientMax time.Duration
	for i := range moves {
		to := "host-2"
		if i%2 == 1 {
			to = "host-1"
		}
		record := make([]byte, 32<<10)
		_, _ = rand.Read(record)
		slot := i % 60
		putDisk(t, l, vm.IP, slot, record)

		sum, d := migrateMeasured(t, l, vm, to)
		if sum.State != api.MigrationSucceeded {
			t.Fatalf("move %d to %s: %+v", i+1, to, sum)
		}
		t.Logf("move %2d → %s: total %4.0f ms, %3d passes; downtime QEMU %5.1f ms, guest %6.1f ms, client %6.1f ms",
			i+1, to, sum.TotalMS, sum.Passes, ms(d.qemu), ms(d.guest), ms(d.client))
		qemuMax, guestMax, clientMax = max(qemuMax, d.qemu), max(guestMax, d.guest), max(clientMax, d.client)
		if d.client <= 0 || d.guest <= 0 {
			t.Fatalf("move %d: the pause was not measured (guest %s, client %s)", i+1, d.guest, d.client)
		}
		if got := getDisk(t, l, vm.IP, slot); !bytes.Equal(got, record) {
			t.Fatalf("move %d: the disk record written before the switch-over reads back different", i+1)
		}
		st := l.Stats(vm.IP)
		if st.MemoryErrors != 0 || st.ClockBackwards != 0 || st.BootID != boot {
			t.Fatalf("move %d: guest %+v; want no memory errors, no clock step back, boot %s", i+1, st, boot)
		}
		waitVM(t, l, "mover", func(v api.VM) bool { return v.Host == to && v.State == api.VMRunning })
	}
	// Let the checker finish a full pass over memory after the last move.
	first := statsRaw(t, l, vm.IP)
	deadline := time.Now().Add(30 * time.Second)
	for time.Now().Before(deadline) {
		if cur := statsRaw(t, l, vm.IP); cur["check_passes"].(float64) >= first["check_passes"].(float64)+2 {
			break
		}
		time.Sleep(200 * time.Millisecond)
	}
	if st := l.Stats(vm.IP); st.MemoryErrors != 0 {
		t.Fatalf("after %d moves the guest counts %d memory errors", moves, st.MemoryErrors)
	}
	t.Logf("longest pauses over %d moves: QEMU %.1f ms, guest %.1f ms, client %.1f ms", moves, ms(qemuMax), ms(guestMax), ms(clientMax))
	l.MustRun("vm", "stop", "mover", "--force")
	// Twenty hand-overs of the data disk left a consistent image: had two QEMUs written
	// it at once, its qcow2 metadata would show it.
	img := filepath.Join(l.Dir(), "datastore", "vms", "mover", "data.qcow2")
	if out, err := exec.Command("qemu-img", "check", img).CombinedOutput(); err != nil {
		t.Fatalf("qemu-img check of the data disk after %d moves: %v\n%s", moves, err, out)
	}
	l.MustRun("vm", "delete", "mover")
}

func ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }

func statsRaw(t *testing.T, l *labtest.Lab, ip string) map[string]any {
	t.Helper()
	resp, err := l.HTTP("client").Get("http://" + ip + "/stats")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var m map[string]any
	if err := json.NewDecoder(resp.Body).Decode(&m); err != nil {
		t.Fatal(err)
	}
	return m
}
