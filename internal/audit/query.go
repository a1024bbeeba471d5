package audit

import (
	"context"
	"fmt"
	"math"
	"net/url"
	"strconv"
	"strings"
	"time"
)

// Filter selects records. Zero fields select everything.
type Filter struct {
	// Since and Until bound the records' time: Since ≤ time < Until.
	Since, Until time.Time
	// User matches the actor or the one on whose behalf it acted.
	User string
	// VM matches records about a VM: vm.* actions on it and records whose params name it.
	VM string
	// Host matches records whose params name the host (host, source, destination, to).
	Host string
	// Action matches an action exactly, or every action with a prefix when it ends in
	// "*" (vm.*).
	Action string
	// After selects only records with a greater id (a cursor for paging oldest first).
	After int64
	// Oldest lists oldest first; otherwise newest first.
	Oldest bool
	// Limit is the most records to return: for List 0 means DefaultLimit and more than
	// MaxLimit means MaxLimit; for Each 0 means no limit.
	Limit int
}

// DefaultLimit is how many records a query returns when it does not say.
const DefaultLimit = 100

// MaxLimit is the most records one query returns.
const MaxLimit = 10000

// ParseTime reads a time given on the command line or in a query: RFC 3339
// (2025-01-31T12:00:00Z), a date (2025-01-31, UTC midnight), a date and minute
// (2025-01-31T12:00, UTC), or an age counted back from now (90m, 24h, 7d, 2w).
func ParseTime(s string, now time.Time) (time.Time, error) {
	for _, layout := range []string{time.RFC3339Nano, "2006-01-02T15:04", "2006-01-02"} {
		if t, err := time.Parse(layout, s); err == nil {
			return t.UTC(), nil
		}
	}
	if d, err := parseDays(s); err == nil && d >= 0 {
		return now.Add(-d).UTC(), nil
	}
	return time.Time{}, fmt.Errorf("%q is not a time: give RFC 3339 (2025-01-31T12:00:00Z), a date (2025-01-31) or an age such as 24h or 7d", s)
}

// parseDays is time.ParseDuration that also knows days (d) and weeks (w) as whole
// numbers: 90d, 2w.
func parseDays(s string) (time.Duration, error) {
	for suffix, unit := range map[string]time.Duration{"d": 24 * time.Hour, "w": 7 * 24 * time.Hour} {
		if n, ok := strings.CutSuffix(s, suffix); ok {
			v, err := strconv.ParseInt(n, 10, 32)
			if err != nil {
				return 0, fmt.Errorf("%q is not a duration", s)
			}
			if v < 0 || v > int64(math.MaxInt64/unit) {
				return 0, fmt.Errorf("%q is too long: ages go back at most %d days", s, int64(math.MaxInt64/(24*time.Hour)))
			}
			return time.Duration(v) * unit, nil
		}
	}
	return time.ParseDuration(s)
}

// FilterFromQuery reads a Filter from URL query parameters: since, until, user, vm,
// host, action, limit, after and order (newest or oldest).
func FilterFromQuery(q url.Values, now time.Time) (Filter, error) {
	f := Filter{User: q.Get("user"), VM: q.Get("vm"), Host: q.Get("host"), Action: q.Get("action")}
	var err error
	if s := q.Get("since"); s != "" {
		if f.Since, err = ParseTime(s, now); err != nil {
			return f, fmt.Errorf("since: %w", err)
		}
	}
	if s := q.Get("until"); s != "" {
		if f.Until, err = ParseTime(s, now); err != nil {
			return f, fmt.Errorf("until: %w", err)
		}
	}
	if s := q.Get("limit"); s != "" {
		if f.Limit, err = strconv.Atoi(s); err != nil || f.Limit < 0 {
			return f, fmt.Errorf("limit %q must be a whole number (0: the default)", s)
		}
	}
	if s := q.Get("after"); s != "" {
		if f.After, err = strconv.ParseInt(s, 10, 64); err != nil || f.After < 0 {
			return f, fmt.Errorf("after %q must be a record id (a number)", s)
		}
	}
	switch q.Get("order") {
	case "", "newest":
	case "oldest":
		f.Oldest = true
	default:
		return f, fmt.Errorf("order %q must be newest or oldest", q.Get("order"))
	}
	return f, nil
}

