package audit

import (
	"context"
	"crypto/x509"
	"database/sql"
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/godwit/godwit/internal/api"
	"github.com/godwit/godwit/internal/pki"
)

// testNotary is a cluster CA made at now and the center's key and certificate, as the
// center has them; other signs with a host's certificate from the same CA.
func testNotary(t testing.TB, now time.Time) (center, other Notary) {
	t.Helper()
	ca, err := pki.LoadOrCreateCA(t.TempDir(), now)
	if err != nil {
		t.Fatal(err)
	}
	issue := func(name string) Notary {
		key, err := pki.NewKey()
		if err != nil {
			t.Fatal(err)
		}
		cert, err := ca.Issue(key.Public(), pki.Leaf{Name: name}, now)
		if err != nil {
			t.Fatal(err)
		}
		return Notary{Key: key, Cert: cert, Roots: ca.Pool()}
	}
	return issue(pki.CenterName), issue("host-1")
}

func TestVerifyCheckpoint(t *testing.T) {
	now := time.Date(2025, 3, 1, 12, 0, 0, 0, time.UTC)
	center, host := testNotary(t, now)
	otherCluster, _ := testNotary(t, now)
	hash := strings.Repeat("ab", 32)
	good, err := SignCheckpoint(7, hash, now, center.Key, center.Cert)
	if err != nil {
		t.Fatal(err)
	}
	if err := VerifyCheckpoint(good, center.Roots); err != nil {
		t.Fatalf("the center's own checkpoint: %v", err)
	}
	byHost, _ := SignCheckpoint(7, hash, now, host.Key, host.Cert)
	byOther, _ := SignCheckpoint(7, hash, now, otherCluster.Key, otherCluster.Cert)
	changed := func(f func(*api.AuditCheckpoint)) api.AuditCheckpoint {
		cp := good
		cp.Signature = append([]byte(nil), good.Signature...)
		f(&cp)
		return cp
	}
	for name, c := range map[string]struct {
		cp   api.AuditCheckpoint
		want string
	}{
		"a host's":        {byHost, "not by the center"},
		"another cluster": {byOther, "not signed by this cluster's CA"},
		"later record":    {changed(func(cp *api.AuditCheckpoint) { cp.ID = 8 }), "signature does not match"},
		"other hash":      {changed(func(cp *api.AuditCheckpoint) { cp.Hash = strings.Repeat("cd", 32) }), "signature does not match"},
		"other time":      {changed(func(cp *api.AuditCheckpoint) { cp.Time = cp.Time.Add(time.Second) }), "signature does not match"},
		"flipped bit":     {changed(func(cp *api.AuditCheckpoint) { cp.Signature[10] ^= 1 }), "signature"},
		"no certificate":  {changed(func(cp *api.AuditCheckpoint) { cp.Certificate = nil }), "does not parse"},
		"record 0":        {changed(func(cp *api.AuditCheckpoint) { cp.ID = 0 }), "records start at 1"},
		"short hash":      {changed(func(cp *api.AuditCheckpoint) { cp.Hash = "abc" }), "not a hex SHA-256"},
		"before the cert": {changed(func(cp *api.AuditCheckpoint) { cp.Time = now.AddDate(-1, 0, 0) }), "not valid before"},
	} {
		if err := VerifyCheckpoint(c.cp, center.Roots); err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: %v; want an error saying %q", name, err, c.want)
		}
	}
}

