// Package pki is the cluster's public-key infrastructure: the center's certificate
// authority, the certificates it issues to hosts that join with a one-time token, the
// identities (key, certificate, CA) that hosts keep on disk, and the TLS configurations
// every connection between center, hosts and CLI uses.
//
// Keys are ECDSA P-256: small, fast to generate on a join, and understood by Go's
// crypto/tls and by GnuTLS, which QEMU uses for the encrypted migration stream. The CA is
// valid for ten years, host and center certificates for one. Every leaf certificate
// carries both the server and the client extended key usage, because a host is a server
// (to the center and to other hosts) and a client (of the center, and of a destination
// host during a migration), and QEMU uses the same files at both ends of the stream.
//
// Names: a host's certificate has Subject CN and one DNS SAN equal to its host name, so
// a client connects to a host by asking for ServerName = host name, whatever address it
// dials — a certificate of host-2 cannot pass for host-1. The center's certificate has
// the DNS SAN CenterName plus the addresses it listens on, for CLI users who dial its IP.
package pki

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"
)

const (
	// CenterName is the DNS name in the center's certificate; agents verify the center
	// by it, whatever address they dial.
	CenterName = "godwit-center"
	// CALifetime and LeafLifetime are how long the CA and the certificates it issues
	// are valid.
	CALifetime   = 10 * 365 * 24 * time.Hour
	LeafLifetime = 365 * 24 * time.Hour
	// clockSkew backdates NotBefore so that hosts whose clocks lag a little accept a
	// fresh certificate.
	clockSkew = 5 * time.Minute

	caCertFile, caKeyFile = "ca.crt", "ca.key"
)

// Fingerprint is "sha256:" and the hex SHA-256 of a certificate's DER bytes, the form
// in which CLI users and join commands pin the CA.
func Fingerprint(der []byte) string {
	sum := sha256.Sum256(der)
	return "sha256:" + hex.EncodeToString(sum[:])
}

// NormalizeFingerprint accepts "sha256:HEX" or bare HEX (with or without colons) and
// returns the canonical "sha256:hex" form.
func NormalizeFingerprint(s string) (string, error) {
	h := strings.ToLower(strings.TrimSpace(s))
	h = strings.TrimPrefix(h, "sha256:")
	h = strings.ReplaceAll(h, ":", "")
	if b, err := hex.DecodeString(h); err != nil || len(b) != sha256.Size {
		return "", fmt.Errorf("CA fingerprint %q is not a SHA-256 fingerprint: want sha256: and 64 hex digits, as `godwit host join-token create` prints it", s)
	}
	return "sha256:" + h, nil
}

// CA is the cluster's certificate authority. Its key never leaves the center's data
// directory (mode 0600).
type CA struct {
	Cert    *x509.Certificate
	CertPEM []byte
	key     crypto.Signer
}

