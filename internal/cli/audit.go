package cli

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/godwit/godwit/internal/api"
	"github.com/godwit/godwit/internal/audit"
)

// exitAuditBroken is the exit code of `audit verify` when the chain is broken, so that
// scripts can tell it from a verification that could not run (1).
const exitAuditBroken = 2

func newAuditCmd(e *env) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "audit",
		Short: "Read, export and verify the audit trail: who changed what, when, from where",
		Long: `The center records every state-changing API request (refused ones too) and every
action it takes on its own, such as recording a migration's outcome, in an append-only
trail. Each record carries the hash of the one before it; ` + "`godwit audit verify`" + ` checks
the whole chain and names the first record that was changed, removed or rewritten.`,
	}
	cmd.AddCommand(newAuditListCmd(e), newAuditExportCmd(e), newAuditVerifyCmd(e))
	return cmd
}

// auditFilter holds the filter flags list and export share.
type auditFilter struct {
	since, until, user, vm, host, action string
	limit                                int
}

func (f *auditFilter) flags(cmd *cobra.Command, limit int, limitHelp string) {
	fl := cmd.Flags()
	fl.StringVar(&f.since, "since", "", "only records from this time on: RFC 3339, a date (2025-01-31) or an age (24h, 7d)")
	fl.StringVar(&f.until, "until", "", "only records before this time (same forms as --since)")
	fl.StringVar(&f.user, "user", "", "only what this user did, or the center did on their behalf")
	fl.StringVar(&f.vm, "vm", "", "only records about this VM (its requests and its migrations)")
	fl.StringVar(&f.host, "host", "", "only records that name this host (placement, migration source or destination)")
	fl.StringVar(&f.action, "action", "", "only this action (vm.create, migration.finish, …), or a prefix ending in * (vm.*)")
	fl.IntVar(&f.limit, "limit", limit, limitHelp)
}

func (f *auditFilter) query() url.Values {
	q := url.Values{}
	for k, v := range map[string]string{"since": f.since, "until": f.until, "user": f.user, "vm": f.vm, "host": f.host, "action": f.action} {
		if v != "" {
			q.Set(k, v)
		}
	}
	return q
}

func newAuditListCmd(e *env) *cobra.Command {
	var f auditFilter
	cmd := &cobra.Command{
		Use:   "list",
		Short: "List audit records, newest first",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if f.limit < 1 || f.limit > audit.MaxLimit {
				return fmt.Errorf("--limit must be between 1 and %d; `godwit audit export` writes every record", audit.MaxLimit)
			}
			c, err := e.client()
			if err != nil {
				return err
			}
			q := f.query()
			q.Set("limit", strconv.Itoa(f.limit))
			var recs []audit.Record
			if err := c.Do(cmd.Context(), http.MethodGet, "/api/v1/audit?"+q.Encode(), nil, &recs); err != nil {
				return fmt.Errorf("list audit records: %w", err)
			}
			if e.output == "json" {
				return printJSON(e.out, recs)
			}
			t := newTable("ID", "TIME", "ACTOR", "FROM", "ACTION", "TARGET", "OUTCOME", "DETAIL")
			for _, r := range recs {
				t.row(strconv.FormatInt(r.ID, 10), r.Time.UTC().Format(time.RFC3339), actorStr(r), orDash(r.From),
					r.Action, orDash(r.Target), r.Outcome, auditDetail(r))
			}
			return t.print(e.out)
		},
	}
	f.flags(cmd, 50, "the most records to show (newest first)")
	return cmd
}

func actorStr(r audit.Record) string {
	if r.OnBehalfOf != "" {
		return r.Actor + " for " + r.OnBehalfOf
	}
	return r.Actor
}

// auditDetail is a record's last column: its error, a migration's figures, or its params.
func auditDetail(r audit.Record) string {
	if r.Error != "" {
		return clip(r.Error, 100)
	}
	var parts []string
	if r.DurationMS != nil {
		parts = append(parts, fmt.Sprintf("took %.1f s", *r.DurationMS/1000))
	}
	if r.DowntimeMS != nil {
		parts = append(parts, fmt.Sprintf("downtime %.1f ms", *r.DowntimeMS))
	}
	if r.Bytes != nil {
		parts = append(parts, "sent "+bytesStr(float64(*r.Bytes)))
	}
	if len(parts) > 0 {
		return strings.Join(parts, ", ")
	}
	var b bytes.Buffer
	if json.Compact(&b, r.Params) != nil || b.String() == "{}" {
		return "-"
	}
	return clip(b.String(), 100)
}

func clip(s string, n int) string {
	if r := []rune(s); len(r) > n {
		return string(r[:n-1]) + "…"
	}
	return s
}

