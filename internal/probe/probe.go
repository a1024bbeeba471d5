// Package probe is the client side of the test guest's services, used from a lab's
// client namespace: wait for HTTP, fetch a page, check the TCP and UDP echo. The demo
// and the benchmarks run it as `godwit probe ...` inside the client namespace.
package probe

import (
	"bytes"
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"time"
)

// WaitHTTP polls url until it answers 200, and returns how long that took.
func WaitHTTP(ctx context.Context, url string, every time.Duration) (time.Duration, error) {
	start := time.Now()
	hc := &http.Client{Timeout: time.Second, Transport: &http.Transport{DisableKeepAlives: true}}
	var last error
	for {
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
		if err != nil {
			return 0, fmt.Errorf("wait for %s: %w", url, err)
		}
		resp, err := hc.Do(req)
		if err == nil {
			_, _ = io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return time.Since(start), nil
			}
			err = fmt.Errorf("answered %s", resp.Status)
		}
		last = err
		select {
		case <-ctx.Done():
			return 0, fmt.Errorf("%s did not answer within %s: %w", url, time.Since(start).Round(time.Millisecond), last)
		case <-time.After(every):
		}
	}
}

// Get fetches url and returns its body; a non-200 answer is an error.
func Get(ctx context.Context, url string) ([]byte, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return nil, err
	}
	resp, err := http.DefaultTransport.RoundTrip(req)
	if err != nil {
		return nil, fmt.Errorf("GET %s: %w", url, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, 16<<20))
	if err != nil {
		return nil, fmt.Errorf("GET %s: %w", url, err)
	}
	if resp.StatusCode != http.StatusOK {
		return b, fmt.Errorf("GET %s: %s: %s", url, resp.Status, bytes.TrimSpace(b))
	}
	return b, nil
}

// EchoTCP sends n random bytes to a TCP echo server and checks they all come back.
func EchoTCP(ctx context.Context, addr string, n int) (time.Duration, error) {
	start := time.Now()
	var d net.Dialer
	c, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return 0, fmt.Errorf("TCP echo %s: %w", addr, err)
	}
	defer c.Close()
	if dl, ok := ctx.Deadline(); ok {
		_ = c.SetDeadline(dl)
	}
	msg := make([]byte, n)
	_, _ = rand.Read(msg)
	errc := make(chan error, 1)
	go func() { _, err := c.Write(msg); errc <- err }()
	got := make([]byte, n)
	_, rerr := io.ReadFull(c, got)
	if werr := <-errc; werr != nil {
		return 0, fmt.Errorf("TCP echo %s: write: %w", addr, werr)
	}
	if rerr != nil {
		return 0, fmt.Errorf("TCP echo %s: read: %w", addr, rerr)
	}
	if !bytes.Equal(got, msg) {
		return 0, fmt.Errorf("TCP echo %s: the bytes that came back differ from those sent", addr)
	}
	return time.Since(start), nil
}

// EchoUDP sends count datagrams to a UDP echo server, one at a time, and returns how many
// came back intact.
func EchoUDP(ctx context.Context, addr string, count int, wait time.Duration) (int, error) {
	var d net.Dialer
	c, err := d.DialContext(ctx, "udp", addr)
	if err != nil {
		return 0, fmt.Errorf("UDP echo %s: %w", addr, err)
	}
	defer c.Close()
	buf := make([]byte, 2048)
	ok := 0
	for i := 0; i < count; i++ {
		if ctx.Err() != nil {
			return ok, ctx.Err()
		}
		msg := fmt.Appendf(nil, "godwit-probe-%d-%d", i, time.Now().UnixNano())
		if _, err := c.Write(msg); err != nil {
			return ok, fmt.Errorf("UDP echo %s: %w", addr, err)
		}
		_ = c.SetReadDeadline(time.Now().Add(wait))
		n, err := c.Read(buf)
		var ne net.Error
		switch {
		case err == nil && bytes.Equal(buf[:n], msg):
			ok++
		case err != nil && !(errors.As(err, &ne) && ne.Timeout()):
			return ok, fmt.Errorf("UDP echo %s: %w", addr, err)
		}
	}
	return ok, nil
}