// Query returns the filter as URL query parameters, the inverse of FilterFromQuery.
func (f Filter) Query() url.Values {
	q := url.Values{}
	set := func(k, v string) {
		if v != "" {
			q.Set(k, v)
		}
	}
	if !f.Since.IsZero() {
		set("since", f.Since.UTC().Format(time.RFC3339Nano))
	}
	if !f.Until.IsZero() {
		set("until", f.Until.UTC().Format(time.RFC3339Nano))
	}
	set("user", f.User)
	set("vm", f.VM)
	set("host", f.Host)
	set("action", f.Action)
	if f.Limit > 0 {
		set("limit", strconv.Itoa(f.Limit))
	}
	if f.After > 0 {
		set("after", strconv.FormatInt(f.After, 10))
	}
	if f.Oldest {
		set("order", "oldest")
	}
	return q
}

// paramsOf is the record's params as JSON the query functions can read even if a row
// was damaged (Verify reports that; queries should still work).
const paramsOf = `(CASE WHEN json_valid(params) THEN params ELSE '{}' END)`

func (f Filter) where() (string, []any) {
	var conds []string
	var args []any
	if !f.Since.IsZero() {
		conds, args = append(conds, "time >= ?"), append(args, f.Since.UTC().Format(timeLayout))
	}
	if !f.Until.IsZero() {
		conds, args = append(conds, "time < ?"), append(args, f.Until.UTC().Format(timeLayout))
	}
	if f.User != "" {
		conds, args = append(conds, "(actor = ? OR on_behalf_of = ?)"), append(args, f.User, f.User)
	}
	if f.VM != "" {
		conds = append(conds, "((action LIKE 'vm.%' AND target = ?) OR json_extract("+paramsOf+", '$.vm') = ?)")
		args = append(args, f.VM, f.VM)
	}
	if f.Host != "" {
		conds = append(conds, "EXISTS (SELECT 1 FROM json_each("+paramsOf+") AS p WHERE p.key IN ('host', 'source', 'destination', 'to') AND p.value = ?)")
		args = append(args, f.Host)
	}
	if prefix, ok := strings.CutSuffix(f.Action, "*"); ok {
		conds = append(conds, "substr(action, 1, ?) = ?")
		args = append(args, len(prefix), prefix)
	} else if f.Action != "" {
		conds, args = append(conds, "action = ?"), append(args, f.Action)
	}
	if f.After > 0 {
		conds, args = append(conds, "id > ?"), append(args, f.After)
	}
	if len(conds) == 0 {
		return "", nil
	}
	return " WHERE " + strings.Join(conds, " AND "), args
}

// List returns the records the filter selects, newest first unless f.Oldest.
func (l *Log) List(ctx context.Context, f Filter) ([]Record, error) {
	limit := f.Limit
	if limit <= 0 {
		limit = DefaultLimit
	}
	limit = min(limit, MaxLimit)
	where, args := f.where()
	order := " ORDER BY id DESC"
	if f.Oldest {
		order = " ORDER BY id"
	}
	rows, err := l.db.QueryContext(ctx, `SELECT `+recordCols+` FROM audit_log`+where+order+` LIMIT ?`, append(args, limit)...)
	if err != nil {
		return nil, fmt.Errorf("list audit records: %w", err)
	}
	defer rows.Close()
	out := []Record{}
	for rows.Next() {
		r, err := scanRecord(rows)
		if err != nil {
			return nil, fmt.Errorf("list audit records: %w", err)
		}
		out = append(out, r)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("list audit records: %w", err)
	}
	return out, nil
}

// Each calls fn for every record the filter selects, oldest first, reading them a page
// at a time so that the database is not held while fn writes to a slow client. f.Limit
// bounds the total (0: no bound); f.After and f.Oldest are ignored.
func (l *Log) Each(ctx context.Context, f Filter, fn func(Record) error) error {
	total := f.Limit
	f.Oldest, f.After = true, 0
	n := 0
	for {
		f.Limit = 1000
		if total > 0 {
			f.Limit = min(f.Limit, total-n)
		}
		page, err := l.List(ctx, f)
		if err != nil {
			return err
		}
		for _, r := range page {
			if err := fn(r); err != nil {
				return err
			}
			f.After = r.ID
		}
		n += len(page)
		if len(page) < f.Limit || (total > 0 && n >= total) {
			return nil
		}
	}
}
