package integration

import (
	"bytes"
	"context"
	"crypto/rand"
	"fmt"
	"math"
	"net/http"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/godwit/godwit/internal/api"
	"github.com/godwit/godwit/internal/netdev"
)

// migrationSummary is the JSON `vm migrate -o json` prints.
type migrationSummary struct {
	ID          string              `json:"id"`
	State       string              `json:"state"`
	Source      string              `json:"source"`
	Destination string              `json:"destination"`
	TotalMS     float64             `json:"total_ms"`
	DowntimeMS  float64             `json:"downtime_ms"`
	PauseMS     float64             `json:"pause_ms"`
	Pause       *api.PauseBreakdown `json:"pause"`
	Bytes       uint64              `json:"bytes"`
	Passes      int                 `json:"passes"`
	Encrypted   bool                `json:"encrypted"`
	Error       string              `json:"error"`
}

// qemuProcesses returns the pids of QEMU processes whose command line carries uuid.
func qemuProcesses(uuid string) []int {
	var pids []int
	dirs, _ := filepath.Glob("/proc/[0-9]*/cmdline")
	for _, f := range dirs {
		b, err := os.ReadFile(f)
		if err != nil || !bytes.Contains(b, []byte(uuid)) || !bytes.Contains(b, []byte("qemu-system")) {
			continue
		}
		var pid int
		fmt.Sscanf(f, "/proc/%d/cmdline", &pid)
		if !processGone(pid, 0) {
			pids = append(pids, pid)
		}
	}
	return pids
}

// TestLiveMigration moves a running VM from host-1 to host-2 and back while a TCP
// connection from the client stays open, and checks memory, disk and identity after each.
func TestLiveMigration(t *testing.T) {
	l := newLab(t, 2)
	var vm api.VM
	l.RunJSON(&vm, "vm", "create", "mig-1", "--host", "host-1")
	l.WaitHTTP("client", "http://"+vm.IP+"/healthz", 90*time.Second)
	before := l.Stats(vm.IP)

	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	tcp, err := l.Dial(ctx, "client", "tcp", vm.IP+":7")
	if err != nil {
		t.Fatal(err)
	}
	defer tcp.Close()
	echoTCP(t, tcp, 16<<10)
	var hosts []api.Host
	l.RunJSON(&hosts, "host", "list")
	addr := map[string]netip.Addr{}
	for _, h := range hosts {
		addr[h.Name] = netip.MustParseAddr(h.Address)
	}

	// The first migration goes encrypted (the default), the second in the clear; the
	// switch watches both for what a stream in the clear shows: QEMU's magic and
	// version, and the name of the guest's RAM block.
	magic, ramBlock := []byte("QEVM\x00\x00\x00\x03"), []byte("pc.ram")
	for i, to := range []string{"host-2", "host-1"} {
		from := map[string]string{"host-2": "host-1", "host-1": "host-2"}[to]
		record := make([]byte, 64<<10)
		_, _ = rand.Read(record)
		putDisk(t, l, vm.IP, 10+i, record)

		encryption := []string{"opportunistic", "off"}[i]
		wire := l.Capture("switch", magic, ramBlock)
		var sum migrationSummary
		l.RunJSON(&sum, "vm", "migrate", "mig-1", "--to", to, "--encryption", encryption)
		wire.Stop()
		t.Logf("migration %s → %s: total %.0f ms, downtime %.1f ms, %d bytes, %d passes, encrypted %v", from, to, sum.TotalMS, sum.DowntimeMS, sum.Bytes, sum.Passes, sum.Encrypted)
		if sum.State != api.MigrationSucceeded || sum.Source != from || sum.Destination != to || sum.TotalMS <= 0 || sum.Bytes == 0 || sum.Passes < 1 {
			t.Fatalf("migration summary %+v; want a success %s → %s with times, bytes and passes", sum, from, to)
		}
		checkPause(t, sum)
		crossed := wire.Payload(addr[from], addr[to], true)
		t.Logf("the switch saw %d bytes of TCP payload between %s and %s; QEMU's magic %d times, the RAM block's name %d times",
			crossed, from, to, wire.Found(magic), wire.Found(ramBlock))
		if err := wire.Err(); err != nil {
			t.Fatalf("capture on the switch: %v", err)
		}
		if crossed < int64(sum.Bytes)/2 { // each frame crosses two ports; a busy capture may miss some
			t.Fatalf("the switch saw %d bytes between the hosts, less than half the %d the migration sent: it did not watch the stream", crossed, sum.Bytes)
		}
		if encryption == "off" {
			if sum.Encrypted || wire.Found(magic) == 0 || wire.Found(ramBlock) == 0 {
				t.Fatalf("a migration in the clear (encrypted %v): the switch saw QEMU's magic %d times and the RAM block's name %d times; want both",
					sum.Encrypted, wire.Found(magic), wire.Found(ramBlock))
			}
		} else if !sum.Encrypted || wire.Found(magic) != 0 || wire.Found(ramBlock) != 0 {
			t.Fatalf("an encrypted migration (encrypted %v): the switch saw QEMU's magic %d times and the RAM block's name %d times; want neither",
				sum.Encrypted, wire.Found(magic), wire.Found(ramBlock))
		}
		moved := waitVM(t, l, "mig-1", func(v api.VM) bool { return v.Host == to && v.State == api.VMRunning })
		if moved.IP != vm.IP || moved.MAC != vm.MAC || moved.UUID != vm.UUID {
			t.Fatalf("the VM's identity changed: %+v, was %+v", moved, vm)
		}
		if pids := qemuProcesses(vm.UUID); len(pids) != 1 || pids[0] != moved.PID {
			t.Fatalf("QEMU processes of the VM after the migration: %v; want exactly the destination's %d", pids, moved.PID)
		}
		if tapLeft(l, from, netdev.TapName(vm.UUID, 0)) {
			t.Fatalf("the VM's TAP is left on %s", from)
		}
		echoTCP(t, tcp, 16<<10) // the connection survived
		if got := getDisk(t, l, vm.IP, 10+i); !bytes.Equal(got, record) {
			t.Fatal("the disk record written before the migration changed")
		}
		st := l.Stats(vm.IP)
		if st.BootID != before.BootID || st.MemoryErrors != 0 || st.ClockBackwards != 0 {
			t.Fatalf("guest after migration %d: %+v; want boot id %s, no memory errors, no clock steps back", i+1, st, before.BootID)
		}
	}

	var ms []api.Migration
	l.RunJSON(&ms, "migration", "list", "--vm", "mig-1")
	if len(ms) != 2 || ms[0].State != api.MigrationSucceeded || ms[1].State != api.MigrationSucceeded {
		t.Fatalf("migration list: %+v", ms)
	}

	// Refused before anything starts, with a reason.
	for _, c := range []struct {
		args []string
		want string
	}{
		{[]string{"vm", "migrate", "mig-1", "--to", "host-1"}, "already runs on host-1"},
		{[]string{"vm", "migrate", "mig-1", "--to", "host-9"}, "no host named"},
		{[]string{"vm", "migrate", "mig-1"}, "--to"},
		{[]string{"vm", "migrate", "mig-1", "--to", "host-2", "--policy", "nosuch"}, "nosuch"},
	} {
		_, errOut, err := l.Run(c.args...)
		if err == nil || !strings.Contains(errOut, c.want) {
			t.Errorf("godwit %s: err=%v stderr=%q; want a refusal mentioning %q", strings.Join(c.args, " "), err, errOut, c.want)
		}
	}
	l.MustRun("vm", "stop", "mig-1", "--force")
	if _, errOut, err := l.Run("vm", "migrate", "mig-1", "--to", "host-2"); err == nil || !strings.Contains(errOut, "only a running VM") {
		t.Errorf("migrating a stopped VM: err=%v stderr=%q", err, errOut)
	}
	var after []api.Migration
	if err := l.API().Do(context.Background(), http.MethodGet, "/api/v1/migrations?vm=mig-1", nil, &after); err != nil || len(after) != 2 {
		t.Fatalf("refused migrations left records: %d, %v", len(after), err)
	}
	l.MustRun("vm", "delete", "mig-1")
}

