package migration

import (
	"context"
	"fmt"
	"os"
	"path/filepath"

	"github.com/godwit/godwit/internal/pki"
	"github.com/godwit/godwit/internal/qmp"
)

// Encrypted streams.
//
// QEMU encrypts the migration stream itself (TLS through GnuTLS) when both ends hold a
// tls-creds-x509 object and the tls-creds migration parameter names it. A host gives
// QEMU its cluster identity — its certificate and key, and the CA — in a directory,
// under the file names QEMU expects for both endpoints (WriteTLSDir). The destination
// demands the source's certificate and, through an authz-list object, admits only the
// certificate of the host the migration comes from (ServerTLS); the source checks that
// the destination's certificate names the destination host (Options.TLSHostname).

// WriteTLSDir lays out a host's identity in dir for QEMU: ca-cert.pem, and the host's
// certificate and key as both server-* and client-* files (mode 0600).
func WriteTLSDir(dir string, certPEM, keyPEM, caPEM []byte) error {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("create %s: %w", dir, err)
	}
	files := map[string][]byte{"ca-cert.pem": caPEM, "server-cert.pem": certPEM, "client-cert.pem": certPEM,
		"server-key.pem": keyPEM, "client-key.pem": keyPEM}
	for name, b := range files {
		// Replaced whole, so that a QEMU loading them during a renewal never reads a
		// torn key.
		if err := pki.WriteFileAtomic(filepath.Join(dir, name), b, 0o600); err != nil {
			return fmt.Errorf("write QEMU's TLS credentials: %w", err)
		}
	}
	return nil
}

// PeerAuthz is the authorization that admits only host's certificate: its
// distinguished name (CN=host, O=Godwit), in either order GnuTLS may print it.
func PeerAuthz(id, host string) qmp.AuthzList {
	return qmp.AuthzList{QOMType: "authz-list", ID: id, Policy: "deny", Rules: []qmp.AuthzListRule{
		{Match: "CN=" + host + ",O=Godwit", Policy: "allow", Format: "exact"},
		{Match: "O=Godwit,CN=" + host, Policy: "allow", Format: "exact"},
	}}
}

// Object ids of the destination's TLS objects (one migration per destination QEMU).
const (
	DestinationTLSCreds = "gw-tls-in"
	DestinationTLSAuthz = "gw-authz-in"
)

// ServerTLS adds to a destination QEMU the TLS credentials in dir (endpoint server,
// verifying the client) and the authorization that admits only source's certificate.
// Pass DestinationTLSCreds and DestinationTLSAuthz to PrepareDestination then.
func ServerTLS(ctx context.Context, mon *qmp.Monitor, dir, source string) error {
	if err := mon.ObjectAdd(ctx, qmp.TLSCredsX509{QOMType: "tls-creds-x509", ID: DestinationTLSCreds, Endpoint: "server", Dir: dir, VerifyPeer: true}); err != nil {
		return fmt.Errorf("load the TLS credentials in %s into the destination QEMU: %w", dir, err)
	}
	if err := mon.ObjectAdd(ctx, PeerAuthz(DestinationTLSAuthz, source)); err != nil {
		return fmt.Errorf("admit only host %s's certificate on the destination QEMU: %w", source, err)
	}
	return nil
}

// ClientTLS adds to a source QEMU the TLS credentials in dir (endpoint client, which
// verifies the server) as object id; pass id as Options.TLSCreds, and delete it after.
func ClientTLS(ctx context.Context, mon *qmp.Monitor, dir, id string) error {
	if err := mon.ObjectAdd(ctx, qmp.TLSCredsX509{QOMType: "tls-creds-x509", ID: id, Endpoint: "client", Dir: dir, VerifyPeer: true}); err != nil {
		return fmt.Errorf("load the TLS credentials in %s into the source QEMU: %w", dir, err)
	}
	return nil
}
