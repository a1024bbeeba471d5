package agent

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"net"
	"os"
	"runtime"
	"slices"
	"strconv"
	"testing"
	"time"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"

	"github.com/godwit/godwit/internal/api"
	"github.com/godwit/godwit/internal/metrics"
	"github.com/godwit/godwit/internal/netdev"
	"github.com/godwit/godwit/internal/qemu"
)

// framePacket is a packet as the source reads it from a TAP: a virtio-net header, then
// an Ethernet frame (an experimental EtherType) carrying n.
func framePacket(n uint32) []byte {
	p := make([]byte, netdev.VnetHdrLen, 128)
	p = append(p, 0x02, 0x67, 0x77, 0, 0, 9, 0x02, 0, 0, 0, 0, 1, 0x88, 0xb5)
	p = binary.BigEndian.AppendUint32(p, n)
	return append(p, make([]byte, 46)...)
}

// inNewNetns moves the test's goroutine, locked to its thread, into a throwaway network
// namespace with loopback up.
func inNewNetns(t *testing.T) {
	t.Helper()
	runtime.LockOSThread()
	orig, err := netns.Get()
	if err != nil {
		t.Fatal(err)
	}
	ns, err := netns.New()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ns.Close()
		if err := netns.Set(orig); err != nil {
			t.Errorf("restore netns: %v", err) // the thread stays locked and dies
			return
		}
		orig.Close()
		runtime.UnlockOSThread()
	})
	lo, err := netlink.LinkByName("lo")
	if err == nil {
		err = netlink.LinkSetUp(lo)
	}
	if err != nil {
		t.Fatal(err)
	}
}

func frameCount(t *testing.T, a *Agent, name, label, value string) float64 {
	t.Helper()
	mfs, err := a.cfg.Registry.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
		for _, m := range mf.GetMetric() {
			for _, l := range m.GetLabel() {
				if l.GetName() == label && l.GetValue() == value {
					return m.GetCounter().GetValue()
				}
			}
		}
	}
	t.Fatalf("no %s{%s=%q}", name, label, value)
	return 0
}

// TestFrameReceiverDropsForgeries sends datagrams to a destination's frame port, whose
// VM's TAP is held as QEMU holds it: an authentic one reaches the TAP's queue; a replay,
// one made with another key, a tampered one, a short one and one for a NIC the VM lacks
// reach nothing and are counted by reason.
func TestFrameReceiverDropsForgeries(t *testing.T) {
	a, v, received := frameAgent(t, "f1", "5f0c1e2a-0000-4000-8000-00000000f001")

	stream := bytes.Repeat([]byte{7}, 32)
	r, err := a.receiveFrames(v, "127.0.0.1", "mig-f1", stream)
	if err != nil {
		t.Fatal(err)
	}
	defer r.close()
	key, err := frameKey(stream, "mig-f1")
	if err != nil {
		t.Fatal(err)
	}
	if other, _ := frameKey(stream, "mig-f2"); bytes.Equal(key, other) || bytes.Equal(key, stream) {
		t.Fatal("the frame key is the stream key, or the same for another migration")
	}
	c, err := net.Dial("udp4", net.JoinHostPort("127.0.0.1", strconv.Itoa(r.port())))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	send := func(d []byte) {
		if _, err := c.Write(d); err != nil {
			t.Fatal(err)
		}
	}
	genuine := sealFrame(nil, key, 0, 1, framePacket(1))
	send(genuine)
	// Nothing reaches the TAP before the VM runs (QEMU would take one frame and drop it).
	if got := received(300 * time.Millisecond); len(got) != 0 {
		t.Fatalf("frames reaching the VM before it runs: %v, want none yet", got)
	}
	r.resumed()
	if got := received(time.Second); len(got) != 1 || got[0] != 1 {
		t.Fatalf("frames reaching the VM after an authentic datagram: %v, want [1]", got)
	}
	send(genuine) // replayed
	otherKey, _ := frameKey(bytes.Repeat([]byte{8}, 32), "mig-f1")
	send(sealFrame(nil, otherKey, 0, 2, framePacket(2))) // forged
	tampered := sealFrame(nil, key, 0, 3, framePacket(3))
	tampered[len(tampered)-frameTagLen-1] ^= 1
	send(tampered)
	send(genuine[:minFrameDatagram-1])                  // too short
	send(sealFrame(nil, key, 5, 4, framePacket(4)))     // no NIC 5
	send(sealFrame(nil, key, 0, 1<<40, framePacket(5))) // far ahead: accepted, and moves the window
	send(sealFrame(nil, key, 0, 6, framePacket(6)))     // now too old
	if got := received(time.Second); len(got) != 1 || got[0] != 5 {
		t.Fatalf("frames reaching the VM after forgeries and replays: %v, want only [5]", got)
	}
	want := map[string]float64{
		metrics.FrameReplayed: 2, metrics.FrameUnauthenticated: 2, metrics.FrameMalformed: 2, metrics.FrameUndeliverable: 0,
	}
	for reason, n := range want {
		if got := frameCount(t, a, "godwit_agent_frames_dropped_total", "reason", reason); got != n {
			t.Errorf("frames dropped as %s: %v, want %v", reason, got, n)
		}
	}
	if got := frameCount(t, a, "godwit_agent_frames_carried_total", "direction", metrics.FramesDelivered); got != 2 {
		t.Errorf("frames delivered: %v, want 2", got)
	}
	r.close()
	if _, err := c.Write(sealFrame(nil, key, 0, 1<<41, framePacket(7))); err == nil {
		if got := received(300 * time.Millisecond); len(got) != 0 {
			t.Errorf("a closed frame port delivered %v", got)
		}
	}
}

