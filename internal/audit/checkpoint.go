package audit

import (
	"bytes"
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"database/sql"
	"encoding/hex"
	"errors"
	"fmt"
	"sort"
	"strconv"
	"sync"
	"time"

	"github.com/godwit/godwit/internal/api"
	"github.com/godwit/godwit/internal/pki"
)

// Checkpoints anchor the chain's head outside the center's database. The hash chain shows
// a changed or removed record, but not that the newest records were deleted and the head
// (table audit_chain) rewritten to match: what remains is a shorter, intact chain. So the
// center signs checkpoints — "the trail held record ID with hash H at time T" — with its
// own certificate's key, and sends the newest to every host in heartbeat replies; hosts
// keep it on disk and report it back. Verify then checks each checkpoint the hosts hold:
// the record must exist with that hash, so the chain was neither cut before it nor
// rewritten up to it. Someone with the database file cannot forge a checkpoint (that
// takes the center's key) nor reach the hosts' copies. Records newer than the hosts'
// checkpoints (one heartbeat, 2 s) are not anchored yet.

// Statuses of an anchor.
const (
	AnchorHolds   = "holds"   // the record exists with the checkpoint's hash
	AnchorBroken  = "broken"  // the chain was cut before the record, or the record differs
	AnchorTrimmed = "trimmed" // retention removed the record since; nothing left to check
	AnchorInvalid = "invalid" // the checkpoint is not the center's (ignored)
)

// Problems a checkpoint can show (see Break).
const (
	ProblemCut        = "cut"                 // the chain ends before a checkpoint's record
	ProblemCheckpoint = "checkpoint_mismatch" // a checkpoint's record is missing or differs
)

// Anchor is a checkpoint a host holds, as Verify checked it.
type Anchor struct {
	Host string `json:"host"`
	ID   int64  `json:"id"`
	Hash string `json:"hash"`
	// Signed is when the center signed the checkpoint; Reported when the host last
	// reported it.
	Signed   time.Time `json:"signed"`
	Reported time.Time `json:"reported"`
	Status   string    `json:"status"`
	Detail   string    `json:"detail,omitempty"`
}

// checkpointVersion starts the bytes a checkpoint's signature covers.
const checkpointVersion = "godwit-audit-checkpoint/1"

// checkpointMessage is what a checkpoint's signature covers: checkpointVersion, the id,
// the hash and the time (timeLayout), each a netstring as in Record.Canonical.
func checkpointMessage(id int64, hash string, at time.Time) []byte {
	var b []byte
	for _, s := range []string{checkpointVersion, strconv.FormatInt(id, 10), hash, at.UTC().Format(timeLayout)} {
		b = strconv.AppendInt(b, int64(len(s)), 10)
		b = append(b, ':')
		b = append(b, s...)
		b = append(b, ',')
	}
	return b
}

// SignCheckpoint signs that the trail held record id with hash at the time at, with the
// center's key and certificate.
func SignCheckpoint(id int64, hash string, at time.Time, key crypto.Signer, cert *x509.Certificate) (api.AuditCheckpoint, error) {
	at = at.UTC().Truncate(time.Microsecond)
	sum := sha256.Sum256(checkpointMessage(id, hash, at))
	sig, err := key.Sign(rand.Reader, sum[:], crypto.SHA256)
	if err != nil {
		return api.AuditCheckpoint{}, fmt.Errorf("sign the audit checkpoint of record %d: %w", id, err)
	}
	return api.AuditCheckpoint{ID: id, Hash: hash, Time: at, Certificate: cert.Raw, Signature: sig}, nil
}

