package agent

// Frames that reach a VM's source host while the VM is paused at a migration's
// switch-over must not wait in the source TAP's queue, where QEMU's main loop can still
// take one (and drop it, for a VM that no longer runs); frames that reach it after the
// switch-over, until the network learns the VM's new port, neither. From QEMU's STOP
// event on (never while the VM runs) the source agent diverts the TAP's frames to a
// shadow TAP of its own and reads them there, and reads what already waited in the TAP's
// queue from its own duplicate of QEMU's queue. It sends each frame in an authenticated
// UDP datagram to the destination agent, which puts it on the destination VM's TAP once
// the destination QEMU runs the VM (a QEMU whose VM does not run yet takes one frame off
// its TAP and drops it), where the VM reads it at once. Should the migration fail, the
// source stops reading before the VM resumes there and gives the frames it read back to
// the VM's TAP (the diversion removed first): none is lost, none arrives twice.

import (
	"crypto/hkdf"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"strconv"
	"sync"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/godwit/godwit/internal/metrics"
	"github.com/godwit/godwit/internal/netdev"
	"github.com/godwit/godwit/internal/qemu"
)

const (
	// A datagram is: version (1 byte), NIC index (1), sequence number (8, from 1), the
	// packet (virtio-net header and frame), then HMAC-SHA256 of all that.
	frameVersion   = 1
	frameHeaderLen = 1 + 1 + 8
	frameTagLen    = sha256.Size
	// maxFrameDatagram is the largest UDP payload over IPv4, and so the largest
	// datagram the destination accepts.
	maxFrameDatagram = 65507
	// maxFramePacket is the largest packet one datagram carries: a 64 KiB GSO frame of
	// the largest size TCP builds fits.
	maxFramePacket   = maxFrameDatagram - frameHeaderLen - frameTagLen
	minFrameDatagram = frameHeaderLen + netdev.VnetHdrLen + 14 + frameTagLen

	// framesGrace is how long frames are still carried after a migration ends well:
	// until the destination's announcements have surely taught the network the VM's new
	// port (QEMU announces for about 100 ms).
	framesGrace = 2 * time.Second
	// frameReceiveBuffer bounds what the destination's kernel holds of datagrams not yet
	// read; the destination keeps none itself (each frame goes straight to the TAP's
	// queue, bounded by netdev.TapQueueLen).
	frameReceiveBuffer = 4 << 20
	// The source keeps the frames it sent until the migration's outcome is known, to
	// give them back to the VM should it fail; at most this many, and bytes.
	maxKeptFrames = 8192
	maxKeptBytes  = 32 << 20
)

// frameKey is the key of a migration's frame datagrams, derived from the stream key the
// ticket gives both hosts and no one else, so that only the ticket's source can put
// frames into the VM; it is not the key QEMU's TLS uses.
func frameKey(stream []byte, migration string) ([]byte, error) {
	return hkdf.Key(sha256.New, stream, nil, "godwit switch-over frames "+migration, 32)
}

// sealFrame appends to dst the datagram carrying pkt for NIC nic as number seq.
func sealFrame(dst, key []byte, nic uint8, seq uint64, pkt []byte) []byte {
	start := len(dst)
	dst = append(dst, frameVersion, nic)
	dst = binary.BigEndian.AppendUint64(dst, seq)
	dst = append(dst, pkt...)
	mac := hmac.New(sha256.New, key)
	mac.Write(dst[start:])
	return mac.Sum(dst)
}

// openFrame checks a datagram and returns what it carries, or why it must be dropped
// (a metrics.Frame* reason). The packet aliases b.
func openFrame(key, b []byte) (nic int, seq uint64, pkt []byte, reason string) {
	if len(b) < minFrameDatagram || len(b) > maxFrameDatagram {
		return 0, 0, nil, metrics.FrameMalformed
	}
	body, tag := b[:len(b)-frameTagLen], b[len(b)-frameTagLen:]
	mac := hmac.New(sha256.New, key)
	mac.Write(body)
	if !hmac.Equal(mac.Sum(nil), tag) {
		return 0, 0, nil, metrics.FrameUnauthenticated
	}
	seq = binary.BigEndian.Uint64(body[2:])
	if body[0] != frameVersion || seq == 0 {
		return 0, 0, nil, metrics.FrameMalformed
	}
	return int(body[1]), seq, body[frameHeaderLen:], ""
}