func TestReplayWindow(t *testing.T) {
	var w replayWindow
	for _, c := range []struct {
		seq  uint64
		want bool
	}{{1, true}, {1, false}, {3, true}, {2, true}, {2, false}, {70, true}, {6, false}, {7, true}, {7, false}, {200, true}, {137, true}, {136, false}} {
		if got := w.accept(c.seq); got != c.want {
			t.Fatalf("accept(%d) = %v, want %v", c.seq, got, c.want)
		}
	}
}

// FuzzOpenFrame: no datagram makes the destination's decoder fail other than by a
// reason, and whatever it accepts is exactly what the key seals.
func FuzzOpenFrame(f *testing.F) {
	key, _ := frameKey(bytes.Repeat([]byte{7}, 32), "mig-fuzz")
	f.Add(sealFrame(nil, key, 0, 1, framePacket(1)))
	f.Add(sealFrame(nil, key, 3, 1<<63, framePacket(2)))
	f.Add([]byte{1, 0, 0})
	f.Fuzz(func(t *testing.T, b []byte) {
		nic, seq, pkt, reason := openFrame(key, b)
		if reason != "" {
			return
		}
		if !bytes.Equal(sealFrame(nil, key, uint8(nic), seq, pkt), b) {
			t.Fatalf("accepted %x, which the key does not seal that way", b)
		}
	})
}

// frameAgent is an agent running in a throwaway network namespace with a bridge, and a
// VM of one NIC whose TAP the test holds as QEMU does (heldTap).
func frameAgent(t *testing.T, name, uuid string) (*Agent, *vm, func(time.Duration) []uint32) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Fatal("needs root for network namespaces and TAPs")
	}
	a, _ := testAgent(t)
	ctx, cancel := context.WithCancel(context.Background())
	a.runCtx = ctx
	t.Cleanup(a.wg.Wait)
	t.Cleanup(cancel) // first: the agent's goroutines end, then they are waited for
	inNewNetns(t)
	if err := netdev.EnsureBridge("br0"); err != nil {
		t.Fatal(err)
	}
	v := &vm{spec: api.VMSpec{Name: name, UUID: uuid, NICs: []api.NIC{{Network: "lab"}}}}
	return a, v, heldTap(t, a, v)
}

// heldTap makes VM v's TAPs and holds NIC 0's queue as QEMU does (non-blocking, with a
// virtio-net header). It returns the function that reads, within wait, the frames of
// framePacket's kind that reached the VM.
func heldTap(t *testing.T, a *Agent, v *vm) func(wait time.Duration) []uint32 {
	t.Helper()
	if err := a.createTaps(v); err != nil {
		t.Fatal(err)
	}
	// The VM's side of the TAP, opened as QEMU opens it.
	tun, err := unix.Open("/dev/net/tun", unix.O_RDWR|unix.O_CLOEXEC|unix.O_NONBLOCK, 0)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { unix.Close(tun) })
	ifr, _ := unix.NewIfreq(netdev.TapName(v.spec.UUID, 0))
	ifr.SetUint16(unix.IFF_TAP | unix.IFF_NO_PI | unix.IFF_VNET_HDR)
	if err := unix.IoctlIfreq(tun, unix.TUNSETIFF, ifr); err != nil {
		t.Fatal(err)
	}
	// The kernel drops what is sent to the TAP until it has set the link up.
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(10 * time.Millisecond) {
		l, err := netlink.LinkByName(netdev.TapName(v.spec.UUID, 0))
		if err != nil {
			t.Fatal(err)
		}
		if l.Attrs().OperState == netlink.OperUp {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the TAP is %v, not up, with a queue attached", l.Attrs().OperState)
		}
	}
	// The frames of framePacket's kind that reached the VM within wait.
	return func(wait time.Duration) []uint32 {
		var got []uint32
		buf := make([]byte, 70000)
		deadline := time.Now().Add(wait)
		for {
			left := time.Until(deadline)
			if left <= 0 {
				return got
			}
			fds := []unix.PollFd{{Fd: int32(tun), Events: unix.POLLIN}}
			if n, _ := unix.Poll(fds, int(left/time.Millisecond)+1); n <= 0 {
				continue
			}
			n, err := unix.Read(tun, buf)
			if errors.Is(err, unix.EAGAIN) {
				continue
			}
			if err != nil {
				t.Fatal(err)
			}
			f := buf[netdev.VnetHdrLen:n]
			if len(f) >= 18 && binary.BigEndian.Uint16(f[12:]) == 0x88b5 {
				got = append(got, binary.BigEndian.Uint32(f[14:]))
			}
		}
	}
}

