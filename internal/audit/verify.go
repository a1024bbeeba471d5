package audit

import (
	"context"
	"fmt"
)

// Problems Verify can find.
const (
	ProblemGap          = "gap"              // a record is missing from the ids
	ProblemHashMismatch = "hash_mismatch"    // a record's fields do not match its hash
	ProblemPrevLink     = "prev_link_broken" // a record's prev_hash is not its predecessor's hash
	ProblemOrder        = "out_of_order"     // a record's id is not after its predecessor's
	ProblemHead         = "head_mismatch"    // the chain ends before, or elsewhere than, its recorded head
)

// Break is the first place where the chain does not hold.
type Break struct {
	// ID is the record concerned: the changed one, the first missing one, the one whose
	// link is broken.
	ID      int64  `json:"id"`
	Problem string `json:"problem"`
	Detail  string `json:"detail"`
}

// Error describes the break as a sentence, so that a Break can be returned as an error.
func (b *Break) Error() string {
	return fmt.Sprintf("record %d: %s: %s", b.ID, b.Problem, b.Detail)
}

// Verification is what Verify found.
type Verification struct {
	OK bool `json:"ok"`
	// Checked counts the records checked; FirstID and LastID are the first and last of
	// them (0 when there are none).
	Checked int64 `json:"checked"`
	FirstID int64 `json:"first_id"`
	LastID  int64 `json:"last_id"`
	// AnchorID and AnchorHash are where the chain starts: the last record removed by
	// retention, or 0 and GenesisHash.
	AnchorID   int64  `json:"anchor_id"`
	AnchorHash string `json:"anchor_hash"`
	// Trimmed counts the records retention has removed.
	Trimmed int64 `json:"trimmed"`
	// HeadID and HeadHash are the chain's last record as the center recorded it.
	// Keeping HeadHash elsewhere lets a later Verify show the chain was not rewritten.
	HeadID   int64  `json:"head_id"`
	HeadHash string `json:"head_hash"`
	// Anchors are the checkpoints the hosts hold (reported since the center started),
	// each as checked against the chain; one that shows records deleted or rewritten is
	// a break (ProblemCut, ProblemCheckpoint).
	Anchors []Anchor `json:"anchors"`
	// Broken is the first break, when not OK: in the chain itself, else the first
	// checkpoint the chain does not hold.
	Broken *Break `json:"broken,omitempty"`
}

// Chain checks records one after another, from an anchor. It does no I/O, so it
// verifies records from the database and from an export alike.
type Chain struct {
	nextID   int64
	prevHash string
	prevID   int64
}

// NewChain starts a check after the record anchorID whose hash is anchorHash (0 and
// GenesisHash for a chain that starts at its beginning).
func NewChain(anchorID int64, anchorHash string) *Chain {
	return &Chain{nextID: anchorID + 1, prevHash: anchorHash, prevID: anchorID}
}

// Next checks the next record and returns the break it shows, if any. After a break the
// chain carries on from that record, so further calls report further breaks.
func (c *Chain) Next(r Record) *Break {
	defer func() { c.nextID, c.prevHash, c.prevID = r.ID+1, r.Hash, r.ID }()
	after := "the anchor"
	if c.prevID > 0 {
		after = fmt.Sprintf("record %d", c.prevID)
	}
	switch {
	case r.ID < c.nextID:
		return &Break{ID: r.ID, Problem: ProblemOrder,
			Detail: fmt.Sprintf("record %d comes after %s; ids must rise one by one", r.ID, after)}
	case r.ID > c.nextID:
		missing := fmt.Sprintf("record %d is missing", c.nextID)
		if r.ID > c.nextID+1 {
			missing = fmt.Sprintf("records %d to %d are missing", c.nextID, r.ID-1)
		}
		return &Break{ID: c.nextID, Problem: ProblemGap,
			Detail: fmt.Sprintf("gap in ids: %s (%s is followed by record %d); records were deleted", missing, after, r.ID)}
	}
	if h := r.ComputeHash(); h != r.Hash {
		return &Break{ID: r.ID, Problem: ProblemHashMismatch,
			Detail: fmt.Sprintf("hash mismatch: the record's fields hash to %s, not to its stored hash %s; it was changed after it was written", short(h), short(r.Hash))}
	}
	if r.PrevHash != c.prevHash {
		return &Break{ID: r.ID, Problem: ProblemPrevLink,
			Detail: fmt.Sprintf("prev link broken: its prev_hash %s is not the hash %s of %s; that record was rewritten or replaced", short(r.PrevHash), short(c.prevHash), after)}
	}
	return nil
}

