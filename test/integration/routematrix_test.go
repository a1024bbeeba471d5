package integration

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"text/tabwriter"
	"time"

	"github.com/google/uuid"

	"github.com/godwit/godwit/internal/agent"
	"github.com/godwit/godwit/internal/api"
	"github.com/godwit/godwit/internal/center"
	"github.com/godwit/godwit/internal/pki"
	"github.com/godwit/godwit/internal/ticket"
)

// none fills every path wildcard: it names no VM, host, user, token, task, schedule or
// migration of the lab, so no call of the matrix can reach anything that exists.
const none = "matrix-none"

// matrixBody is the body of every route that takes one. The strict decoder refuses it
// (an unknown field) before a handler acts, which makes it harmless for every route
// alike: the zero value of a request is not (an admin's {} creates a join token; a
// viewer's {} creates a token for the viewer). It also keeps the handlers' own 401s
// and 403s — login's wrong password, a heartbeat in another host's name, a renewal by
// someone not a host, a token for another user, an incoming VM that is not its
// ticket's — out of the matrix: every 401 or 403 it sees is the guard's.
const matrixBody = `{"matrix_none": true}`

// matrixCaller is one column of the matrix: who calls, with what credentials.
type matrixCaller struct {
	name   string
	cert   *tls.Certificate // client certificate, if any
	bearer string           // API token, if any
	ticket bool             // presents a migration ticket naming it in the role the route needs
	hc     *http.Client
}