// LoadOrCreateCA loads the CA kept in dir, or creates one there on first start.
func LoadOrCreateCA(dir string, now time.Time) (*CA, error) {
	certPath, keyPath := filepath.Join(dir, caCertFile), filepath.Join(dir, caKeyFile)
	certPEM, cerr := os.ReadFile(certPath)
	keyPEM, kerr := os.ReadFile(keyPath)
	switch {
	case cerr == nil && kerr == nil:
		cert, err := ParseCertPEM(certPEM)
		if err != nil {
			return nil, fmt.Errorf("the CA certificate %s: %w", certPath, err)
		}
		key, err := ParseKeyPEM(keyPEM)
		if err != nil {
			return nil, fmt.Errorf("the CA key %s: %w", keyPath, err)
		}
		if !publicKeysEqual(cert.PublicKey, key.Public()) {
			return nil, fmt.Errorf("the CA key %s does not belong to the certificate %s; restore both from the same backup", keyPath, certPath)
		}
		return &CA{Cert: cert, CertPEM: certPEM, key: key}, nil
	case errors.Is(cerr, os.ErrNotExist) && errors.Is(kerr, os.ErrNotExist):
	case cerr != nil && !errors.Is(cerr, os.ErrNotExist):
		return nil, fmt.Errorf("read the CA certificate: %w", cerr)
	case kerr != nil && !errors.Is(kerr, os.ErrNotExist):
		return nil, fmt.Errorf("read the CA key: %w", kerr)
	default:
		return nil, fmt.Errorf("only one of %s and %s exists; restore the other, or remove both to create a new CA (every host must then join again)", certPath, keyPath)
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("create the PKI directory: %w", err)
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("generate the CA key: %w", err)
	}
	serial, err := NewSerial()
	if err != nil {
		return nil, err
	}
	tmpl := &x509.Certificate{
		SerialNumber:          serial,
		Subject:               pkix.Name{CommonName: "Godwit cluster CA", Organization: []string{"Godwit"}},
		NotBefore:             now.Add(-clockSkew),
		NotAfter:              now.Add(CALifetime),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign | x509.KeyUsageDigitalSignature,
		BasicConstraintsValid: true,
		IsCA:                  true,
		MaxPathLenZero:        true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	if err != nil {
		return nil, fmt.Errorf("create the CA certificate: %w", err)
	}
	keyPEM, err = MarshalKeyPEM(key)
	if err != nil {
		return nil, err
	}
	certPEM = pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
	if err := WriteFileAtomic(keyPath, keyPEM, 0o600); err != nil {
		return nil, err
	}
	if err := WriteFileAtomic(certPath, certPEM, 0o644); err != nil {
		return nil, err
	}
	cert, _ := x509.ParseCertificate(der)
	return &CA{Cert: cert, CertPEM: certPEM, key: key}, nil
}

// Fingerprint is the CA certificate's fingerprint.
func (ca *CA) Fingerprint() string { return Fingerprint(ca.Cert.Raw) }

// Signer is the CA's key, for what the center signs besides certificates (migration
// tickets, revocation lists); it never leaves the center.
func (ca *CA) Signer() crypto.Signer { return ca.key }

// Pool is a pool holding only the CA.
func (ca *CA) Pool() *x509.CertPool {
	p := x509.NewCertPool()
	p.AddCert(ca.Cert)
	return p
}

// Leaf describes a certificate to issue.
type Leaf struct {
	// Name is the Subject CN and the first DNS SAN.
	Name string
	// DNS and IPs are further subject alternative names.
	DNS []string
	IPs []net.IP
	// Lifetime defaults to LeafLifetime.
	Lifetime time.Duration
}

// Issue signs a certificate for pub as l describes and returns its DER bytes.
func (ca *CA) Issue(pub crypto.PublicKey, l Leaf, now time.Time) (*x509.Certificate, error) {
	if l.Name == "" {
		return nil, errors.New("a certificate needs a name")
	}
	if l.Lifetime <= 0 {
		l.Lifetime = LeafLifetime
	}
	serial, err := NewSerial()
	if err != nil {
		return nil, err
	}
	notAfter := now.Add(l.Lifetime)
	if notAfter.After(ca.Cert.NotAfter) {
		notAfter = ca.Cert.NotAfter
	}
	tmpl := &x509.Certificate{
		SerialNumber: serial,
		Subject:      pkix.Name{CommonName: l.Name, Organization: []string{"Godwit"}},
		NotBefore:    now.Add(-clockSkew),
		NotAfter:     notAfter,
		// KeyEncipherment as well as DigitalSignature: GnuTLS (QEMU) insists on both in
		// a critical key usage extension, whatever the key type.
		KeyUsage:              x509.KeyUsageDigitalSignature | x509.KeyUsageKeyEncipherment,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
		BasicConstraintsValid: true,
		DNSNames:              append([]string{l.Name}, l.DNS...),
		IPAddresses:           l.IPs,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.Cert, pub, ca.key)
	if err != nil {
		return nil, fmt.Errorf("sign a certificate for %s: %w", l.Name, err)
	}
	return x509.ParseCertificate(der)
}

// SignCSR checks a certificate signing request's own signature and issues a
// certificate for its key, with the names of l (never the names the request asks for).
func (ca *CA) SignCSR(csrPEM []byte, l Leaf, now time.Time) (*x509.Certificate, error) {
	b, _ := pem.Decode(csrPEM)
	if b == nil || b.Type != "CERTIFICATE REQUEST" {
		return nil, errors.New("the certificate signing request is not a PEM \"CERTIFICATE REQUEST\" block")
	}
	csr, err := x509.ParseCertificateRequest(b.Bytes)
	if err != nil {
		return nil, fmt.Errorf("the certificate signing request does not parse: %w", err)
	}
	if err := csr.CheckSignature(); err != nil {
		return nil, fmt.Errorf("the certificate signing request's signature is invalid: %w", err)
	}
	if _, ok := csr.PublicKey.(*ecdsa.PublicKey); !ok {
		return nil, fmt.Errorf("the certificate signing request has a %T key; hosts use ECDSA P-256 keys", csr.PublicKey)
	}
	return ca.Issue(csr.PublicKey, l, now)
}

// NewSerial returns a random 128-bit serial number.
func NewSerial() (*big.Int, error) {
	n, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 128))
	if err != nil {
		return nil, fmt.Errorf("draw a serial number: %w", err)
	}
	return n.Add(n, big.NewInt(1)), nil
}

