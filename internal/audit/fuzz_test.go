package audit

import (
	"bufio"
	"bytes"
	"context"
	"database/sql"
	"encoding/csv"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"math"
	"math/big"
	"net/http"
	"net/http/httptest"
	"net/url"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/godwit/godwit/internal/api"

	_ "modernc.org/sqlite"
)

// Fuzz tests of the audit trail's query decoding: the filters of GET /api/v1/audit and
// GET /api/v1/audit/export (FilterFromQuery) and the times they take (ParseTime).
//
// Run one for longer with, for example:
//
//	go test -run '^$' -fuzz '^FuzzAuditQuery$' -fuzztime 30s ./internal/audit

// fuzzNow is the trail's clock in these tests.
var fuzzNow = time.Date(2025, 3, 1, 12, 0, 0, 0, time.UTC)

// newFuzzTrail opens a trail in a fresh database with records from January and
// February 2025, and returns its API.
func newFuzzTrail(f *testing.F) http.Handler {
	f.Helper()
	db, err := sql.Open("sqlite", "file:"+filepath.Join(f.TempDir(), "godwit.db")+"?_pragma=journal_mode(WAL)&_pragma=busy_timeout(5000)")
	if err != nil {
		f.Fatal(err)
	}
	db.SetMaxOpenConns(1)
	f.Cleanup(func() { db.Close() })
	l, err := Open(context.Background(), db, Options{Now: func() time.Time { return fuzzNow },
		Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		f.Fatal(err)
	}
	actions := []string{"vm.create", "vm.start", "vm.stop", "vm.migrate", "migration.finish", "http.post", "task.cancel"}
	targets := []string{"web-1", "db-1", "a\x00b", "ünï-cödé", "", "1a2b3c4d"}
	for i := 0; i < 60; i++ {
		p, _ := encodeParams(map[string]any{"host": fmt.Sprintf("h%d", i%3), "vm": targets[i%len(targets)],
			"destination": fmt.Sprintf("h%d", (i+1)%3), "n": i})
		r := Record{Time: time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC).Add(time.Duration(i) * 23 * time.Hour),
			Actor: []string{"alice", "bob", CenterActor}[i%3], ActorKind: []string{KindUser, KindToken, KindAutomation}[i%3],
			From: Local, Action: actions[i%len(actions)], Target: targets[i%len(targets)], Params: p,
			Outcome: []string{Succeeded, Refused, Failed}[i%3]}
		if r.ActorKind == KindAutomation {
			r.OnBehalfOf = "alice"
		}
		if r.Outcome != Succeeded {
			r.Error = "no"
		}
		if _, err := l.Append(context.Background(), r); err != nil {
			f.Fatal(err)
		}
	}
	mux := http.NewServeMux()
	l.Register(mux)
	return mux
}