// TestRouteMatrix calls every route of the center's and the agents' route tables (read
// from the tables, so a new route cannot be left out) as every kind of caller — no
// credentials, a host's certificate, a viewer, an operator, an admin, and at the agents
// also a host with a migration ticket and the center — and checks each answer against
// the route's access in its table: a caller the table does not admit gets exactly the
// guard's 401 (no valid credentials) or 403; one it admits gets past the guard. It also
// checks that the OpenAPI document the lab's center serves over TLS describes every
// route with the access its table gives it, and nothing else.
func TestRouteMatrix(t *testing.T) {
	l := newLab(t, 2)
	lb := l.Lab()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()

	ca, err := pki.LoadOrCreateCA(filepath.Join(l.Dir(), "center", "pki"), time.Now())
	if err != nil {
		t.Fatal(err)
	}
	id1, err := pki.LoadIdentity(filepath.Join(lb.Hosts[0].StateDir, "pki"))
	if err != nil {
		t.Fatal(err)
	}
	id2, err := pki.LoadIdentity(filepath.Join(lb.Hosts[1].StateDir, "pki"))
	if err != nil {
		t.Fatal(err)
	}
	centerCert := l.CenterCert()
	tokens := map[string]string{}
	for _, role := range []string{api.RoleViewer, api.RoleOperator, api.RoleAdmin} {
		user := "mx-" + role
		c := l.Cmd(ctx, "user", "create", user, "--role", role)
		c.Stdin = strings.NewReader("matrix-password\n")
		if out, err := c.CombinedOutput(); err != nil {
			t.Fatalf("godwit user create %s: %v\n%s", user, err, out)
		}
		var tok api.Token
		l.RunJSON(&tok, "token", "create", "--user", user)
		if tok.Role != role || tok.Secret == "" {
			t.Fatalf("token of %s: %+v", user, tok)
		}
		tokens[role] = tok.Secret
	}

	// Tickets for a migration that does not exist, signed by the cluster's CA: host-2
	// as the source of a migration to host-1 (host-1's incoming, finish, abort), and as
	// its destination (host-1 telling how it goes).
	sign := func(source, dest string) string {
		key, err := ticket.NewKey()
		if err != nil {
			t.Fatal(err)
		}
		s, err := ticket.Sign(ticket.Ticket{Migration: none, VM: none, VMUUID: uuid.NewString(), Source: source, Destination: dest,
			SpecSHA256: ticket.SpecHash(api.VMSpec{Name: none}), Encryption: "required", Key: key,
			Issued: time.Now(), Expires: time.Now().Add(ticket.Lifetime)}, ca.Signer())
		if err != nil {
			t.Fatal(err)
		}
		return s
	}
	asSource, asDest := sign("host-2", "host-1"), sign("host-1", "host-2")

	// The center: host-1's certificate is a host's; tokens go without a certificate.
	centerCallers := []matrixCaller{
		{name: "none"},
		{name: "host", cert: &id1.Cert},
		{name: api.RoleViewer, bearer: tokens[api.RoleViewer]},
		{name: api.RoleOperator, bearer: tokens[api.RoleOperator]},
		{name: api.RoleAdmin, bearer: tokens[api.RoleAdmin]},
	}
	for i := range centerCallers {
		centerCallers[i].hc = l.HTTPS("client", "", centerCallers[i].cert)
	}
	// host-1's agent: host-2 calls it as another host would, with and without a ticket.
	agentCallers := []matrixCaller{
		{name: "none"},
		{name: "host", cert: &id2.Cert},
		{name: "host+ticket", cert: &id2.Cert, ticket: true},
		{name: api.RoleViewer, bearer: tokens[api.RoleViewer]},
		{name: api.RoleOperator, bearer: tokens[api.RoleOperator]},
		{name: api.RoleAdmin, bearer: tokens[api.RoleAdmin]},
		{name: "center", cert: &centerCert},
	}
	for i := range agentCallers {
		agentCallers[i].hc = l.HTTPS("client", "host-1", agentCallers[i].cert)
	}

	// What the matrix must leave as it was: no user, host, certificate, join token, VM,
	// schedule or migration made, changed or removed, at the center or on host-1.
	asAdmin := centerCallers[slices.IndexFunc(centerCallers, func(c matrixCaller) bool { return c.name == api.RoleAdmin })]
	asCenter := agentCallers[slices.IndexFunc(agentCallers, func(c matrixCaller) bool { return c.name == "center" })]
	state := func() string {
		return matrixState(ctx, t, asAdmin, lb.CenterURL, centerState) +
			matrixState(ctx, t, asCenter, lb.Hosts[0].AgentURL, []matrixList{{"/agent/v1/vms", []string{"name", "state"}}})
	}
	before := state()

	check := func(server, base string, table []api.Route, callers []matrixCaller,
		admits func(api.Route, matrixCaller) (bool, int)) string {
		var out strings.Builder
		tw := tabwriter.NewWriter(&out, 0, 0, 1, ' ', 0)
		fmt.Fprintf(tw, "%s route\taccess", server)
		for _, c := range callers {
			fmt.Fprintf(tw, "\t%s", c.name)
		}
		fmt.Fprintln(tw)
		for _, rt := range table {
			method, path := rt.Method, matrixPath(rt.Path)
			if method == "" {
				// A catch-all: one call with a method and path no route has.
				method, path = http.MethodPatch, strings.TrimSuffix(rt.Path, "/")+"/"+none
			}
			access := rt.Access
			if rt.CenterToo {
				access += "+center"
			}
			fmt.Fprintf(tw, "%s %s\t%s", method, path, access)
			for _, c := range callers {
				tk := ""
				if c.ticket {
					tk = asSource
					if rt.Access == api.AccessMigrationDestination {
						tk = asDest
					}
				}
				status, code, body := matrixCall(ctx, t, c, method, base+path, tk, rt)
				if len(body) > 300 {
					body = body[:300] + "…"
				}
				admitted, refusal := admits(rt, c)
				mark := ""
				switch {
				case !admitted && (status != refusal || code != guardCode(refusal)):
					mark = "!"
					t.Errorf("%s %s %s as %s: %d %s; the table (access %s) refuses this caller: want the guard's %d %s",
						server, method, path, c.name, status, body, access, refusal, guardCode(refusal))
				case admitted && (status == http.StatusUnauthorized || status == http.StatusForbidden):
					mark = "!"
					t.Errorf("%s %s %s as %s: %d %s; the table (access %s) admits this caller", server, method, path, c.name, status, body, access)
				case admitted && status >= 500:
					mark = "!"
					t.Errorf("%s %s %s as %s: %d %s; harmless input must get a 4xx at worst", server, method, path, c.name, status, body)
				case admitted && rt.Stream && status != http.StatusOK:
					mark = "!"
					t.Errorf("%s %s %s as %s: %d %s; an admitted stream must open", server, method, path, c.name, status, body)
				}
				fmt.Fprintf(tw, "\t%d%s", status, mark)
			}
			fmt.Fprintln(tw)
		}
		_ = tw.Flush()
		return out.String()
	}

	centerTable := center.Routes()
	centerMatrix := check("center", lb.CenterURL, centerTable, centerCallers, centerAdmits)
	agentTable := agent.Routes()
	agentMatrix := check("agent", lb.Hosts[0].AgentURL, agentTable, agentCallers, agentAdmits)
	t.Logf("route matrix (! = contradicts the table): center %d routes × %d callers, agent %d routes × %d callers\n%s\n%s",
		len(centerTable), len(centerCallers), len(agentTable), len(agentCallers), centerMatrix, agentMatrix)

	if after := state(); after != before {
		t.Errorf("the matrix changed the lab's state:\nbefore %s\nafter  %s", before, after)
	}

	// The OpenAPI document the center serves, to anyone, over TLS: one operation per
	// route of the table (catch-alls are not operations), with the table's access.
	resp, err := centerCallers[0].hc.Get(lb.CenterURL + "/api/v1/openapi.json")
	if err != nil {
		t.Fatalf("GET /api/v1/openapi.json: %v", err)
	}
	var doc struct {
		Paths map[string]map[string]json.RawMessage `json:"paths"`
	}
	err = json.NewDecoder(resp.Body).Decode(&doc)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK || err != nil {
		t.Fatalf("GET /api/v1/openapi.json: %d, %v", resp.StatusCode, err)
	}
	described := map[string]string{}
	for path, item := range doc.Paths {
		for method, raw := range item {
			switch strings.ToUpper(method) {
			case http.MethodGet, http.MethodPut, http.MethodPost, http.MethodDelete, http.MethodPatch, http.MethodHead, http.MethodOptions:
			default:
				continue // parameters, summary: not operations
			}
			var op struct {
				Access *string `json:"x-godwit-access"`
			}
			if err := json.Unmarshal(raw, &op); err != nil {
				t.Fatalf("OpenAPI operation %s %s: %v", method, path, err)
			}
			if op.Access == nil {
				t.Errorf("OpenAPI: %s %s does not say who may call it (x-godwit-access)", method, path)
				continue
			}
			described[strings.ToUpper(method)+" "+path] = *op.Access
		}
	}
	for _, rt := range centerTable {
		if rt.Method == "" {
			continue
		}
		got, ok := described[rt.Pattern()]
		switch {
		case !ok:
			t.Errorf("OpenAPI: the served document leaves out %s", rt.Pattern())
		case got != rt.Access:
			t.Errorf("OpenAPI: %s has x-godwit-access %q, the table %q", rt.Pattern(), got, rt.Access)
		}
		delete(described, rt.Pattern())
	}
	for op := range described {
		t.Errorf("OpenAPI: the served document describes %s, which the table does not declare", op)
	}
}