// SerialString is the hex form of a serial number the center lists and revokes by.
func SerialString(c *x509.Certificate) string { return c.SerialNumber.Text(16) }

// NewKey generates a host or center key.
func NewKey() (*ecdsa.PrivateKey, error) {
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("generate a key: %w", err)
	}
	return k, nil
}

// NewCSR returns a PEM certificate signing request for key, naming name.
func NewCSR(key crypto.Signer, name string) ([]byte, error) {
	der, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{
		Subject: pkix.Name{CommonName: name}, DNSNames: []string{name},
	}, key)
	if err != nil {
		return nil, fmt.Errorf("create a certificate signing request: %w", err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: der}), nil
}

// MarshalKeyPEM encodes a private key as PKCS #8 PEM, which Go and GnuTLS both read.
func MarshalKeyPEM(key crypto.Signer) ([]byte, error) {
	der, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return nil, fmt.Errorf("encode the key: %w", err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}), nil
}

// ParseKeyPEM reads a PKCS #8 or SEC 1 PEM private key.
func ParseKeyPEM(b []byte) (crypto.Signer, error) {
	blk, _ := pem.Decode(b)
	if blk == nil {
		return nil, errors.New("not a PEM private key")
	}
	if k, err := x509.ParsePKCS8PrivateKey(blk.Bytes); err == nil {
		if s, ok := k.(crypto.Signer); ok {
			return s, nil
		}
		return nil, fmt.Errorf("a %T key cannot sign", k)
	}
	k, err := x509.ParseECPrivateKey(blk.Bytes)
	if err != nil {
		return nil, fmt.Errorf("the private key does not parse: %w", err)
	}
	return k, nil
}

// ParseCertPEM reads the first certificate of a PEM file.
func ParseCertPEM(b []byte) (*x509.Certificate, error) {
	certs, err := ParseCertsPEM(b)
	if err != nil {
		return nil, err
	}
	return certs[0], nil
}

// ParseCertsPEM reads every certificate of a PEM file; there must be at least one.
func ParseCertsPEM(b []byte) ([]*x509.Certificate, error) {
	var certs []*x509.Certificate
	for {
		var blk *pem.Block
		blk, b = pem.Decode(b)
		if blk == nil {
			break
		}
		if blk.Type != "CERTIFICATE" {
			continue
		}
		c, err := x509.ParseCertificate(blk.Bytes)
		if err != nil {
			return nil, fmt.Errorf("a certificate does not parse: %w", err)
		}
		certs = append(certs, c)
	}
	if len(certs) == 0 {
		return nil, errors.New("no PEM certificate found")
	}
	return certs, nil
}

// CertPEM encodes a certificate as PEM.
func CertPEM(c *x509.Certificate) []byte {
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: c.Raw})
}

func publicKeysEqual(a, b crypto.PublicKey) bool {
	type equaler interface{ Equal(crypto.PublicKey) bool }
	e, ok := a.(equaler)
	return ok && e.Equal(b)
}

// WriteFileAtomic writes data to path with mode perm so that a crash at any moment
// leaves either the old or the new content, never a torn file: the data goes to a new
// temporary file beside path, which is synced, renamed over path, and then the
// directory is synced so the rename itself is durable. Every state file Godwit keeps is
// written here. The mode is set exactly (the umask does not widen or narrow it).
func WriteFileAtomic(path string, data []byte, perm os.FileMode) error {
	dir := filepath.Dir(path)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	f, err := os.CreateTemp(dir, "."+filepath.Base(path)+".tmp-*")
	if err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	tmp := f.Name()
	err = f.Chmod(perm)
	if err == nil {
		_, err = f.Write(data)
	}
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp, path)
	}
	if err != nil {
		_ = os.Remove(tmp)
		return fmt.Errorf("write %s: %w", path, err)
	}
	if err := syncDir(dir); err != nil {
		return fmt.Errorf("write %s: the file is in place, but %w", path, err)
	}
	return nil
}

// syncDir makes the entries of directory dir durable (a rename or removal in it).
func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return fmt.Errorf("open directory %s to sync it: %w", dir, err)
	}
	err = d.Sync()
	if cerr := d.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("sync directory %s: %w", dir, err)
	}
	return nil
}

