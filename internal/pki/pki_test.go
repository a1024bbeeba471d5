package pki

import (
	"crypto/x509"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func TestIdentityRoundTripAndRenewDue(t *testing.T) {
	dir := t.TempDir()
	now := time.Now()
	ca, err := LoadOrCreateCA(filepath.Join(dir, "ca"), now)
	if err != nil {
		t.Fatal(err)
	}
	again, err := LoadOrCreateCA(filepath.Join(dir, "ca"), now)
	if err != nil || again.Fingerprint() != ca.Fingerprint() {
		t.Fatalf("the CA changed on reload: %v", err)
	}
	key, _ := NewKey()
	csr, _ := NewCSR(key, "evil-name")
	cert, err := ca.SignCSR(csr, Leaf{Name: "host-1", Lifetime: time.Hour}, now)
	if err != nil {
		t.Fatal(err)
	}
	if !HasName(cert, "host-1") || HasName(cert, "evil-name") {
		t.Errorf("the certificate names %v; want host-1 only, whatever the CSR asked", cert.DNSNames)
	}
	keyPEM, _ := MarshalKeyPEM(key)
	idDir := filepath.Join(dir, "host")
	if _, err := LoadIdentity(idDir); !errors.Is(err, ErrNoIdentity) {
		t.Fatalf("an empty directory: %v; want ErrNoIdentity", err)
	}
	if err := SaveIdentity(idDir, keyPEM, CertPEM(cert), ca.CertPEM); err != nil {
		t.Fatal(err)
	}
	if st, err := os.Stat(filepath.Join(idDir, PairFile)); err != nil || st.Mode().Perm() != 0o600 {
		t.Fatalf("%s: %v %v; want mode 0600", PairFile, st, err)
	}
	id, err := LoadIdentity(idDir)
	if err != nil || id.Name() != "host-1" || id.CAFingerprint() != ca.Fingerprint() {
		t.Fatalf("LoadIdentity: %+v %v", id, err)
	}
	if _, err := id.Verify([]*x509.Certificate{cert}, now, x509.ExtKeyUsageClientAuth); err != nil {
		t.Errorf("the CA does not verify its own certificate: %v", err)
	}
	if _, err := id.Verify([]*x509.Certificate{cert}, now.Add(2*time.Hour), x509.ExtKeyUsageClientAuth); err == nil || !strings.Contains(err.Error(), "expired") {
		t.Errorf("an expired certificate: %v; want a refusal saying it expired", err)
	}
	// A one-hour certificate (plus the backdated five minutes) is due when a third of
	// its life, 21.7 minutes, is left; a year's when 30 days are left.
	if RenewDue(cert, now.Add(30*time.Minute), 30*24*time.Hour) || !RenewDue(cert, now.Add(40*time.Minute), 30*24*time.Hour) {
		t.Error("RenewDue of a one-hour certificate does not switch at a third of its life")
	}
	year, _ := ca.Issue(key.Public(), Leaf{Name: "host-2"}, now)
	if RenewDue(year, now.Add(300*24*time.Hour), 30*24*time.Hour) || !RenewDue(year, now.Add(340*24*time.Hour), 30*24*time.Hour) {
		t.Error("RenewDue of a one-year certificate does not switch 30 days before it expires")
	}
	// A key that does not fit the certificate is refused.
	other, _ := NewKey()
	otherPEM, _ := MarshalKeyPEM(other)
	if _, err := NewIdentity(idDir, otherPEM, CertPEM(cert), ca.CertPEM); err == nil {
		t.Error("an identity with another key was accepted")
	}
}