func short(h string) string {
	if len(h) > 12 {
		return h[:12] + "…"
	}
	return h
}

// Verify walks the chain from its anchor to its head and reports the first break, then
// checks the checkpoints the hosts hold against it. Records appended while it runs are
// not checked; Trim waits for it.
func (l *Log) Verify(ctx context.Context) (Verification, error) {
	l.trimMu.RLock()
	defer l.trimMu.RUnlock()
	// The checkpoints first: each was signed before the head read next, so none may be
	// ahead of it.
	held := l.heldAnchors()
	st, err := readChain(ctx, l.db)
	if err != nil {
		return Verification{}, err
	}
	v := Verification{AnchorID: st.AnchorID, AnchorHash: st.AnchorHash, Trimmed: st.Trimmed, HeadID: st.HeadID, HeadHash: st.HeadHash}
	w, b, err := l.walk(ctx, st.AnchorID, st.AnchorHash, st.HeadID)
	v.Checked, v.FirstID, v.LastID = w.checked, w.firstID, w.lastID
	if err != nil {
		return v, err
	}
	if b == nil {
		b = checkHead(st, w)
	}
	anchors, ab, err := l.checkAnchors(ctx, st, held)
	if err != nil {
		return v, err
	}
	if b == nil {
		b = ab
	}
	v.Anchors = anchors
	v.Broken, v.OK = b, b == nil
	return v, nil
}

// checkHead compares where the walk ended with the chain's recorded head.
func checkHead(st chainState, w walked) *Break {
	lastID, lastHash := w.lastID, w.lastHash
	if w.checked == 0 {
		lastID, lastHash = st.AnchorID, st.AnchorHash
	}
	switch {
	case lastID < st.HeadID:
		return &Break{ID: lastID + 1, Problem: ProblemHead,
			Detail: fmt.Sprintf("the chain ends at record %d but its recorded head is record %d (%s); the newest records were deleted", lastID, st.HeadID, short(st.HeadHash))}
	case lastHash != st.HeadHash:
		return &Break{ID: lastID, Problem: ProblemHead,
			Detail: fmt.Sprintf("the chain's last record %d has hash %s but its recorded head is %s; the newest records were replaced", lastID, short(lastHash), short(st.HeadHash))}
	}
	return nil
}

// walked is how far a walk went.
type walked struct {
	checked, firstID, lastID int64
	lastHash                 string
}

// walk checks the records after anchorID up to and including upTo, a page at a time,
// and returns how far it went and the first break.
func (l *Log) walk(ctx context.Context, anchorID int64, anchorHash string, upTo int64) (walked, *Break, error) {
	var w walked
	chain := NewChain(anchorID, anchorHash)
	// Start below the anchor, so that a record left at or before it is reported.
	after := int64(-1) << 62
	for {
		rows, err := l.db.QueryContext(ctx, `SELECT `+recordCols+` FROM audit_log WHERE id > ? AND id <= ? ORDER BY id LIMIT 1000`, after, upTo)
		if err != nil {
			return w, nil, fmt.Errorf("read audit records to verify: %w", err)
		}
		var page []Record
		for rows.Next() {
			r, err := scanRecord(rows)
			if err != nil {
				rows.Close()
				return w, nil, fmt.Errorf("read audit records to verify: %w", err)
			}
			page = append(page, r)
		}
		rows.Close()
		if err := rows.Err(); err != nil {
			return w, nil, fmt.Errorf("read audit records to verify: %w", err)
		}
		for _, r := range page {
			if w.checked == 0 {
				w.firstID = r.ID
			}
			w.checked++
			w.lastID, w.lastHash = r.ID, r.Hash
			if b := chain.Next(r); b != nil {
				return w, b, nil
			}
			after = r.ID
		}
		if len(page) < 1000 {
			return w, nil, nil
		}
	}
}
