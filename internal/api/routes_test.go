package api

import (
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
)

// TestMuxServesOnlyItsTable: a handler for a route the table does not declare is refused
// at registration, a declared route without a handler is reported, and every handler
// runs behind the guard, which sees its route.
func TestMuxServesOnlyItsTable(t *testing.T) {
	table := []Route{
		{Method: "GET", Path: "/a/{id}", Access: RoleViewer},
		{Method: "POST", Path: "/b", Access: RoleAdmin, Action: "b.make"},
	}
	var seen []string
	m := NewMux(table, func(rt Route, h http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			seen = append(seen, rt.Access+" "+rt.Action)
			h.ServeHTTP(w, r)
		})
	})
	m.HandleFunc("GET /a/{id}", func(w http.ResponseWriter, r *http.Request) { w.WriteHeader(204) })
	if err := m.Check(); err == nil || !strings.Contains(err.Error(), "POST /b") {
		t.Errorf("Check with POST /b unserved = %v", err)
	}
	m.HandleFunc("POST /b", func(w http.ResponseWriter, r *http.Request) {})
	if err := m.Check(); err != nil {
		t.Errorf("Check = %v", err)
	}
	func() {
		defer func() {
			if p := recover(); p == nil || !strings.Contains(p.(string), "not in the route table") {
				t.Errorf("registering an undeclared route: panic %v", p)
			}
		}()
		m.HandleFunc("DELETE /a/{id}", func(w http.ResponseWriter, r *http.Request) {})
	}()
	w := httptest.NewRecorder()
	m.ServeHTTP(w, httptest.NewRequest("GET", "/a/7", nil))
	if w.Code != 204 || len(seen) != 1 || seen[0] != "viewer " {
		t.Errorf("GET /a/7: %d, guard saw %v", w.Code, seen)
	}
	if _, p := m.Handler(httptest.NewRequest("POST", "/b", nil)); p != "POST /b" {
		t.Errorf("Handler pattern %q", p)
	}
}
