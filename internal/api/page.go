package api

import (
	"context"
	"fmt"
	"net/http"
	"net/url"
	"regexp"
	"strconv"
	"strings"
)

// Lists that grow with the cluster (hosts, VMs) are answered a page at a time, in name
// order: ?limit=N (the list's default when absent, at most MaxPageLimit) and ?after=NAME
// (the last name of the previous page). An answer with more after it says where the
// next page is in a Link header (rel="next", RFC 8288); X-Total-Count is how many the
// whole list holds.

const (
	// DefaultPageLimit is the page of a list of small items (VMs: about 500 bytes each).
	DefaultPageLimit = 500
	// HostPageLimit is the page of hosts, whose facts are about 4.5 KB each.
	HostPageLimit = 100
	MaxPageLimit  = 5000
)

// Page is one page's request.
type Page struct {
	Limit int
	After string
}

// ParsePage reads ?limit (def when absent) and ?after; a bad value is a 400 that says
// what is allowed.
func ParsePage(q url.Values, def int) (Page, error) {
	p := Page{Limit: def, After: q.Get("after")}
	if s := q.Get("limit"); s != "" {
		n, err := strconv.Atoi(s)
		if err != nil || n < 1 || n > MaxPageLimit {
			return Page{}, BadRequest("limit=%.20q: want a number of items from 1 to %d", s, MaxPageLimit)
		}
		p.Limit = n
	}
	if len(p.After) > MaxShortName {
		return Page{}, BadRequest("after is %d bytes long; it is a name, at most %d bytes", len(p.After), MaxShortName)
	}
	return p, nil
}

// WritePageHeaders sets X-Total-Count and, when the page is full (more may follow
// last), the Link to the next page: r's own URL with after=last.
func WritePageHeaders(w http.ResponseWriter, r *http.Request, p Page, n, total int, last string) {
	w.Header().Set("X-Total-Count", strconv.Itoa(total))
	if n < p.Limit || last == "" {
		return
	}
	q := r.URL.Query()
	q.Set("after", last)
	q.Set("limit", strconv.Itoa(p.Limit))
	w.Header().Set("Link", "<"+r.URL.Path+"?"+q.Encode()+">; rel=\"next\"")
}

var nextLink = regexp.MustCompile(`<([^>]*)>\s*;\s*rel="?next"?`)

// GetAll fetches every page of the list at path (which may carry a query of its own)
// into a slice of T, following the Link headers; at most maxPages pages.
func GetAll[T any](ctx context.Context, c *Client, path string) ([]T, error) {
	const maxPages = 10000
	var all []T
	for range maxPages {
		var page []T
		h, err := c.do(ctx, http.MethodGet, path, nil, &page)
		if err != nil {
			return nil, err
		}
		all = append(all, page...)
		m := nextLink.FindStringSubmatch(h.Get("Link"))
		if m == nil {
			return all, nil
		}
		next, err := url.Parse(m[1])
		if err != nil || next.IsAbs() || !strings.HasPrefix(next.Path, "/api/") {
			return nil, fmt.Errorf("GET %s: the next page's link %q is not a path of this server's API", path, m[1])
		}
		path = next.String()
	}
	return nil, fmt.Errorf("GET %s: more than %d pages", path, maxPages)
}
