package audit

import (
	"bytes"
	"context"
	"database/sql"
	"encoding/csv"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/godwit/godwit/internal/api"

	_ "modernc.org/sqlite"
)

// clock is a settable test clock.
type clock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *clock) now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *clock) add(d time.Duration) {
	c.mu.Lock()
	c.t = c.t.Add(d)
	c.mu.Unlock()
}

// openTest opens a trail in a fresh database file, the way the center does, and returns
// the database too so tests can tamper with it.
func openTest(t *testing.T) (*Log, *sql.DB, *clock) {
	t.Helper()
	path := filepath.Join(t.TempDir(), "godwit.db")
	db, err := sql.Open("sqlite", "file:"+path+"?_pragma=journal_mode(WAL)&_pragma=busy_timeout(5000)")
	if err != nil {
		t.Fatal(err)
	}
	db.SetMaxOpenConns(1)
	t.Cleanup(func() { db.Close() })
	clk := &clock{t: time.Date(2025, 3, 1, 12, 0, 0, 0, time.UTC)}
	l, err := Open(context.Background(), db, Options{Now: clk.now, Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		t.Fatal(err)
	}
	return l, db, clk
}

func params(t *testing.T, p map[string]any) json.RawMessage {
	t.Helper()
	b, err := encodeParams(p)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// appendN writes n request records, one a minute, on VMs vm-0, vm-1, vm-2.
func appendN(t *testing.T, l *Log, clk *clock, n int) []Record {
	t.Helper()
	var out []Record
	for i := 0; i < n; i++ {
		clk.add(time.Minute)
		vm := fmt.Sprintf("vm-%d", i%3)
		r, err := l.Append(context.Background(), Record{Actor: "alice", ActorKind: KindUser, From: Local,
			Action: "vm.start", Target: vm, Params: params(t, map[string]any{"host": "host-1"}), Outcome: Succeeded})
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, r)
	}
	return out
}

func verify(t *testing.T, l *Log) Verification {
	t.Helper()
	v, err := l.Verify(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	return v
}

func wantBreak(t *testing.T, v Verification, id int64, problem string) {
	t.Helper()
	if v.OK || v.Broken == nil || v.Broken.ID != id || v.Broken.Problem != problem {
		t.Fatalf("verify: %+v (broken: %+v); want record %d named with %s", v, v.Broken, id, problem)
	}
	t.Logf("verify names record %d: %s", v.Broken.ID, v.Broken.Detail)
}

// exec runs SQL as someone with the database file would, triggers dropped first.
func tamper(t *testing.T, db *sql.DB, q string, args ...any) {
	t.Helper()
	for _, s := range []string{`DROP TRIGGER IF EXISTS audit_log_no_update`, `DROP TRIGGER IF EXISTS audit_log_no_delete`, q} {
		if _, err := db.Exec(s, args...); err != nil && s == q {
			t.Fatalf("%s: %v", q, err)
		}
	}
}

func TestChainLinksRecords(t *testing.T) {
	l, _, clk := openTest(t)
	if v := verify(t, l); !v.OK || v.Checked != 0 || v.HeadHash != GenesisHash {
		t.Fatalf("empty trail: %+v", v)
	}
	recs := appendN(t, l, clk, 5)
	if recs[0].ID != 1 || recs[0].PrevHash != GenesisHash {
		t.Fatalf("first record %+v; want id 1 linked to the genesis hash", recs[0])
	}
	for i := 1; i < len(recs); i++ {
		if recs[i].ID != recs[i-1].ID+1 || recs[i].PrevHash != recs[i-1].Hash || recs[i].Hash != recs[i].ComputeHash() {
			t.Fatalf("record %d is not chained to %d: %+v", recs[i].ID, recs[i-1].ID, recs[i])
		}
	}
	v := verify(t, l)
	if !v.OK || v.Checked != 5 || v.FirstID != 1 || v.LastID != 5 || v.HeadHash != recs[4].Hash {
		t.Fatalf("verify: %+v", v)
	}
	if _, err := l.Append(context.Background(), Record{Actor: "alice", ActorKind: KindUser, Action: "vm.start",
		Outcome: Succeeded, Params: json.RawMessage(`[1]`)}); err == nil {
		t.Fatal("params that are not a JSON object were accepted")
	}
}

func TestCanonicalEncodingIsStable(t *testing.T) {
	// A fixed record must always hash the same: anyone verifying an export relies on it.
	d, b := 1234.5, uint64(987654321)
	r := Record{ID: 7, Time: time.Date(2025, 3, 1, 12, 0, 0, 1000, time.UTC), Actor: "center", ActorKind: KindAutomation,
		OnBehalfOf: "alice", Action: "migration.finish", Target: "ab12cd34", Params: json.RawMessage(`{"vm":"web-1"}`),
		Outcome: Succeeded, DurationMS: &d, Bytes: &b, PrevHash: GenesisHash}
	want := "14:godwit-audit/1,1:7,27:2025-03-01T12:00:00.000001Z,6:center,10:automation,5:alice,0:,16:migration.finish," +
		"8:ab12cd34,14:{\"vm\":\"web-1\"},9:succeeded,0:,6:1234.5,0:,9:987654321,64:" + GenesisHash + ","
	if got := string(r.Canonical()); got != want {
		t.Fatalf("canonical encoding\n got %s\nwant %s", got, want)
	}
}

func TestTriggersKeepTheTableAppendOnly(t *testing.T) {
	l, db, clk := openTest(t)
	appendN(t, l, clk, 3)
	if _, err := db.Exec(`UPDATE audit_log SET outcome = 'failed' WHERE id = 2`); err == nil || !strings.Contains(err.Error(), "cannot be changed") {
		t.Fatalf("UPDATE of a record: %v; want it refused", err)
	}
	if _, err := db.Exec(`DELETE FROM audit_log WHERE id = 2`); err == nil || !strings.Contains(err.Error(), "retention") {
		t.Fatalf("DELETE of a record: %v; want it refused", err)
	}
	if v := verify(t, l); !v.OK {
		t.Fatalf("verify after refused changes: %+v", v.Broken)
	}
}

func TestVerifyNamesAChangedRecord(t *testing.T) {
	for _, c := range []struct {
		name, q string
	}{
		{"params", `UPDATE audit_log SET params = '{"host":"host-9"}' WHERE id = ?`},
		{"outcome", `UPDATE audit_log SET outcome = 'failed', error = 'made up' WHERE id = ?`},
		{"actor", `UPDATE audit_log SET actor = 'mallory' WHERE id = ?`},
		{"time", `UPDATE audit_log SET time = '2025-03-01T12:03:00.000001Z' WHERE id = ?`},
	} {
		t.Run(c.name, func(t *testing.T) {
			l, db, clk := openTest(t)
			appendN(t, l, clk, 8)
			if v := verify(t, l); !v.OK {
				t.Fatalf("verify before tampering: %+v", v.Broken)
			}
			tamper(t, db, c.q, 5)
			wantBreak(t, verify(t, l), 5, ProblemHashMismatch)
		})
	}
}

func TestVerifyNamesADeletedRecord(t *testing.T) {
	l, db, clk := openTest(t)
	appendN(t, l, clk, 8)
	tamper(t, db, `DELETE FROM audit_log WHERE id = 4`)
	v := verify(t, l)
	wantBreak(t, v, 4, ProblemGap)
	if !strings.Contains(v.Broken.Detail, "record 4 is missing") {
		t.Fatalf("gap detail %q does not name the missing record", v.Broken.Detail)
	}
	tamper(t, db, `DELETE FROM audit_log WHERE id IN (5, 6)`)
	if v := verify(t, l); !strings.Contains(v.Broken.Detail, "records 4 to 6 are missing") {
		t.Fatalf("gap detail %q does not name the missing records", v.Broken.Detail)
	}
}

func TestVerifyNamesTheSuccessorOfARewrittenRecord(t *testing.T) {
	// Someone who changes a record and recomputes its hash breaks the next record's link.
	l, db, clk := openTest(t)
	recs := appendN(t, l, clk, 8)
	r := recs[4]
	r.Outcome = Failed
	tamper(t, db, `UPDATE audit_log SET outcome = ?, hash = ? WHERE id = ?`, r.Outcome, r.ComputeHash(), r.ID)
	wantBreak(t, verify(t, l), 6, ProblemPrevLink)
}

func TestVerifyNoticesTheNewestRecordsGone(t *testing.T) {
	l, db, clk := openTest(t)
	appendN(t, l, clk, 8)
	tamper(t, db, `DELETE FROM audit_log WHERE id > 6`)
	wantBreak(t, verify(t, l), 7, ProblemHead)
}

func TestTrimKeepsTheChainVerifiable(t *testing.T) {
	l, db, clk := openTest(t)
	ctx := context.Background()
	recs := appendN(t, l, clk, 10) // 12:01 … 12:10
	cut := recs[6].Time            // keep records 7 to 10
	tr, err := l.Trim(ctx, cut)
	if err != nil {
		t.Fatal(err)
	}
	if tr.Records != 6 || tr.AnchorID != 6 || tr.AnchorHash != recs[5].Hash {
		t.Fatalf("trim: %+v; want 6 records removed and record 6 as the anchor", tr)
	}
	v := verify(t, l)
	if !v.OK || v.AnchorID != 6 || v.FirstID != 7 || v.LastID != 11 || v.Trimmed != 6 {
		t.Fatalf("verify after trim: %+v (broken %+v); want records 7 to 11 (11: the trim's own record) from anchor 6", v, v.Broken)
	}
	trims, err := l.List(ctx, Filter{Action: "audit.trim"})
	if err != nil || len(trims) != 1 || trims[0].ActorKind != KindSystem || !strings.Contains(string(trims[0].Params), `"records":6`) {
		t.Fatalf("the trim's record: %+v %v", trims, err)
	}
	// Nothing more to trim at the same cutoff; appends go on from the head.
	if tr, err := l.Trim(ctx, cut); err != nil || tr.Records != 0 {
		t.Fatalf("second trim: %+v %v", tr, err)
	}
	appendN(t, l, clk, 2)
	if v := verify(t, l); !v.OK || v.LastID != 13 {
		t.Fatalf("verify after more appends: %+v %+v", v, v.Broken)
	}
	// Tampering after a trim is still found.
	tamper(t, db, `UPDATE audit_log SET params = '{}' WHERE id = 8`)
	wantBreak(t, verify(t, l), 8, ProblemHashMismatch)
}

func TestTrimEverythingThenAppend(t *testing.T) {
	l, _, clk := openTest(t)
	ctx := context.Background()
	appendN(t, l, clk, 4)
	clk.add(time.Hour)
	if tr, err := l.Trim(ctx, clk.now()); err != nil || tr.Records != 4 {
		t.Fatalf("trim all: %+v %v", tr, err)
	}
	// The trim's own record is all that is left.
	if v := verify(t, l); !v.OK || v.Checked != 1 || v.FirstID != 5 {
		t.Fatalf("verify: %+v %+v", v, v.Broken)
	}
	clk.add(time.Hour)
	if tr, err := l.Trim(ctx, clk.now()); err != nil || tr.Records != 1 {
		t.Fatalf("trim the trim record: %+v %v", tr, err)
	}
	if v := verify(t, l); !v.OK || v.FirstID != 6 {
		t.Fatalf("verify: %+v %+v", v, v.Broken)
	}
}

func TestTrimKeepsABrokenPartAsEvidence(t *testing.T) {
	l, db, clk := openTest(t)
	appendN(t, l, clk, 6)
	tamper(t, db, `UPDATE audit_log SET actor = 'mallory' WHERE id = 2`)
	clk.add(time.Hour)
	_, err := l.Trim(context.Background(), clk.now())
	if err == nil || !strings.Contains(err.Error(), "record 2") {
		t.Fatalf("trim over a broken record: %v; want a refusal naming record 2", err)
	}
	var n int
	_ = db.QueryRow(`SELECT count(*) FROM audit_log`).Scan(&n)
	if n != 6 {
		t.Fatalf("%d records left after a refused trim, want all 6", n)
	}
}

func TestRetainTrimsAtStart(t *testing.T) {
	l, _, clk := openTest(t)
	appendN(t, l, clk, 3)
	clk.add(48 * time.Hour)
	appendN(t, l, clk, 2)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); l.Retain(ctx, 24*time.Hour) }()
	deadline := time.Now().Add(5 * time.Second)
	for {
		if v := verify(t, l); v.AnchorID == 3 {
			if !v.OK {
				t.Fatalf("verify after retention: %+v", v.Broken)
			}
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("Retain did not trim the records older than a day")
		}
		time.Sleep(10 * time.Millisecond)
	}
	cancel()
	<-done
}

