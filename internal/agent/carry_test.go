package agent

import (
	"bytes"
	"context"
	"crypto/rand"
	"errors"
	"io"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// unixPair returns the two ends of a connected Unix stream socket, as QEMU and the
// agent hold them.
func unixPair(t testing.TB) (net.Conn, net.Conn) {
	t.Helper()
	path := t.TempDir() + "/s"
	ln, err := net.Listen("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	got := make(chan net.Conn, 1)
	go func() {
		c, _ := ln.Accept()
		got <- c
	}()
	a, err := net.Dial("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	b := <-got
	if b == nil {
		t.Fatal("accept failed")
	}
	t.Cleanup(func() { a.Close(); b.Close() })
	return a, b
}

// TestCarry: a carried stream moves every byte both ways, passes on the end of each
// direction (the other side reads EOF), and closes both connections when both ended;
// a broken side closes the other at once, and so does the end of the context.
func TestCarry(t *testing.T) {
	ctx := context.Background()
	t.Run("both ways, then ends", func(t *testing.T) {
		src, x := unixPair(t) // src is the source QEMU
		y, dst := unixPair(t) // dst is the destination QEMU
		type res struct {
			xy, yx int64
			err    error
		}
		done := make(chan res, 1)
		go func() {
			xy, yx, err := carry(ctx, x, y)
			done <- res{xy, yx, err}
		}()
		stream := make([]byte, 3<<20+17)
		_, _ = rand.Read(stream)
		back := []byte("return path: shut")
		go func() {
			_, _ = src.Write(stream)
			_ = src.(*net.UnixConn).CloseWrite()
		}()
		got, err := io.ReadAll(dst) // ends at the source's end of stream
		if err != nil || !bytes.Equal(got, stream) {
			t.Fatalf("destination read %d bytes (%v), want the %d sent, equal", len(got), err, len(stream))
		}
		if _, err := dst.Write(back); err != nil {
			t.Fatal(err)
		}
		_ = dst.(*net.UnixConn).CloseWrite()
		gotBack, err := io.ReadAll(src)
		if err != nil || !bytes.Equal(gotBack, back) {
			t.Fatalf("source read %q (%v), want %q", gotBack, err, back)
		}
		select {
		case r := <-done:
			if r.err != nil || r.xy != int64(len(stream)) || r.yx != int64(len(back)) {
				t.Fatalf("carry = %d, %d, %v; want %d, %d, nil", r.xy, r.yx, r.err, len(stream), len(back))
			}
		case <-time.After(10 * time.Second):
			t.Fatal("carry did not return after both directions ended")
		}
		if _, err := x.Write([]byte{1}); err == nil {
			t.Error("carry left its connections open")
		}
	})
	t.Run("a broken side breaks the other", func(t *testing.T) {
		src, x := unixPair(t)
		y, dst := unixPair(t)
		done := make(chan error, 1)
		go func() {
			_, _, err := carry(ctx, x, y)
			done <- err
		}()
		if _, err := src.Write([]byte("some")); err != nil {
			t.Fatal(err)
		}
		buf := make([]byte, 4)
		if _, err := io.ReadFull(dst, buf); err != nil {
			t.Fatal(err)
		}
		// The destination side vanishes with data on its way to it.
		_ = dst.Close()
		for i := 0; i < 100; i++ {
			if _, err := src.Write(make([]byte, 64<<10)); err != nil {
				break
			}
		}
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			t.Fatal("carry went on after one side broke")
		}
		_ = src.SetReadDeadline(time.Now().Add(5 * time.Second))
		if _, err := io.ReadAll(src); errors.Is(err, os.ErrDeadlineExceeded) {
			t.Errorf("the source's end was not closed: %v", err)
		}
	})
	t.Run("a dead link does not hold it", func(t *testing.T) {
		// The destination agent stops reading (its host froze, the link is cut):
		// the source's writes and its close_notify block; the end of the context must
		// still end carry at once.
		client, _ := tlsStreamPair(t, selfSigned(t, "dst")) // the server end never reads
		src, x := unixPair(t)
		cctx, cancel := context.WithCancel(ctx)
		done := make(chan error, 1)
		go func() {
			_, _, err := carry(cctx, x, client)
			done <- err
		}()
		// Fill every buffer on the way, then end the source's side, as QEMU does when
		// its migration is cancelled.
		go func() {
			buf := make([]byte, 1<<20)
			for i := 0; i < 64; i++ {
				_ = src.SetWriteDeadline(time.Now().Add(2 * time.Second))
				if _, err := src.Write(buf); err != nil {
					break
				}
			}
			_ = src.(*net.UnixConn).CloseWrite()
		}()
		time.Sleep(3 * time.Second)
		cancel()
		select {
		case <-done:
		case <-time.After(5 * time.Second):
			t.Fatal("carry went on after its context ended, held by a write to a dead link")
		}
	})
	t.Run("the context ends it", func(t *testing.T) {
		src, x := unixPair(t)
		y, _ := unixPair(t)
		cctx, cancel := context.WithCancel(ctx)
		done := make(chan error, 1)
		go func() {
			_, _, err := carry(cctx, x, y)
			done <- err
		}()
		cancel()
		select {
		case err := <-done:
			if err == nil {
				t.Error("carry ended by its context returned no error")
			}
		case <-time.After(10 * time.Second):
			t.Fatal("carry went on after its context ended")
		}
		_ = src.SetReadDeadline(time.Now().Add(5 * time.Second))
		if _, err := io.ReadAll(src); errors.Is(err, os.ErrDeadlineExceeded) {
			t.Errorf("the source's end was not closed: %v", err)
		}
	})
}

// TestIncomingURI: a copy waiting for a carried (encrypted) stream listens on no network
// address, only on a Unix socket in a directory only root can enter, the same one when
// it listens again (post-copy recovery), gone with the VM; a copy waiting for a stream
// in the clear listens on a free port of its migration address.
func TestIncomingURI(t *testing.T) {
	a, _ := testAgent(t)
	t.Cleanup(func() { os.RemoveAll(a.streams) })
	if a.streams != streamsDir(a.cfg.StateDir) || !strings.HasPrefix(a.streams, a.cfg.StateDir) {
		t.Fatalf("streams directory %q: want one in the state directory %s", a.streams, a.cfg.StateDir)
	}
	long := "/" + strings.Repeat("x", 100)
	if d := streamsDir(long); filepath.Dir(d) != os.TempDir() || d == streamsDir(long+"y") {
		t.Fatalf("streams directory of a long state directory: %q; want one of its own in %s", d, os.TempDir())
	}
	v := &vm{dir: t.TempDir()}
	uri, err := a.incomingURI(v, "127.0.0.1", true)
	if err != nil {
		t.Fatal(err)
	}
	sock, ok := strings.CutPrefix(uri, "unix:")
	if !ok || filepath.Dir(sock) != v.stream || filepath.Dir(v.stream) != a.streams || len(sock) > 107 {
		t.Fatalf("carried stream's URI %q (directory %q); want a Unix socket of at most 107 bytes in the VM's stream directory", uri, v.stream)
	}
	st, err := os.Stat(v.stream)
	if err != nil || st.Mode().Perm() != 0o700 {
		t.Fatalf("stream directory %s: %v, %v; want mode 0700", v.stream, st.Mode(), err)
	}
	again, err := a.incomingURI(v, "127.0.0.1", true)
	if err != nil || again != uri {
		t.Fatalf("listening again: %q, %v; want %q", again, err, uri)
	}
	if err := v.removeDir(); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(v.stream); !os.IsNotExist(err) {
		t.Fatalf("the stream directory outlived the VM: %v", err)
	}
	plain, err := a.incomingURI(&vm{dir: t.TempDir()}, "127.0.0.1", false)
	if err != nil || !strings.HasPrefix(plain, "tcp:127.0.0.1:") {
		t.Fatalf("stream in the clear: %q, %v; want a TCP port on the migration address", plain, err)
	}
}
