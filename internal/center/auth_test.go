package center

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/godwit/godwit/internal/api"
	"github.com/godwit/godwit/internal/audit"
)

// newAuthCenter opens a center on a fresh data directory (New bootstraps the users).
func newAuthCenter(t *testing.T, dir string) *Center {
	t.Helper()
	c, err := New(context.Background(), Config{Listen: "127.0.0.1:0", DataDir: dir,
		Registry: prometheus.NewRegistry(), Log: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.store.Close() })
	return c
}

// credentials reads the first start's file into a map.
func credentials(t *testing.T, dir string) map[string]string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(dir, AdminCredentialsFile))
	if err != nil {
		t.Fatal(err)
	}
	m := map[string]string{}
	for _, line := range strings.Split(string(b), "\n") {
		if k, v, ok := strings.Cut(line, ": "); ok && !strings.HasPrefix(k, "#") {
			m[k] = v
		}
	}
	return m
}

func TestPasswordHashing(t *testing.T) {
	h, err := hashPassword("correct horse")
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(h, "$2") || strings.Contains(h, "correct horse") {
		t.Fatalf("hash %q is not a bcrypt hash", h)
	}
	if !checkPassword(h, "correct horse") || checkPassword(h, "correct hors") || checkPassword("", "correct horse") {
		t.Error("checkPassword accepts a wrong password or refuses the right one")
	}
	if _, err := hashPassword("short"); err == nil {
		t.Error("a 5-byte password was accepted")
	}
	if _, err := hashPassword(strings.Repeat("x", 73)); err == nil {
		t.Error("a 73-byte password was accepted (bcrypt would truncate it)")
	}
}

func TestFirstStartWritesCredentialsOnce(t *testing.T) {
	dir := t.TempDir()
	c := newAuthCenter(t, dir)
	for _, f := range []string{AdminCredentialsFile} {
		st, err := os.Stat(filepath.Join(dir, f))
		if err != nil {
			t.Fatal(err)
		}
		if st.Mode().Perm() != 0o600 {
			t.Errorf("%s has mode %v, want 0600", f, st.Mode().Perm())
		}
	}
	creds := credentials(t, dir)
	if creds["user"] != adminUser || creds["password"] == "" || creds["token"] == "" {
		t.Fatalf("credentials file lacks a field: %v", creds)
	}
	u, _, err := c.verifyToken(context.Background(), creds["token"])
	if err != nil || u.Role != api.RoleAdmin {
		t.Fatalf("admin token: %v %+v", err, u)
	}
	before, _ := os.ReadFile(filepath.Join(dir, AdminCredentialsFile))
	c.store.Close()

	newAuthCenter(t, dir) // a restart
	after, _ := os.ReadFile(filepath.Join(dir, AdminCredentialsFile))
	if string(before) != string(after) {
		t.Error("a restart rewrote admin-credentials")
	}
}

