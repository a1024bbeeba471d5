package agent

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"io"
	"math/big"
	"net"
	"testing"
	"time"
)

// selfSigned is a throwaway certificate for name.
func selfSigned(b testing.TB, name string) tls.Certificate {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		b.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: name}, DNSNames: []string{name},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour)}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		b.Fatal(err)
	}
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key}
}

// tlsStreamPair connects the two agents' ends of a carried stream over loopback TCP:
// the source's client end (batched writes, as dialStream makes it) and the
// destination's server end, handshaken, with cert.
func tlsStreamPair(tb testing.TB, cert tls.Certificate) (*streamConn, *tls.Conn) {
	tb.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatal(err)
	}
	defer ln.Close()
	got := make(chan *tls.Conn, 1)
	go func() {
		c, err := ln.Accept()
		if err != nil {
			got <- nil
			return
		}
		s := tls.Server(c, &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS13})
		if s.Handshake() != nil {
			got <- nil
			return
		}
		got <- s
	}()
	raw, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		tb.Fatal(err)
	}
	out := &batchConn{Conn: raw}
	tc := tls.Client(out, &tls.Config{InsecureSkipVerify: true, DynamicRecordSizingDisabled: true, MinVersion: tls.VersionTLS13})
	if err := tc.Handshake(); err != nil {
		tb.Fatal(err)
	}
	s := <-got
	if s == nil {
		tb.Fatal("the server end failed its handshake")
	}
	tb.Cleanup(func() { raw.Close(); s.NetConn().Close() })
	return &streamConn{Conn: tc, out: out}, s
}

// BenchmarkCarry moves a 140 MiB stream (an idle 1 GiB guest's) from a "source QEMU"
// socket through both agents' ends — TLS over loopback TCP, batched writes, coalesced
// reads — to a "destination QEMU" socket, in one process, and reports the rate.
func BenchmarkCarry(b *testing.B) {
	const size = 140 << 20
	cert := selfSigned(b, "dst")
	b.SetBytes(size)
	for range b.N {
		src, x := unixPair(b)
		y, dst := unixPair(b)
		client, server := tlsStreamPair(b, cert)
		go func() { _, _, _ = carry(context.Background(), x, client) }()
		go func() { _, _, _ = carry(context.Background(), &streamConn{Conn: server}, y) }()
		go func() {
			buf := make([]byte, 32<<10) // QEMU's buffer
			for sent := 0; sent < size; sent += len(buf) {
				if _, err := src.Write(buf); err != nil {
					return
				}
			}
			_ = src.(*net.UnixConn).CloseWrite()
		}()
		n, err := io.Copy(io.Discard, dst)
		if err != nil || n != size {
			b.Fatalf("carried %d bytes (%v), want %d", n, err, size)
		}
	}
}
