package migration

import (
	"bytes"
	"context"
	"crypto/rand"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/godwit/godwit/internal/qmp"
)

// keyDirs writes a fresh random key for each name into a directory of its own, as
// each end of a stream holds the migration's key.
func keyDirs(t *testing.T, names ...string) map[string]string {
	t.Helper()
	root := t.TempDir()
	dirs := map[string]string{}
	for _, n := range names {
		key := make([]byte, 32)
		if _, err := rand.Read(key); err != nil {
			t.Fatal(err)
		}
		dirs[n] = filepath.Join(root, n)
		if err := WritePSK(dirs[n], key); err != nil {
			t.Fatal(err)
		}
	}
	return dirs
}

// sameKey copies the key of dir into a new directory, as the other end of the stream
// gets the same key.
func sameKey(t *testing.T, dir string) string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(dir, PSKFile))
	if err != nil {
		t.Fatal(err)
	}
	other := t.TempDir()
	if err := os.WriteFile(filepath.Join(other, PSKFile), b, 0o600); err != nil {
		t.Fatal(err)
	}
	return other
}

// sniffer forwards one TCP connection to target and keeps the first bytes the source
// sent, to show what travels on the wire.
type sniffer struct {
	ln    net.Listener
	mu    sync.Mutex
	first []byte
	wg    sync.WaitGroup
}

func newSniffer(t *testing.T, target string) *sniffer {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s := &sniffer{ln: ln}
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			up, err := net.Dial("tcp", target)
			if err != nil {
				c.Close()
				continue
			}
			s.wg.Add(2)
			go func() { defer s.wg.Done(); defer up.Close(); _, _ = io.Copy(up, io.TeeReader(c, s)) }()
			go func() { defer s.wg.Done(); defer c.Close(); _, _ = io.Copy(c, up) }()
		}
	}()
	t.Cleanup(func() { ln.Close(); s.wg.Wait() })
	return s
}

// Write keeps the first 512 bytes the source sent (a TLS ClientHello fits).
func (s *sniffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if n := 512 - len(s.first); n > 0 {
		s.first = append(s.first, p[:min(n, len(p))]...)
	}
	return len(p), nil
}

func (s *sniffer) head() []byte {
	s.mu.Lock()
	defer s.mu.Unlock()
	return bytes.Clone(s.first)
}

func (s *sniffer) uri() string { return "tcp:" + s.ln.Addr().String() }

// startTLSDestination starts a destination that takes only a stream keyed with the
// key in dir.
func startTLSDestination(t *testing.T, dir string) (*testVM, string) {
	t.Helper()
	spec := guestSpec(t, 256, "")
	v := startVM(t, spec, true)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	p, _ := LookupPolicy("")
	if err := ServerTLS(ctx, v.mon, dir); err != nil {
		t.Fatal(err)
	}
	if err := PrepareDestination(ctx, v.mon, p, DestinationTLSCreds); err != nil {
		t.Fatal(err)
	}
	uri := fmt.Sprintf("tcp:127.0.0.1:%d", freePort(t))
	if err := v.mon.MigrateIncoming(ctx, uri, false); err != nil {
		t.Fatal(err)
	}
	return v, strings.TrimPrefix(uri, "tcp:")
}

