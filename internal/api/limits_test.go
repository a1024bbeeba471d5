package api

import (
	"encoding/json"
	"strings"
	"testing"
	"time"
	"unicode/utf8"
)

func TestTruncate(t *testing.T) {
	for _, c := range []struct {
		s    string
		n    int
		want string
	}{
		{"short", 10, "short"},
		{"exactly10!", 10, "exactly10!"},
		{strings.Repeat("a", 100), 40, strings.Repeat("a", 26) + "…[100 bytes]"},
		{strings.Repeat("é", 50) + "x", 41, strings.Repeat("é", 13) + "…[101 bytes]"}, // not inside a character
		{strings.Repeat("a", 100), 8, "aaaaaaaa"},
	} {
		got := Truncate(c.s, c.n)
		if got != c.want || len(got) > max(c.n, len(c.s)) || !utf8.ValidString(got) {
			t.Errorf("Truncate(%d bytes, %d) = %q (%d bytes); want %q", len(c.s), c.n, got, len(got), c.want)
		}
	}
}

// A full heartbeat's worth of refusals of the worst kind — huge fields that JSON must
// escape byte by byte — still fits well within the center's body limit once bounded.
func TestAgentRefusalsFitAHeartbeat(t *testing.T) {
	huge := strings.Repeat("<\x01", 300<<10) // 600 KiB; each byte escapes to 6
	var rs []AgentRefusal
	for range MaxAgentRefusals {
		r := AgentRefusal{Time: time.Now(), From: huge, Method: huge, Path: huge, Subject: huge, Reason: huge, Dropped: -5}.Bounded()
		for _, f := range []string{r.From, r.Method, r.Path, r.Subject, r.Reason} {
			if len(f) > MaxRefusalField || !strings.HasSuffix(f, "[614400 bytes]") {
				t.Fatalf("a bounded field: %d bytes, %q", len(f), f[max(len(f)-20, 0):])
			}
		}
		if r.Dropped != 0 {
			t.Fatalf("a negative dropped count was kept: %d", r.Dropped)
		}
		rs = append(rs, r)
	}
	b, err := json.Marshal(HostFacts{Name: "host-1", Refusals: rs})
	if err != nil {
		t.Fatal(err)
	}
	if len(b) > MaxBodyBytes/3 {
		t.Fatalf("a heartbeat with %d bounded refusals is %d bytes; the center takes at most %d", MaxAgentRefusals, len(b), MaxBodyBytes)
	}
}
