package api

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

// serveTest serves h with limits on a real TCP listener until the test ends.
func serveTest(t *testing.T, l ServerLimits, h http.Handler) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- l.Serve(ctx, h, ln) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Serve: %v", err)
		}
	})
	return ln.Addr().String()
}

// waitClosed reads from conn until the server closes it and returns how long that took
// from start; it fails the test if the server keeps the connection beyond limit.
func waitClosed(t *testing.T, conn net.Conn, start time.Time, limit time.Duration) time.Duration {
	t.Helper()
	_ = conn.SetReadDeadline(start.Add(limit))
	_, err := io.Copy(io.Discard, conn)
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		t.Fatalf("the server still held the connection after %s", limit)
	}
	return time.Since(start)
}

// A client that sends a header and then trickles its body a byte at a time is cut off
// once the read timeout has passed since its request began, and its handler's read
// fails, so the handler's goroutine ends.
func TestServeCutsOffTrickledBody(t *testing.T) {
	const read = 1500 * time.Millisecond
	var ended atomic.Int32
	readErr := make(chan error, 1)
	addr := serveTest(t, ServerLimits{Read: read}, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		defer ended.Add(1)
		var v map[string]any
		err := Decode(w, r, &v)
		readErr <- err
		if err != nil {
			WriteError(w, err)
		}
	}))
	conn, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	start := time.Now()
	fmt.Fprintf(conn, "POST /api/v1/login HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 100000\r\n\r\n{")
	stop := make(chan struct{})
	defer close(stop)
	go func() { // a byte every 300 ms: far too slow to finish before the timeout
		for {
			select {
			case <-stop:
				return
			case <-time.After(300 * time.Millisecond):
				if _, err := conn.Write([]byte(" ")); err != nil {
					return
				}
			}
		}
	}()
	took := waitClosed(t, conn, start, read+5*time.Second)
	if took < read-100*time.Millisecond {
		t.Fatalf("the connection ended after %s, before the read timeout %s", took, read)
	}
	select {
	case err := <-readErr:
		if err == nil {
			t.Fatal("the handler read a whole body that was never sent")
		}
	case <-time.After(2 * time.Second):
		t.Fatal("the handler's read of the trickled body did not fail")
	}
	for deadline := time.Now().Add(2 * time.Second); ended.Load() == 0; time.Sleep(10 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("the handler did not return after its body was cut off")
		}
	}
}

// A header that is too large is answered 431 before any handler runs.
func TestServeRefusesHugeHeaders(t *testing.T) {
	var called atomic.Bool
	addr := serveTest(t, ServerLimits{}, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { called.Store(true) }))
	for name, req := range map[string]*http.Request{
		"one huge header": func() *http.Request {
			r, _ := http.NewRequest(http.MethodPost, "http://"+addr+"/api/v1/hosts/join", strings.NewReader("{}"))
			r.Header.Set("X-Pad", strings.Repeat("a", 2*MaxHeaderBytes))
			return r
		}(),
		"a huge path": func() *http.Request {
			r, _ := http.NewRequest(http.MethodGet, "http://"+addr+"/"+strings.Repeat("p", 2*MaxHeaderBytes), nil)
			return r
		}(),
		"many headers": func() *http.Request {
			r, _ := http.NewRequest(http.MethodGet, "http://"+addr+"/", nil)
			for i := range 2 * MaxHeaderBytes / 32 {
				r.Header.Set(fmt.Sprintf("X-H%d", i), strings.Repeat("v", 24))
			}
			return r
		}(),
	} {
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusRequestHeaderFieldsTooLarge {
			t.Errorf("%s: %s; want 431", name, resp.Status)
		}
	}
	if called.Load() {
		t.Error("a handler ran for a request whose header is over the limit")
	}
	// A header within the limit is served.
	req, _ := http.NewRequest(http.MethodGet, "http://"+addr+"/", nil)
	req.Header.Set("X-Pad", strings.Repeat("a", MaxHeaderBytes/2))
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK || !called.Load() {
		t.Errorf("a header of %d bytes: %s; want it served", MaxHeaderBytes/2, resp.Status)
	}
}

