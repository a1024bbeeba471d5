package api

import (
	"fmt"
	"net/http"
	"slices"
	"strings"
)

// Who may call a route. The center's routes need one of the roles (RoleViewer,
// RoleOperator, RoleAdmin, RoleAgent for hosts) or AccessPublic; the agents' routes
// AccessCenter, AccessMigrationSource, AccessMigrationDestination or AccessPublic.
const (
	// AccessPublic routes answer anyone: logging in, joining (both carry their own
	// credentials), the CA certificate, the API description, an agent's metrics.
	AccessPublic = "public"
	// AccessCenter agent routes answer only the center's certificate.
	AccessCenter = "center"
	// AccessMigrationSource agent routes answer only a host that presents a migration
	// ticket the center signed naming it the source, and this host the destination
	// (incoming, finish, abort).
	AccessMigrationSource = "migration-source"
	// AccessMigrationDestination agent routes answer a host that presents a ticket naming
	// it the destination and this host the source (how the migration goes), and the
	// center when Route.CenterToo.
	AccessMigrationDestination = "migration-destination"
)

// Route is one endpoint of a Godwit API, as one table per server declares it: the
// authorizer, the audit trail, the route-matrix test and the OpenAPI document all read
// that table, so a route cannot be added without saying who may call it.
type Route struct {
	// Method is GET, POST, PUT or DELETE; empty for every method (a catch-all).
	Method string
	// Path is the net/http ServeMux path pattern, with {name} wildcards.
	Path string
	// Access is the role or access class the caller needs (see the constants above).
	Access string
	// CenterToo lets the center call a migration route as well.
	CenterToo bool
	// Action is the audit trail's name for a state-changing route (vm.migrate); Target
	// names the path wildcard that is the action's target.
	Action, Target string
	// Summary says in a sentence what the route does.
	Summary string
	// Query lists the query parameters the route reads.
	Query []string
	// Request and Response are zero values of the JSON body types (nil: none, or not
	// JSON); Status is the answer's status on success.
	Request, Response any
	Status            int
	// Stream marks a long-lived answer (Server-Sent Events, an export).
	Stream bool
}

// Pattern is the route's ServeMux pattern: "METHOD PATH", or PATH for every method.
func (r Route) Pattern() string {
	if r.Method == "" {
		return r.Path
	}
	return r.Method + " " + r.Path
}

// Mux is an http.ServeMux that serves exactly the routes of its table: registering a
// pattern the table does not declare panics (a programming error, caught by every test
// that builds the server), and Check reports table routes nobody registered. Every
// handler is wrapped by guard, which sees the route (its access, its audit action)
// before the handler runs.
type Mux struct {
	mux        *http.ServeMux
	routes     map[string]Route
	registered map[string]bool
	guard      func(Route, http.Handler) http.Handler
}

// NewMux returns a Mux for the routes of table; guard wraps every handler.
func NewMux(table []Route, guard func(Route, http.Handler) http.Handler) *Mux {
	m := &Mux{mux: http.NewServeMux(), routes: map[string]Route{}, registered: map[string]bool{}, guard: guard}
	for _, r := range table {
		if _, dup := m.routes[r.Pattern()]; dup {
			panic(fmt.Sprintf("route table: %s declared twice", r.Pattern()))
		}
		m.routes[r.Pattern()] = r
	}
	return m
}

// Handle registers h for pattern, which the table must declare.
func (m *Mux) Handle(pattern string, h http.Handler) {
	rt, ok := m.routes[pattern]
	if !ok {
		panic(fmt.Sprintf("route %q is not in the route table: declare who may call it there first", pattern))
	}
	m.registered[pattern] = true
	m.mux.Handle(pattern, m.guard(rt, h))
}

// HandleFunc registers f for pattern, which the table must declare.
func (m *Mux) HandleFunc(pattern string, f func(http.ResponseWriter, *http.Request)) {
	m.Handle(pattern, http.HandlerFunc(f))
}

// Check reports the routes of the table that no handler serves.
func (m *Mux) Check() error {
	var missing []string
	for p := range m.routes {
		if !m.registered[p] {
			missing = append(missing, p)
		}
	}
	if len(missing) > 0 {
		slices.Sort(missing)
		return fmt.Errorf("route table: no handler for %s", strings.Join(missing, ", "))
	}
	return nil
}

// ServeHTTP serves r with the handler of the matching route.
func (m *Mux) ServeHTTP(w http.ResponseWriter, r *http.Request) { m.mux.ServeHTTP(w, r) }

// Handler returns the handler and the pattern that would serve r (see
// http.ServeMux.Handler): metrics label requests by pattern, not by path.
func (m *Mux) Handler(r *http.Request) (http.Handler, string) { return m.mux.Handler(r) }

// Routes returns the table's routes, ordered by path then method.
func (m *Mux) Routes() []Route {
	out := make([]Route, 0, len(m.routes))
	for _, r := range m.routes {
		out = append(out, r)
	}
	slices.SortFunc(out, func(a, b Route) int {
		if c := strings.Compare(a.Path, b.Path); c != 0 {
			return c
		}
		return strings.Compare(a.Method, b.Method)
	})
	return out
}