// VerifyCheckpoint checks that cp is the center's word: its certificate names the
// center and was issued by the CA in roots and valid when cp was signed, and its ECDSA
// signature covers cp's id, hash and time.
func VerifyCheckpoint(cp api.AuditCheckpoint, roots *x509.CertPool) error {
	if cp.ID <= 0 {
		return fmt.Errorf("the checkpoint names record %d; records start at 1", cp.ID)
	}
	if b, err := hex.DecodeString(cp.Hash); err != nil || len(b) != sha256.Size {
		return fmt.Errorf("the checkpoint's hash %.80q is not a hex SHA-256", cp.Hash)
	}
	cert, err := x509.ParseCertificate(cp.Certificate)
	if err != nil {
		return fmt.Errorf("the checkpoint's certificate does not parse: %w", err)
	}
	if _, err := pki.Verify(roots, []*x509.Certificate{cert}, cp.Time, x509.ExtKeyUsageServerAuth); err != nil {
		return fmt.Errorf("the checkpoint's certificate: %w", err)
	}
	if !pki.HasName(cert, pki.CenterName) {
		return fmt.Errorf("the checkpoint is signed by %q, not by the center (%s)", cert.Subject.CommonName, pki.CenterName)
	}
	pub, ok := cert.PublicKey.(*ecdsa.PublicKey)
	if !ok {
		return fmt.Errorf("the checkpoint's certificate has a %T key; the center signs with ECDSA", cert.PublicKey)
	}
	sum := sha256.Sum256(checkpointMessage(cp.ID, cp.Hash, cp.Time))
	if !ecdsa.VerifyASN1(pub, sum[:], cp.Signature) {
		return errors.New("the checkpoint's signature does not match its record, hash and time")
	}
	return nil
}

// Notary is what the trail needs to anchor its head: the center's key and certificate,
// which sign checkpoints, and the cluster's CA, which checks those the hosts hold.
type Notary struct {
	Key   crypto.Signer
	Cert  *x509.Certificate
	Roots *x509.CertPool
}

// anchors holds the checkpoints hosts reported since the center started. They are kept
// in memory, not in the database: the database is what they vouch for.
type anchors struct {
	mu     sync.Mutex
	notary *Notary
	// signed is the newest checkpoint signed, reused while the head stays there.
	signed *api.AuditCheckpoint
	held   map[string]heldCheckpoint
	// warned is the checkpoint last logged as broken, per host, so that a heartbeat every
	// 2 s does not log it every time.
	warned map[string]int64
	// valid is the checkpoint each host last reported that carried the center's valid
	// signature: the same bytes again need no second verification (it depends on
	// nothing but them and the CA). Whether its record still holds is checked every time.
	valid map[string]api.AuditCheckpoint
	// mine are the checkpoints this center signed lately, by signature: a host that
	// holds one of them byte for byte holds a valid checkpoint without a verification.
	mine map[string]api.AuditCheckpoint
	// verifications counts the checkpoints verified by their signature.
	verifications int
	// seen is, per record id, the hash a heartbeat's check last read for it and when:
	// every host holds the same few checkpoints, so one read per record per
	// recordRecheck serves them all. Verify always reads.
	seen map[int64]seenRecord
}

// seenRecord is a record's hash as read at a time.
type seenRecord struct {
	hash string
	at   time.Time
}

// recordRecheck is how long a heartbeat's check of a host's checkpoint trusts the hash
// it last read for the checkpoint's record. A cut chain is seen at once (its head is
// read every time); a record rewritten in place under the running center, within this
// bound, and `godwit audit verify` reads every record.
const recordRecheck = 30 * time.Second

// maxMine bounds the checkpoints signed that are remembered as the center's own.
const maxMine = 256

// sameCheckpoint reports whether a and b are the same signed checkpoint, byte for byte.
func sameCheckpoint(a, b api.AuditCheckpoint) bool {
	return a.ID == b.ID && a.Hash == b.Hash && a.Time.Equal(b.Time) &&
		bytes.Equal(a.Signature, b.Signature) && bytes.Equal(a.Certificate, b.Certificate)
}

type heldCheckpoint struct {
	cp       api.AuditCheckpoint
	reported time.Time
	invalid  error
}

// SetNotary lets the trail sign checkpoints and check those the hosts hold.
func (l *Log) SetNotary(n Notary) {
	l.anchors.mu.Lock()
	defer l.anchors.mu.Unlock()
	l.anchors.notary = &n
}