// A client that sends its header slowly, or says nothing, is cut off after the header
// timeout; a kept-alive connection with no next request after the idle timeout.
func TestServeCutsOffSlowHeadersAndIdleConnections(t *testing.T) {
	const header, idle = 800 * time.Millisecond, 1200 * time.Millisecond
	addr := serveTest(t, ServerLimits{ReadHeader: header, Idle: idle}, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.WriteString(w, "ok")
	}))

	slow, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer slow.Close()
	start := time.Now()
	fmt.Fprint(slow, "GET / HTTP/1.1\r\nHost: x\r\n") // never finishes its header
	if took := waitClosed(t, slow, start, header+5*time.Second); took < header-100*time.Millisecond {
		t.Fatalf("a slow header was cut off after %s, before the header timeout %s", took, header)
	}

	kept, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer kept.Close()
	fmt.Fprint(kept, "GET / HTTP/1.1\r\nHost: x\r\n\r\n")
	br := bufio.NewReader(kept)
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		t.Fatal(err)
	}
	_, _ = io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	start = time.Now()
	_ = kept.SetReadDeadline(start.Add(idle + 5*time.Second))
	if _, err := br.ReadByte(); err == nil {
		t.Fatal("the server sent something on an idle connection")
	} else if ne, ok := err.(net.Error); ok && ne.Timeout() {
		t.Fatalf("an idle connection was kept beyond %s", idle+5*time.Second)
	}
	if took := time.Since(start); took < idle-100*time.Millisecond {
		t.Fatalf("an idle connection was closed after %s, before the idle timeout %s", took, idle)
	}
}

// A client that stops reading an answer is cut off one write timeout after the write
// that blocks: the handler's write fails and it returns. A client that reads goes on
// receiving for longer than the write timeout: the timeout is per write, so streams and
// long requests are not cut short.
func TestServeWriteTimeoutIsPerWrite(t *testing.T) {
	const write = time.Second
	chunk := []byte(strings.Repeat("x", 64<<10))
	writeErr := make(chan error, 2)
	addr := serveTest(t, ServerLimits{Write: write}, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		rc := http.NewResponseController(w)
		switch r.URL.Path {
		case "/flood": // far more than the socket buffers hold
			for range 4096 {
				if _, err := w.Write(chunk); err != nil {
					writeErr <- err
					return
				}
			}
			writeErr <- nil
		case "/stream": // an event every 100 ms for three write timeouts
			for range 30 {
				if _, err := io.WriteString(w, "data: {}\n\n"); err != nil {
					writeErr <- err
					return
				}
				if err := rc.Flush(); err != nil {
					writeErr <- err
					return
				}
				time.Sleep(100 * time.Millisecond)
			}
			writeErr <- nil
		}
	}))

	stuck, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer stuck.Close()
	fmt.Fprint(stuck, "GET /flood HTTP/1.1\r\nHost: x\r\n\r\n") // and never reads
	select {
	case err := <-writeErr:
		if err == nil {
			t.Fatal("the server wrote 256 MiB to a client that reads nothing")
		}
	case <-time.After(write + 10*time.Second):
		t.Fatal("a handler writing to a client that reads nothing was not cut off")
	}

	start := time.Now()
	resp, err := http.Get("http://" + addr + "/stream")
	if err != nil {
		t.Fatal(err)
	}
	body, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	if err != nil || strings.Count(string(body), "data:") != 30 {
		t.Fatalf("a stream read by its client for %s: %d events, %v; want all 30", time.Since(start), strings.Count(string(body), "data:"), err)
	}
	if err := <-writeErr; err != nil {
		t.Fatalf("a stream whose client reads failed after %s (the write timeout is %s): %v", time.Since(start), write, err)
	}
}
