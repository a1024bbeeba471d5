package labtest

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"net/netip"
	"sync"
	"time"

	"golang.org/x/sys/unix"
)

// Capture watches the TCP payloads that cross a lab namespace (every interface in it,
// as tcpdump -i any would) for byte patterns, such as what a migration stream in the
// clear carries, until Stop.
type Capture struct {
	fd       int
	patterns [][]byte
	done     chan struct{}

	mu sync.Mutex
	// found counts each pattern's occurrences; payload is the TCP payload seen per
	// pair of addresses; tails keep the end of each flow's last payload, so that a
	// pattern split between two segments is found.
	found   map[string]int
	payload map[[2]netip.Addr]int64
	tails   map[flow][]byte
	err     error
}

type flow struct {
	src, dst         netip.Addr
	srcPort, dstPort uint16
}

// Capture starts watching target's namespace (switch, client, host-N) for patterns.
func (l *Lab) Capture(target string, patterns ...[]byte) *Capture {
	l.t.Helper()
	c := &Capture{patterns: patterns, done: make(chan struct{}), found: map[string]int{},
		payload: map[[2]netip.Addr]int64{}, tails: map[flow][]byte{}}
	err := l.inNS(target, func() error {
		fd, err := unix.Socket(unix.AF_PACKET, unix.SOCK_RAW|unix.SOCK_CLOEXEC, int(htons(unix.ETH_P_ALL)))
		if err != nil {
			return fmt.Errorf("packet socket: %w", err)
		}
		c.fd = fd
		return nil
	})
	if err != nil {
		l.t.Fatalf("capture in %s: %v", target, err)
	}
	// Room for a burst of a migration stream; a read wakes up every 50 ms to see
	// whether the capture should stop.
	_ = unix.SetsockoptInt(c.fd, unix.SOL_SOCKET, unix.SO_RCVBUFFORCE, 64<<20)
	_ = unix.SetsockoptTimeval(c.fd, unix.SOL_SOCKET, unix.SO_RCVTIMEO, &unix.Timeval{Usec: 50_000})
	go c.run(c.fd)
	l.t.Cleanup(func() { c.Stop() })
	return c
}

func htons(v uint16) uint16 { return v<<8 | v>>8 }

func (c *Capture) run(fd int) {
	defer close(c.done)
	buf := make([]byte, 256<<10) // segmentation offload hands over up to 64 KiB at once
	for {
		n, _, err := unix.Recvfrom(fd, buf, 0)
		if errors.Is(err, unix.EAGAIN) || errors.Is(err, unix.EINTR) {
			if c.stopping() {
				return
			}
			continue
		}
		if err != nil {
			if !c.stopping() {
				c.mu.Lock()
				c.err = err
				c.mu.Unlock()
			}
			return
		}
		c.frame(buf[:n])
		if c.stopping() {
			return
		}
	}
}

// stopping reports whether Stop closed the socket's use (fd set to -1).
func (c *Capture) stopping() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.fd < 0
}

// frame scans one Ethernet frame's TCP payload (IPv4 only: the lab has no other).
func (c *Capture) frame(b []byte) {
	if len(b) < 14+20 || binary.BigEndian.Uint16(b[12:14]) != 0x0800 {
		return
	}
	ip := b[14:]
	ihl := int(ip[0]&0x0f) * 4
	if ip[0]>>4 != 4 || ip[9] != unix.IPPROTO_TCP || len(ip) < ihl+20 {
		return
	}
	total := int(binary.BigEndian.Uint16(ip[2:4]))
	if total == 0 || total > len(ip) { // segmentation offload leaves the length 0 or short
		total = len(ip)
	}
	tcp := ip[ihl:total]
	off := int(tcp[12]>>4) * 4
	if off < 20 || off > len(tcp) {
		return
	}
	payload := tcp[off:]
	if len(payload) == 0 {
		return
	}
	f := flow{src: netip.AddrFrom4([4]byte(ip[12:16])), dst: netip.AddrFrom4([4]byte(ip[16:20])),
		srcPort: binary.BigEndian.Uint16(tcp[0:2]), dstPort: binary.BigEndian.Uint16(tcp[2:4])}
	c.mu.Lock()
	defer c.mu.Unlock()
	c.payload[[2]netip.Addr{f.src, f.dst}] += int64(len(payload))
	data := append(c.tails[f], payload...)
	longest := 0
	for _, p := range c.patterns {
		c.found[string(p)] += bytes.Count(data, p)
		longest = max(longest, len(p))
	}
	// Keep what a pattern may continue from, minus a whole pattern already counted.
	keep := min(len(data), max(longest-1, 0))
	c.tails[f] = append([]byte(nil), data[len(data)-keep:]...)
}

// Stop ends the capture and waits for its reader.
func (c *Capture) Stop() {
	c.mu.Lock()
	fd := c.fd
	c.fd = -1
	c.mu.Unlock()
	if fd < 0 {
		return
	}
	select {
	case <-c.done:
	case <-time.After(5 * time.Second):
	}
	_ = unix.Close(fd)
}

// Found is how often pattern was seen (call after Stop).
func (c *Capture) Found(pattern []byte) int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.found[string(pattern)]
}

// Payload is how many bytes of TCP payload went from a to b, in either direction when
// both is set (each frame may be seen on two ports of a bridge).
func (c *Capture) Payload(a, b netip.Addr, both bool) int64 {
	c.mu.Lock()
	defer c.mu.Unlock()
	n := c.payload[[2]netip.Addr{a, b}]
	if both {
		n += c.payload[[2]netip.Addr{b, a}]
	}
	return n
}

// Err is the error that ended the capture early, if any.
func (c *Capture) Err() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.err
}
