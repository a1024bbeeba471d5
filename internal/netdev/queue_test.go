package netdev

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// testPacket is a packet as Injector sends it: a virtio-net header without offloads and
// an Ethernet frame to dst (an experimental EtherType) carrying n.
func testPacket(dst []byte, n uint32) []byte {
	p := make([]byte, VnetHdrLen, VnetHdrLen+64)
	p = append(p, dst...)
	p = append(p, 0x02, 0, 0, 0, 0, 0x01, 0x88, 0xb5)
	p = binary.BigEndian.AppendUint32(p, n)
	return append(p, make([]byte, 46)...)
}

// waitUp waits until the kernel has set TAP name's link up after a queue attached: until
// then it drops what is sent to it (its qdisc is attached a moment after the carrier).
func waitUp(t *testing.T, name string) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		l, err := netlink.LinkByName(name)
		if err != nil {
			t.Fatal(err)
		}
		if l.Attrs().OperState == netlink.OperUp {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("TAP %s is %v, not up, with a queue attached", name, l.Attrs().OperState)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// readTestPacket reads the next packet of testPacket's kind, skipping what the kernel
// itself sends on a new link (IPv6 neighbour discovery and MLD).
func readTestPacket(q *TapQueue, buf []byte, deadline time.Time) ([]byte, error) {
	for {
		p, err := q.ReadPacket(buf, deadline)
		if err != nil || binary.BigEndian.Uint16(p[VnetHdrLen+12:]) == 0x88b5 {
			return p, err
		}
	}
}

// attachQueue attaches a queue of this process to the persistent TAP name, as QEMU does
// (non-blocking, with a 12-byte virtio-net header), and returns its descriptor.
func attachQueue(t *testing.T, name string) int {
	t.Helper()
	fd, err := unix.Open("/dev/net/tun", unix.O_RDWR|unix.O_NONBLOCK|unix.O_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	ifr, _ := unix.NewIfreq(name)
	ifr.SetUint16(unix.IFF_TAP | unix.IFF_NO_PI | unix.IFF_VNET_HDR)
	if err := unix.IoctlIfreq(fd, unix.TUNSETIFF, ifr); err != nil {
		t.Fatalf("attach to %s: %v", name, err)
	}
	if err := unix.IoctlSetPointerInt(fd, unix.TUNSETVNETHDRSZ, 12); err != nil {
		t.Fatal(err)
	}
	return fd
}

// heldQueue makes bridge br0 and the TAP of NIC 0 of VM uuid on it, and holds a queue of
// it as QEMU does; it returns the TAP's name, the queue's descriptor and the queue.
func heldQueue(t *testing.T, uuid string) (string, int, *TapQueue) {
	t.Helper()
	if err := EnsureBridge("br0"); err != nil {
		t.Fatal(err)
	}
	name := TapName(uuid, 0)
	if err := CreateTap(name, "br0", 0); err != nil {
		t.Fatal(err)
	}
	fd := attachQueue(t, name)
	waitUp(t, name)
	q, err := newTapQueue(fd, name)
	if err != nil {
		unix.Close(fd)
		t.Fatal(err)
	}
	t.Cleanup(func() { q.Close() })
	return name, fd, q
}

// TestInjectorReachesTheQueue sends frames on a TAP with Injector and reads them from
// the TAP's queue with TapQueue, as the destination and the source of a migration do.
func TestInjectorReachesTheQueue(t *testing.T) {
	inThrowawayNetns(t)
	name, fd, q := heldQueue(t, "7d3f5a80-0000-4000-8000-000000000002")
	if _, err := newTapQueue(fd, "other0"); err == nil || !strings.Contains(err.Error(), "not to TAP other0") {
		t.Errorf("a queue taken for the wrong TAP: err = %v", err)
	}
	in, err := OpenInjector(name)
	if err != nil {
		t.Fatal(err)
	}
	defer in.Close()
	dst := []byte{0x02, 0x67, 0x77, 0, 0, 1}
	for i := range 100 {
		if err := in.Send(testPacket(dst, uint32(i))); err != nil {
			t.Fatal(err)
		}
	}
	buf := make([]byte, MaxPacket+2)
	for i := range 100 {
		got, err := readTestPacket(q, buf, time.Now().Add(2*time.Second))
		if err != nil {
			t.Fatalf("frame %d: %v", i, err)
		}
		if want := testPacket(dst, uint32(i)); !bytes.Equal(got, want) {
			t.Fatalf("frame %d read back as\n%x\nwant\n%x", i, got, want)
		}
	}
	// Nothing more, and a read waiting for one can be interrupted.
	go func() {
		time.Sleep(100 * time.Millisecond)
		q.Interrupt()
	}()
	start := time.Now()
	if _, err := readTestPacket(q, buf, time.Now().Add(10*time.Second)); !errors.Is(err, os.ErrDeadlineExceeded) || time.Since(start) > 5*time.Second {
		t.Errorf("read of an empty queue: %v after %v; want it interrupted", err, time.Since(start))
	}
	if err := in.Send(make([]byte, 12)); err == nil {
		t.Error("Injector sent a packet without an Ethernet header")
	}
}

// TestTapQueueOfQEMU takes a duplicate of a real QEMU's TAP queue. The VM is not running
// (-S), so QEMU reads at most one frame (which it holds for the VM); every other frame
// sent to the VM is read, intact and in order, through the duplicate.
func TestTapQueueOfQEMU(t *testing.T) {
	qemu, err := exec.LookPath("qemu-system-x86_64")
	if err != nil {
		t.Fatal("qemu-system-x86_64 is not installed; run scripts/deps.sh")
	}
	inThrowawayNetns(t)
	if err := EnsureBridge("br0"); err != nil {
		t.Fatal(err)
	}
	name := TapName("7d3f5a80-0000-4000-8000-000000000003", 0)
	if err := CreateTap(name, "br0", 0); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, qemu, "-machine", "q35", "-nodefaults", "-display", "none", "-S",
		"-netdev", "tap,id=n0,ifname="+name+",script=no,downscript=no,vhost=off",
		"-device", "virtio-net-pci,netdev=n0,mac=02:67:77:00:00:01")
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() {
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
	}()
	for !holdsTap(cmd.Process.Pid, name) {
		if ctx.Err() != nil {
			t.Fatalf("QEMU did not attach to %s:\n%s", name, out.String())
		}
		time.Sleep(50 * time.Millisecond)
	}
	if _, err := TapQueueOf(cmd.Process.Pid, "gwnosuch0"); err == nil || !strings.Contains(err.Error(), "holds no queue") {
		t.Errorf("TapQueueOf a TAP QEMU does not hold: err = %v", err)
	}
	waitUp(t, name)
	q, err := TapQueueOf(cmd.Process.Pid, name)
	if err != nil {
		t.Fatal(err)
	}
	defer q.Close()
	if q.hdr < VnetHdrLen {
		t.Errorf("QEMU's queue has a %d-byte virtio-net header, want at least %d", q.hdr, VnetHdrLen)
	}
	in, err := OpenInjector(name)
	if err != nil {
		t.Fatal(err)
	}
	defer in.Close()
	dst := []byte{0x02, 0x67, 0x77, 0, 0, 1}
	const n = 200
	for i := range n {
		if err := in.Send(testPacket(dst, uint32(i))); err != nil {
			t.Fatal(err)
		}
	}
	buf := make([]byte, MaxPacket+2)
	next := uint32(0)
	read := 0
	for {
		got, err := readTestPacket(q, buf, time.Now().Add(500*time.Millisecond))
		if errors.Is(err, os.ErrDeadlineExceeded) {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		i := binary.BigEndian.Uint32(got[VnetHdrLen+14:])
		if i < next || !bytes.Equal(got, testPacket(dst, i)) {
			t.Fatalf("read %x after frame %d", got, next)
		}
		next = i + 1
		read++
	}
	if read < n-1 {
		t.Fatalf("read %d of %d frames through the duplicate; QEMU holds at most one", read, n)
	}
	// QEMU's own descriptor is untouched: it still holds the TAP.
	if !holdsTap(cmd.Process.Pid, name) {
		t.Error("QEMU lost its TAP")
	}
}

// TestDivert diverts a TAP's frames to a shadow and back: while diverted, every frame
// sent towards the TAP's reader lands on the shadow's queue instead, what was on the
// TAP's queue stays there, and the shadow goes when it is closed.
func TestDivert(t *testing.T) {
	inThrowawayNetns(t)
	uuid := "7d3f5a80-0000-4000-8000-000000000003"
	name, _, q := heldQueue(t, uuid)
	sh, err := OpenShadow(ShadowName(uuid, 0), name)
	if err != nil {
		t.Fatal(err)
	}
	closed := false
	defer func() {
		if !closed {
			sh.Close()
		}
	}()
	if sh.Name() != name[:10]+"s0" {
		t.Errorf("shadow of %s named %s", name, sh.Name())
	}
	// (A link on no bridge stays in operational state "unknown": nothing to wait for.)
	in, err := OpenInjector(name)
	if err != nil {
		t.Fatal(err)
	}
	defer in.Close()
	dst := []byte{0x02, 0x67, 0x77, 0, 0, 2}
	send := func(from, to int) {
		for i := from; i < to; i++ {
			if err := in.Send(testPacket(dst, uint32(i))); err != nil {
				t.Fatal(err)
			}
		}
	}
	// drain returns the numbers of the test frames on queue x, and how many other
	// frames it held.
	drain := func(x *TapQueue) (nums []uint32, other int) {
		if err := x.Drain(func(p []byte) {
			if binary.BigEndian.Uint16(p[VnetHdrLen+12:]) != 0x88b5 {
				other++
				return
			}
			nums = append(nums, binary.BigEndian.Uint32(p[VnetHdrLen+14:]))
		}); err != nil {
			t.Fatal(err)
		}
		return nums, other
	}
	want := func(what string, got []uint32, from, to int) {
		t.Helper()
		if len(got) != to-from {
			t.Fatalf("%s: frames %v; want %d..%d", what, got, from, to-1)
		}
		for i, n := range got {
			if n != uint32(from+i) {
				t.Fatalf("%s: frames %v; want %d..%d in order", what, got, from, to-1)
			}
		}
	}

	send(0, 10)
	if on, _ := Diverted(name); on {
		t.Error("Diverted before Divert")
	}
	if err := sh.Divert(); err != nil {
		t.Fatal(err)
	}
	if on, err := Diverted(name); !on || err != nil {
		t.Errorf("Diverted after Divert: %v, %v", on, err)
	}
	send(10, 30)
	got, _ := drain(q)
	want("the TAP's queue while diverted", got, 0, 10)
	got, other := drain(sh.TapQueue)
	want("the shadow's queue while diverted", got, 10, 30)
	if other != 0 {
		t.Errorf("the shadow received %d frames of the host's own; want none", other)
	}

	if err := Undivert(name); err != nil {
		t.Fatal(err)
	}
	if on, _ := Diverted(name); on {
		t.Error("Diverted after Undivert")
	}
	send(30, 40)
	got, _ = drain(q)
	want("the TAP's queue after Undivert", got, 30, 40)
	if got, _ := drain(sh.TapQueue); len(got) != 0 {
		t.Errorf("the shadow received %v after Undivert", got)
	}
	if err := Undivert(name); err != nil {
		t.Errorf("a second Undivert: %v", err)
	}
	if err := Undivert("gwnosuchtap0"); err != nil {
		t.Errorf("Undivert of a TAP that is gone: %v", err)
	}

	// A TAP adopted again (an agent restarted mid-way) loses a diversion left behind.
	if err := sh.Divert(); err != nil {
		t.Fatal(err)
	}
	if err := CreateTap(name, "br0", 0); err != nil {
		t.Fatal(err)
	}
	if on, err := Diverted(name); on || err != nil {
		t.Errorf("Diverted after the TAP was adopted again: %v, %v; want false", on, err)
	}

	closed = true
	if err := sh.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := netlink.LinkByName(sh.Name()); err == nil {
		t.Errorf("shadow %s still exists after Close", sh.Name())
	}
	if _, err := OpenShadow(name, name); err == nil {
		t.Errorf("a shadow was made under the name of an existing persistent TAP")
	}
}
