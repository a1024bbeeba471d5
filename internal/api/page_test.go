package api

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"testing"
)

// TestPagesFollowed serves a list of 1,234 names a page at a time as the center does,
// and reads it back whole with GetAll; bad page requests are 400s that say why, and a
// next link that leaves the API is refused.
func TestPagesFollowed(t *testing.T) {
	var names []string
	for i := range 1234 {
		names = append(names, fmt.Sprintf("vm-%04d", i))
	}
	pages := 0
	evil := false
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		p, err := ParsePage(r.URL.Query(), DefaultPageLimit)
		if err != nil {
			WriteError(w, err)
			return
		}
		pages++
		i, _ := slices.BinarySearch(names, p.After)
		if i < len(names) && names[i] == p.After {
			i++
		}
		page := names[i:min(i+p.Limit, len(names))]
		if len(page) > 0 {
			WritePageHeaders(w, r, p, len(page), len(names), page[len(page)-1])
		}
		if evil {
			w.Header().Set("Link", `<https://elsewhere.example/api/v1/vms?after=x>; rel="next"`)
		}
		WriteJSON(w, http.StatusOK, page)
	}))
	defer srv.Close()
	c, err := NewClient(srv.URL, 0)
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	got, err := GetAll[string](ctx, c, "/api/v1/vms?limit=100&host=h1")
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(got, names) || pages != 13 {
		t.Errorf("GetAll read %d names in %d pages; want all %d, in order, in 13", len(got), pages, len(names))
	}
	pages = 0
	if got, err := GetAll[string](ctx, c, "/api/v1/vms"); err != nil || len(got) != len(names) || pages != 3 {
		t.Errorf("with the default page of %d: %d names in %d pages, %v", DefaultPageLimit, len(got), pages, err)
	}
	for _, q := range []string{"limit=0", "limit=5001", "limit=ten", "after=" + strings.Repeat("x", 200)} {
		var out []string
		err := c.Do(ctx, http.MethodGet, "/api/v1/vms?"+q, nil, &out)
		var se *StatusError
		if !errors.As(err, &se) || se.Status != http.StatusBadRequest {
			t.Errorf("?%s: %v; want a 400", q, err)
		}
	}
	evil = true
	if _, err := GetAll[string](ctx, c, "/api/v1/vms"); err == nil || !strings.Contains(err.Error(), "not a path of this server's API") {
		t.Errorf("a next link to another server: %v; want it refused", err)
	}
}