func TestListFilters(t *testing.T) {
	l, _, clk := openTest(t)
	ctx := context.Background()
	add := func(r Record, p map[string]any) Record {
		t.Helper()
		clk.add(time.Minute)
		r.Params = params(t, p)
		if r.ActorKind == "" {
			r.ActorKind = KindUser
		}
		out, err := l.Append(ctx, r)
		if err != nil {
			t.Fatal(err)
		}
		return out
	}
	create := add(Record{Actor: "alice", Action: "vm.create", Target: "web-1", Outcome: Succeeded}, map[string]any{"host": "host-1"})
	add(Record{Actor: "bob", Action: "vm.create", Target: "db-1", Outcome: Refused, Error: "memory"}, map[string]any{"memory_mib": 0})
	add(Record{Actor: "alice", Action: "vm.migrate", Target: "web-1", Outcome: Succeeded},
		map[string]any{"source": "host-1", "destination": "host-2", "migration": "m1"})
	fin := add(Record{Actor: CenterActor, ActorKind: KindAutomation, OnBehalfOf: "alice", Action: "migration.finish",
		Target: "m1", Outcome: Succeeded}, map[string]any{"vm": "web-1", "source": "host-1", "destination": "host-2"})

	ids := func(f Filter) []int64 {
		t.Helper()
		recs, err := l.List(ctx, f)
		if err != nil {
			t.Fatal(err)
		}
		var out []int64
		for _, r := range recs {
			out = append(out, r.ID)
		}
		return out
	}
	for _, c := range []struct {
		name string
		f    Filter
		want string
	}{
		{"all, newest first", Filter{}, "[4 3 2 1]"},
		{"oldest first", Filter{Oldest: true}, "[1 2 3 4]"},
		{"after", Filter{Oldest: true, After: 2}, "[3 4]"},
		{"limit", Filter{Limit: 2}, "[4 3]"},
		{"vm", Filter{VM: "web-1"}, "[4 3 1]"},
		{"host", Filter{Host: "host-2"}, "[4 3]"},
		{"host by placement", Filter{Host: "host-1"}, "[4 3 1]"},
		{"user, including on behalf", Filter{User: "alice"}, "[4 3 1]"},
		{"user", Filter{User: "bob"}, "[2]"},
		{"action", Filter{Action: "vm.create"}, "[2 1]"},
		{"action prefix", Filter{Action: "migration.*"}, "[4]"},
		{"since", Filter{Since: fin.Time}, "[4]"},
		{"until", Filter{Until: create.Time.Add(time.Second)}, "[1]"},
	} {
		if got := fmt.Sprint(ids(c.f)); got != c.want {
			t.Errorf("%s: got ids %s, want %s", c.name, got, c.want)
		}
	}
}