// Hosts get the checkpoint of the head and report it back; Verify checks what they hold.
// Deleting the newest records and rewriting the head fails Verify, naming the host and
// its checkpoint, and the center then sends that host nothing newer; a checkpoint that is
// not the center's is ignored.
func TestCheckpointsAnchorTheHead(t *testing.T) {
	l, db, clk := openTest(t)
	ctx := context.Background()
	center, host := testNotary(t, clk.now())
	if cp, err := l.Checkpoint(ctx, "host-1", nil); err != nil || cp != nil {
		t.Fatalf("without a notary: %+v %v; want nothing", cp, err)
	}
	l.SetNotary(center)
	if cp, err := l.Checkpoint(ctx, "host-1", nil); err != nil || cp != nil {
		t.Fatalf("an empty trail: %+v %v; want nothing to sign", cp, err)
	}
	appendN(t, l, clk, 10)
	cp10, err := l.Checkpoint(ctx, "host-1", nil)
	if err != nil || cp10 == nil || cp10.ID != 10 || VerifyCheckpoint(*cp10, center.Roots) != nil {
		t.Fatalf("checkpoint of 10 records: %+v %v", cp10, err)
	}
	appendN(t, l, clk, 3)
	cp13, err := l.Checkpoint(ctx, "host-1", cp10)
	if err != nil || cp13 == nil || cp13.ID != 13 {
		t.Fatalf("host-1 holding record 10 after 13 records: %+v %v; want the checkpoint of 13", cp13, err)
	}
	if again, _ := l.Checkpoint(ctx, "host-2", nil); again == nil || again.Time != cp13.Time {
		t.Fatalf("the head did not move, yet host-2 gets another checkpoint: %+v", again)
	}
	if _, err := l.Checkpoint(ctx, "host-1", cp13); err != nil {
		t.Fatal(err)
	}
	forged, _ := SignCheckpoint(1000, strings.Repeat("ef", 32), clk.now(), host.Key, host.Cert)
	if _, err := l.Checkpoint(ctx, "host-2", &forged); err != nil {
		t.Fatal(err)
	}
	v := verify(t, l)
	if !v.OK || len(v.Anchors) != 2 || v.Anchors[0].Status != AnchorHolds || v.Anchors[0].ID != 13 ||
		v.Anchors[1].Status != AnchorInvalid || !strings.Contains(v.Anchors[1].Detail, "not by the center") {
		t.Fatalf("verify with host-1 at 13 and host-2 forging 1000: %+v", v)
	}

	// Someone with the file deletes records 12 and 13 and points the head at 11.
	var h11 string
	if err := db.QueryRow(`SELECT hash FROM audit_log WHERE id = 11`).Scan(&h11); err != nil {
		t.Fatal(err)
	}
	tamper(t, db, `DELETE FROM audit_log WHERE id > 11`)
	tamper(t, db, `UPDATE audit_chain SET head_id = 11, head_hash = ?`, h11)
	v = verify(t, l)
	if v.OK || v.Broken == nil || v.Broken.Problem != ProblemCut || v.Broken.ID != 13 ||
		!strings.Contains(v.Broken.Detail, "host host-1") || !strings.Contains(v.Broken.Detail, "checkpoint of record 13") ||
		!strings.Contains(v.Broken.Detail, "cut") {
		t.Fatalf("verify after the cut: %+v %+v", v, v.Broken)
	}
	if cp, err := l.Checkpoint(ctx, "host-1", cp13); err != nil || cp != nil {
		t.Fatalf("host-1 holding the evidence of the cut was sent %+v %v; want nothing, so that it keeps it", cp, err)
	}
	// Records written after the cut take the deleted ids: the record differs.
	appendN(t, l, clk, 5)
	v = verify(t, l)
	if v.OK || v.Broken == nil || v.Broken.Problem != ProblemCheckpoint || v.Broken.ID != 13 || !strings.Contains(v.Broken.Detail, "deleted or rewritten") {
		t.Fatalf("verify after the cut and new records: %+v", v.Broken)
	}
	b, _ := json.Marshal(v)
	t.Logf("%s", b)
}

