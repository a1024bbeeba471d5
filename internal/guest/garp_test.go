package guest

import (
	"bytes"
	"context"
	"errors"
	"net"
	"net/netip"
	"runtime"
	"testing"
	"time"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
)

func TestARPAnnouncementBytes(t *testing.T) {
	mac := net.HardwareAddr{0x02, 0x67, 0x77, 0x00, 0xaa, 0x01}
	ip := netip.MustParseAddr("198.18.1.100")
	want := []byte{
		// Ethernet: destination broadcast, source mac, ethertype ARP.
		0xff, 0xff, 0xff, 0xff, 0xff, 0xff,
		0x02, 0x67, 0x77, 0x00, 0xaa, 0x01,
		0x08, 0x06,
		// ARP: htype 1 (Ethernet), ptype 0x0800 (IPv4), hlen 6, plen 4, oper 1 (request).
		0x00, 0x01,
		0x08, 0x00,
		6,
		4,
		0x00, 0x01,
		// Sender hardware and protocol address.
		0x02, 0x67, 0x77, 0x00, 0xaa, 0x01,
		198, 18, 1, 100,
		// Target hardware address zero, target protocol address = sender's.
		0, 0, 0, 0, 0, 0,
		198, 18, 1, 100,
	}
	if got := arpAnnouncement(mac, ip); !bytes.Equal(got, want) {
		t.Errorf("arpAnnouncement =\n% x\nwant\n% x", got, want)
	}
	// An IPv4-mapped IPv6 address gives the same frame.
	if got := arpAnnouncement(mac, netip.AddrFrom16(ip.As16())); !bytes.Equal(got, want) {
		t.Errorf("arpAnnouncement(mapped) =\n% x\nwant\n% x", got, want)
	}

	// The reply form: oper 2 and target hardware address = sender's.
	wantReply := bytes.Clone(want)
	wantReply[21] = 2
	copy(wantReply[32:38], mac)
	if got := arpReplyAnnouncement(mac, ip); !bytes.Equal(got, wantReply) {
		t.Errorf("arpReplyAnnouncement =\n% x\nwant\n% x", got, wantReply)
	}
	// The caller's MAC must not be aliased or modified.
	if mac.String() != "02:67:77:00:aa:01" {
		t.Errorf("mac modified: %s", mac)
	}
}

func TestAnnounceAddressRejectsBadInput(t *testing.T) {
	ctx := context.Background()
	mac := net.HardwareAddr{0x02, 0, 0, 0, 0, 1}
	if _, err := announceAddress(ctx, 1, mac, netip.MustParseAddr("2001:db8::1"), 1, 0); err == nil {
		t.Error("IPv6 address accepted")
	}
	if _, err := announceAddress(ctx, 1, mac[:4], netip.MustParseAddr("198.18.1.100"), 1, 0); err == nil {
		t.Error("4-byte MAC accepted")
	}
}