// Verify checks a peer's certificate chain (leaf first) against the CA pool at now,
// for the given use, and explains a refusal in a sentence: expired, not yet valid,
// signed by another CA, or not meant for that use.
func Verify(pool *x509.CertPool, chain []*x509.Certificate, now time.Time, usage x509.ExtKeyUsage) (*x509.Certificate, error) {
	if len(chain) == 0 {
		return nil, errors.New("no client certificate was presented")
	}
	leaf := chain[0]
	inter := x509.NewCertPool()
	for _, c := range chain[1:] {
		inter.AddCert(c)
	}
	_, err := leaf.Verify(x509.VerifyOptions{Roots: pool, Intermediates: inter, CurrentTime: now, KeyUsages: []x509.ExtKeyUsage{usage}})
	if err == nil {
		return leaf, nil
	}
	who := fmt.Sprintf("certificate %q (serial %s)", leaf.Subject.CommonName, SerialString(leaf))
	var inv x509.CertificateInvalidError
	var ua x509.UnknownAuthorityError
	switch {
	case errors.As(err, &inv) && inv.Reason == x509.Expired && now.After(leaf.NotAfter):
		return nil, fmt.Errorf("%s expired at %s; the host must join again with a new join token", who, leaf.NotAfter.UTC().Format(time.RFC3339))
	case errors.As(err, &inv) && inv.Reason == x509.Expired:
		return nil, fmt.Errorf("%s is not valid before %s; check the clocks", who, leaf.NotBefore.UTC().Format(time.RFC3339))
	case errors.As(err, &inv) && inv.Reason == x509.IncompatibleUsage:
		return nil, fmt.Errorf("%s is not meant for this use: %w", who, err)
	case errors.As(err, &ua):
		return nil, fmt.Errorf("%s is not signed by this cluster's CA (issuer %q): forged, or from another cluster", who, leaf.Issuer.CommonName)
	}
	return nil, fmt.Errorf("%s does not verify: %w", who, err)
}

// HasName reports whether c is the certificate of name: its CN and a DNS SAN.
func HasName(c *x509.Certificate, name string) bool {
	return c.Subject.CommonName == name && slices.Contains(c.DNSNames, name)
}

// ServerTLS is the configuration of a TLS server with cert that asks clients for their
// certificates but leaves checking them to the HTTP layer (Verify), so that a refused
// certificate gets an HTTP error that says why — and an audit record — rather than a
// failed handshake.
func ServerTLS(cert tls.Certificate) *tls.Config {
	return &tls.Config{
		Certificates: []tls.Certificate{cert},
		ClientAuth:   tls.RequestClientCert,
		MinVersion:   tls.VersionTLS13,
	}
}

// ClientTLS is the configuration of a TLS client that trusts only pool, expects the
// server to be serverName, and presents cert when it is not nil. Beyond TLS's own name
// check, which ignores case, the server's certificate must be serverName's own: its CN
// and a DNS name exactly serverName (names are issued in lower case), so that no
// certificate of another case, or of a host that merely carries the name among others,
// passes.
func ClientTLS(pool *x509.CertPool, serverName string, cert *tls.Certificate) *tls.Config {
	c := &tls.Config{RootCAs: pool, ServerName: serverName, MinVersion: tls.VersionTLS13}
	if cert != nil {
		c.Certificates = []tls.Certificate{*cert}
	}
	if serverName != "" {
		c.VerifyConnection = RequirePeer(serverName, nil)
	}
	return c
}

// RequirePeer is a tls.Config.VerifyConnection that accepts only the certificate of
// name (see HasName) and, when revoked is not nil, none whose serial it reports revoked.
func RequirePeer(name string, revoked func(serial string) bool) func(tls.ConnectionState) error {
	return func(cs tls.ConnectionState) error {
		if len(cs.PeerCertificates) == 0 {
			return errors.New("the peer presented no certificate")
		}
		leaf := cs.PeerCertificates[0]
		if !HasName(leaf, name) {
			return fmt.Errorf("the peer's certificate is %q's, not %s's", leaf.Subject.CommonName, name)
		}
		if revoked != nil && revoked(SerialString(leaf)) {
			return fmt.Errorf("%s's certificate (serial %s) has been revoked by the center; refusing to talk to it", name, SerialString(leaf))
		}
		return nil
	}
}

// Revoking returns c, whose ServerName names the peer, refusing as well a peer
// certificate whose serial revoked reports: revocation is checked on connections a host
// or the center opens, not only on those it accepts.
func Revoking(c *tls.Config, revoked func(serial string) bool) *tls.Config {
	c.VerifyConnection = RequirePeer(c.ServerName, revoked)
	return c
}
