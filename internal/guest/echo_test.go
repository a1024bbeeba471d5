package guest

import (
	"bytes"
	"context"
	"crypto/rand"
	"fmt"
	"io"
	"net"
	"sync"
	"testing"
	"time"
)

func TestTCPEcho(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	errc := make(chan error, 1)
	go func() { errc <- ServeTCPEcho(ctx, ln, quietLog()) }()

	// Many connections at once, each with its own data, written while reading.
	var wg sync.WaitGroup
	fails := make(chan error, 20)
	for i := range 20 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			c, err := net.Dial("tcp", ln.Addr().String())
			if err != nil {
				fails <- err
				return
			}
			defer c.Close()
			c.SetDeadline(time.Now().Add(10 * time.Second))
			data := make([]byte, 100000+i*1000)
			rand.Read(data)
			go func() {
				c.Write(data)
				c.(*net.TCPConn).CloseWrite()
			}()
			got, err := io.ReadAll(c)
			if err != nil || !bytes.Equal(got, data) {
				fails <- fmt.Errorf("conn %d: %d of %d bytes back, equal=%v, err=%v", i, len(got), len(data), bytes.Equal(got, data), err)
			}
		}()
	}
	wg.Wait()
	close(fails)
	for err := range fails {
		t.Error(err)
	}

	// An open connection does not keep the server from stopping.
	idle, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer idle.Close()
	time.Sleep(20 * time.Millisecond)
	cancel()
	select {
	case err := <-errc:
		if err != nil {
			t.Errorf("ServeTCPEcho returned %v after cancel", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("ServeTCPEcho did not return after cancel")
	}
	idle.SetReadDeadline(time.Now().Add(2 * time.Second))
	if _, err := idle.Read(make([]byte, 1)); err == nil {
		t.Error("idle connection still open after the server stopped")
	}
}

func TestUDPEcho(t *testing.T) {
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	errc := make(chan error, 1)
	go func() { errc <- ServeUDPEcho(ctx, pc, quietLog()) }()

	// Two clients: each gets its own datagrams back, verbatim.
	for client := range 2 {
		c, err := net.Dial("udp", pc.LocalAddr().String())
		if err != nil {
			t.Fatal(err)
		}
		for _, n := range []int{0, 1, 1400, 9000, 60000} {
			data := make([]byte, n)
			rand.Read(data)
			c.SetDeadline(time.Now().Add(5 * time.Second))
			if _, err := c.Write(data); err != nil {
				t.Fatal(err)
			}
			buf := make([]byte, 65536)
			got, err := c.Read(buf)
			if err != nil || !bytes.Equal(buf[:got], data) {
				t.Errorf("client %d, %d bytes: got %d bytes, err %v", client, n, got, err)
			}
		}
		c.Close()
	}
	cancel()
	select {
	case err := <-errc:
		if err != nil {
			t.Errorf("ServeUDPEcho returned %v after cancel", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("ServeUDPEcho did not return after cancel")
	}
}