func newAuditExportCmd(e *env) *cobra.Command {
	var f auditFilter
	var format string
	cmd := &cobra.Command{
		Use:   "export --format jsonl|csv [> FILE]",
		Short: "Write audit records, oldest first, as JSON lines or CSV",
		Long: `Write the audit records the filters select, oldest first, to standard output: one
JSON object per line (jsonl) or CSV with a header line (csv, params as JSON text). An
export of the whole trail carries everything needed to check its hash chain elsewhere.
The same is served at GET /api/v1/audit/export?format=jsonl|csv.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if f.limit < 0 {
				return errors.New("--limit must not be negative (0: every record)")
			}
			enc, err := audit.NewEncoder(e.out, format)
			if err != nil {
				return err
			}
			c, err := e.client()
			if err != nil {
				return err
			}
			if err := exportPages(cmd.Context(), c, f, enc); err != nil {
				_ = enc.Flush()
				return fmt.Errorf("export audit records: %w", err)
			}
			return enc.Flush()
		},
	}
	cmd.Flags().StringVar(&format, "format", audit.FormatJSONL, "jsonl or csv")
	f.flags(cmd, 0, "the most records to write, oldest first (0: all)")
	return cmd
}

// exportPages reads the selected records a page at a time, oldest first, and encodes
// them, so that an export of any size streams.
func exportPages(ctx context.Context, c *api.Client, f auditFilter, enc audit.Encoder) error {
	const page = 1000
	var after int64
	n := 0
	for {
		want := page
		if f.limit > 0 {
			want = min(page, f.limit-n)
		}
		q := f.query()
		q.Set("order", "oldest")
		q.Set("limit", strconv.Itoa(want))
		q.Set("after", strconv.FormatInt(after, 10))
		var recs []audit.Record
		if err := c.Do(ctx, http.MethodGet, "/api/v1/audit?"+q.Encode(), nil, &recs); err != nil {
			return err
		}
		for _, r := range recs {
			if err := enc.Encode(r); err != nil {
				return err
			}
			after = r.ID
		}
		n += len(recs)
		if len(recs) < want || f.limit > 0 && n >= f.limit {
			return nil
		}
	}
}

func newAuditVerifyCmd(e *env) *cobra.Command {
	return &cobra.Command{
		Use:   "verify",
		Short: "Check the audit trail's hash chain and name the first broken record",
		Long: `Walk the audit trail from its start (or from the last record retention removed) to
its newest record, recomputing each record's hash and checking that it links to the one
before. The first record that was changed (hash mismatch), removed (gap in ids) or
rewritten (prev link broken) is named. Then the checkpoints the hosts hold (the center's
signed word on an earlier head) are checked: a checkpoint whose record is gone or differs
means the newest records were deleted and the head rewritten (the chain was cut), and the
host and checkpoint are named. Exit status: 0 intact, 2 broken, 1 not checked.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			c, err := e.client()
			if err != nil {
				return err
			}
			var v audit.Verification
			if err := c.Do(cmd.Context(), http.MethodGet, "/api/v1/audit/verify", nil, &v); err != nil {
				return fmt.Errorf("verify the audit trail: %w", err)
			}
			if e.output == "json" {
				if err := printJSON(e.out, v); err != nil {
					return err
				}
			} else {
				printVerification(e, v)
			}
			if !v.OK {
				id := int64(0)
				if v.Broken != nil {
					id = v.Broken.ID
				}
				return &exitError{code: exitAuditBroken, err: fmt.Errorf("the audit trail is broken at record %d; "+
					"keep the database as it is and find out who changed it", id)}
			}
			return nil
		},
	}
}

func printVerification(e *env, v audit.Verification) {
	from := "from its first record"
	if v.AnchorID > 0 {
		from = fmt.Sprintf("after record %d, the last of %d removed by retention (anchor hash %s)", v.AnchorID, v.Trimmed, v.AnchorHash)
	}
	if !v.OK && v.Broken != nil {
		fmt.Fprintf(e.out, "audit trail BROKEN at record %d: %s\n", v.Broken.ID, v.Broken.Detail)
		fmt.Fprintf(e.out, "checked %d records %s\n", v.Checked, from)
		return
	}
	span := "no records"
	if v.Checked > 0 {
		span = fmt.Sprintf("records %d to %d", v.FirstID, v.LastID)
	}
	fmt.Fprintf(e.out, "audit trail intact: %d records checked (%s), %s\n", v.Checked, span, from)
	fmt.Fprintf(e.out, "head: record %d, hash %s\n", v.HeadID, v.HeadHash)
	printAnchors(e, v.Anchors)
}

// printAnchors says which hosts' checkpoints anchor the chain's head.
func printAnchors(e *env, anchors []audit.Anchor) {
	var holds []string
	for _, a := range anchors {
		switch a.Status {
		case audit.AnchorHolds:
			holds = append(holds, fmt.Sprintf("%s at record %d", a.Host, a.ID))
		case audit.AnchorBroken:
		default:
			fmt.Fprintf(e.out, "checkpoint %s: %s\n", a.Status, a.Detail)
		}
	}
	if len(holds) == 0 {
		fmt.Fprintln(e.out, "anchored by no host's checkpoint yet (hosts report theirs with each heartbeat)")
		return
	}
	fmt.Fprintf(e.out, "anchored by the checkpoints of %s\n", strings.Join(holds, ", "))
}

// retentionFlag is the center's --audit-retention: 90d, 12w, 720h or forever.
type retentionFlag struct{ d *time.Duration }

// newRetentionFlag returns the flag for d, which it sets to audit.DefaultRetention if it
// is zero.
func newRetentionFlag(d *time.Duration) *retentionFlag {
	if *d == 0 {
		*d = audit.DefaultRetention
	}
	return &retentionFlag{d: d}
}

func (f *retentionFlag) String() string {
	switch d := *f.d; {
	case d < 0:
		return "forever"
	case d%(24*time.Hour) == 0:
		return fmt.Sprintf("%dd", d/(24*time.Hour))
	default:
		return d.String()
	}
}

func (f *retentionFlag) Set(s string) error {
	d, err := audit.ParseRetention(s)
	if err != nil {
		return err
	}
	*f.d = d
	return nil
}

func (f *retentionFlag) Type() string { return "period" }