// FuzzVerifyCheckpoint feeds VerifyCheckpoint checkpoints as a host could send them (any
// JSON, built on a real one): it never panics, accepts only the center's own signature
// over exactly the id, hash and time it signed, and refuses the rest with a sentence.
func FuzzVerifyCheckpoint(f *testing.F) {
	now := time.Date(2025, 3, 1, 12, 0, 0, 0, time.UTC)
	center, host := testNotary(f, now)
	good, err := SignCheckpoint(42, strings.Repeat("0f", 32), now, center.Key, center.Cert)
	if err != nil {
		f.Fatal(err)
	}
	goodJSON, _ := json.Marshal(good)
	byHost, _ := SignCheckpoint(42, strings.Repeat("0f", 32), now, host.Key, host.Cert)
	hostJSON, _ := json.Marshal(byHost)
	f.Add(goodJSON)
	f.Add(hostJSON)
	f.Add([]byte(`{"id":42,"hash":"","time":"2025-03-01T12:00:00Z","certificate":"","signature":""}`))
	f.Add([]byte(`{"id":-1,"certificate":"AAAA","signature":"AAAA"}`))
	f.Add([]byte(`null`))
	f.Fuzz(func(t *testing.T, b []byte) {
		var cp api.AuditCheckpoint
		if json.Unmarshal(b, &cp) != nil {
			return
		}
		err := VerifyCheckpoint(cp, center.Roots)
		if err == nil {
			cert, perr := x509.ParseCertificate(cp.Certificate)
			if perr != nil || !cert.Equal(center.Cert) || cp.ID != good.ID || cp.Hash != good.Hash || !cp.Time.Equal(good.Time) {
				t.Fatalf("accepted a checkpoint the center did not sign: %s", b)
			}
			return
		}
		if !strings.Contains(err.Error(), "checkpoint") {
			t.Fatalf("the refusal does not say what is wrong: %v", err)
		}
	})
}

// notarizedTrail is a trail of n records with the center's notary, the other notary
// (a host's), and the checkpoint of its head as host-1 is first sent it.
func notarizedTrail(t *testing.T, n int) (*Log, *sql.DB, *clock, Notary, *api.AuditCheckpoint) {
	t.Helper()
	l, db, clk := openTest(t)
	center, host := testNotary(t, clk.now())
	l.SetNotary(center)
	appendN(t, l, clk, n)
	cp, err := l.Checkpoint(context.Background(), "host-1", nil)
	if err != nil || cp == nil || cp.ID != int64(n) {
		t.Fatalf("checkpoint of %d records: %+v %v", n, cp, err)
	}
	return l, db, clk, host, cp
}

// A host's checkpoint is verified by its signature only when the center did not sign it
// itself and has not verified those bytes for the host before; any change — a forged
// signature over the same record, another signer — is verified anew and refused.
func TestCheckpointVerifiedOncePerBytes(t *testing.T) {
	l, _, _, host, cp := notarizedTrail(t, 3)
	ctx := context.Background()
	for range 3 {
		if _, err := l.Checkpoint(ctx, "host-1", cp); err != nil {
			t.Fatal(err)
		}
	}
	if v := verify(t, l); !v.OK || len(v.Anchors) != 1 || v.Anchors[0].Status != AnchorHolds {
		t.Fatalf("host-1 holding the center's checkpoint: %+v", v.Anchors)
	}
	verified := func(want int) {
		t.Helper()
		l.anchors.mu.Lock()
		got := l.anchors.verifications
		l.anchors.mu.Unlock()
		if got != want {
			t.Fatalf("%d checkpoints verified by their signature; want %d", got, want)
		}
	}
	verified(0) // the center's own, as it signed it
	forged := *cp
	forged.Signature = append([]byte(nil), cp.Signature...)
	forged.Signature[len(forged.Signature)-1] ^= 1
	if _, err := l.Checkpoint(ctx, "host-1", &forged); err != nil {
		t.Fatal(err)
	}
	if v := verify(t, l); len(v.Anchors) != 1 || v.Anchors[0].Status != AnchorInvalid {
		t.Fatalf("host-1 holding a checkpoint with a flipped signature bit after the valid one: %+v; want it invalid", v.Anchors)
	}
	verified(1)
	byHost, _ := SignCheckpoint(cp.ID, cp.Hash, cp.Time, host.Key, host.Cert)
	if _, err := l.Checkpoint(ctx, "host-1", &byHost); err != nil {
		t.Fatal(err)
	}
	if v := verify(t, l); len(v.Anchors) != 1 || v.Anchors[0].Status != AnchorInvalid || !strings.Contains(v.Anchors[0].Detail, "not by the center") {
		t.Fatalf("host-1 holding the same record signed by a host: %+v; want it invalid", v.Anchors)
	}
	// The valid one again: verified again, and holds.
	if _, err := l.Checkpoint(ctx, "host-1", cp); err != nil {
		t.Fatal(err)
	}
	if v := verify(t, l); !v.OK || v.Anchors[0].Status != AnchorHolds {
		t.Fatalf("host-1 holding the center's checkpoint again: %+v", v.Anchors)
	}
	verified(2)
	// A checkpoint signed by another center process (before a restart) is verified
	// once, then known by its bytes.
	l.anchors.mu.Lock()
	l.anchors.mine, l.anchors.valid = nil, nil
	l.anchors.mu.Unlock()
	for range 3 {
		if _, err := l.Checkpoint(ctx, "host-1", cp); err != nil {
			t.Fatal(err)
		}
	}
	verified(3)
}