// TestRunEncryptedStream migrates over TLS keyed with the migration's own key: the
// bytes on the wire start with a TLS handshake, not QEMU's stream magic; a source with
// another key (a host that was not given this migration's ticket) gets no stream, and
// keeps its VM running.
func TestRunEncryptedStream(t *testing.T) {
	dirs := keyDirs(t, "this-migration", "another-migration")
	p, _ := LookupPolicy("")
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()

	spec := guestSpec(t, 256, "")
	src := bootGuest(t, spec)

	t.Run("plain", func(t *testing.T) {
		dst, addr := startDestination(t, spec, &p, false)
		sn := newSniffer(t, strings.TrimPrefix(addr, "tcp:"))
		res, err := Run(ctx, src.mon, Options{Policy: p, URI: sn.uri()})
		if err != nil || res.Status != PhaseCompleted {
			t.Fatalf("plain migration: %+v %v", res, err)
		}
		if h := sn.head(); !bytes.HasPrefix(h, []byte("QEVM")) {
			t.Errorf("a plain stream starts with % x; want QEMU's magic QEVM", h[:min(8, len(h))])
		}
		waitStatus(t, dst, qmp.StatusRunning, 10*time.Second)
	})

	// A fresh source for each encrypted run, so that each starts from a running VM; the
	// destination holds this migration's key, the source the key in clientDir ("" for
	// none: a plain stream).
	run := func(t *testing.T, clientDir string) (Result, error, []byte, *testVM) {
		s := bootGuest(t, spec)
		_, addr := startTLSDestination(t, dirs["this-migration"])
		creds := ""
		if clientDir != "" {
			creds = "gw-tls-out"
			if err := ClientTLS(ctx, s.mon, clientDir, creds); err != nil {
				t.Fatal(err)
			}
		}
		sn := newSniffer(t, addr)
		res, err := Run(ctx, s.mon, Options{Policy: p, URI: sn.uri(), TLSCreds: creds})
		return res, err, sn.head(), s
	}

	t.Run("encrypted", func(t *testing.T) {
		res, err, head, _ := run(t, sameKey(t, dirs["this-migration"]))
		if err != nil || res.Status != PhaseCompleted {
			t.Fatalf("encrypted migration: %+v %v", res, err)
		}
		if len(head) < 3 || head[0] != 0x16 || head[1] != 0x03 {
			t.Errorf("the stream starts with % x; want a TLS handshake record (16 03 …)", head[:min(8, len(head))])
		}
		if bytes.Contains(head, []byte("QEVM")) {
			t.Error("QEMU's stream magic travels in the clear")
		}
		// The source offers AES-GCM (the CPU's AES instructions), not ChaCha20, which
		// GnuTLS would otherwise choose for a PSK session and which is twice as slow here.
		suites := offeredSuites(t, head)
		if slices.Contains(suites, 0x1303) || !slices.Contains(suites, 0x1301) {
			t.Errorf("the source offers the cipher suites %x; want TLS_AES_128_GCM_SHA256 (1301) and not ChaCha20 (1303)", suites)
		}
	})
	t.Run("another key refused", func(t *testing.T) {
		res, err, _, s := run(t, dirs["another-migration"])
		if err == nil || res.Status == PhaseCompleted {
			t.Fatalf("a source holding another migration's key got its stream in: %+v", res)
		}
		t.Logf("refused as it should be: %v", err)
		waitStatus(t, s, qmp.StatusRunning, 10*time.Second)
	})
	t.Run("plain stream refused", func(t *testing.T) {
		res, err, _, s := run(t, "")
		if err == nil || res.Status == PhaseCompleted {
			t.Fatalf("a plain stream got into a destination that expects this migration's key: %+v", res)
		}
		waitStatus(t, s, qmp.StatusRunning, 10*time.Second)
	})
}

// offeredSuites reads the cipher suites of the TLS ClientHello that starts b.
func offeredSuites(t *testing.T, b []byte) []uint16 {
	t.Helper()
	// record header (5), handshake header (4), version (2), random (32), session id.
	off := 5 + 4 + 2 + 32
	if len(b) < off+1 || b[5] != 1 {
		t.Fatalf("no ClientHello in % x", b[:min(16, len(b))])
	}
	off += 1 + int(b[off])
	if len(b) < off+2 {
		t.Fatalf("the ClientHello is cut short")
	}
	n := int(b[off])<<8 | int(b[off+1])
	off += 2
	var out []uint16
	for i := 0; i+1 < n && off+i+1 < len(b); i += 2 {
		out = append(out, uint16(b[off+i])<<8|uint16(b[off+i+1]))
	}
	return out
}
