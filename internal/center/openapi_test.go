package center

import (
	"context"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"testing"

	"github.com/getkin/kin-openapi/openapi3"
)

// TestOpenAPI checks the served description against the routes the center serves: it is
// a valid OpenAPI 3 document, it holds exactly one operation per route of the table (no
// more, no fewer), each names who may call it, and every route of the table is served
// (a request to it reaches its own pattern, not the catch-all).
func TestOpenAPI(t *testing.T) {
	c := newAuthCenter(t, t.TempDir())
	h := c.routes(false)
	w := httptest.NewRecorder()
	h.ServeHTTP(w, httptest.NewRequest(http.MethodGet, "/api/v1/openapi.json", nil))
	if w.Code != http.StatusOK {
		t.Fatalf("GET /api/v1/openapi.json without credentials: %d %s", w.Code, w.Body)
	}
	doc, err := openapi3.NewLoader().LoadFromData(w.Body.Bytes())
	if err != nil {
		t.Fatalf("the served document does not load: %v", err)
	}
	if err := doc.Validate(context.Background()); err != nil {
		t.Fatalf("the served document is not valid OpenAPI: %v", err)
	}
	var described []string
	for path, item := range doc.Paths.Map() {
		for method, op := range item.Operations() {
			described = append(described, method+" "+path)
			if op.Extensions["x-godwit-access"] == nil {
				t.Errorf("%s %s does not say who may call it", method, path)
			}
		}
	}
	var served []string
	for _, rt := range Routes() {
		if rt.Method == "" {
			continue
		}
		served = append(served, rt.Pattern())
		// The route is served by its own handler: a request to it matches its pattern.
		path := strings.NewReplacer("{name}", "x", "{id}", "x").Replace(rt.Path)
		if _, pattern := c.mux.Handler(httptest.NewRequest(rt.Method, path, nil)); pattern != rt.Pattern() {
			t.Errorf("%s %s is answered by %q, not by its own route", rt.Method, path, pattern)
		}
	}
	slices.Sort(described)
	slices.Sort(served)
	if !slices.Equal(described, served) {
		t.Errorf("the OpenAPI document describes\n%v\nbut the center serves\n%v", described, served)
	}
}