// replayWindow accepts each sequence number once, within 64 of the highest seen (the
// source sends in order; the window allows for a little reordering on the way).
type replayWindow struct {
	top  uint64
	seen uint64 // bit i: top-i was accepted
}

func (w *replayWindow) accept(seq uint64) bool {
	switch {
	case seq > w.top:
		if d := seq - w.top; d < 64 {
			w.seen = w.seen<<d | 1
		} else {
			w.seen = 1
		}
		w.top = seq
		return true
	case w.top-seq >= 64:
		return false
	default:
		bit := uint64(1) << (w.top - seq)
		if w.seen&bit != 0 {
			return false
		}
		w.seen |= bit
		return true
	}
}

// frameReceiver is the destination's end: a UDP port on the migration address that puts
// authentic frames on the incoming VM's TAPs.
type frameReceiver struct {
	conn    *net.UDPConn
	closing chan struct{}
	done    chan struct{}
	once    sync.Once
	// running is closed when the VM runs; until then datagrams wait in the socket.
	running     chan struct{}
	runningOnce sync.Once
}

// resumed lets the frames through: the destination QEMU runs the VM. It is called from
// the reader of QEMU's events and does not wait.
func (r *frameReceiver) resumed() {
	if r != nil {
		r.runningOnce.Do(func() { close(r.running) })
	}
}

// receiveFrames opens the frame port of an incoming VM (whose TAPs exist) on addr.
func (a *Agent) receiveFrames(v *vm, addr, migration string, stream []byte) (*frameReceiver, error) {
	key, err := frameKey(stream, migration)
	if err != nil {
		return nil, err
	}
	var inj []*netdev.Injector
	closeAll := func() {
		for _, in := range inj {
			_ = in.Close()
		}
	}
	for i := range v.spec.NICs {
		in, err := netdev.OpenInjector(netdev.TapName(v.spec.UUID, i))
		if err != nil {
			closeAll()
			return nil, fmt.Errorf("NIC %d: %w", i, err)
		}
		inj = append(inj, in)
	}
	lc := net.ListenConfig{Control: func(_, _ string, c syscall.RawConn) error {
		var serr error
		err := c.Control(func(fd uintptr) {
			// Forced: the usual ceiling (net.core.rmem_max) is smaller than a pause's frames.
			serr = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_RCVBUFFORCE, frameReceiveBuffer)
		})
		if err == nil {
			err = serr
		}
		return err
	}}
	pc, err := lc.ListenPacket(a.runCtx, "udp4", net.JoinHostPort(addr, "0"))
	if err != nil {
		closeAll()
		return nil, fmt.Errorf("open a UDP port on %s for the switch-over's frames: %w", addr, err)
	}
	r := &frameReceiver{conn: pc.(*net.UDPConn), closing: make(chan struct{}), done: make(chan struct{}), running: make(chan struct{})}
	a.wg.Add(2)
	go func() {
		defer a.wg.Done()
		select {
		case <-a.runCtx.Done():
		case <-r.closing:
		}
		_ = r.conn.Close()
	}()
	go func() {
		defer a.wg.Done()
		defer close(r.done)
		defer closeAll()
		select {
		case <-r.running:
		case <-r.closing:
			return
		case <-a.runCtx.Done():
			return
		}
		buf := make([]byte, maxFrameDatagram+1)
		var win replayWindow
		for {
			n, _, err := r.conn.ReadFromUDP(buf)
			if err != nil {
				if !errors.Is(err, net.ErrClosed) {
					a.log.Warn("the switch-over's frame port failed", "vm", v.spec.Name, "migration", migration, "err", err)
				}
				return
			}
			nic, seq, pkt, reason := openFrame(key, buf[:n])
			if reason == "" && nic >= len(inj) {
				reason = metrics.FrameMalformed
			}
			if reason == "" && !win.accept(seq) {
				reason = metrics.FrameReplayed
			}
			if reason == "" && inj[nic].Send(pkt) != nil {
				reason = metrics.FrameUndeliverable
			}
			if reason != "" {
				a.metrics.FrameDropped(reason)
				continue
			}
			a.metrics.FramesCarried(metrics.FramesDelivered, 1)
		}
	}()
	return r, nil
}