// wildcardRE matches a ServeMux path wildcard: {name} or {rest...}.
var wildcardRE = regexp.MustCompile(`\{[^}]*\}`)

// matrixPath fills every wildcard of a route's path with a name that names nothing.
func matrixPath(pattern string) string { return wildcardRE.ReplaceAllString(pattern, none) }

// guardCode is the error code a guard answers with a refusal's status.
func guardCode(status int) string {
	if status == http.StatusUnauthorized {
		return "unauthorized"
	}
	return "forbidden"
}

// centerAdmits decides from the table alone whether the center lets c call rt, and if
// not, the status of the refusal: 401 without credentials, 403 without the role. Hosts
// have the agent role, which an admin holds too; viewer < operator < admin.
func centerAdmits(rt api.Route, c matrixCaller) (bool, int) {
	rank := map[string]int{api.RoleViewer: 1, api.RoleOperator: 2, api.RoleAdmin: 3}
	switch {
	case rt.Access == api.AccessPublic:
		return true, 0
	case c.cert == nil && c.bearer == "":
		return false, http.StatusUnauthorized
	case rt.Access == api.RoleAgent:
		return c.name == "host" || c.name == api.RoleAdmin, http.StatusForbidden
	}
	return rank[c.name] > 0 && rank[c.name] >= rank[rt.Access], http.StatusForbidden
}