// A record rewritten in place under a running center is seen by the heartbeats' check
// within recordRecheck (the hash last read serves the hosts until then), and by verify at
// once; a cut chain is seen by the next heartbeat.
func TestCheckpointRereadsItsRecord(t *testing.T) {
	l, db, clk, _, cp := notarizedTrail(t, 3)
	ctx := context.Background()
	if next, err := l.Checkpoint(ctx, "host-1", cp); err != nil || next == nil {
		t.Fatalf("host-1 holding the head: %+v %v; want the head's checkpoint", next, err)
	}
	tamper(t, db, `UPDATE audit_log SET hash = ? WHERE id = 3`, strings.Repeat("ab", 32))
	if v := verify(t, l); v.OK {
		t.Fatal("verify did not see record 3 rewritten")
	}
	// verify read the rewritten hash, which differs: the heartbeats' memory of it is the
	// earlier read, still within recordRecheck.
	clk.add(recordRecheck)
	if next, err := l.Checkpoint(ctx, "host-2", cp); err != nil || next != nil {
		t.Fatalf("host-2 holding record 3's checkpoint %s after its record was rewritten: sent %+v %v; want nothing, so that it keeps the evidence", recordRecheck, next, err)
	}
}

// With HeadReuse, the heartbeats' checkpoints name the head as last read until it is
// that old; then the newest head again.
func TestCheckpointHeadReuse(t *testing.T) {
	l, _, clk, _, cp := notarizedTrail(t, 2)
	ctx := context.Background()
	l.headReuse = 300 * time.Millisecond
	// With reuse on, this read of the head is the one the next checkpoints reuse.
	if _, err := l.Checkpoint(ctx, "host-1", cp); err != nil {
		t.Fatal(err)
	}
	appendN(t, l, clk, 3)
	if again, err := l.Checkpoint(ctx, "host-1", cp); err != nil || again == nil || again.ID != 2 {
		t.Fatalf("within HeadReuse of the last read: %+v %v; want the head as read then, record 2", again, err)
	}
	time.Sleep(l.headReuse)
	newer, err := l.Checkpoint(ctx, "host-1", cp)
	if err != nil || newer == nil || newer.ID != 5 {
		t.Fatalf("after HeadReuse: %+v %v; want the newest head, record 5", newer, err)
	}
	// A read of the head that began before record 5 was written and ended after this
	// one: the head kept does not go back, or host-1, holding record 5's checkpoint,
	// would look like evidence of a cut chain.
	l.rememberHead(chainState{HeadID: 2})
	if again, err := l.Checkpoint(ctx, "host-1", newer); err != nil || again == nil || again.ID != 5 {
		t.Fatalf("host-1 holding record 5's checkpoint after a late read of head 2: %+v %v; want record 5's checkpoint again", again, err)
	}
}