// port is the UDP port the receiver listens on.
func (r *frameReceiver) port() int { return r.conn.LocalAddr().(*net.UDPAddr).Port }

// close stops the receiver and waits until it has.
func (r *frameReceiver) close() {
	if r == nil {
		return
	}
	r.once.Do(func() { close(r.closing) })
	<-r.done
}

// closeAfter closes the receiver after framesGrace, in the background: the source still
// sends what reaches it until the network has learnt the VM's new port.
func (a *Agent) closeFramesAfter(r *frameReceiver) {
	if r == nil {
		return
	}
	a.afterGrace(r.closing, r.close)
}

// afterGrace runs f, in a goroutine the agent owns, once framesGrace has passed, the
// agent stops or cut is closed (nil: never).
func (a *Agent) afterGrace(cut <-chan struct{}, f func()) {
	a.wg.Add(1)
	go func() {
		defer a.wg.Done()
		t := time.NewTimer(framesGrace)
		defer t.Stop()
		select {
		case <-t.C:
		case <-a.runCtx.Done():
		case <-cut:
		}
		f()
	}()
}

// takeFrames detaches an incoming VM's frame receiver, if it has one.
func (a *Agent) takeFrames(v *vm) *frameReceiver {
	a.mu.Lock()
	defer a.mu.Unlock()
	r := v.frames
	v.frames = nil
	return r
}

// frameSender is the source's end: it reads the VM's TAP queues from the switch-over's
// STOP on and sends every frame to the destination.
type frameSender struct {
	a      *Agent
	log    *slog.Logger
	uuid   string
	taps   []string
	queues []*netdev.TapQueue
	// shadows take each TAP's frames from the STOP on (nil for a NIC without: its
	// frames stay on the TAP's queue and QEMU may still take one).
	shadows []*netdev.Shadow
	conn    *net.UDPConn
	key     []byte

	start, halt         chan struct{}
	startOnce, haltOnce sync.Once
	readers             sync.WaitGroup

	mu        sync.Mutex
	seq       uint64
	out       []byte
	keep      bool
	kept      [][][]byte // by NIC, in the order read
	keptN     int
	keptBytes int
	notKept   int

	finishOnce sync.Once
	after      func()
}

// carryFrames prepares to carry the VM's frames to the destination from the
// switch-over on: it takes its own duplicate of each of QEMU's TAP queues now, while
// the VM runs, and reads none until stopped is called. Without a way to carry them
// (a destination that offers no frame port, a kernel without pidfd_getfd) the
// migration goes on without, and it says so.
func (a *Agent) carryFrames(v *vm, p *qemu.Process, id, destAddr string, port int, stream []byte, log *slog.Logger) *frameSender {
	if port == 0 || len(stream) == 0 {
		log.Info("the destination takes no frames; frames reaching this host during the switch-over will be lost")
		return nil
	}
	key, err := frameKey(stream, id)
	if err != nil {
		log.Warn("frames reaching this host during the switch-over will be lost", "err", err)
		return nil
	}
	s := &frameSender{a: a, log: log, uuid: v.spec.UUID, key: key, keep: true,
		start: make(chan struct{}), halt: make(chan struct{}), kept: make([][][]byte, len(v.spec.NICs))}
	for i := range v.spec.NICs {
		tap := netdev.TapName(v.spec.UUID, i)
		q, err := netdev.TapQueueOf(p.PID, tap)
		if err != nil {
			s.closeQueues()
			log.Warn("frames reaching this host during the switch-over will be lost", "err", err)
			return nil
		}
		s.taps, s.queues = append(s.taps, tap), append(s.queues, q)
		sh, err := netdev.OpenShadow(netdev.ShadowName(v.spec.UUID, i), tap)
		if err != nil {
			log.Warn("QEMU may still take a frame or two during the switch-over", "tap", tap, "err", err)
			sh = nil
		}
		s.shadows = append(s.shadows, sh)
	}
	conn, err := net.Dial("udp4", net.JoinHostPort(destAddr, strconv.Itoa(port)))
	if err != nil {
		s.closeQueues()
		log.Warn("frames reaching this host during the switch-over will be lost", "err", err)
		return nil
	}
	s.conn = conn.(*net.UDPConn)
	for i, q := range s.queues {
		s.readers.Add(1)
		go s.read(i, q)
		if sh := s.shadows[i]; sh != nil {
			s.readers.Add(1)
			go s.read(i, sh.TapQueue)
		}
	}
	return s
}

