package agent

import (
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"sync"

	"github.com/godwit/godwit/internal/api"
	"github.com/godwit/godwit/internal/audit"
	"github.com/godwit/godwit/internal/pki"
)

// auditAnchor keeps the newest checkpoint of the center's audit trail (see
// audit.Checkpoint) in the state directory, and reports it back with every heartbeat, so
// that the trail's head is anchored outside the center's database: a center whose
// newest records were deleted cannot make this host forget what it vouched for. A
// checkpoint is kept only if it is the center's (signed with its certificate, issued by
// the cluster's CA) and newer than the one held.
type auditAnchor struct {
	path string

	mu   sync.Mutex
	held *api.AuditCheckpoint
}

// auditAnchorFile is the file, in the state directory, that holds the checkpoint.
const auditAnchorFile = "audit-checkpoint.json"

// newAuditAnchor loads the checkpoint kept at path, if any; one that does not parse is
// dropped with a warning (the center sends a new one).
func newAuditAnchor(path string, warn func(msg string, args ...any)) *auditAnchor {
	a := &auditAnchor{path: path}
	b, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		return a
	}
	var cp api.AuditCheckpoint
	if err == nil {
		err = json.Unmarshal(b, &cp)
	}
	if err != nil {
		warn("the audit checkpoint kept on disk is unreadable; waiting for a new one from the center", "file", path, "err", err)
		return a
	}
	a.held = &cp
	return a
}

// current is the checkpoint to report, or nil.
func (a *auditAnchor) current() *api.AuditCheckpoint {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.held
}

// offer keeps cp (from the center's heartbeat reply; nil: none) if it verifies against
// roots and is newer than the one held, writing it to disk before it is reported.
func (a *auditAnchor) offer(cp *api.AuditCheckpoint, roots *x509.CertPool) error {
	if cp == nil {
		return nil
	}
	if err := audit.VerifyCheckpoint(*cp, roots); err != nil {
		return fmt.Errorf("the center's audit checkpoint of record %d is refused: %w", cp.ID, err)
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	// One held that is not this cluster's (the host joined another) is no evidence to
	// keep.
	if a.held != nil && cp.ID <= a.held.ID && audit.VerifyCheckpoint(*a.held, roots) == nil {
		return nil
	}
	b, err := json.Marshal(cp)
	if err != nil {
		return fmt.Errorf("encode the audit checkpoint: %w", err)
	}
	if err := pki.WriteFileAtomic(a.path, b, 0o600); err != nil {
		return fmt.Errorf("keep the audit checkpoint: %w", err)
	}
	kept := *cp
	a.held = &kept
	return nil
}
