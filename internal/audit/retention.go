package audit

import (
	"context"
	"fmt"
	"time"
)

// DefaultRetention is how long records are kept unless the center is told otherwise.
const DefaultRetention = 365 * 24 * time.Hour

// TrimInterval is how often Retain trims.
const TrimInterval = 24 * time.Hour

// ParseRetention reads a retention period: a number of days (90d) or weeks (12w), a Go
// duration (720h), or "forever" (returned as a negative duration: nothing is trimmed).
func ParseRetention(s string) (time.Duration, error) {
	if s == "forever" {
		return -1, nil
	}
	d, err := parseDays(s)
	if err != nil || d <= 0 {
		return 0, fmt.Errorf("audit retention %q must be a positive period such as 90d, 12w or 720h, or forever", s)
	}
	return d, nil
}

// Trimmed is what Trim removed.
type Trimmed struct {
	// Records counts the records removed; AnchorID and AnchorHash are the last of them,
	// where the chain now starts.
	Records    int64  `json:"records"`
	AnchorID   int64  `json:"anchor_id"`
	AnchorHash string `json:"anchor_hash"`
}

// Trim removes the records written before cutoff, oldest first, and makes the last
// removed record the chain's anchor, so that what remains still verifies. It checks the
// records it is about to remove first and refuses to remove a broken part of the chain:
// that is evidence. A trim that removed records is itself recorded (audit.trim).
func (l *Log) Trim(ctx context.Context, cutoff time.Time) (Trimmed, error) {
	l.trimMu.Lock()
	defer l.trimMu.Unlock()
	st, err := readChain(ctx, l.db)
	if err != nil {
		return Trimmed{}, err
	}
	// The records to remove are a prefix of the chain: everything before the first
	// record written at or after the cutoff (all of them if there is none).
	var keepFrom int64
	err = l.db.QueryRowContext(ctx, `SELECT coalesce(min(id), ?) FROM audit_log WHERE time >= ?`,
		st.HeadID+1, cutoff.UTC().Format(timeLayout)).Scan(&keepFrom)
	if err != nil {
		return Trimmed{}, fmt.Errorf("find the audit records older than %s: %w", cutoff.Format(time.RFC3339), err)
	}
	last := keepFrom - 1
	if last <= st.AnchorID {
		return Trimmed{}, nil
	}
	w, b, err := l.walk(ctx, st.AnchorID, st.AnchorHash, last)
	if err != nil {
		return Trimmed{}, err
	}
	if b == nil && w.lastID != last {
		b = &Break{ID: w.lastID + 1, Problem: ProblemGap, Detail: fmt.Sprintf("records %d to %d are missing", w.lastID+1, last)}
	}
	if b != nil {
		return Trimmed{}, fmt.Errorf("the audit trail is broken at %v; old records are kept as evidence until this is looked into (`godwit audit verify`)", b)
	}
	t := Trimmed{Records: w.checked, AnchorID: last, AnchorHash: w.lastHash}

	if err := l.cut(ctx, t); err != nil {
		return Trimmed{}, err
	}
	params, err := encodeParams(map[string]any{"before": cutoff.UTC().Format(time.RFC3339), "records": t.Records,
		"anchor_id": t.AnchorID, "anchor_hash": t.AnchorHash})
	if err == nil {
		_, err = l.Append(ctx, Record{Actor: CenterActor, ActorKind: KindSystem, Action: "audit.trim", Outcome: Succeeded, Params: params})
	}
	if err != nil {
		return t, fmt.Errorf("trimmed %d audit records but could not record that: %w", t.Records, err)
	}
	return t, nil
}

// cut moves the anchor to t's and removes the records up to it, in one transaction.
func (l *Log) cut(ctx context.Context, t Trimmed) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	tx, err := l.db.BeginTx(ctx, nil)
	if err != nil {
		return fmt.Errorf("trim the audit trail: %w", err)
	}
	defer tx.Rollback()
	// The anchor moves first: the delete trigger lets only records at or before it go.
	if _, err := tx.ExecContext(ctx, `UPDATE audit_chain SET anchor_id = ?, anchor_hash = ?, trimmed = trimmed + ?,
		trimmed_at = ? WHERE one = 1`, t.AnchorID, t.AnchorHash, t.Records, l.now().UTC().Format(timeLayout)); err != nil {
		return fmt.Errorf("trim the audit trail: move its anchor: %w", err)
	}
	res, err := tx.ExecContext(ctx, `DELETE FROM audit_log WHERE id <= ?`, t.AnchorID)
	if err != nil {
		return fmt.Errorf("trim the audit trail: %w", err)
	}
	if n, _ := res.RowsAffected(); n != t.Records {
		return fmt.Errorf("trim the audit trail: %d records matched but %d were checked; nothing was removed, try again", n, t.Records)
	}
	if err := tx.Commit(); err != nil {
		return fmt.Errorf("trim the audit trail: %w", err)
	}
	return nil
}

// Retain trims the records older than keep now and every TrimInterval until ctx ends;
// a keep of zero or less keeps everything. The caller owns the goroutine it runs in.
func (l *Log) Retain(ctx context.Context, keep time.Duration) {
	if keep <= 0 {
		return
	}
	tick := time.NewTicker(TrimInterval)
	defer tick.Stop()
	for {
		t, err := l.Trim(ctx, l.now().Add(-keep))
		switch {
		case err != nil && ctx.Err() == nil:
			l.log.Error("audit trail not trimmed", "err", err)
		case t.Records > 0:
			l.log.Info("audit trail trimmed", "records", t.Records, "anchor", t.AnchorID, "retention", keep)
		}
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
	}
}
