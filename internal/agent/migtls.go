package agent

import (
	"context"
	"fmt"
	"path/filepath"

	"github.com/godwit/godwit/internal/api"
	"github.com/godwit/godwit/internal/migration"
	"github.com/godwit/godwit/internal/qmp"
)

// The migration stream's encryption (see internal/migration's tls.go): the agent gives
// QEMU its cluster identity in STATE/pki/qemu and sets up both ends per migration.

// qemuTLSDir is where QEMU reads the host's TLS credentials.
func (a *Agent) qemuTLSDir() string { return filepath.Join(a.pkiDir(), "qemu") }

// writeQEMUCreds lays out the host's identity for QEMU.
func (a *Agent) writeQEMUCreds() error {
	id := a.id.Load()
	return migration.WriteTLSDir(a.qemuTLSDir(), id.CertPEM, id.KeyPEM, id.CAPEM)
}

// destinationTLS sets up the destination QEMU's side of an encrypted stream when the
// migration asks for one: TLS credentials (server) and an authorization that accepts
// only the source host. With opportunistic encryption a failure leaves the stream plain,
// and the note says why; with required encryption it fails the migration.
func (a *Agent) destinationTLS(ctx context.Context, mon *qmp.Monitor, req api.IncomingRequest) (on bool, note, creds, authz string, err error) {
	mode, err := migration.ParseEncryption(req.Encryption)
	if err != nil {
		return false, "", "", "", api.BadRequest("%v", err)
	}
	if mode == migration.EncryptionOff {
		return false, "", "", "", nil
	}
	if err = migration.ServerTLS(ctx, mon, a.qemuTLSDir(), req.Source); err == nil {
		return true, "", migration.DestinationTLSCreds, migration.DestinationTLSAuthz, nil
	}
	if mode == migration.EncryptionRequired {
		return false, "", "", "", api.Errorf(422, "encryption_unavailable", "the migration must be encrypted, but host %s's QEMU cannot set up TLS: %v", a.cfg.Name, err)
	}
	note = fmt.Sprintf("not encrypted: host %s's QEMU cannot set up TLS (%v)", a.cfg.Name, err)
	a.log.Warn("incoming migration will not be encrypted", "migration", req.ID, "err", err)
	return false, note, "", "", nil
}

// sourceTLS sets up the source QEMU's side when the destination expects an encrypted
// stream, and returns the credentials object to migrate with ("" for a plain stream).
// Required encryption that the destination could not provide fails here.
func (a *Agent) sourceTLS(ctx context.Context, mon *qmp.Monitor, req api.AgentMigrateRequest, rep api.IncomingReply) (string, error) {
	if !rep.TLS {
		if req.Encryption == migration.EncryptionRequired {
			return "", fmt.Errorf("the migration must be encrypted, but destination %s did not set up TLS: %s", req.Destination, rep.TLSNote)
		}
		return "", nil
	}
	id := "gw-tls-out-" + req.ID
	if err := migration.ClientTLS(ctx, mon, a.qemuTLSDir(), id); err != nil {
		return "", err
	}
	return id, nil
}
