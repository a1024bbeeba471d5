package integration

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/godwit/godwit/internal/api"
	"github.com/godwit/godwit/internal/audit"
	"github.com/godwit/godwit/internal/pki"
)

// TestAuthUsersRolesTokens checks authentication and roles over TCP from the client
// namespace: no credentials, a viewer, an operator, forged, revoked and expired tokens,
// the audit records of the refusals, and `godwit login`.
func TestAuthUsersRolesTokens(t *testing.T) {
	l := newLab(t, 1)
	lb := l.Lab()
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()

	credPath := filepath.Join(l.Dir(), "center", "admin-credentials")
	st, err := os.Stat(credPath)
	if err != nil {
		t.Fatalf("the center wrote no admin credentials: %v", err)
	}
	if st.Mode().Perm() != 0o600 {
		t.Errorf("%s has mode %v; want 0600", credPath, st.Mode().Perm())
	}
	b, _ := os.ReadFile(credPath)
	creds := map[string]string{}
	for _, line := range strings.Split(string(b), "\n") {
		if k, v, ok := strings.Cut(line, ": "); ok {
			creds[k] = v
		}
	}
	admin := "Bearer " + creds["token"]

	// Users are made over the unix socket (root is admin there), passwords on stdin.
	withStdin := func(stdin string, args ...string) {
		t.Helper()
		c := l.Cmd(ctx, args...)
		c.Stdin = strings.NewReader(stdin)
		if out, err := c.CombinedOutput(); err != nil {
			t.Fatalf("godwit %s: %v\n%s", strings.Join(args, " "), err, out)
		}
	}
	withStdin("operator-pw\n", "user", "create", "op", "--role", "operator")
	withStdin("viewer-pw-1\n", "user", "create", "vi", "--role", "viewer")
	l.MustRun("vm", "create", "auth-1", "--host", "host-1", "--start=false")

	// Over TCP the center serves TLS; the client trusts the lab's CA and checks the
	// center's address in its certificate.
	hc := l.HTTPS("client", "", nil)
	call := func(method, path, auth, body string) (int, string) {
		t.Helper()
		req, err := http.NewRequestWithContext(ctx, method, lb.CenterURL+path, strings.NewReader(body))
		if err != nil {
			t.Fatal(err)
		}
		if body != "" {
			req.Header.Set("Content-Type", "application/json")
		}
		if auth != "" {
			req.Header.Set("Authorization", auth)
		}
		resp, err := hc.Do(req)
		if err != nil {
			t.Fatalf("%s %s: %v", method, path, err)
		}
		defer resp.Body.Close()
		rb, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(rb)
	}
	login := func(user, pw string) api.Token {
		t.Helper()
		code, body := call("POST", "/api/v1/login", "", `{"user":"`+user+`","password":"`+pw+`"}`)
		var tok api.Token
		if code != http.StatusCreated || json.Unmarshal([]byte(body), &tok) != nil {
			t.Fatalf("login %s: %d %s", user, code, body)
		}
		return tok
	}
	expect := func(what string, want int, code int, body string) {
		t.Helper()
		if code != want {
			t.Errorf("%s: %d %s; want %d", what, code, body, want)
		}
	}

	code, body := call("GET", "/api/v1/vms", "", "")
	expect("GET /api/v1/vms without credentials", 401, code, body)
	if !strings.Contains(body, "godwit login") {
		t.Errorf("the 401 does not say how to log in: %s", body)
	}
	code, body = call("GET", "/api/v1/vms", admin, "")
	expect("admin token GET", 200, code, body)

	vi, op := login("vi", "viewer-pw-1"), login("op", "operator-pw")
	code, body = call("GET", "/api/v1/vms", "Bearer "+vi.Secret, "")
	expect("viewer GET", 200, code, body)
	code, body = call("POST", "/api/v1/vms/auth-1/stop?force=true", "Bearer "+vi.Secret, "")
	expect("viewer stop", 403, code, body)
	code, body = call("POST", "/api/v1/vms/auth-1/start", "Bearer "+op.Secret, "")
	expect("operator start", 200, code, body)
	code, body = call("POST", "/api/v1/vms/auth-1/stop?force=true", "Bearer "+op.Secret, "")
	expect("operator stop", 200, code, body)
	code, body = call("POST", "/api/v1/vms", "Bearer "+op.Secret, `{"name":"auth-2"}`)
	expect("operator create", 403, code, body)
	forged := "Bearer gw_0123456789abcdef_" + strings.Repeat("A", 43)
	code, body = call("POST", "/api/v1/vms/auth-1/stop", forged, "")
	expect("forged token", 401, code, body)

	// A revoked and an expired token of the operator.
	code, body = call("POST", "/api/v1/tokens", "Bearer "+op.Secret, `{}`)
	var revoked api.Token
	if code != 201 || json.Unmarshal([]byte(body), &revoked) != nil {
		t.Fatalf("token create: %d %s", code, body)
	}
	code, body = call("DELETE", "/api/v1/tokens/"+revoked.ID, "Bearer "+op.Secret, "")
	expect("revoke own token", 204, code, body)
	code, body = call("POST", "/api/v1/vms/auth-1/stop", "Bearer "+revoked.Secret, "")
	expect("revoked token", 401, code, body)
	code, body = call("POST", "/api/v1/tokens", admin, `{"user":"op","expires":"1s"}`)
	var expired api.Token
	if code != 201 || json.Unmarshal([]byte(body), &expired) != nil {
		t.Fatalf("token create for op: %d %s", code, body)
	}
	time.Sleep(1500 * time.Millisecond)
	code, body = call("POST", "/api/v1/vms/auth-1/stop", "Bearer "+expired.Secret, "")
	expect("expired token", 401, code, body)

	// Each refusal is in the trail, with the actor tried; refused before any handler ran,
	// a request is recorded with its route's action and target (the route table's).
	var recs []audit.Record
	l.RunJSON(&recs, "audit", "list", "--limit", "200")
	refused := map[string]int{}
	for _, r := range recs {
		if r.Outcome == audit.Refused {
			refused[r.Actor+" "+r.Action+" "+r.Target]++
		}
		if strings.Contains(string(r.Params), "operator-pw") || strings.Contains(string(r.Params), "viewer-pw-1") {
			t.Errorf("record %d holds a password: %s", r.ID, r.Params)
		}
	}
	for key, n := range map[string]int{"vi vm.stop auth-1": 1, "op vm.create ": 1,
		"anonymous vm.stop auth-1": 1, "op vm.stop auth-1": 2} {
		if refused[key] < n {
			t.Errorf("the trail has %d refused %q; want %d (refusals: %v)", refused[key], key, n, refused)
		}
	}

	// godwit login over TCP, password on stdin, keeps a token that works. The CLI
	// trusts the center's CA only when told which: not silently, not a wrong one.
	cfg := filepath.Join(t.TempDir(), "client.json")
	bin := os.Getenv("GODWIT_BIN")
	ca, err := pki.LoadOrCreateCA(filepath.Join(l.Dir(), "center", "pki"), time.Now())
	if err != nil {
		t.Fatal(err)
	}
	loginWith := func(extra ...string) (string, error) {
		t.Helper()
		args := append([]string{bin, "--config", cfg, "login", "--server", lb.CenterURL, "--user", "op"}, extra...)
		cmd, err := lb.Command(ctx, "client", args...)
		if err != nil {
			t.Fatal(err)
		}
		cmd.Stdin = strings.NewReader("operator-pw\n")
		out, err := cmd.CombinedOutput()
		return string(out), err
	}
	if out, err := loginWith(); err == nil || !strings.Contains(out, ca.Fingerprint()) || !strings.Contains(out, "--ca-fingerprint") {
		t.Errorf("login to an unknown center without a terminal: %v\n%s; want a refusal that shows the CA fingerprint", err, out)
	}
	wrong := "sha256:" + strings.Repeat("ab", 32)
	if out, err := loginWith("--ca-fingerprint", wrong); err == nil || !strings.Contains(out, "someone in between") {
		t.Errorf("login with the wrong CA fingerprint: %v\n%s; want a refusal", err, out)
	}
	if _, err := os.Stat(cfg); err == nil {
		t.Error("a refused login wrote the CLI config")
	}
	if out, err := loginWith("--ca-fingerprint", ca.Fingerprint()); err != nil {
		t.Fatalf("godwit login: %v\n%s", err, out)
	}
	if st, err := os.Stat(cfg); err != nil || st.Mode().Perm() != 0o600 {
		t.Errorf("CLI config after login: %v %v; want mode 0600", st, err)
	}
	cmd, _ := lb.Command(ctx, "client", bin, "--config", cfg, "vm", "list", "-o", "json")
	out, err := cmd.CombinedOutput()
	var vms []api.VM
	if err != nil || json.Unmarshal(out, &vms) != nil || len(vms) != 1 {
		t.Errorf("vm list with the stored token: %v\n%s", err, out)
	}
	cmd, _ = lb.Command(ctx, "client", bin, "--config", cfg, "vm", "delete", "auth-1")
	if out, err := cmd.CombinedOutput(); err == nil || !strings.Contains(string(out), "admin") {
		t.Errorf("an operator deleting a VM: %v\n%s; want a refusal naming the admin role", err, out)
	}

	// A center whose certificate the kept CA did not sign (reinstalled, or an impostor)
	// is refused, with a sentence that says so.
	evil, err := pki.LoadOrCreateCA(t.TempDir(), time.Now())
	if err != nil {
		t.Fatal(err)
	}
	b, _ = os.ReadFile(cfg)
	b = []byte(strings.ReplaceAll(string(b), jsonString(string(ca.CertPEM)), jsonString(string(evil.CertPEM))))
	if err := os.WriteFile(cfg, b, 0o600); err != nil {
		t.Fatal(err)
	}
	cmd, _ = lb.Command(ctx, "client", bin, "--config", cfg, "vm", "list")
	if out, err := cmd.CombinedOutput(); err == nil || !strings.Contains(string(out), "not signed by the CA this CLI trusts") {
		t.Errorf("vm list against a center the kept CA did not sign: %v\n%s", err, out)
	}
	l.MustRun("vm", "delete", "auth-1")
}

// jsonString is s as a JSON string literal without its quotes.
func jsonString(s string) string {
	b, _ := json.Marshal(s)
	return string(b[1 : len(b)-1])
}