// agentAdmits decides from the table alone whether an agent lets c call rt: only a
// certificate of the cluster counts (a token is no credential there: 401); then the
// center for its routes, a host with a ticket naming it in the route's role for the
// migration routes, and the center too where the route says so.
func agentAdmits(rt api.Route, c matrixCaller) (bool, int) {
	switch {
	case rt.Access == api.AccessPublic:
		return true, 0
	case c.cert == nil:
		return false, http.StatusUnauthorized
	case rt.Access == api.AccessCenter:
		return c.name == "center", http.StatusForbidden
	case rt.Access == api.AccessMigrationSource || rt.Access == api.AccessMigrationDestination:
		return c.ticket || c.name == "center" && rt.CenterToo, http.StatusForbidden
	}
	return false, http.StatusForbidden
}

// matrixCall makes one call of the matrix and returns the status, the error code and
// the body. A stream's body is not read: only whether it opened matters.
func matrixCall(ctx context.Context, t *testing.T, c matrixCaller, method, url, tk string, rt api.Route) (int, string, string) {
	t.Helper()
	var body io.Reader
	if rt.Request != nil {
		body = strings.NewReader(matrixBody)
	}
	req, err := http.NewRequestWithContext(ctx, method, url, body)
	if err != nil {
		t.Fatal(err)
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	if c.bearer != "" {
		req.Header.Set("Authorization", "Bearer "+c.bearer)
	}
	if tk != "" {
		req.Header.Set(ticket.Header, tk)
	}
	resp, err := c.hc.Do(req)
	if err != nil {
		t.Fatalf("%s %s as %s: %v", method, url, c.name, err)
	}
	defer resp.Body.Close()
	if rt.Stream && resp.StatusCode == http.StatusOK {
		return resp.StatusCode, "", "(a stream)"
	}
	b, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	var e api.Error
	if resp.StatusCode >= 400 {
		_ = json.Unmarshal(b, &e)
	}
	return resp.StatusCode, e.Code, strings.TrimSpace(string(b))
}

// matrixList is a list an API answers, and the fields of its items the matrix must not
// change.
type matrixList struct {
	path   string
	fields []string
}

// centerState is what the matrix must not change at the center.
var centerState = []matrixList{
	{"/api/v1/users", []string{"name", "role"}},
	{"/api/v1/hosts", []string{"name", "state", "maintenance"}},
	{"/api/v1/certificates", []string{"serial", "revoked"}},
	{"/api/v1/join-tokens", []string{"id"}},
	{"/api/v1/vms", []string{"name"}},
	{"/api/v1/schedules", []string{"name", "enabled"}},
	{"/api/v1/migrations", []string{"id"}},
}

// matrixState summarizes lists as c reads them at base.
func matrixState(ctx context.Context, t *testing.T, c matrixCaller, base string, lists []matrixList) string {
	t.Helper()
	var out strings.Builder
	for _, q := range lists {
		status, _, body := matrixCall(ctx, t, c, http.MethodGet, base+q.path, "", api.Route{})
		var items []map[string]any
		if status != http.StatusOK || json.Unmarshal([]byte(body), &items) != nil {
			t.Fatalf("GET %s%s as %s: %d %s", base, q.path, c.name, status, body)
		}
		var rows []string
		for _, it := range items {
			var row []string
			for _, f := range q.fields {
				row = append(row, fmt.Sprintf("%s=%v", f, it[f]))
			}
			rows = append(rows, strings.Join(row, ","))
		}
		slices.Sort(rows)
		fmt.Fprintf(&out, "%s: [%s] ", q.path, strings.Join(rows, "; "))
	}
	return out.String()
}