// FuzzAuditQuery feeds fuzzed filters to the list and export endpoints. For any query:
// the answer is never a 5xx; a 4xx is a JSON error; FilterFromQuery agrees with the
// handler and its Query is its inverse; and what is listed or exported is what the
// filter selects, each record matching its hash.
func FuzzAuditQuery(f *testing.F) {
	for _, c := range []struct {
		export              bool
		since, until, query string
	}{
		{false, "", "", ""},
		{false, "24h", "", ""},
		{false, "7d", "2025-02-15", "order=oldest&limit=5"},
		{false, "2w", "", "user=alice&vm=web-1&host=h1&action=vm.*&after=3"},
		{false, "2025-01-31T12:00", "2025-02-01T00:00:00Z", "action=vm.start"},
		{false, "2025-01-31T12:00:00.123456789+01:00", "", ""},
		{false, "90m", "", "limit=0"},
		{false, "0d", "", ""},
		{false, "-1d", "", ""},
		{false, "1.5d", "", ""},
		{false, "d", "", ""},
		{false, "2147483648d", "", ""},
		{false, "yesterday", "", ""},
		{false, "", "", "limit=-1"},
		{false, "", "", "limit=10001"},
		{false, "", "", "limit=99999999999999999999"},
		{false, "", "", "after=-1"},
		{false, "", "", "after=9223372036854775807"},
		{false, "", "", "order=sideways"},
		{false, "", "", "order=oldest&order=newest"},
		{false, "", "", "action=*"},
		{false, "", "", "action=%25"},
		{false, "", "", "vm=a%00b"},
		{false, "", "", "host=%27%20OR%201=1--"},
		{false, "", "", "user=%ff%fe"},
		{false, "", "", "since=%zz"},
		{true, "", "", ""},
		{true, "", "", "format=csv&limit=0"},
		{true, "7d", "", "format=jsonl&limit=3"},
		{true, "", "", "format=xml"},
		{true, "", "", "format="},
		{true, "", "", "format=csv&order=oldest&after=10"},
	} {
		f.Add(c.export, c.since, c.until, c.query)
	}
	h := newFuzzTrail(f)
	f.Fuzz(func(t *testing.T, export bool, since, until, rawQuery string) {
		q := rawQuery
		for _, p := range [][2]string{{"since", since}, {"until", until}} {
			if p[1] != "" {
				q = p[0] + "=" + url.QueryEscape(p[1]) + "&" + q
			}
		}
		path := "/api/v1/audit"
		if export {
			path += "/export"
		}
		r := httptest.NewRequest(http.MethodGet, "/", nil)
		r.URL.Path, r.URL.RawQuery = path, q
		w := httptest.NewRecorder()
		h.ServeHTTP(w, r)
		what := fmt.Sprintf("GET %s?%s", path, q)
		switch {
		case w.Code >= 500:
			t.Fatalf("%s: answered %d: %s", what, w.Code, w.Body)
		case w.Code >= 400:
			var e api.Error
			if err := json.Unmarshal(w.Body.Bytes(), &e); err != nil || e.Error == "" {
				t.Fatalf("%s: answered %d without a JSON error: %q", what, w.Code, w.Body)
			}
		}

		values, _ := url.ParseQuery(q)
		filter, ferr := FilterFromQuery(values, fuzzNow)
		if (ferr == nil) != (w.Code == http.StatusOK) && !(export && ferr == nil) {
			t.Fatalf("%s: answered %d, but FilterFromQuery says %v", what, w.Code, ferr)
		}
		if ferr != nil {
			return
		}
		// Query is the inverse of FilterFromQuery.
		again, err := FilterFromQuery(filter.Query(), fuzzNow)
		if err != nil || !sameFilter(filter, again) {
			t.Fatalf("%s: the filter %+v becomes %q, which reads back as %+v (%v)", what, filter, filter.Query().Encode(), again, err)
		}
		if w.Code != http.StatusOK {
			return
		}

		var recs []Record
		if export {
			var err error
			if recs, err = fuzzReadExport(w); err != nil {
				t.Fatalf("%s: %v", what, err)
			}
		} else {
			if err := json.Unmarshal(w.Body.Bytes(), &recs); err != nil {
				t.Fatalf("%s: the list is not JSON records: %v", what, err)
			}
			// The list is indented, params included; the hash covers them compact. (Only
			// exports promise the exact text.)
			for i := range recs {
				var b bytes.Buffer
				if err := json.Compact(&b, recs[i].Params); err != nil {
					t.Fatalf("%s: record %d's params are not JSON: %v", what, recs[i].ID, err)
				}
				recs[i].Params = b.Bytes()
			}
		}
		limit := filter.Limit
		if !export && limit <= 0 {
			limit = DefaultLimit
		}
		if !export {
			limit = min(limit, MaxLimit)
		}
		if limit > 0 && len(recs) > limit {
			t.Fatalf("%s: %d records, the limit is %d", what, len(recs), limit)
		}
		oldest := filter.Oldest || export
		for i, rec := range recs {
			if h := rec.ComputeHash(); h != rec.Hash {
				t.Fatalf("%s: record %d does not match its hash", what, rec.ID)
			}
			if !filter.Since.IsZero() && rec.Time.Before(filter.Since) || !filter.Until.IsZero() && !rec.Time.Before(filter.Until) {
				t.Fatalf("%s: record %d of %s is outside [%s, %s)", what, rec.ID, rec.Time, filter.Since, filter.Until)
			}
			if !export && rec.ID <= filter.After {
				t.Fatalf("%s: record %d is not after %d", what, rec.ID, filter.After)
			}
			if prefix, ok := strings.CutSuffix(filter.Action, "*"); ok && !strings.HasPrefix(rec.Action, prefix) ||
				!ok && filter.Action != "" && rec.Action != filter.Action {
				t.Fatalf("%s: record %d's action %s does not match %s", what, rec.ID, rec.Action, filter.Action)
			}
			if filter.User != "" && rec.Actor != filter.User && rec.OnBehalfOf != filter.User {
				t.Fatalf("%s: record %d is not of user %s", what, rec.ID, filter.User)
			}
			if i > 0 && (oldest && rec.ID <= recs[i-1].ID || !oldest && rec.ID >= recs[i-1].ID) {
				t.Fatalf("%s: records %d and %d are out of order", what, recs[i-1].ID, rec.ID)
			}
		}
	})
}

// sameFilter compares filters, times by instant.
func sameFilter(a, b Filter) bool {
	return a.Since.Equal(b.Since) && a.Until.Equal(b.Until) && a.User == b.User && a.VM == b.VM && a.Host == b.Host &&
		a.Action == b.Action && a.After == b.After && a.Oldest == b.Oldest && a.Limit == b.Limit
}