func TestFilterFromQuery(t *testing.T) {
	now := time.Date(2025, 3, 10, 0, 0, 0, 0, time.UTC)
	f, err := FilterFromQuery(map[string][]string{"since": {"7d"}, "until": {"2025-03-09"}, "vm": {"web-1"},
		"limit": {"5"}, "order": {"oldest"}, "after": {"12"}}, now)
	if err != nil {
		t.Fatal(err)
	}
	if !f.Since.Equal(now.Add(-7*24*time.Hour)) || !f.Until.Equal(time.Date(2025, 3, 9, 0, 0, 0, 0, time.UTC)) ||
		f.VM != "web-1" || f.Limit != 5 || !f.Oldest || f.After != 12 {
		t.Fatalf("filter %+v", f)
	}
	back, err := FilterFromQuery(f.Query(), now)
	if err != nil || !back.Since.Equal(f.Since) || back.After != 12 {
		t.Fatalf("round trip: %+v %v", back, err)
	}
	for _, bad := range []map[string][]string{{"since": {"yesterday"}}, {"limit": {"-1"}}, {"order": {"up"}}, {"after": {"x"}}} {
		if _, err := FilterFromQuery(bad, now); err == nil {
			t.Errorf("query %v accepted", bad)
		}
	}
}

func TestParseRetention(t *testing.T) {
	for in, want := range map[string]time.Duration{"90d": 90 * 24 * time.Hour, "2w": 14 * 24 * time.Hour, "36h": 36 * time.Hour, "forever": -1} {
		if got, err := ParseRetention(in); err != nil || got != want {
			t.Errorf("ParseRetention(%q) = %v, %v; want %v", in, got, err, want)
		}
	}
	for _, bad := range []string{"", "0", "-3d", "lots", "1.5d"} {
		if _, err := ParseRetention(bad); err == nil {
			t.Errorf("ParseRetention(%q) accepted", bad)
		}
	}
}

