package pki

import (
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"time"
)

// Files of an identity directory: the certificate and its key together in one file
// (0600), so that a renewal replaces both at once, and the cluster's CA.
const (
	PairFile = "host.pem"
	CAFile   = "ca.crt"
)

// Identity is a host's (or the center's) key and certificate and the cluster's CA, as
// kept in a directory: host.pem (certificate and key, 0600) and ca.crt.
type Identity struct {
	Dir  string
	Cert tls.Certificate
	Leaf *x509.Certificate
	CA   *x509.Certificate
	// CAPEM is the CA certificate as PEM; CertPEM and KeyPEM the identity's own.
	CAPEM, CertPEM, KeyPEM []byte
}

// ErrNoIdentity means the directory holds no identity yet: the host has not joined.
var ErrNoIdentity = errors.New("no identity yet")

// LoadIdentity reads the identity kept in dir; ErrNoIdentity when there is none.
func LoadIdentity(dir string) (*Identity, error) {
	pair, err := os.ReadFile(filepath.Join(dir, PairFile))
	if errors.Is(err, os.ErrNotExist) {
		return nil, ErrNoIdentity
	}
	if err != nil {
		return nil, fmt.Errorf("read the host certificate and key: %w", err)
	}
	var certPEM, keyPEM []byte
	for rest := pair; ; {
		var b *pem.Block
		b, rest = pem.Decode(rest)
		if b == nil {
			break
		}
		if b.Type == "CERTIFICATE" {
			certPEM = append(certPEM, pem.EncodeToMemory(b)...)
		} else {
			keyPEM = append(keyPEM, pem.EncodeToMemory(b)...)
		}
	}
	caPEM, err := os.ReadFile(filepath.Join(dir, CAFile))
	if err != nil {
		return nil, fmt.Errorf("read the cluster CA certificate: %w", err)
	}
	return NewIdentity(dir, keyPEM, certPEM, caPEM)
}

// NewIdentity assembles an identity from PEM files and checks that they fit together:
// the key is the certificate's, and the CA signed the certificate.
func NewIdentity(dir string, keyPEM, certPEM, caPEM []byte) (*Identity, error) {
	cert, err := tls.X509KeyPair(certPEM, keyPEM)
	if err != nil {
		return nil, fmt.Errorf("the host key and certificate in %s do not fit together: %w", dir, err)
	}
	leaf, err := x509.ParseCertificate(cert.Certificate[0])
	if err != nil {
		return nil, fmt.Errorf("the host certificate in %s: %w", dir, err)
	}
	ca, err := ParseCertPEM(caPEM)
	if err != nil {
		return nil, fmt.Errorf("the CA certificate in %s: %w", dir, err)
	}
	if err := leaf.CheckSignatureFrom(ca); err != nil {
		return nil, fmt.Errorf("the host certificate in %s was not signed by the CA next to it: %w", dir, err)
	}
	cert.Leaf = leaf
	return &Identity{Dir: dir, Cert: cert, Leaf: leaf, CA: ca, CAPEM: caPEM, CertPEM: certPEM, KeyPEM: keyPEM}, nil
}

// SaveIdentity writes the identity's files into dir: the CA, then the certificate and key
// together in one atomic write (mode 0600), so a crash never leaves a key that does not
// fit its certificate.
func SaveIdentity(dir string, keyPEM, certPEM, caPEM []byte) error {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("create %s: %w", dir, err)
	}
	if err := WriteFileAtomic(filepath.Join(dir, CAFile), caPEM, 0o644); err != nil {
		return err
	}
	return WriteFileAtomic(filepath.Join(dir, PairFile), append(append([]byte{}, certPEM...), keyPEM...), 0o600)
}

// Name is the identity's name (its certificate's CN).
func (id *Identity) Name() string { return id.Leaf.Subject.CommonName }

// Pool is a pool holding only the CA.
func (id *Identity) Pool() *x509.CertPool {
	p := x509.NewCertPool()
	p.AddCert(id.CA)
	return p
}

// Fingerprint is the CA's fingerprint.
func (id *Identity) CAFingerprint() string { return Fingerprint(id.CA.Raw) }

// Server is the TLS configuration for serving as this identity.
func (id *Identity) Server() *tls.Config { return ServerTLS(id.Cert) }

// Client is the TLS configuration for calling peer (a host's name, or CenterName) as
// this identity, refusing a peer certificate whose serial revoked reports.
func (id *Identity) Client(peer string, revoked func(serial string) bool) *tls.Config {
	return Revoking(ClientTLS(id.Pool(), peer, &id.Cert), revoked)
}

// Verify checks a peer's chain against the identity's CA.
func (id *Identity) Verify(chain []*x509.Certificate, now time.Time, usage x509.ExtKeyUsage) (*x509.Certificate, error) {
	return Verify(id.Pool(), chain, now, usage)
}

// ServerTLSFrom is ServerTLS with the certificate read from get at every handshake, so
// that a renewed certificate is served at once.
func ServerTLSFrom(get func() *Identity) *tls.Config {
	c := ServerTLS(tls.Certificate{})
	c.Certificates = nil
	c.GetCertificate = func(*tls.ClientHelloInfo) (*tls.Certificate, error) {
		cert := get().Cert
		return &cert, nil
	}
	return c
}

// ClientTLSFrom is ClientTLS presenting the certificate read from get at every
// handshake, and refusing a server certificate whose serial revoked reports.
func ClientTLSFrom(get func() *Identity, serverName string, revoked func(serial string) bool) *tls.Config {
	c := Revoking(ClientTLS(get().Pool(), serverName, nil), revoked)
	c.GetClientCertificate = func(*tls.CertificateRequestInfo) (*tls.Certificate, error) {
		cert := get().Cert
		return &cert, nil
	}
	return c
}

// RenewDue reports whether a certificate should be renewed at now: when less than
// before, or less than a third of its life, is left, whichever is shorter.
func RenewDue(c *x509.Certificate, now time.Time, before time.Duration) bool {
	left := c.NotAfter.Sub(now)
	third := c.NotAfter.Sub(c.NotBefore) / 3
	return left < min(before, third)
}