// fuzzReadExport reads an export answer back into records.
func fuzzReadExport(w *httptest.ResponseRecorder) ([]Record, error) {
	var recs []Record
	switch ct := w.Header().Get("Content-Type"); ct {
	case ContentType(FormatJSONL):
		sc := bufio.NewScanner(bytes.NewReader(w.Body.Bytes()))
		sc.Buffer(nil, 1<<20)
		for sc.Scan() {
			var r Record
			if err := json.Unmarshal(sc.Bytes(), &r); err != nil {
				return nil, fmt.Errorf("a JSON line does not decode: %v: %q", err, sc.Text())
			}
			recs = append(recs, r)
		}
		return recs, sc.Err()
	case ContentType(FormatCSV):
		rows, err := csv.NewReader(bytes.NewReader(w.Body.Bytes())).ReadAll()
		if err != nil || len(rows) == 0 || strings.Join(rows[0], ",") != strings.Join(CSVHeader(), ",") {
			return nil, fmt.Errorf("the CSV does not read back (%v): %.200q", err, w.Body)
		}
		for _, row := range rows[1:] {
			id, _ := strconv.ParseInt(row[0], 10, 64)
			tm, err := time.Parse(timeLayout, row[1])
			if err != nil {
				return nil, fmt.Errorf("CSV time %q: %v", row[1], err)
			}
			r := Record{ID: id, Time: tm, Actor: row[2], ActorKind: row[3], OnBehalfOf: row[4], From: row[5],
				Action: row[6], Target: row[7], Params: json.RawMessage(row[8]), Outcome: row[9], Error: row[10],
				PrevHash: row[14], Hash: row[15]}
			recs = append(recs, r)
		}
		return recs, nil
	default:
		return nil, fmt.Errorf("export answered with Content-Type %q", ct)
	}
}

// FuzzParseTime checks ParseTime on any text, and on ages built from any number and
// unit: it never panics, reads the three layouts as themselves, and reads an age as
// exactly that long before now, refusing an age too long to count back rather than
// counting back something else.
func FuzzParseTime(f *testing.F) {
	for i, s := range []string{"", "7d", "2w", "24h", "90m", "1h30m", "0d", "0", "-1d", "-24h", "+5d", "1.5d", "d", "w",
		"1e3d", "0x10d", "99999999999d", "2562047h", "2562048h", "2025-01-31", "2025-01-31T12:00",
		"2025-01-31T12:00:00Z", "2025-01-31T12:00:00.999999999+01:00", "2025-02-30", "0000-01-01", "9999-12-31T23:59",
		"2025-01-31T24:00", "yesterday", " 7d", "7d ", "7D", "٣d"} {
		f.Add(s, int64(i), uint8(i))
	}
	f.Add("", int64(math.MaxInt64), uint8(2))
	f.Fuzz(func(t *testing.T, s string, n int64, unit uint8) {
		checkParseTime(t, s)
		checkParseTime(t, strconv.FormatInt(n, 10)+[]string{"d", "w", "h", "m", "s"}[unit%5])
	})
}

func checkParseTime(t *testing.T, s string) {
	t.Helper()
	got, err := ParseTime(s, fuzzNow)
	if err != nil {
		if !strings.Contains(err.Error(), "is not a time") {
			t.Fatalf("ParseTime(%q): the error does not say what is wrong: %v", s, err)
		}
		return
	}
	for _, layout := range []string{time.RFC3339Nano, "2006-01-02T15:04", "2006-01-02"} {
		if want, err := time.Parse(layout, s); err == nil {
			if !got.Equal(want) {
				t.Fatalf("ParseTime(%q) = %s; want %s", s, got, want)
			}
			return
		}
	}
	// An age: exactly that long before now.
	if got.After(fuzzNow) {
		t.Fatalf("ParseTime(%q) = %s, after now (%s): an age counts back", s, got, fuzzNow)
	}
	for suffix, unit := range map[string]int64{"d": int64(24 * time.Hour), "w": int64(7 * 24 * time.Hour)} {
		n, ok := strings.CutSuffix(s, suffix)
		if !ok {
			continue
		}
		v, err := strconv.ParseInt(n, 10, 64)
		if err != nil {
			t.Fatalf("ParseTime(%q) took %q as a number of %s", s, n, suffix)
		}
		ns := new(big.Int).Mul(big.NewInt(v), big.NewInt(unit))
		if !ns.IsInt64() || ns.Int64() == math.MinInt64 {
			t.Fatalf("ParseTime(%q) = %s: %s%s is too long to count back (%s ns overflows a time.Duration)", s, got, n, suffix, ns)
		}
		if want := fuzzNow.Add(-time.Duration(ns.Int64())); !got.Equal(want) {
			t.Fatalf("ParseTime(%q) = %s; want %s", s, got, want)
		}
		return
	}
	d, err := time.ParseDuration(s)
	if err != nil {
		t.Fatalf("ParseTime(%q) = %s, but %q is neither a time nor an age", s, got, s)
	}
	if want := fuzzNow.Add(-d); !got.Equal(want) {
		t.Fatalf("ParseTime(%q) = %s; want %s", s, got, want)
	}
}
