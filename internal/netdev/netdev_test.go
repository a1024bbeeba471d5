package netdev

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
)

// inThrowawayNetns locks the test goroutine to its OS thread and moves that thread into a
// new, unnamed network namespace that disappears when the test ends. Everything the test
// does on this goroutine, including starting processes, happens inside it.
func inThrowawayNetns(t *testing.T) netns.NsHandle {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Fatal("needs root to create network namespaces")
	}
	runtime.LockOSThread()
	orig, err := netns.Get()
	if err != nil {
		runtime.UnlockOSThread()
		t.Fatalf("get current netns: %v", err)
	}
	ns, err := netns.New()
	if err != nil {
		_ = netns.Set(orig)
		orig.Close()
		runtime.UnlockOSThread()
		t.Fatalf("create netns: %v", err)
	}
	t.Cleanup(func() {
		ns.Close()
		if err := netns.Set(orig); err != nil {
			// Stay locked: the thread dies with the goroutine instead of going back to
			// the pool inside the throwaway namespace.
			t.Errorf("restore netns: %v", err)
			return
		}
		orig.Close()
		runtime.UnlockOSThread()
	})
	return ns
}

func TestEnsureBridgeIdempotent(t *testing.T) {
	inThrowawayNetns(t)
	for i := range 3 {
		if err := EnsureBridge("br0"); err != nil {
			t.Fatalf("EnsureBridge #%d: %v", i, err)
		}
	}
	link, err := netlink.LinkByName("br0")
	if err != nil {
		t.Fatal(err)
	}
	if link.Type() != "bridge" {
		t.Fatalf("br0 is a %s", link.Type())
	}
	mac := link.Attrs().HardwareAddr
	if mac[0]&0x02 == 0 || mac[0]&0x01 != 0 {
		t.Errorf("bridge MAC %s is not unicast, locally administered", mac)
	}
	info, err := BridgeInfo("br0")
	if err != nil {
		t.Fatal(err)
	}
	if !info.Up || info.Name != "br0" || info.MTU != 1500 || len(info.Ports) != 0 {
		t.Errorf("BridgeInfo = %+v, want up br0 mtu 1500 without ports", info)
	}
}

func TestEnsureBridgeNameTakenByOtherLink(t *testing.T) {
	inThrowawayNetns(t)
	veth := &netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: "taken0"}, PeerName: "taken1"}
	if err := netlink.LinkAdd(veth); err != nil {
		t.Fatal(err)
	}
	err := EnsureBridge("taken0")
	if err == nil || !strings.Contains(err.Error(), "not a bridge") {
		t.Fatalf("EnsureBridge on a veth: err = %v, want 'not a bridge'", err)
	}
	if err := CreateTap("taken0", "taken0", 0); err == nil || !strings.Contains(err.Error(), "not a bridge") {
		t.Fatalf("CreateTap onto a veth 'bridge': err = %v", err)
	}
	if err := EnsureBridge("br0"); err != nil {
		t.Fatal(err)
	}
	if err := CreateTap("taken0", "br0", 0); err == nil || !strings.Contains(err.Error(), "not a TAP") {
		t.Fatalf("CreateTap over a veth: err = %v, want 'not a TAP'", err)
	}
	if err := DeleteTap("taken0"); err == nil {
		t.Fatal("DeleteTap deleted a veth")
	}
	if _, err := TapExists("taken0"); err == nil {
		t.Fatal("TapExists accepted a veth as a TAP")
	}
	for _, bad := range []string{"", "this-name-is-too-long", "a/b", "a b"} {
		if err := EnsureBridge(bad); err == nil {
			t.Errorf("EnsureBridge(%q) accepted an invalid name", bad)
		}
	}
}