func TestTokenVerification(t *testing.T) {
	c := newAuthCenter(t, t.TempDir())
	ctx := context.Background()
	if _, err := c.createUser(ctx, api.CreateUserRequest{Name: "op", Role: api.RoleOperator, Password: "operator-pw"}); err != nil {
		t.Fatal(err)
	}
	u, _ := c.store.User(ctx, "op")
	tok, err := c.issueToken(ctx, u, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	if got, _, err := c.verifyToken(ctx, tok.Secret); err != nil || got.Name != "op" {
		t.Fatalf("a fresh token: %v %+v", err, got)
	}
	st, _ := c.store.Token(ctx, tok.ID)
	id, secret, _ := splitToken(tok.Secret)
	// (The secret is base64url, which may hold "_": split it as the center does.)
	if strings.Contains(st.SecretSHA256, secret) {
		t.Error("the store holds the secret itself")
	}
	forged := tokenPrefix + id + "_" + base64.RawURLEncoding.EncodeToString(make([]byte, 32))
	for name, bad := range map[string]string{"forged secret": forged, "garbage": "hello", "unknown id": tokenPrefix + "0123456789abcdef_" + secret} {
		if _, _, err := c.verifyToken(ctx, bad); err == nil {
			t.Errorf("%s was accepted", name)
		}
	}
	c.now = func() time.Time { return time.Now().Add(2 * time.Hour) }
	if _, _, err := c.verifyToken(ctx, tok.Secret); err == nil || !strings.Contains(err.Error(), "expired") {
		t.Errorf("an expired token: %v", err)
	}
	c.now = time.Now
	if err := c.store.RevokeToken(ctx, tok.ID, time.Now()); err != nil {
		t.Fatal(err)
	}
	if _, _, err := c.verifyToken(ctx, tok.Secret); err == nil || !strings.Contains(err.Error(), "revoked") {
		t.Errorf("a revoked token: %v", err)
	}
}

func TestRoleMatrix(t *testing.T) {
	type req struct{ method, path string }
	cases := []struct {
		req
		need string
	}{
		{req{"POST", "/api/v1/login"}, api.AccessPublic},
		{req{"GET", "/api/v1/vms"}, api.RoleViewer},
		{req{"GET", "/metrics"}, api.RoleViewer},
		{req{"GET", "/api/v1/users"}, api.RoleAdmin},
		{req{"POST", "/api/v1/vms/web/start"}, api.RoleOperator},
		{req{"POST", "/api/v1/vms/web/stop"}, api.RoleOperator},
		{req{"POST", "/api/v1/vms/web/migrate"}, api.RoleOperator},
		{req{"POST", "/api/v1/tasks/x/cancel"}, api.RoleOperator},
		{req{"POST", "/api/v1/migrations/x/cancel"}, api.RoleOperator},
		{req{"POST", "/api/v1/vms"}, api.RoleAdmin},
		{req{"DELETE", "/api/v1/vms/web"}, api.RoleAdmin},
		{req{"POST", "/api/v1/users"}, api.RoleAdmin},
		{req{"DELETE", "/api/v1/users/op"}, api.RoleAdmin},
		{req{"POST", "/api/v1/vms/a/b/stop"}, api.RoleViewer}, // no such route: 404 to the signed-in
		{req{"POST", "/api/v1/hosts/heartbeat"}, api.RoleAgent},
		{req{"POST", "/api/v1/tokens"}, api.RoleViewer},
	}
	c := newAuthCenter(t, t.TempDir())
	for _, tc := range cases {
		_, pattern := c.mux.Handler(httptest.NewRequest(tc.method, tc.path, nil))
		var got string
		for _, rt := range Routes() {
			if rt.Pattern() == pattern {
				got = rt.Access
			}
		}
		if got != tc.need {
			t.Errorf("%s %s (route %q) needs %q, want %q", tc.method, tc.path, pattern, got, tc.need)
		}
	}
	allowed := map[string][]string{
		api.RoleViewer:   {api.RoleViewer},
		api.RoleOperator: {api.RoleViewer, api.RoleOperator},
		api.RoleAdmin:    {api.RoleViewer, api.RoleOperator, api.RoleAdmin, api.RoleAgent},
		api.RoleAgent:    {api.RoleAgent},
		"":               nil,
	}
	for role, ok := range allowed {
		for _, need := range []string{api.RoleViewer, api.RoleOperator, api.RoleAdmin, api.RoleAgent} {
			want := false
			for _, o := range ok {
				want = want || o == need
			}
			if got := allows(role, need); got != want {
				t.Errorf("allows(%q, %q) = %v, want %v", role, need, got, want)
			}
		}
	}
}

// TestAuthenticatedAPI drives the served handler: 401 without credentials, 403 for a
// role too low, and a refused request recorded with the actor tried.
func TestAuthenticatedAPI(t *testing.T) {
	dir := t.TempDir()
	c := newAuthCenter(t, dir)
	h := c.routes(false)
	creds := credentials(t, dir)
	do := func(method, path, auth, body string) *httptest.ResponseRecorder {
		return serveAs(h, "", method, path, auth, body)
	}
	if w := do("GET", "/api/v1/vms", "", ""); w.Code != 401 || !strings.Contains(w.Body.String(), "godwit login") {
		t.Fatalf("no credentials: %d %s", w.Code, w.Body)
	}
	admin := "Bearer " + creds["token"]
	if w := do("POST", "/api/v1/users", admin, `{"name":"vi","role":"viewer","password":"viewer-pw"}`); w.Code != 201 {
		t.Fatalf("create viewer: %d %s", w.Code, w.Body)
	}
	w := do("POST", "/api/v1/login", "", `{"user":"vi","password":"viewer-pw"}`)
	var tok api.Token
	if w.Code != 201 || json.Unmarshal(w.Body.Bytes(), &tok) != nil || tok.Secret == "" {
		t.Fatalf("login: %d %s", w.Code, w.Body)
	}
	if w := do("GET", "/api/v1/vms", "Bearer "+tok.Secret, ""); w.Code != 200 {
		t.Errorf("viewer GET: %d %s", w.Code, w.Body)
	}
	if w := do("POST", "/api/v1/vms/web/stop", "Bearer "+tok.Secret, ""); w.Code != 403 || !strings.Contains(w.Body.String(), "operator") {
		t.Errorf("viewer stop: %d %s", w.Code, w.Body)
	}
	basic := "Basic " + base64.StdEncoding.EncodeToString([]byte("vi:wrong-password"))
	if w := do("POST", "/api/v1/vms/web/stop", basic, ""); w.Code != 401 {
		t.Errorf("wrong password: %d %s", w.Code, w.Body)
	}
	recs, err := c.trail.List(context.Background(), audit.Filter{Limit: 100})
	if err != nil {
		t.Fatal(err)
	}
	found := map[string]bool{}
	for _, r := range recs {
		if r.Outcome == audit.Refused && r.Action == "vm.stop" || r.Outcome == audit.Refused && r.Target == "/api/v1/vms/web/stop" {
			found[r.Actor] = true
		}
		if strings.Contains(string(r.Params), "viewer-pw") {
			t.Errorf("record %d holds a password: %s", r.ID, r.Params)
		}
	}
	if !found["vi"] {
		t.Errorf("the refused stops are not recorded with actor vi: %+v", recs)
	}
}

// serveAs serves one request to h from the address from ("" for httptest's), with an
// Authorization header auth (when not "") and a JSON body (when not "").
func serveAs(h http.Handler, from, method, path, auth, body string) *httptest.ResponseRecorder {
	r := httptest.NewRequest(method, path, strings.NewReader(body))
	if from != "" {
		r.RemoteAddr = from + ":40000"
	}
	if body != "" {
		r.Header.Set("Content-Type", "application/json")
	}
	if auth != "" {
		r.Header.Set("Authorization", auth)
	}
	w := httptest.NewRecorder()
	h.ServeHTTP(w, r)
	return w
}
