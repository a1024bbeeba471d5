package netdev

import (
	"bytes"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"time"

	"golang.org/x/sys/unix"
)

// TapQueueLen is the transmit queue length of every TAP Godwit creates. The tun driver
// sizes the ring that holds frames for the TAP's reader (QEMU) from it, so it is how many
// frames towards a VM can wait while the VM is paused — at a migration's switch-over,
// until the destination's QEMU resumes and reads them — before the kernel drops any.
const TapQueueLen = 4096

// VnetHdrLen is the size of the virtio-net header (struct virtio_net_hdr) that leads
// every packet TapQueue reads and Injector sends: offload metadata (GSO, partial
// checksum) that the frame needs to be taken up again by another TAP.
const VnetHdrLen = 10

// MaxPacket is the largest packet (virtio-net header and frame) a TAP hands to its
// reader: a 64 KiB GSO frame with its headers.
const MaxPacket = VnetHdrLen + 65535 + 14 + 4

// TapQueue is this process's own duplicate of the file descriptor through which
// another process (a VM's QEMU) reads a TAP's frames. Reading it takes frames out of
// the same queue as that process, so it must be read only while that process does not.
type TapQueue struct {
	f *os.File
	// hdr is the size of the virtio-net header the tun driver writes before every
	// frame on this queue (the reader set it), 0 when the TAP has none.
	hdr int
}

// TapQueueOf duplicates the file descriptor of process pid that is attached to the TAP
// named tap (pidfd_getfd, Linux 5.6 or later; the caller needs the right to ptrace pid,
// e.g. root). The tun driver names the TAP in the descriptor's fdinfo ("iff:"). The
// duplicate keeps the queue, and with it the TAP's frames, after pid exits.
func TapQueueOf(pid int, tap string) (*TapQueue, error) {
	if err := checkName(tap); err != nil {
		return nil, err
	}
	infos, err := filepath.Glob(fmt.Sprintf("/proc/%d/fdinfo/*", pid))
	if err != nil || len(infos) == 0 {
		return nil, fmt.Errorf("read the file descriptors of process %d: it is gone, or this process may not inspect it (needs root)", pid)
	}
	want := []byte("\niff:\t" + tap + "\n")
	target := -1
	for _, p := range infos {
		b, err := os.ReadFile(p)
		if err == nil && bytes.Contains(append([]byte{'\n'}, b...), want) {
			if target, err = strconv.Atoi(filepath.Base(p)); err != nil {
				return nil, fmt.Errorf("fdinfo %s: %w", p, err)
			}
			break
		}
	}
	if target < 0 {
		return nil, fmt.Errorf("process %d holds no queue of TAP %s", pid, tap)
	}
	pidfd, err := unix.PidfdOpen(pid, 0)
	if err != nil {
		return nil, fmt.Errorf("pidfd_open of process %d: %w (needs Linux 5.6 or later)", pid, err)
	}
	defer unix.Close(pidfd)
	fd, err := unix.PidfdGetfd(pidfd, target, 0)
	if err != nil {
		return nil, fmt.Errorf("take a duplicate of process %d's queue of TAP %s (fd %d): %w", pid, tap, target, err)
	}
	q, err := newTapQueue(fd, tap)
	if err != nil {
		unix.Close(fd)
		return nil, err
	}
	return q, nil
}

// newTapQueue wraps a tun file descriptor attached to tap.
func newTapQueue(fd int, tap string) (*TapQueue, error) {
	ifr, err := unix.NewIfreq("")
	if err != nil {
		return nil, err
	}
	if err := unix.IoctlIfreq(fd, unix.TUNGETIFF, ifr); err != nil {
		return nil, fmt.Errorf("TUNGETIFF on the queue of TAP %s: %w", tap, err)
	}
	if ifr.Name() != tap {
		return nil, fmt.Errorf("the descriptor is attached to %s, not to TAP %s", ifr.Name(), tap)
	}
	hdr := 0
	if ifr.Uint16()&unix.IFF_VNET_HDR != 0 {
		if hdr, err = unix.IoctlGetInt(fd, unix.TUNGETVNETHDRSZ); err != nil {
			return nil, fmt.Errorf("TUNGETVNETHDRSZ on the queue of TAP %s: %w", tap, err)
		}
		if hdr < VnetHdrLen {
			return nil, fmt.Errorf("TAP %s's queue has a %d-byte virtio-net header, shorter than %d", tap, hdr, VnetHdrLen)
		}
	}
	// The reader (QEMU) made the file non-blocking; the duplicate shares that flag, which
	// must not be changed under the reader. Without it a read could not be interrupted.
	if fl, err := unix.FcntlInt(uintptr(fd), unix.F_GETFL, 0); err != nil || fl&unix.O_NONBLOCK == 0 {
		return nil, fmt.Errorf("the queue of TAP %s is in blocking mode; only a non-blocking queue can be read without stalling", tap)
	}
	return &TapQueue{f: os.NewFile(uintptr(fd), "tap:"+tap), hdr: hdr}, nil
}