func TestTapLifecycle(t *testing.T) {
	inThrowawayNetns(t)
	if err := EnsureBridge("br0"); err != nil {
		t.Fatal(err)
	}
	if err := CreateTap("gwt0", "missing0", 1500); err == nil || !strings.Contains(err.Error(), "does not exist") {
		t.Fatalf("CreateTap onto a missing bridge: err = %v", err)
	}
	name := TapName("0b6b0a3e-5c4e-4f62-9d6a-1f1d2a3b4c5d", 0)
	for i := range 2 {
		if err := CreateTap(name, "br0", 1400); err != nil {
			t.Fatalf("CreateTap #%d: %v", i, err)
		}
	}
	link, err := netlink.LinkByName(name)
	if err != nil {
		t.Fatal(err)
	}
	tap, ok := link.(*netlink.Tuntap)
	if !ok {
		t.Fatalf("%s is a %T", name, link)
	}
	if tap.Mode != netlink.TUNTAP_MODE_TAP || tap.NonPersist || tap.Flags&tapFlags != tapFlags || tap.Flags&netlink.TUNTAP_MULTI_QUEUE != 0 {
		t.Errorf("tap mode %v flags %v nonpersist %v: want persistent single-queue TAP with NO_PI|VNET_HDR", tap.Mode, tap.Flags, tap.NonPersist)
	}
	if tap.MTU != 1400 {
		t.Errorf("tap MTU = %d, want 1400", tap.MTU)
	}
	if tap.TxQLen != TapQueueLen {
		t.Errorf("tap queue length = %d, want %d (room for a switch-over's frames)", tap.TxQLen, TapQueueLen)
	}
	info, err := BridgeInfo("br0")
	if err != nil {
		t.Fatal(err)
	}
	if len(info.Ports) != 1 || info.Ports[0] != name {
		t.Errorf("bridge ports = %v, want [%s]", info.Ports, name)
	}
	if ok, err := TapExists(name); !ok || err != nil {
		t.Errorf("TapExists(%s) = %v, %v", name, ok, err)
	}

	// A TAP left without a bridge (an interrupted create) is adopted and enslaved.
	if err := netlink.LinkSetNoMaster(link); err != nil {
		t.Fatal(err)
	}
	if err := CreateTap(name, "br0", 1400); err != nil {
		t.Fatalf("CreateTap on a detached TAP: %v", err)
	}
	if info, _ := BridgeInfo("br0"); len(info.Ports) != 1 {
		t.Errorf("detached TAP was not re-attached: ports %v", info.Ports)
	}
	// A TAP on another bridge is refused.
	if err := EnsureBridge("br1"); err != nil {
		t.Fatal(err)
	}
	if err := CreateTap(name, "br1", 1400); err == nil || !strings.Contains(err.Error(), "not to bridge br1") {
		t.Errorf("CreateTap onto another bridge: err = %v", err)
	}

	second := TapName("0b6b0a3e-5c4e-4f62-9d6a-1f1d2a3b4c5d", 1)
	if err := CreateTap(second, "br0", 0); err != nil {
		t.Fatal(err)
	}
	if err := CreateTap("other0", "br0", 0); err != nil {
		t.Fatal(err)
	}
	taps, err := ListTaps("gw")
	if err != nil {
		t.Fatal(err)
	}
	want := []string{name, second}
	if second < name {
		want = []string{second, name}
	}
	if fmt.Sprint(taps) != fmt.Sprint(want) {
		t.Errorf("ListTaps(gw) = %v, want %v", taps, want)
	}
	if all, _ := ListTaps(""); len(all) != 3 {
		t.Errorf("ListTaps('') = %v, want 3 TAPs and no bridges", all)
	}

	for i := range 2 {
		if err := DeleteTap(name); err != nil {
			t.Fatalf("DeleteTap #%d: %v", i, err)
		}
	}
	if ok, err := TapExists(name); ok || err != nil {
		t.Errorf("TapExists after delete = %v, %v", ok, err)
	}
	if taps, _ := ListTaps("gw"); len(taps) != 1 || taps[0] != second {
		t.Errorf("ListTaps after delete = %v", taps)
	}
}

