package agent

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/godwit/godwit/internal/api"
	"github.com/godwit/godwit/internal/audit"
	"github.com/godwit/godwit/internal/pki"
)

// newCheckpointSigner makes a cluster CA and returns functions that sign checkpoints
// as its center and as one of its hosts.
func newCheckpointSigner(t *testing.T, now time.Time) (sign func(id int64) *api.AuditCheckpoint, forge func(id int64) *api.AuditCheckpoint, ca *pki.CA) {
	t.Helper()
	ca, err := pki.LoadOrCreateCA(t.TempDir(), now)
	if err != nil {
		t.Fatal(err)
	}
	signer := func(name string) func(id int64) *api.AuditCheckpoint {
		key, err := pki.NewKey()
		if err != nil {
			t.Fatal(err)
		}
		cert, err := ca.Issue(key.Public(), pki.Leaf{Name: name}, now)
		if err != nil {
			t.Fatal(err)
		}
		return func(id int64) *api.AuditCheckpoint {
			cp, err := audit.SignCheckpoint(id, strings.Repeat("ab", 32), now, key, cert)
			if err != nil {
				t.Fatal(err)
			}
			return &cp
		}
	}
	return signer(pki.CenterName), signer("host-2"), ca
}

// The agent keeps the newest checkpoint the center signed, on disk across restarts, and
// refuses one signed by anyone else or older than the one it holds.
func TestAuditAnchorKeepsTheNewestCheckpoint(t *testing.T) {
	now := time.Now()
	sign, forge, ca := newCheckpointSigner(t, now)
	path := filepath.Join(t.TempDir(), auditAnchorFile)
	warn := func(msg string, args ...any) { t.Logf("warning: %s %v", msg, args) }

	a := newAuditAnchor(path, warn)
	if a.current() != nil || a.offer(nil, ca.Pool()) != nil {
		t.Fatal("a new agent holds a checkpoint")
	}
	if err := a.offer(forge(50), ca.Pool()); err == nil || !strings.Contains(err.Error(), "not by the center") {
		t.Fatalf("a host's forged checkpoint: %v; want it refused", err)
	}
	if _, err := os.Stat(path); !os.IsNotExist(err) {
		t.Fatalf("a refused checkpoint was written: %v", err)
	}
	if err := a.offer(sign(10), ca.Pool()); err != nil {
		t.Fatal(err)
	}
	if err := a.offer(sign(5), ca.Pool()); err != nil {
		t.Fatal(err)
	}
	if cp := a.current(); cp == nil || cp.ID != 10 {
		t.Fatalf("after 10 then 5 the agent holds %+v; want 10", cp)
	}
	if st, err := os.Stat(path); err != nil || st.Mode().Perm() != 0o600 {
		t.Fatalf("the checkpoint file: %v %v", st, err)
	}

	restarted := newAuditAnchor(path, warn)
	if cp := restarted.current(); cp == nil || cp.ID != 10 || audit.VerifyCheckpoint(*cp, ca.Pool()) != nil {
		t.Fatalf("after a restart the agent holds %+v; want the center's checkpoint of record 10", cp)
	}
	if err := restarted.offer(sign(12), ca.Pool()); err != nil || restarted.current().ID != 12 {
		t.Fatalf("offer 12 after a restart: %v, holding %+v", err, restarted.current())
	}

	// A checkpoint of another cluster (the host joined a new one) is no evidence: the
	// first one of the new cluster replaces it, whatever its id.
	sign2, _, ca2 := newCheckpointSigner(t, now)
	if err := restarted.offer(sign2(3), ca2.Pool()); err != nil || restarted.current().ID != 3 {
		t.Fatalf("a new cluster's checkpoint 3 over the old one's 12: %v, holding %+v", err, restarted.current())
	}

	if err := os.WriteFile(path, []byte("{torn"), 0o600); err != nil {
		t.Fatal(err)
	}
	if newAuditAnchor(path, warn).current() != nil {
		t.Fatal("an unreadable checkpoint file is reported")
	}
}
