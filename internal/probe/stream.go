package probe

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"sync"
	"time"

	"golang.org/x/net/icmp"
	"golang.org/x/net/ipv4"
)

// UDPResult is what an echo stream (UDP or ICMP) saw: how many requests went out and
// came back, and the longest time without any reply — the client's view of a pause.
type UDPResult struct {
	Sent     int           `json:"sent"`
	Received int           `json:"received"`
	MaxGap   time.Duration `json:"max_gap"`
	// MaxGapAt is when the longest gap ended, since the stream began.
	MaxGapAt time.Duration `json:"max_gap_at"`
}

// Lost is how many requests got no reply at all (late replies count as replies).
func (r UDPResult) Lost() int { return r.Sent - r.Received }

// UDPStream sends a numbered datagram to a UDP echo server every interval until ctx
// ends, and measures the longest gap between consecutive replies. Replies are matched
// by sequence number, so late or reordered ones still count as received.
func UDPStream(ctx context.Context, conn net.Conn, interval time.Duration) (UDPResult, error) {
	enc := func(seq uint64) []byte {
		msg := make([]byte, 16)
		binary.BigEndian.PutUint64(msg, seq)
		binary.BigEndian.PutUint64(msg[8:], uint64(time.Now().UnixNano()))
		return msg
	}
	dec := func(b []byte) (uint64, bool) {
		if len(b) < 8 {
			return 0, false
		}
		return binary.BigEndian.Uint64(b), true
	}
	res, err := echoStream(ctx, conn, interval, enc, dec)
	if err != nil {
		err = fmt.Errorf("UDP stream: %w", err)
	}
	return res, err
}

// ICMPStream sends an ICMP echo request (ping) every interval over conn, a raw
// "ip4:icmp" connection to the target, until ctx ends, and measures the longest gap
// between echo replies as UDPStream does. The guest's kernel answers these itself, so
// they show the network and the VM's pause without any program in the guest. id tells
// this stream's replies from others' (the raw socket sees every ICMP packet).
func ICMPStream(ctx context.Context, conn net.Conn, id uint16, interval time.Duration) (UDPResult, error) {
	enc := func(seq uint64) []byte {
		m := icmp.Message{Type: ipv4.ICMPTypeEcho, Body: &icmp.Echo{ID: int(id), Seq: int(seq & 0xffff),
			Data: binary.BigEndian.AppendUint64(nil, seq)}}
		b, _ := m.Marshal(nil) // cannot fail for an echo
		return b
	}
	dec := func(b []byte) (uint64, bool) {
		// Read on a raw IPv4 socket returns the packet with its IP header.
		if len(b) >= ipv4.HeaderLen && b[0]>>4 == 4 {
			if hl := int(b[0]&0x0f) * 4; hl >= ipv4.HeaderLen && hl <= len(b) {
				b = b[hl:]
			}
		}
		m, err := icmp.ParseMessage(1, b)
		if err != nil || m.Type != ipv4.ICMPTypeEchoReply {
			return 0, false
		}
		e, ok := m.Body.(*icmp.Echo)
		if !ok || e.ID != int(id) || len(e.Data) < 8 {
			return 0, false
		}
		return binary.BigEndian.Uint64(e.Data), true
	}
	res, err := echoStream(ctx, conn, interval, enc, dec)
	if err != nil {
		err = fmt.Errorf("ICMP stream: %w", err)
	}
	return res, err
}

// echoStream sends enc(seq) every interval until ctx ends and reads replies, which dec
// turns back into their sequence numbers (false: not a reply of this stream). Each
// sequence number counts once.
func echoStream(ctx context.Context, conn net.Conn, interval time.Duration, enc func(uint64) []byte, dec func([]byte) (uint64, bool)) (UDPResult, error) {
	var res UDPResult
	start := time.Now()
	var mu sync.Mutex
	last := start
	seen := map[uint64]bool{}
	done := make(chan struct{})
	go func() {
		defer close(done)
		buf := make([]byte, 1500)
		for {
			_ = conn.SetReadDeadline(time.Now().Add(100 * time.Millisecond))
			n, err := conn.Read(buf)
			if err != nil {
				var ne net.Error
				if errors.As(err, &ne) && ne.Timeout() {
					if ctx.Err() != nil {
						return
					}
					continue
				}
				return
			}
			seq, ok := dec(buf[:n])
			now := time.Now()
			mu.Lock()
			if ok && !seen[seq] && seq < uint64(res.Sent) {
				seen[seq] = true
				if gap := now.Sub(last); gap > res.MaxGap {
					res.MaxGap, res.MaxGapAt = gap, now.Sub(start)
				}
				last = now
				res.Received++
			}
			mu.Unlock()
		}
	}()
	t := time.NewTicker(interval)
	defer t.Stop()
	var sendErr error
loop:
	for seq := uint64(0); ; seq++ {
		mu.Lock()
		res.Sent++
		mu.Unlock()
		if _, err := conn.Write(enc(seq)); err != nil && sendErr == nil {
			sendErr = fmt.Errorf("send: %w", err)
		}
		select {
		case <-ctx.Done():
			break loop
		case <-t.C:
		}
	}
	// Give the last replies a moment to arrive.
	time.Sleep(50 * time.Millisecond)
	<-done
	mu.Lock()
	defer mu.Unlock()
	return res, sendErr
}

// HTTPResult counts the requests of an HTTP stream.
type HTTPResult struct {
	Requests int           `json:"requests"`
	Failed   int           `json:"failed"`
	Slowest  time.Duration `json:"slowest"`
	// FirstError is the first failure, for the report.
	FirstError string `json:"first_error,omitempty"`
}

// HTTPStream GETs url every interval (one request at a time, a fresh connection each
// time) until ctx ends; a request fails on an error, a non-200 answer or no answer
// within timeout.
func HTTPStream(ctx context.Context, url string, interval, timeout time.Duration) HTTPResult {
	return HTTPStreamVia(ctx, nil, url, interval, timeout)
}

// HTTPStreamVia is HTTPStream with its connections opened by dial (nil: the default
// dialer), e.g. from inside a network namespace.
func HTTPStreamVia(ctx context.Context, dial func(ctx context.Context, network, addr string) (net.Conn, error), url string, interval, timeout time.Duration) HTTPResult {
	var res HTTPResult
	hc := &http.Client{Timeout: timeout, Transport: &http.Transport{DisableKeepAlives: true, DialContext: dial}}
	t := time.NewTicker(interval)
	defer t.Stop()
	for ctx.Err() == nil {
		start := time.Now()
		req, _ := http.NewRequestWithContext(context.WithoutCancel(ctx), http.MethodGet, url, nil)
		resp, err := hc.Do(req)
		if err == nil {
			_, _ = io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			if resp.StatusCode != http.StatusOK {
				err = fmt.Errorf("answered %s", resp.Status)
			}
		}
		res.Requests++
		if d := time.Since(start); d > res.Slowest {
			res.Slowest = d
		}
		if err != nil {
			res.Failed++
			if res.FirstError == "" {
				res.FirstError = err.Error()
			}
		}
		select {
		case <-ctx.Done():
		case <-t.C:
		}
	}
	return res
}