func TestTapName(t *testing.T) {
	seen := map[string]string{}
	// Time-ordered UUIDs created together share their first hex digits; names must not.
	for i := range 2000 {
		uuid := fmt.Sprintf("01890a5d-ac96-774b-bcce-%012x", i)
		for nic := range 4 {
			n := TapName(uuid, nic)
			if len(n) > 15 || !strings.HasPrefix(n, "gw") {
				t.Fatalf("TapName(%s, %d) = %q: want at most 15 characters starting with gw", uuid, nic, n)
			}
			key := fmt.Sprintf("%s/%d", uuid, nic)
			if prev, dup := seen[n]; dup {
				t.Fatalf("TapName collision: %s and %s both give %s", prev, key, n)
			}
			seen[n] = key
		}
	}
	if got := TapName("0B6B0A3E-5C4E-4F62-9D6A-1F1D2A3B4C5D", 9999); len(got) != 15 {
		t.Errorf("longest name %q has %d characters, want 15", got, len(got))
	}
	a := TapName("0b6b0a3e-5c4e-4f62-9d6a-1f1d2a3b4c5d", 3)
	if b := TapName("{0B6B0A3E5C4E4F629D6A1F1D2A3B4C5D}", 3); a != b {
		t.Errorf("same UUID in another spelling gives %s and %s", a, b)
	}
	defer func() {
		if recover() == nil {
			t.Error("TapName with NIC 10000 did not panic")
		}
	}()
	TapName(a, 10000)
}

// TestQEMUAttachesToTap proves the TAP is usable by the QEMU the project runs: QEMU is
// started inside the test's namespace (it inherits the locked thread's namespace) and
// must hold the TAP's queue.
func TestQEMUAttachesToTap(t *testing.T) {
	qemu, err := exec.LookPath("qemu-system-x86_64")
	if err != nil {
		t.Fatal("qemu-system-x86_64 is not installed; run scripts/deps.sh")
	}
	ns := inThrowawayNetns(t)
	if err := EnsureBridge("br0"); err != nil {
		t.Fatal(err)
	}
	name := TapName("7d3f5a80-0000-4000-8000-000000000001", 0)
	if err := CreateTap(name, "br0", 0); err != nil {
		t.Fatal(err)
	}

	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	var out bytes.Buffer
	cmd := exec.CommandContext(ctx, qemu,
		"-machine", "none", "-nodefaults", "-display", "none", "-S",
		"-netdev", "tap,id=n0,ifname="+name+",script=no,downscript=no,vhost=off")
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		<-exited
	})

	// QEMU runs in our namespace...
	var st1, st2 os.FileInfo
	st1, err = os.Stat(fmt.Sprintf("/proc/self/fd/%d", int(ns)))
	if err == nil {
		st2, err = os.Stat(fmt.Sprintf("/proc/%d/ns/net", cmd.Process.Pid))
	}
	if err != nil || !os.SameFile(st1, st2) {
		t.Fatalf("QEMU is not in the test namespace (err %v)", err)
	}
	// ...and attaches to the TAP: one of its file descriptors is the TAP's queue.
	deadline := time.Now().Add(20 * time.Second)
	for {
		select {
		case err := <-exited:
			exited <- err
			t.Fatalf("QEMU exited (%v) instead of attaching to %s:\n%s", err, name, out.String())
		default:
		}
		if holdsTap(cmd.Process.Pid, name) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("QEMU did not attach to %s within 20s:\n%s", name, out.String())
		}
		time.Sleep(50 * time.Millisecond)
	}
	link, err := netlink.LinkByName(name)
	if err != nil {
		t.Fatal(err)
	}
	if link.Attrs().OperState != netlink.OperUp && link.Attrs().OperState != netlink.OperUnknown {
		t.Errorf("TAP %s oper state %v with QEMU attached, want up", name, link.Attrs().OperState)
	}
}

// holdsTap reports whether process pid has a file descriptor attached to TAP name.
func holdsTap(pid int, name string) bool {
	infos, _ := filepath.Glob(fmt.Sprintf("/proc/%d/fdinfo/*", pid))
	for _, p := range infos {
		b, err := os.ReadFile(p)
		if err == nil && bytes.Contains(b, []byte("iff:\t"+name+"\n")) {
			return true
		}
	}
	return false
}