// divert sends each TAP's frames to its shadow.
func (s *frameSender) divert() {
	for i, sh := range s.shadows {
		if sh == nil {
			continue
		}
		if err := sh.Divert(); err != nil {
			s.log.Warn("QEMU may still take a frame or two during the switch-over", "tap", s.taps[i], "err", err)
		}
	}
}

// undivert gives the TAPs their frames back.
func (s *frameSender) undivert() {
	for i, sh := range s.shadows {
		if sh == nil {
			continue
		}
		if err := netdev.Undivert(s.taps[i]); err != nil {
			s.log.Warn("cannot end the diversion of the VM's frames", "tap", s.taps[i], "err", err)
		}
	}
}

// stopped starts carrying: QEMU stopped the VM. It is called from the reader of QEMU's
// events and waits only for the diversion (one netlink request per NIC), so that it comes
// as soon after the STOP as it can: each frame that still lands on the TAP's queue until
// then is one QEMU's main loop may take and drop.
func (s *frameSender) stopped() {
	if s != nil {
		s.startOnce.Do(func() {
			close(s.start)
			select {
			case <-s.halt:
			default:
				s.divert()
			}
		})
	}
}

func (s *frameSender) read(nic int, q *netdev.TapQueue) {
	defer s.readers.Done()
	select {
	case <-s.start:
	case <-s.halt:
		return
	}
	buf := make([]byte, netdev.MaxPacket+2)
	for {
		pkt, err := q.ReadPacket(buf, time.Time{})
		select {
		case <-s.halt:
			// A frame read as the reading stopped is kept all the same.
			if err == nil {
				s.forward(nic, pkt)
			}
			return
		default:
		}
		if errors.Is(err, os.ErrDeadlineExceeded) {
			continue
		}
		if err != nil {
			s.log.Warn("cannot read the VM's frames during the switch-over", "tap", s.taps[nic], "err", err)
			return
		}
		s.forward(nic, pkt)
	}
}

// forward sends one frame to the destination, and keeps it while the outcome is open.
func (s *frameSender) forward(nic int, pkt []byte) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.keep {
		s.keepFrame(nic, pkt)
	}
	if len(pkt) > maxFramePacket {
		s.a.metrics.FrameDropped(metrics.FrameUndeliverable)
		return
	}
	s.seq++
	s.out = sealFrame(s.out[:0], s.key, uint8(nic), s.seq, pkt)
	if _, err := s.conn.Write(s.out); err != nil {
		s.a.metrics.FrameDropped(metrics.FrameUndeliverable)
		return
	}
	s.a.metrics.FramesCarried(metrics.FramesSent, 1)
}

// keepFrame keeps a copy of pkt to give back should the migration fail, within bounds.
// s.mu is held.
func (s *frameSender) keepFrame(nic int, pkt []byte) {
	if s.keptN < maxKeptFrames && s.keptBytes+len(pkt) <= maxKeptBytes {
		s.kept[nic] = append(s.kept[nic], append([]byte(nil), pkt...))
		s.keptN++
		s.keptBytes += len(pkt)
	} else {
		s.notKept++
	}
}