// TestFramesDivertedAndGivenBack runs the source's end of a switch-over that fails, with
// this test holding the VM's TAP as QEMU does: frames that waited on the TAP's queue at
// the STOP and frames that arrive after it (diverted to the shadow) all reach the
// destination, each once; when the migration fails they all go back to the VM, the
// diversion is gone, and so is the shadow.
func TestFramesDivertedAndGivenBack(t *testing.T) {
	a, v, received := frameAgent(t, "f2", "5f0c1e2a-0000-4000-8000-00000000f002")
	tap := netdev.TapName(v.spec.UUID, 0)

	dst, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	defer dst.Close()
	stream := bytes.Repeat([]byte{9}, 32)
	key, _ := frameKey(stream, "mig-g1")
	s := a.carryFrames(v, &qemu.Process{PID: os.Getpid()}, "mig-g1", "127.0.0.1", dst.LocalAddr().(*net.UDPAddr).Port, stream, a.log)
	if s == nil {
		t.Fatal("carryFrames prepared nothing")
	}
	if s.shadows[0] == nil {
		t.Fatal("no shadow for the TAP")
	}
	in, err := netdev.OpenInjector(tap)
	if err != nil {
		t.Fatal(err)
	}
	defer in.Close()
	send := func(from, to int) {
		for i := from; i < to; i++ {
			if err := in.Send(framePacket(uint32(i))); err != nil {
				t.Fatal(err)
			}
		}
	}
	// carried returns the frames the destination got within wait, by number.
	carried := func(want int, wait time.Duration) []uint32 {
		var got []uint32
		buf := make([]byte, maxFrameDatagram+1)
		_ = dst.SetReadDeadline(time.Now().Add(wait))
		for len(got) < want {
			n, err := dst.Read(buf)
			if err != nil {
				break
			}
			_, _, pkt, reason := openFrame(key, buf[:n])
			if reason != "" {
				t.Fatalf("the source sent a datagram the destination drops: %s", reason)
			}
			if f := pkt[netdev.VnetHdrLen:]; binary.BigEndian.Uint16(f[12:]) == 0x88b5 {
				got = append(got, binary.BigEndian.Uint32(f[14:]))
			}
		}
		slices.Sort(got)
		return got
	}
	all := func(n int) []uint32 {
		w := make([]uint32, n)
		for i := range w {
			w[i] = uint32(i)
		}
		return w
	}

	send(0, 10) // the VM runs: these wait on the TAP's queue for it
	if on, _ := netdev.Diverted(tap); on {
		t.Fatal("the TAP is diverted before the STOP")
	}
	s.stopped()
	if on, err := netdev.Diverted(tap); !on || err != nil {
		t.Fatalf("the TAP is not diverted after the STOP: %v, %v", on, err)
	}
	send(10, 30)
	if got := carried(30, 5*time.Second); !slices.Equal(got, all(30)) {
		t.Fatalf("the destination got frames %v; want 0..29, each once", got)
	}

	s.giveBack()
	if on, _ := netdev.Diverted(tap); on {
		t.Error("the TAP is still diverted after the migration failed")
	}
	got := received(2 * time.Second)
	slices.Sort(got)
	if !slices.Equal(got, all(30)) {
		t.Errorf("the VM got back frames %v; want 0..29, each once", got)
	}
	// The count also takes any frame the host itself sent the VM meanwhile (the bridge's
	// IPv6 or STP frames), which the VM gets back too.
	if n := frameCount(t, a, "godwit_agent_frames_carried_total", "direction", metrics.FramesReturned); n < 30 {
		t.Errorf("frames returned: %v, want at least the 30 sent", n)
	}
	if _, err := netlink.LinkByName(netdev.ShadowName(v.spec.UUID, 0)); err == nil {
		t.Error("the shadow TAP outlived the migration")
	}
	// The VM's frames flow to it again.
	send(30, 31)
	if got := received(time.Second); !slices.Equal(got, []uint32{30}) {
		t.Errorf("after the failed migration the VM got %v; want [30]", got)
	}
}
