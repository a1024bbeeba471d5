package probe

import (
	"context"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"
)

func TestWaitHTTPAndGet(t *testing.T) {
	ready := make(chan struct{})
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		select {
		case <-ready:
			io.WriteString(w, "ok")
		default:
			http.Error(w, "not yet", http.StatusServiceUnavailable)
		}
	}))
	defer srv.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if _, err := Get(ctx, srv.URL); err == nil || !strings.Contains(err.Error(), "503") {
		t.Fatalf("Get before ready: %v", err)
	}
	time.AfterFunc(200*time.Millisecond, func() { close(ready) })
	d, err := WaitHTTP(ctx, srv.URL, 20*time.Millisecond)
	if err != nil || d < 150*time.Millisecond {
		t.Fatalf("WaitHTTP = %s, %v", d, err)
	}
	short, cancel2 := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel2()
	if _, err := WaitHTTP(short, "http://127.0.0.1:1/", 10*time.Millisecond); err == nil {
		t.Fatal("WaitHTTP on a closed port succeeded")
	}
}

func TestEchoes(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() { defer c.Close(); io.Copy(c, c) }()
		}
	}()
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer pc.Close()
	drop := 0
	go func() {
		buf := make([]byte, 2048)
		for {
			n, a, err := pc.ReadFrom(buf)
			if err != nil {
				return
			}
			drop++
			if drop%5 == 0 { // lose every fifth datagram
				continue
			}
			pc.WriteTo(buf[:n], a)
		}
	}()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, err := EchoTCP(ctx, ln.Addr().String(), 1<<20); err != nil {
		t.Fatal(err)
	}
	got, err := EchoUDP(ctx, pc.LocalAddr().String(), 20, 100*time.Millisecond)
	if err != nil || got != 16 {
		t.Fatalf("EchoUDP = %d, %v; want 16 of 20", got, err)
	}
}

func TestUDPStreamSeesAPause(t *testing.T) {
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer pc.Close()
	pauseFrom := time.Now().Add(150 * time.Millisecond)
	go func() {
		buf := make([]byte, 64)
		for {
			n, a, err := pc.ReadFrom(buf)
			if err != nil {
				return
			}
			// Drop everything for 120 ms, as a paused VM would.
			if now := time.Now(); now.After(pauseFrom) && now.Before(pauseFrom.Add(120*time.Millisecond)) {
				continue
			}
			pc.WriteTo(buf[:n], a)
		}
	}()
	conn, err := net.Dial("udp", pc.LocalAddr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 500*time.Millisecond)
	defer cancel()
	res, err := UDPStream(ctx, conn, time.Millisecond)
	if err != nil {
		t.Fatal(err)
	}
	if res.MaxGap < 110*time.Millisecond || res.MaxGap > 250*time.Millisecond || res.Received < res.Sent/3 || res.Sent < 100 {
		t.Fatalf("UDPStream = %+v; want a gap of about 120 ms", res)
	}
}

func TestHTTPStreamCountsFailures(t *testing.T) {
	n := 0
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		n++
		if n%3 == 0 {
			http.Error(w, "no", http.StatusInternalServerError)
		}
	}))
	defer srv.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	res := HTTPStream(ctx, srv.URL, 10*time.Millisecond, time.Second)
	if res.Requests < 6 || res.Failed != res.Requests/3 || !strings.Contains(res.FirstError, "500") {
		t.Fatalf("HTTPStream = %+v", res)
	}
}

// TestICMPStream pings the loopback address every millisecond from two streams at once:
// the kernel answers every request, and each stream counts only its own replies.
func TestICMPStream(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	results := make(chan UDPResult, 2)
	for id := range 2 {
		conn, err := net.Dial("ip4:icmp", "127.0.0.1")
		if err != nil {
			t.Fatalf("raw ICMP socket (the tests run as root): %v", err)
		}
		defer conn.Close()
		go func() {
			res, err := ICMPStream(ctx, conn, uint16(0x4700+id), time.Millisecond)
			if err != nil {
				t.Error(err)
			}
			results <- res
		}()
	}
	for range 2 {
		res := <-results
		if res.Sent < 50 || res.Received != res.Sent || res.Lost() != 0 {
			t.Errorf("ICMPStream = %+v; want every one of at least 50 echo requests answered once", res)
		}
	}
}