// ReadPacket reads the next frame into buf (at least MaxPacket bytes) and returns it
// as a packet: the virtio-net header (VnetHdrLen bytes; zero when the TAP has none)
// followed by the frame. It waits until deadline at most (os.ErrDeadlineExceeded).
func (q *TapQueue) ReadPacket(buf []byte, deadline time.Time) ([]byte, error) {
	if len(buf) < MaxPacket+2 {
		return nil, fmt.Errorf("a TAP packet needs a buffer of %d bytes", MaxPacket+2)
	}
	if err := q.f.SetReadDeadline(deadline); err != nil {
		return nil, err
	}
	return q.readPacket(buf, q.f.Read)
}

// readPacket reads one packet with read and returns it as ReadPacket does.
func (q *TapQueue) readPacket(buf []byte, read func([]byte) (int, error)) ([]byte, error) {
	// The header the reader asked for may be longer than struct virtio_net_hdr (12 bytes
	// with num_buffers, which means nothing once the frame leaves the queue): read the
	// frame so that the first VnetHdrLen bytes of buf hold the header that matters.
	skip := 0
	if q.hdr == 0 {
		skip = VnetHdrLen
		clear(buf[:VnetHdrLen])
	}
	n, err := read(buf[skip:])
	if err != nil {
		return nil, err
	}
	n += skip
	hdr := max(q.hdr, VnetHdrLen)
	if n < hdr+14 {
		return nil, fmt.Errorf("short packet of %d bytes on the TAP's queue", n)
	}
	if hdr > VnetHdrLen {
		copy(buf[VnetHdrLen:], buf[hdr:n])
		n -= hdr - VnetHdrLen
	}
	return buf[:n], nil
}

// Interrupt makes a ReadPacket under way return at once.
func (q *TapQueue) Interrupt() { _ = q.f.SetReadDeadline(time.Now()) }

// Close closes the duplicate; the other process's descriptor stays.
func (q *TapQueue) Close() error { return q.f.Close() }

// Injector transmits packets on a TAP: each goes into the TAP's queue towards its
// reader (the VM), as if the bridge had forwarded it there.
type Injector struct {
	fd  int
	tap string
}

// OpenInjector opens an AF_PACKET socket bound to the TAP named tap that sends packets
// as ReadPacket returns them (virtio-net header, then the frame), so that offloaded
// frames (GSO, partial checksum) keep their metadata. It receives nothing.
func OpenInjector(tap string) (*Injector, error) {
	if err := checkName(tap); err != nil {
		return nil, err
	}
	ifc, err := net.InterfaceByName(tap)
	if err != nil {
		return nil, fmt.Errorf("TAP %s: %w", tap, err)
	}
	fd, err := unix.Socket(unix.AF_PACKET, unix.SOCK_RAW|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("open a packet socket for TAP %s: %w (needs CAP_NET_RAW)", tap, err)
	}
	if err := unix.SetsockoptInt(fd, unix.SOL_PACKET, unix.PACKET_VNET_HDR, 1); err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("PACKET_VNET_HDR on the packet socket for TAP %s: %w", tap, err)
	}
	if err := unix.Bind(fd, &unix.SockaddrLinklayer{Ifindex: ifc.Index}); err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("bind a packet socket to TAP %s: %w", tap, err)
	}
	return &Injector{fd: fd, tap: tap}, nil
}

// Send transmits one packet (VnetHdrLen bytes of virtio-net header, then the frame).
func (in *Injector) Send(pkt []byte) error {
	if len(pkt) < VnetHdrLen+14 {
		return errors.New("a packet needs a virtio-net header and an Ethernet header")
	}
	if _, err := unix.Write(in.fd, pkt); err != nil {
		return fmt.Errorf("send a frame on TAP %s: %w", in.tap, err)
	}
	return nil
}

// Close closes the socket.
func (in *Injector) Close() error { return unix.Close(in.fd) }