func TestExportsCarryWhatTheHashCovers(t *testing.T) {
	l, _, clk := openTest(t)
	ctx := context.Background()
	appendN(t, l, clk, 3)
	d, b := 2500.25, uint64(1<<30)
	_, err := l.Append(ctx, Record{Actor: CenterActor, ActorKind: KindAutomation, OnBehalfOf: "alice", Action: "migration.finish",
		Target: "m1", Outcome: Failed, Error: `cancelled: "<user>" & co`, DurationMS: &d, DowntimeMS: &d, Bytes: &b,
		Params: params(t, map[string]any{"vm": "web-<1>"})})
	if err != nil {
		t.Fatal(err)
	}

	var jl bytes.Buffer
	enc, _ := NewEncoder(&jl, FormatJSONL)
	if err := l.Each(ctx, Filter{}, enc.Encode); err != nil {
		t.Fatal(err)
	}
	_ = enc.Flush()
	lines := strings.Split(strings.TrimSpace(jl.String()), "\n")
	if len(lines) != 4 {
		t.Fatalf("JSONL export has %d lines, want 4:\n%s", len(lines), jl.String())
	}
	chain := NewChain(0, GenesisHash)
	for _, line := range lines {
		var r Record
		if err := json.Unmarshal([]byte(line), &r); err != nil {
			t.Fatalf("JSONL line %q: %v", line, err)
		}
		if b := chain.Next(r); b != nil {
			t.Fatalf("the JSONL export does not verify: %v", b)
		}
	}

	var cs bytes.Buffer
	enc, _ = NewEncoder(&cs, FormatCSV)
	if err := l.Each(ctx, Filter{Action: "migration.finish"}, enc.Encode); err != nil {
		t.Fatal(err)
	}
	_ = enc.Flush()
	rows, err := csv.NewReader(&cs).ReadAll()
	if err != nil || len(rows) != 2 || strings.Join(rows[0], ",") != strings.Join(CSVHeader(), ",") {
		t.Fatalf("CSV export: %v %v", rows, err)
	}
	row := rows[1]
	if row[6] != "migration.finish" || row[11] != "2500.25" || row[13] != "1073741824" || row[8] != `{"vm":"web-\u003c1\u003e"}` {
		t.Fatalf("CSV row %q", row)
	}

	if _, err := NewEncoder(io.Discard, "xml"); err == nil {
		t.Fatal("an unknown export format was accepted")
	}
	var empty bytes.Buffer
	enc, _ = NewEncoder(&empty, FormatCSV)
	_ = enc.Flush()
	if strings.TrimSpace(empty.String()) != strings.Join(CSVHeader(), ",") {
		t.Fatalf("an empty CSV export is %q; want just the header", empty.String())
	}
}