// stopReading ends the readers and waits until they have: no frame is read after it
// returns.
func (s *frameSender) stopReading() {
	s.haltOnce.Do(func() { close(s.halt) })
	done := make(chan struct{})
	go func() {
		s.readers.Wait()
		close(done)
	}()
	// Interrupt until the readers are out: one may be about to begin a read.
	for {
		for _, q := range s.queues {
			q.Interrupt()
		}
		for _, sh := range s.shadows {
			if sh != nil {
				sh.Interrupt()
			}
		}
		select {
		case <-done:
			return
		case <-time.After(10 * time.Millisecond):
		}
	}
}

func (s *frameSender) closeQueues() {
	for _, q := range s.queues {
		_ = q.Close()
	}
	for _, sh := range s.shadows {
		if sh != nil {
			_ = sh.Close()
		}
	}
}

// giveBack ends the carrying of a migration that failed, before the VM resumes here: it
// stops reading and puts every frame it read back on the VM's TAPs, where QEMU reads
// them when the VM runs again. The destination's copies die with its copy of the VM.
func (s *frameSender) giveBack() {
	if s == nil {
		return
	}
	s.stopReading()
	s.undivert()
	_ = s.conn.Close()
	s.mu.Lock()
	defer s.mu.Unlock()
	// What the shadows took after their readers stopped goes back too.
	for nic, sh := range s.shadows {
		if sh == nil {
			continue
		}
		if err := sh.Drain(func(pkt []byte) { s.keepFrame(nic, pkt) }); err != nil {
			s.log.Warn("cannot read the rest of the switch-over's frames", "tap", s.taps[nic], "err", err)
		}
	}
	s.closeQueues()
	s.keep = false
	for nic, frames := range s.kept {
		if len(frames) == 0 {
			continue
		}
		in, err := netdev.OpenInjector(s.taps[nic])
		if err != nil {
			s.log.Warn("cannot give the switch-over's frames back to the VM", "frames", len(frames), "err", err)
			for range frames {
				s.a.metrics.FrameDropped(metrics.FrameUndeliverable)
			}
			continue
		}
		returned := 0
		for _, f := range frames {
			if in.Send(f) != nil {
				s.a.metrics.FrameDropped(metrics.FrameUndeliverable)
				continue
			}
			returned++
		}
		_ = in.Close()
		s.a.metrics.FramesCarried(metrics.FramesReturned, returned)
		s.log.Info("gave the switch-over's frames back to the VM", "tap", s.taps[nic], "frames", returned)
	}
	for range s.notKept {
		s.a.metrics.FrameDropped(metrics.FrameNotKept)
	}
	s.kept, s.notKept = nil, 0
}

// linger keeps carrying after the migration succeeded, for framesGrace, then stops and
// calls after (which removes the TAPs the duplicates kept). A new copy of the same VM on
// this host ends it sooner (endLinger).
func (s *frameSender) linger(after func()) {
	s.mu.Lock()
	s.keep, s.kept, s.notKept = false, nil, 0
	s.after = after
	s.mu.Unlock()
	a := s.a
	a.migMu.Lock()
	a.lingering[s.uuid] = s
	a.migMu.Unlock()
	a.afterGrace(nil, s.finish)
}

// finish stops carrying for good; a second call waits for the first.
func (s *frameSender) finish() {
	s.finishOnce.Do(func() {
		s.stopReading()
		s.undivert()
		_ = s.conn.Close()
		s.closeQueues()
		a := s.a
		a.migMu.Lock()
		if a.lingering[s.uuid] == s {
			delete(a.lingering, s.uuid)
		}
		a.migMu.Unlock()
		if s.after != nil {
			s.after()
		}
	})
}

// endLinger ends at once the carrying of frames for a VM that has just left this host,
// and removes its old TAPs, before the VM's TAPs are made again here.
func (a *Agent) endLinger(uuid string) {
	a.migMu.Lock()
	s := a.lingering[uuid]
	a.migMu.Unlock()
	if s != nil {
		s.finish()
	}
}
