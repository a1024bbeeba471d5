package center

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/godwit/godwit/internal/api"
	"github.com/godwit/godwit/internal/audit"
)

// Failed logins through the served API — POST /api/v1/login and HTTP Basic — are
// limited per source and per user: 429 with Retry-After and a sentence, even for the
// right password, until the budget refills; other users and sources log in as before;
// every attempt is in the audit trail, bounded.
func TestFailedLoginsRateLimited(t *testing.T) {
	dir := t.TempDir()
	c := newAuthCenter(t, dir)
	h := c.routes(false)
	clock := time.Now()
	c.now = func() time.Time { return clock }
	admin := "Bearer " + credentials(t, dir)["token"]
	do := func(from, method, path, auth, body string) *httptest.ResponseRecorder {
		return serveAs(h, from, method, path, auth, body)
	}
	login := func(from, user, pw string) *httptest.ResponseRecorder {
		b, _ := json.Marshal(api.LoginRequest{User: user, Password: pw})
		return do(from, "POST", "/api/v1/login", "", string(b))
	}
	for _, u := range []string{"vi", "op"} {
		if w := do("198.18.0.1", "POST", "/api/v1/users", admin, fmt.Sprintf(`{"name":%q,"role":"viewer","password":"right-password"}`, u)); w.Code != 201 {
			t.Fatalf("create %s: %d %s", u, w.Code, w.Body)
		}
	}
	limited := func(what string, w *httptest.ResponseRecorder, who string) {
		t.Helper()
		if w.Code != http.StatusTooManyRequests || w.Header().Get("Retry-After") != "6" ||
			!strings.Contains(w.Body.String(), "too many failed logins "+who) {
			t.Fatalf("%s: %d, Retry-After %q, %s; want 429 after 6 s, naming %s", what, w.Code, w.Header().Get("Retry-After"), w.Body, who)
		}
	}

	// One source guesses vi's password.
	for i := range loginBurst {
		if w := login("198.18.0.50", "vi", fmt.Sprintf("guess-%d", i)); w.Code != http.StatusUnauthorized {
			t.Fatalf("wrong password %d: %d %s", i+1, w.Code, w.Body)
		}
	}
	limited("the right password after 10 wrong ones", login("198.18.0.50", "vi", "right-password"), "from 198.18.0.50")
	// Another user from another source is not affected; vi is, from anywhere.
	if w := login("198.18.0.60", "op", "right-password"); w.Code != http.StatusCreated {
		t.Fatalf("op's login from elsewhere: %d %s", w.Code, w.Body)
	}
	limited("vi's login from elsewhere", login("198.18.0.61", "vi", "right-password"), "for user vi")
	// One failure's worth later, one attempt is let through.
	clock = clock.Add(loginRefill)
	if w := login("198.18.0.50", "vi", "right-password"); w.Code != http.StatusCreated {
		t.Fatalf("vi's login once the limit has refilled: %d %s", w.Code, w.Body)
	}

	// HTTP Basic on a read is limited the same way.
	basic := func(user, pw string) string {
		return "Basic " + base64.StdEncoding.EncodeToString([]byte(user+":"+pw))
	}
	for i := range loginBurst {
		if w := do("198.18.0.70", "GET", "/api/v1/vms", basic("ghost", fmt.Sprint(i)), ""); w.Code != http.StatusUnauthorized {
			t.Fatalf("Basic with a wrong password %d: %d %s", i+1, w.Code, w.Body)
		}
	}
	limited("Basic after 10 wrong passwords", do("198.18.0.70", "GET", "/api/v1/vms", basic("op", "right-password"), ""), "from 198.18.0.70")
	if w := do("198.18.0.71", "GET", "/api/v1/vms", basic("op", "right-password"), ""); w.Code != http.StatusOK {
		t.Fatalf("op's Basic from elsewhere: %d %s", w.Code, w.Body)
	}

	// A login in the name of a megabyte-long user is refused and recorded, bounded.
	huge := strings.Repeat("u", 900<<10)
	if w := login("198.18.0.80", huge, "x"); w.Code != http.StatusUnauthorized {
		t.Fatalf("a login with a huge user name: %d", w.Code)
	}

	// Every attempt is in the trail, each record bounded.
	recs, err := c.trail.List(context.Background(), audit.Filter{Action: "user.login", Limit: 1000})
	if err != nil {
		t.Fatal(err)
	}
	outcomes := map[string]int{}
	for _, r := range recs {
		if len(r.Actor) > maxLoginName || len(r.Target) > maxLoginName {
			t.Fatalf("a login record holds a %d-byte actor and a %d-byte target", len(r.Actor), len(r.Target))
		}
		code := "other"
		switch {
		case strings.Contains(r.Error, "too many failed logins"):
			code = "429"
		case strings.Contains(r.Error, "password is wrong"):
			code = "401"
		case r.Outcome == audit.Succeeded:
			code = "ok"
		}
		outcomes[code]++
	}
	want := map[string]int{"401": 2*loginBurst + 1, "429": 3, "ok": 2}
	for k, n := range want {
		if outcomes[k] != n {
			t.Errorf("login records: %v; want %v", outcomes, want)
			break
		}
	}
}

// The limiter's memory is bounded however many sources fail, and a source or user that
// owes much is not forgotten to make room for ones that owe little.
func TestLoginLimiterMemoryBounded(t *testing.T) {
	l := newLoginLimiter()
	now := time.Now()
	for range loginBurst {
		l.fail("user:victim", now)
	}
	for i := range 3 * maxLoginKeys {
		l.fail(fmt.Sprintf("src:10.%d.%d.%d", i>>16, i>>8&255, i&255), now)
	}
	if n := len(l.full); n > maxLoginKeys {
		t.Fatalf("the limiter remembers %d keys; at most %d", n, maxLoginKeys)
	}
	if l.wait("user:victim", now) == 0 {
		t.Fatalf("a user with %d failures was forgotten to make room for sources with one", loginBurst)
	}
	// Keys that owe nothing any more are the first to go.
	later := now.Add(2 * loginRefill)
	for i := range maxLoginKeys / 5 {
		l.fail(fmt.Sprintf("src:new-%d", i), later)
	}
	for k := range l.full {
		if k != "user:victim" && !strings.HasPrefix(k, "src:new-") {
			t.Fatalf("key %s, paid off, is still remembered while the limiter made room", k)
		}
	}
	if _, ok := l.full["user:victim"]; !ok {
		t.Fatal("the victim, who still owes, was forgotten")
	}
}