// Checkpoint takes the checkpoint a host reported in its heartbeat (nil: none) and
// returns the one to send it: the newest checkpoint of the chain's head, or nil when there
// is nothing to sign, no notary, or when the host's checkpoint shows that the trail lost
// or changed records — the host then keeps that evidence.
func (l *Log) Checkpoint(ctx context.Context, host string, held *api.AuditCheckpoint) (*api.AuditCheckpoint, error) {
	a := &l.anchors
	a.mu.Lock()
	n := a.notary
	var h heldCheckpoint
	if n != nil && held != nil {
		h = heldCheckpoint{cp: *held, reported: l.now()}
		last, ok := a.valid[host]
		if !ok || !sameCheckpoint(last, *held) {
			last, ok = a.mine[string(held.Signature)]
		}
		if !ok || !sameCheckpoint(last, *held) {
			a.verifications++
			if h.invalid = VerifyCheckpoint(*held, n.Roots); h.invalid == nil {
				if a.valid == nil {
					a.valid = map[string]api.AuditCheckpoint{}
				}
				a.valid[host] = *held
			}
		}
		if a.held == nil {
			a.held = map[string]heldCheckpoint{}
		}
		a.held[host] = h
	}
	a.mu.Unlock()
	if n == nil {
		return nil, nil
	}
	st, err := l.recentChain(ctx)
	if err != nil {
		return nil, err
	}
	if held != nil {
		anc, err := l.checkAnchor(ctx, st, host, h, true)
		if err != nil {
			return nil, err
		}
		if anc.Status == AnchorBroken {
			a.mu.Lock()
			if a.warned == nil {
				a.warned = map[string]int64{}
			}
			if a.warned[host] != held.ID {
				a.warned[host] = held.ID
				l.log.Error("a host's audit checkpoint shows that the audit trail lost or changed records; it keeps its checkpoint as evidence (`godwit audit verify`)",
					"host", host, "checkpoint", held.ID, "detail", anc.Detail)
			}
			a.mu.Unlock()
			return nil, nil
		}
	}
	if st.HeadID == 0 {
		return nil, nil
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.signed != nil && a.signed.ID == st.HeadID && a.signed.Hash == st.HeadHash {
		return a.signed, nil
	}
	cp, err := SignCheckpoint(st.HeadID, st.HeadHash, l.now(), n.Key, n.Cert)
	if err != nil {
		return nil, err
	}
	a.signed = &cp
	if a.mine == nil || len(a.mine) >= maxMine {
		a.mine = map[string]api.AuditCheckpoint{}
	}
	a.mine[string(cp.Signature)] = cp
	return &cp, nil
}

// recentChain is the chain's state, as read within Options.HeadReuse.
func (l *Log) recentChain(ctx context.Context) (chainState, error) {
	if l.headReuse > 0 {
		l.headMu.Lock()
		st, at := l.head, l.headAt
		l.headMu.Unlock()
		if !at.IsZero() && time.Since(at) < l.headReuse {
			return st, nil
		}
	}
	st, err := scanChain(l.chainStmt.QueryRowContext(ctx))
	if err != nil {
		return st, err
	}
	if l.headReuse > 0 {
		l.rememberHead(st)
	}
	return st, nil
}

// rememberHead keeps st as the chain's state last read, unless the one kept has a newer
// head: a read that began before a commit may end after a newer read, and a host may
// already hold a checkpoint of the newer head, which must not look cut.
func (l *Log) rememberHead(st chainState) {
	l.headMu.Lock()
	defer l.headMu.Unlock()
	if l.headAt.IsZero() || st.HeadID >= l.head.HeadID {
		l.head, l.headAt = st, time.Now()
	}
}

// heldAnchors returns the checkpoints the hosts reported, by host name.
func (l *Log) heldAnchors() map[string]heldCheckpoint {
	a := &l.anchors
	a.mu.Lock()
	defer a.mu.Unlock()
	out := make(map[string]heldCheckpoint, len(a.held))
	for h, c := range a.held {
		out[h] = c
	}
	return out
}

// checkAnchors checks the checkpoints held against the chain st describes and returns
// them by host, with the first break they show.
func (l *Log) checkAnchors(ctx context.Context, st chainState, held map[string]heldCheckpoint) ([]Anchor, *Break, error) {
	hosts := make([]string, 0, len(held))
	for h := range held {
		hosts = append(hosts, h)
	}
	sort.Strings(hosts)
	out := make([]Anchor, 0, len(hosts))
	var first *Break
	for _, h := range hosts {
		anc, err := l.checkAnchor(ctx, st, h, held[h], false)
		if err != nil {
			return nil, nil, err
		}
		out = append(out, anc)
		if anc.Status == AnchorBroken && first == nil {
			problem := ProblemCheckpoint
			if anc.ID > st.HeadID {
				problem = ProblemCut
			}
			first = &Break{ID: anc.ID, Problem: problem, Detail: anc.Detail}
		}
	}
	return out, first, nil
}

// checkAnchor checks one host's checkpoint against the chain st describes; with recent,
// a hash of the checkpoint's record read within recordRecheck will do.
func (l *Log) checkAnchor(ctx context.Context, st chainState, host string, h heldCheckpoint, recent bool) (Anchor, error) {
	cp := h.cp
	a := Anchor{Host: host, ID: cp.ID, Hash: cp.Hash, Signed: cp.Time, Reported: h.reported, Status: AnchorHolds}
	which := fmt.Sprintf("host %s holds the center's checkpoint of record %d (hash %s, signed %s)", host, cp.ID, short(cp.Hash),
		cp.Time.UTC().Format(time.RFC3339))
	switch {
	case h.invalid != nil:
		a.Status, a.Detail = AnchorInvalid, fmt.Sprintf("host %s reports a checkpoint of record %d that is not the center's (%v); it is ignored", host, cp.ID, h.invalid)
		return a, nil
	case cp.ID < st.AnchorID:
		a.Status, a.Detail = AnchorTrimmed, fmt.Sprintf("%s; retention has removed that record since", which)
		return a, nil
	case cp.ID == st.AnchorID:
		if cp.Hash != st.AnchorHash {
			a.Status, a.Detail = AnchorBroken, fmt.Sprintf("%s, but the chain's anchor, record %d, has hash %s: the trail was rewritten", which, cp.ID, short(st.AnchorHash))
		}
		return a, nil
	case cp.ID > st.HeadID:
		a.Status, a.Detail = AnchorBroken, fmt.Sprintf("%s, but the chain ends at record %d: the chain was cut — the newest records were deleted and its head rewritten", which, st.HeadID)
		return a, nil
	}
	a0 := &l.anchors
	if recent {
		a0.mu.Lock()
		r, ok := a0.seen[cp.ID]
		a0.mu.Unlock()
		if ok && r.hash == cp.Hash && l.now().Sub(r.at) < recordRecheck {
			return a, nil
		}
	}
	var hash string
	var row *sql.Row
	if recent {
		row = l.hashStmt.QueryRowContext(ctx, cp.ID)
	} else {
		row = l.db.QueryRowContext(ctx, `SELECT hash FROM audit_log WHERE id = ?`, cp.ID)
	}
	err := row.Scan(&hash)
	if err == nil && hash == cp.Hash {
		a0.mu.Lock()
		if a0.seen == nil || len(a0.seen) > 1024 {
			a0.seen = map[int64]seenRecord{}
		}
		a0.seen[cp.ID] = seenRecord{hash: hash, at: l.now()}
		a0.mu.Unlock()
	}
	switch {
	case errors.Is(err, sql.ErrNoRows):
		a.Status, a.Detail = AnchorBroken, fmt.Sprintf("%s, but record %d is missing: records were deleted", which, cp.ID)
	case err != nil:
		return a, fmt.Errorf("read audit record %d to check a host's checkpoint: %w", cp.ID, err)
	case hash != cp.Hash:
		a.Status, a.Detail = AnchorBroken, fmt.Sprintf("%s, but record %d now has hash %s: records up to it were deleted or rewritten", which, cp.ID, short(hash))
	}
	return a, nil
}
