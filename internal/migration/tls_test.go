package migration

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/godwit/godwit/internal/pki"
	"github.com/godwit/godwit/internal/qmp"
)

// tlsDirs issues host certificates from a fresh CA and lays them out for QEMU; it
// returns each host's directory.
func tlsDirs(t *testing.T, hosts ...string) map[string]string {
	t.Helper()
	root := t.TempDir()
	ca, err := pki.LoadOrCreateCA(filepath.Join(root, "ca"), time.Now())
	if err != nil {
		t.Fatal(err)
	}
	dirs := map[string]string{}
	for _, h := range hosts {
		key, err := pki.NewKey()
		if err != nil {
			t.Fatal(err)
		}
		cert, err := ca.Issue(key.Public(), pki.Leaf{Name: h}, time.Now())
		if err != nil {
			t.Fatal(err)
		}
		keyPEM, err := pki.MarshalKeyPEM(key)
		if err != nil {
			t.Fatal(err)
		}
		dirs[h] = filepath.Join(root, h)
		if err := WriteTLSDir(dirs[h], pki.CertPEM(cert), keyPEM, ca.CertPEM); err != nil {
			t.Fatal(err)
		}
	}
	return dirs
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

// Write keeps the first 64 bytes the source sent.
func (s *sniffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if n := 64 - len(s.first); n > 0 {
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

// startTLSDestination starts a destination that admits only source's certificate.
func startTLSDestination(t *testing.T, dir, source string) (*testVM, string) {
	t.Helper()
	spec := guestSpec(t, 256, "")
	v := startVM(t, spec, true)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	p, _ := LookupPolicy("")
	if err := ServerTLS(ctx, v.mon, dir, source); err != nil {
		t.Fatal(err)
	}
	if err := PrepareDestination(ctx, v.mon, p, DestinationTLSCreds, DestinationTLSAuthz); err != nil {
		t.Fatal(err)
	}
	uri := fmt.Sprintf("tcp:127.0.0.1:%d", freePort(t))
	if err := v.mon.MigrateIncoming(ctx, uri, false); err != nil {
		t.Fatal(err)
	}
	return v, strings.TrimPrefix(uri, "tcp:")
}

// TestRunEncryptedStream migrates over TLS with the hosts' certificates: the bytes on
// the wire start with a TLS handshake, not QEMU's stream magic; a destination admits
// only the source host's certificate, and checks it holds the destination's name.
func TestRunEncryptedStream(t *testing.T) {
	dirs := tlsDirs(t, "host-1", "host-2", "host-3")
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
	// destination is host-2 and admits only admit's certificate.
	run := func(t *testing.T, client, hostname, admit string) (Result, error, []byte, *testVM) {
		s := bootGuest(t, spec)
		_, addr := startTLSDestination(t, dirs["host-2"], admit)
		if err := ClientTLS(ctx, s.mon, dirs[client], "gw-tls-out"); err != nil {
			t.Fatal(err)
		}
		sn := newSniffer(t, addr)
		res, err := Run(ctx, s.mon, Options{Policy: p, URI: sn.uri(), TLSCreds: "gw-tls-out", TLSHostname: hostname})
		return res, err, sn.head(), s
	}

	t.Run("encrypted", func(t *testing.T) {
		res, err, head, _ := run(t, "host-1", "host-2", "host-1")
		if err != nil || res.Status != PhaseCompleted {
			t.Fatalf("encrypted migration: %+v %v", res, err)
		}
		if len(head) < 3 || head[0] != 0x16 || head[1] != 0x03 {
			t.Errorf("the stream starts with % x; want a TLS handshake record (16 03 …)", head[:min(8, len(head))])
		}
		if bytes.Contains(head, []byte("QEVM")) {
			t.Error("QEMU's stream magic travels in the clear")
		}
	})
	t.Run("wrong source refused", func(t *testing.T) {
		res, err, _, s := run(t, "host-3", "host-2", "host-1")
		if err == nil || res.Status == PhaseCompleted {
			t.Fatalf("host-3's certificate got a migration into a destination that admits only host-1: %+v", res)
		}
		t.Logf("refused as it should be: %v", err)
		waitStatus(t, s, qmp.StatusRunning, 10*time.Second)
	})
	t.Run("wrong destination name refused", func(t *testing.T) {
		res, err, _, s := run(t, "host-1", "host-3", "host-1")
		if err == nil || res.Status == PhaseCompleted || !errors.Is(err, ErrFailed) {
			t.Fatalf("the source sent to a destination whose certificate is not host-3's: %+v %v", res, err)
		}
		waitStatus(t, s, qmp.StatusRunning, 10*time.Second)
	})
}