func TestEachPagesAndLimits(t *testing.T) {
	l, _, clk := openTest(t)
	appendN(t, l, clk, 2500)
	n := 0
	last := int64(0)
	err := l.Each(context.Background(), Filter{}, func(r Record) error {
		if r.ID != last+1 {
			return fmt.Errorf("record %d after %d", r.ID, last)
		}
		last = r.ID
		n++
		return nil
	})
	if err != nil || n != 2500 {
		t.Fatalf("Each saw %d records: %v", n, err)
	}
	n = 0
	_ = l.Each(context.Background(), Filter{Limit: 1200}, func(Record) error { n++; return nil })
	if n != 1200 {
		t.Fatalf("Each with a limit of 1200 saw %d", n)
	}
	if v := verify(t, l); !v.OK || v.Checked != 2500 {
		t.Fatalf("verify over pages: %+v %+v", v, v.Broken)
	}
}

func TestMigrationEndedActsOnBehalfOfTheRequester(t *testing.T) {
	l, _, _ := openTest(t)
	ctx := context.Background()
	if _, err := l.Append(ctx, Record{Actor: "alice", ActorKind: KindUser, From: Local, Action: "vm.migrate", Target: "web-1",
		Outcome: Succeeded, Params: params(t, map[string]any{"migration": "m1", "source": "host-1", "destination": "host-2"})}); err != nil {
		t.Fatal(err)
	}
	if _, err := l.Append(ctx, l.MigrationEnded(ctx, api.Migration{ID: "m1", VM: "web-1", Source: "host-1", Destination: "host-2",
		Policy: "balanced", State: api.MigrationSucceeded, TotalMS: 2100.5, DowntimeMS: 35.25, Bytes: 300 << 20, Passes: 3,
		Prediction: &api.Prediction{TotalMS: 1800, DowntimeMS: 40, Converges: true}})); err != nil {
		t.Fatal(err)
	}
	l.MigrationResumed(ctx, api.Migration{ID: "m2", VM: "db-1", Source: "host-2", Destination: "host-1", State: api.MigrationRunning})
	recs, err := l.List(ctx, Filter{Oldest: true})
	if err != nil || len(recs) != 3 {
		t.Fatalf("records: %+v %v", recs, err)
	}
	fin := recs[1]
	if fin.Action != "migration.finish" || fin.Actor != CenterActor || fin.ActorKind != KindAutomation || fin.OnBehalfOf != "alice" ||
		fin.Outcome != Succeeded || *fin.DurationMS != 2100.5 || *fin.DowntimeMS != 35.25 || *fin.Bytes != 300<<20 ||
		!strings.Contains(string(fin.Params), `"vm":"web-1"`) ||
		!strings.Contains(string(fin.Params), `"predicted_total_ms":1800`) || !strings.Contains(string(fin.Params), `"predicted_downtime_ms":40`) ||
		!strings.Contains(string(fin.Params), `"predicted_converges":true`) {
		t.Fatalf("migration.finish record %+v params %s", fin, fin.Params)
	}
	if res := recs[2]; res.Action != "migration.resume" || res.OnBehalfOf != "" || res.Target != "m2" {
		t.Fatalf("migration.resume record %+v", res)
	}
	if v := verify(t, l); !v.OK {
		t.Fatalf("verify: %+v", v.Broken)
	}
}
