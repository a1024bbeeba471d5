package agent

import (
	"context"
	"fmt"
	"os"
	"path/filepath"

	"github.com/godwit/godwit/internal/api"
	"github.com/godwit/godwit/internal/migration"
	"github.com/godwit/godwit/internal/qmp"
)

// The migration stream's encryption (see internal/migration's tls.go): both ends key
// QEMU's TLS with the migration's own key, from the center's ticket.

// destinationTLS sets up the destination QEMU's side of an encrypted stream when the
// migration asks for one, with the migration's key kept in the VM's directory (GnuTLS
// reads it at the handshake; it goes with the directory, or at finish). With
// opportunistic encryption a failure leaves the stream plain, and the note says why;
// with required encryption it fails the migration.
func (a *Agent) destinationTLS(ctx context.Context, mon *qmp.Monitor, v *vm, req api.IncomingRequest, key []byte) (on bool, note, creds string, err error) {
	mode, err := migration.ParseEncryption(req.Encryption)
	if err != nil {
		return false, "", "", api.BadRequest("%v", err)
	}
	if mode == migration.EncryptionOff {
		return false, "", "", nil
	}
	if key == nil {
		err = fmt.Errorf("the migration has no key (no ticket from the center)")
	} else if err = migration.WritePSK(keyDir(v.dir), key); err == nil {
		err = migration.ServerTLS(ctx, mon, keyDir(v.dir))
	}
	if err == nil {
		return true, "", migration.DestinationTLSCreds, nil
	}
	if mode == migration.EncryptionRequired {
		return false, "", "", api.Errorf(422, "encryption_unavailable", "the migration must be encrypted, but host %s's QEMU cannot set up TLS: %v", a.cfg.Name, err)
	}
	note = fmt.Sprintf("not encrypted: host %s's QEMU cannot set up TLS (%v)", a.cfg.Name, err)
	a.log.Warn("incoming migration will not be encrypted", "migration", req.ID, "err", err)
	return false, note, "", nil
}

// keyDir is where an incoming VM's migration key waits for the stream.
func keyDir(vmDir string) string { return filepath.Join(vmDir, "migration-key") }

// forgetKey removes an incoming VM's migration key once its stream is settled.
func forgetKey(vmDir string) { _ = os.RemoveAll(keyDir(vmDir)) }

// sourceTLS sets up the source QEMU's side when the destination expects an encrypted
// stream, and returns the credentials object to migrate with ("" for a plain stream).
// QEMU reads the key when the object is made, so the key file goes at once. Required
// encryption that the destination could not provide fails here.
func (a *Agent) sourceTLS(ctx context.Context, mon *qmp.Monitor, req api.AgentMigrateRequest, rep api.IncomingReply, key []byte) (string, error) {
	if !rep.TLS {
		if req.Encryption == migration.EncryptionRequired {
			return "", fmt.Errorf("the migration must be encrypted, but destination %s did not set up TLS: %s", req.Destination, rep.TLSNote)
		}
		return "", nil
	}
	dir, err := os.MkdirTemp(a.cfg.StateDir, "migration-key-")
	if err != nil {
		return "", fmt.Errorf("a place for the migration's key: %w", err)
	}
	defer os.RemoveAll(dir)
	if err := migration.WritePSK(dir, key); err != nil {
		return "", err
	}
	id := "gw-tls-out-" + req.ID
	if err := migration.ClientTLS(ctx, mon, dir, id); err != nil {
		return "", err
	}
	return id, nil
}
