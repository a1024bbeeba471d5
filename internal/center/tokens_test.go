package center

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/godwit/godwit/internal/api"
	"github.com/godwit/godwit/internal/store"
)

// Every API token expires: through the served API nobody creates one that never
// expires, a non-admin creates one for at most 90 days and an admin for at most 365;
// the first start's token lasts a day; a token an older center stored without an expiry
// lasts a year from its creation.
func TestTokenLifetimesCapped(t *testing.T) {
	dir := t.TempDir()
	c := newAuthCenter(t, dir)
	h := c.routes(false)
	clock := time.Now()
	c.now = func() time.Time { return clock }
	do := func(method, path, auth, body string) *httptest.ResponseRecorder {
		return serveAs(h, "", method, path, auth, body)
	}
	admin := "Bearer " + credentials(t, dir)["token"]
	if w := do("POST", "/api/v1/users", admin, `{"name":"vi","role":"viewer","password":"viewer-pw"}`); w.Code != 201 {
		t.Fatalf("create viewer: %d %s", w.Code, w.Body)
	}
	var vt api.Token
	if w := do("POST", "/api/v1/login", "", `{"user":"vi","password":"viewer-pw"}`); w.Code != 201 || json.Unmarshal(w.Body.Bytes(), &vt) != nil {
		t.Fatalf("viewer login: %d %s", w.Code, w.Body)
	}
	viewer := "Bearer " + vt.Secret
	for _, c := range []struct {
		who, auth, expires string
		want               time.Duration // 0: refused
	}{
		{"viewer", viewer, "never", 0},
		{"viewer", viewer, "0", 0},
		{"viewer", viewer, "91d", 0},
		{"viewer", viewer, "100000000d", 0},
		{"viewer", viewer, "9999999h", 0},
		{"viewer", viewer, "90d", 90 * 24 * time.Hour},
		{"viewer", viewer, "", 12 * time.Hour},
		{"admin", admin, "never", 0},
		{"admin", admin, "366d", 0},
		{"admin", admin, "365d", 365 * 24 * time.Hour},
	} {
		w := do("POST", "/api/v1/tokens", c.auth, fmt.Sprintf(`{"expires":%q}`, c.expires))
		var tok api.Token
		if c.want == 0 {
			if w.Code != http.StatusBadRequest || !strings.Contains(w.Body.String(), "every API token expires") && !strings.Contains(w.Body.String(), "not a duration") {
				t.Errorf("%s asks for a token that lasts %q: %d %s; want 400 with the limit", c.who, c.expires, w.Code, w.Body)
			}
			continue
		}
		if w.Code != 201 || json.Unmarshal(w.Body.Bytes(), &tok) != nil || tok.Expires == nil || !tok.Expires.Equal(clock.UTC().Add(c.want)) {
			t.Errorf("%s asks for a token that lasts %q: %d %s; want one until %s", c.who, c.expires, w.Code, w.Body, clock.UTC().Add(c.want))
		}
	}

	// The first start's token lasts a day.
	ctx := context.Background()
	clock = clock.Add(bootstrapTokenLifetime - time.Minute)
	if w := do("GET", "/api/v1/users", admin, ""); w.Code != 200 {
		t.Fatalf("the bootstrap token before a day is over: %d %s", w.Code, w.Body)
	}
	clock = clock.Add(2 * time.Minute)
	if w := do("GET", "/api/v1/users", admin, ""); w.Code != http.StatusUnauthorized || !strings.Contains(w.Body.String(), "expired") {
		t.Fatalf("the bootstrap token after a day: %d %s; want 401, expired", w.Code, w.Body)
	}

	// Tokens stored without an expiry by an older center.
	for _, age := range []time.Duration{time.Hour, maxTokenLifetime + time.Hour} {
		id := fmt.Sprintf("%016x", int64(age))
		secret := "legacy-secret-" + id
		if err := c.store.InsertToken(ctx, store.TokenRecord{ID: id, User: "admin", SecretSHA256: hashSecret(secret), Created: clock.Add(-age)}); err != nil {
			t.Fatal(err)
		}
		_, _, err := c.verifyToken(ctx, tokenPrefix+id+"_"+secret)
		if old := age > maxTokenLifetime; old != (err != nil) {
			t.Errorf("a token without expiry, %s old: %v", age, err)
		}
	}
}

// FuzzParseLifetime: any lifetime a client asks for is parsed to a duration of at most
// 100000 days, or refused with a 400 that says what to send; never a panic or overflow.
func FuzzParseLifetime(f *testing.F) {
	for _, s := range []string{"", "0", "never", "12h", "30d", "90d", "100000d", "100001d", "9223372036854775807d",
		"-1d", "0d", "1.5d", "9999999h", "1h30m", "-1h", "soon", "d", "١d", "+5d", " 5d"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		d, err := parseLifetime(s, defaultTokenLifetime)
		if err != nil {
			var se *api.StatusError
			if !errors.As(err, &se) || se.Status != http.StatusBadRequest || !strings.Contains(se.Msg, "such as 12h or 30d") {
				t.Fatalf("parseLifetime(%q): %v; want a 400 that says what to send", s, err)
			}
			return
		}
		if d < 0 || d > 100000*24*time.Hour && strings.HasSuffix(s, "d") {
			t.Fatalf("parseLifetime(%q) = %s", s, d)
		}
		if d == 0 && s != "0" && s != "never" {
			t.Fatalf("parseLifetime(%q) = 0, which means no expiry", s)
		}
	})
}