// checkPause checks a migration's pause breakdown: every part there, none negative, the
// parts adding up to the whole, which is the hosts' STOP→RESUME within a few ms (QEMU
// emits the events and the checkpoints moments apart), the first announce near the resume
// and the slowest device on each side named.
func checkPause(t *testing.T, sum migrationSummary) {
	t.Helper()
	p := sum.Pause
	if p == nil {
		t.Fatalf("migration %s recorded no pause breakdown", sum.ID)
	}
	t.Logf("pause %.1f ms: stop %.1f, last pass %.1f, devices %.1f, disks %.1f, destination load %.1f, resume %.1f; slowest load %s, save %s",
		p.TotalMS, p.StopMS, p.LastPassMS, p.DeviceStateMS, p.DiskHandoverMS, p.DestinationLoadMS, p.ResumeMS, p.SlowestLoad, p.SlowestSave)
	parts := []float64{p.StopMS, p.LastPassMS, p.DeviceStateMS, p.DiskHandoverMS, p.DestinationLoadMS, p.ResumeMS}
	sum2 := 0.0
	for _, x := range parts {
		if x < 0 {
			t.Errorf("a part of the pause is negative: %+v", *p)
		}
		sum2 += x
	}
	if math.Abs(sum2-p.TotalMS) > 0.01 || p.TotalMS <= 0 || math.Abs(p.TotalMS-sum.PauseMS) > 5+0.2*sum.PauseMS {
		t.Errorf("pause parts add up to %.3f ms, total %.3f ms, STOP→RESUME %.3f ms", sum2, p.TotalMS, sum.PauseMS)
	}
	if p.AnnounceMS == nil || math.Abs(*p.AnnounceMS) > 1000 || p.SlowestLoad == "" || p.SlowestSave == "" || p.DiskHandoverMS <= 0 {
		t.Errorf("pause breakdown lacks the announce, the slowest devices or the disk hand-over (the VM has a disk): %+v", *p)
	}
}