// TestAnnounceAddressVeth sends the announcements on one end of a veth pair in a
// throwaway network namespace and captures them on the other end.
func TestAnnounceAddressVeth(t *testing.T) {
	enterTestNetns(t)

	la := netlink.NewLinkAttrs()
	la.Name = "garp0"
	la.HardwareAddr = net.HardwareAddr{0x02, 0x67, 0x77, 0x00, 0xbb, 0x01}
	if err := netlink.LinkAdd(&netlink.Veth{LinkAttrs: la, PeerName: "garp1"}); err != nil {
		t.Fatalf("create veth: %v", err)
	}
	t.Cleanup(func() {
		if l, err := netlink.LinkByName("garp0"); err == nil {
			if err := netlink.LinkDel(l); err != nil {
				t.Errorf("delete veth: %v", err)
			}
		}
	})
	a, err := netlink.LinkByName("garp0")
	if err != nil {
		t.Fatal(err)
	}
	b, err := netlink.LinkByName("garp1")
	if err != nil {
		t.Fatal(err)
	}
	ip := netip.MustParseAddr("198.18.250.100")
	addr := &netlink.Addr{IPNet: &net.IPNet{IP: ip.AsSlice(), Mask: net.CIDRMask(24, 32)}}
	if err := netlink.AddrAdd(a, addr); err != nil {
		t.Fatalf("add address: %v", err)
	}

	for _, l := range []netlink.Link{b, a} {
		if err := netlink.LinkSetUp(l); err != nil {
			t.Fatalf("bring up %s: %v", l.Attrs().Name, err)
		}
	}
	// Capture ARP on garp1 (bound once it is up, as binding to a down interface
	// makes the socket report ENETDOWN; nothing is sent before announceAddress).
	fd, err := unix.Socket(unix.AF_PACKET, unix.SOCK_RAW|unix.SOCK_CLOEXEC, int(htons(unix.ETH_P_ARP)))
	if err != nil {
		t.Fatalf("capture socket: %v", err)
	}
	t.Cleanup(func() { unix.Close(fd) })
	if err := unix.Bind(fd, &unix.SockaddrLinklayer{Protocol: htons(unix.ETH_P_ARP), Ifindex: b.Attrs().Index}); err != nil {
		t.Fatalf("bind capture socket: %v", err)
	}
	if err := unix.SetsockoptTimeval(fd, unix.SOL_SOCKET, unix.SO_RCVTIMEO, &unix.Timeval{Sec: 2}); err != nil {
		t.Fatal(err)
	}

	const rounds = 3
	start := time.Now()
	n, err := announceAddress(context.Background(), a.Attrs().Index, la.HardwareAddr, ip, rounds, 20*time.Millisecond)
	if err != nil || n != rounds {
		t.Fatalf("announceAddress = %d, %v; want %d, nil", n, err, rounds)
	}
	if d := time.Since(start); d < 2*20*time.Millisecond {
		t.Errorf("%d rounds took %s; want at least 2 intervals", rounds, d)
	}

	req, rep := arpAnnouncement(la.HardwareAddr, ip), arpReplyAnnouncement(la.HardwareAddr, ip)
	buf := make([]byte, 1500)
	for i := range 2 * rounds {
		m, from, err := unix.Recvfrom(fd, buf, 0)
		if err != nil {
			t.Fatalf("frame %d: receive: %v", i, err)
		}
		want := req
		if i%2 == 1 {
			want = rep
		}
		if !bytes.Equal(buf[:m], want) {
			t.Errorf("frame %d =\n% x\nwant\n% x", i, buf[:m], want)
		}
		if ll, ok := from.(*unix.SockaddrLinklayer); !ok || ll.Pkttype != unix.PACKET_BROADCAST {
			t.Errorf("frame %d: from %#v, want a broadcast packet", i, from)
		}
	}
	// Nothing more than what was sent.
	if err := unix.SetsockoptTimeval(fd, unix.SOL_SOCKET, unix.SO_RCVTIMEO, &unix.Timeval{Usec: 200000}); err != nil {
		t.Fatal(err)
	}
	if m, _, err := unix.Recvfrom(fd, buf, 0); err == nil {
		t.Errorf("unexpected extra ARP frame: % x", buf[:m])
	} else if !errors.Is(err, unix.EAGAIN) {
		t.Errorf("receive: %v", err)
	}
}

// enterTestNetns locks the goroutine to its thread and moves the thread into a new,
// empty network namespace, which t.Cleanup leaves again (and so deletes, once the
// test's sockets are closed). It skips the test without the privilege to do so.
func enterTestNetns(t *testing.T) {
	t.Helper()
	runtime.LockOSThread()
	orig, err := netns.Get()
	if err != nil {
		runtime.UnlockOSThread()
		t.Fatalf("get current network namespace: %v", err)
	}
	ns, err := netns.New() // also switches this thread to it
	if err != nil {
		orig.Close()
		runtime.UnlockOSThread()
		if errors.Is(err, unix.EPERM) {
			t.Fatalf("cannot create a network namespace: %v", err)
		}
		t.Fatalf("create network namespace: %v", err)
	}
	t.Cleanup(func() {
		defer orig.Close()
		defer ns.Close()
		if err := netns.Set(orig); err != nil {
			// Leave the thread locked: it is destroyed when the goroutine ends
			// instead of running other goroutines in the wrong namespace.
			t.Errorf("restore network namespace: %v", err)
			return
		}
		runtime.UnlockOSThread()
	})
}
