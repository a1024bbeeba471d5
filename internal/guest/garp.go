package guest

import (
	"context"
	"encoding/binary"
	"fmt"
	"net"
	"net/netip"
	"time"

	"golang.org/x/sys/unix"
)

// Gratuitous ARP: after its address is configured the guest announces it, as real
// operating systems do, so that peers holding a stale ARP entry for the address (say
// of a deleted VM whose address this VM got) learn the new MAC at once instead of
// after their entry times out.
const (
	// garpCount is how many rounds of announcements are sent.
	garpCount = 3
	// garpInterval is the pause between two rounds.
	garpInterval = 100 * time.Millisecond
	// garpCarrierWait bounds the wait for the interface's carrier before the first
	// round (frames sent without carrier are dropped).
	garpCarrierWait = 2 * time.Second
)

// ARP and Ethernet constants (RFC 826).
const (
	arpFrameLen   = 14 + 28 // Ethernet header + ARP payload for Ethernet/IPv4
	arpHTypeEther = 1
	arpOpRequest  = 1
	arpOpReply    = 2
)

// arpAnnouncement returns the Ethernet frame of an RFC 5227 ARP Announcement for ip by
// mac: an ARP request broadcast to ff:ff:ff:ff:ff:ff with sender and target protocol
// address both ip, sender hardware address mac and target hardware address zero.
// mac must be 6 bytes and ip an IPv4 address (an IPv4-mapped IPv6 address is
// unmapped).
func arpAnnouncement(mac net.HardwareAddr, ip netip.Addr) []byte {
	return arpFrame(arpOpRequest, mac, ip, make(net.HardwareAddr, 6))
}

// arpReplyAnnouncement returns the reply form of a gratuitous ARP for ip by mac: an
// ARP reply broadcast to ff:ff:ff:ff:ff:ff with sender and target protocol address
// both ip and sender and target hardware address both mac (the form Linux and some
// older stacks recognise as a gratuitous reply). Same requirements as
// [arpAnnouncement].
func arpReplyAnnouncement(mac net.HardwareAddr, ip netip.Addr) []byte {
	return arpFrame(arpOpReply, mac, ip, mac)
}

// arpFrame builds a broadcast Ethernet/IPv4 ARP frame with operation op, sender
// (mac, ip), target (tha, ip).
func arpFrame(op uint16, mac net.HardwareAddr, ip netip.Addr, tha net.HardwareAddr) []byte {
	ip4 := ip.Unmap().As4()
	b := make([]byte, arpFrameLen)
	// Ethernet header.
	copy(b[0:6], []byte{0xff, 0xff, 0xff, 0xff, 0xff, 0xff})
	copy(b[6:12], mac)
	binary.BigEndian.PutUint16(b[12:14], unix.ETH_P_ARP)
	// ARP payload.
	a := b[14:]
	binary.BigEndian.PutUint16(a[0:2], arpHTypeEther)
	binary.BigEndian.PutUint16(a[2:4], unix.ETH_P_IP)
	a[4] = 6 // hardware address length
	a[5] = 4 // protocol address length
	binary.BigEndian.PutUint16(a[6:8], op)
	copy(a[8:14], mac)     // sender hardware address
	copy(a[14:18], ip4[:]) // sender protocol address
	copy(a[18:24], tha)    // target hardware address
	copy(a[24:28], ip4[:]) // target protocol address
	return b
}

// announceAddress sends count rounds of gratuitous ARP for ip by mac on the interface
// with index ifindex, interval apart: each round is an ARP Announcement
// ([arpAnnouncement]) followed by its reply form ([arpReplyAnnouncement]). It first
// waits up to garpCarrierWait for the interface's carrier. It returns the number of
// rounds sent; it stops early, with ctx's error, when ctx is done. Sockets are opened in
// the calling thread's network namespace.
func announceAddress(ctx context.Context, ifindex int, mac net.HardwareAddr, ip netip.Addr, count int, interval time.Duration) (int, error) {
	if len(mac) != 6 {
		return 0, fmt.Errorf("gratuitous ARP: MAC %q is not an Ethernet address", mac)
	}
	if !ip.Unmap().Is4() {
		return 0, fmt.Errorf("gratuitous ARP: %s is not an IPv4 address", ip)
	}
	if err := waitForCarrier(ctx, ifindex, garpCarrierWait); err != nil {
		return 0, err
	}
	fd, err := unix.Socket(unix.AF_PACKET, unix.SOCK_RAW|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return 0, fmt.Errorf("gratuitous ARP: open packet socket: %w", err)
	}
	defer unix.Close(fd)
	to := &unix.SockaddrLinklayer{
		Protocol: htons(unix.ETH_P_ARP),
		Ifindex:  ifindex,
		Halen:    6,
		Addr:     [8]byte{0xff, 0xff, 0xff, 0xff, 0xff, 0xff},
	}
	frames := [][]byte{arpAnnouncement(mac, ip), arpReplyAnnouncement(mac, ip)}
	for i := range count {
		if i > 0 {
			t := time.NewTimer(interval)
			select {
			case <-ctx.Done():
				t.Stop()
				return i, ctx.Err()
			case <-t.C:
			}
		}
		for _, f := range frames {
			if err := unix.Sendto(fd, f, 0, to); err != nil {
				return i, fmt.Errorf("gratuitous ARP: send on interface %d: %w", ifindex, err)
			}
		}
	}
	return count, nil
}

// waitForCarrier waits until the interface with index ifindex is running (has carrier),
// polling, for at most timeout; it returns nil on timeout too (the caller sends
// anyway), and an error only if ctx is done or the interface cannot be found.
func waitForCarrier(ctx context.Context, ifindex int, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for {
		ifi, err := net.InterfaceByIndex(ifindex)
		if err != nil {
			return fmt.Errorf("gratuitous ARP: find interface %d: %w", ifindex, err)
		}
		if ifi.Flags&net.FlagRunning != 0 || time.Now().After(deadline) {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("gratuitous ARP: waiting for carrier on %s: %w", ifi.Name, ctx.Err())
		case <-time.After(20 * time.Millisecond):
		}
	}
}

// htons returns v in network byte order as the host reads it, as the sockaddr_ll
// protocol field (and the socket(2) protocol argument) want.
func htons(v uint16) uint16 {
	var b [2]byte
	binary.BigEndian.PutUint16(b[:], v)
	return binary.NativeEndian.Uint16(b[:])
}
