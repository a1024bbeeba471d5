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
)

// UDPResult is what a UDP echo stream saw: how many requests went out and came back,
// and the longest time without any reply — the client's view of a pause.
type UDPResult struct {
	Sent     int           `json:"sent"`
	Received int           `json:"received"`
	MaxGap   time.Duration `json:"max_gap"`
	// MaxGapAt is when the longest gap ended, since the stream began.
	MaxGapAt time.Duration `json:"max_gap_at"`
}

// UDPStream sends a numbered datagram to a UDP echo server every interval until ctx
// ends, and measures the longest gap between consecutive replies. Replies are matched
// by sequence number, so late or reordered ones still count as received.
func UDPStream(ctx context.Context, conn net.Conn, interval time.Duration) (UDPResult, error) {
	var res UDPResult
	start := time.Now()
	var mu sync.Mutex
	last := start
	done := make(chan struct{})
	go func() {
		defer close(done)
		buf := make([]byte, 64)
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
			if n < 8 {
				continue
			}
			now := time.Now()
			mu.Lock()
			if gap := now.Sub(last); gap > res.MaxGap {
				res.MaxGap, res.MaxGapAt = gap, now.Sub(start)
			}
			last = now
			res.Received++
			mu.Unlock()
		}
	}()
	t := time.NewTicker(interval)
	defer t.Stop()
	msg := make([]byte, 16)
	var sendErr error
loop:
	for seq := uint64(0); ; seq++ {
		binary.BigEndian.PutUint64(msg, seq)
		binary.BigEndian.PutUint64(msg[8:], uint64(time.Now().UnixNano()))
		if _, err := conn.Write(msg); err != nil && sendErr == nil {
			sendErr = fmt.Errorf("UDP stream: send: %w", err)
		}
		mu.Lock()
		res.Sent++
		mu.Unlock()
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
	var res HTTPResult
	hc := &http.Client{Timeout: timeout, Transport: &http.Transport{DisableKeepAlives: true}}
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
