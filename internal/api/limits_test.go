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
		{strings.Repeat("a", 100), 40, strings.Repeat("a", 26) + "…(100 bytes)"},
		{strings.Repeat("é", 50) + "x", 41, strings.Repeat("é", 13) + "…(101 bytes)"}, // not inside a character
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
			if len(f) > MaxRefusalField || !strings.HasSuffix(f, "(614400 bytes)") {
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

// FuzzAgentRefusalBounded: for any refusal an agent could be sent, the bounded one has
// every field within MaxRefusalField bytes, each the start of the original (plus the
// note of its length) and valid UTF-8 when the original was, and a heartbeat full of
// them fits the body limit.
func FuzzAgentRefusalBounded(f *testing.F) {
	f.Add("198.18.1.3:4000", "GET", "/agent/v1/vms", "host-2", "no certificate", 0)
	f.Add("", "", "", "", "", -1)
	f.Add(strings.Repeat("<", 5000), strings.Repeat("\x00", 300), strings.Repeat("é", 2000), "\xff\xfe", strings.Repeat("\u2028", 100), 1<<40)
	f.Fuzz(func(t *testing.T, from, method, path, subject, reason string, dropped int) {
		in := AgentRefusal{From: from, Method: method, Path: path, Subject: subject, Reason: reason, Dropped: dropped}
		out := in.Bounded()
		for _, p := range [][2]string{{in.From, out.From}, {in.Method, out.Method}, {in.Path, out.Path}, {in.Subject, out.Subject}, {in.Reason, out.Reason}} {
			orig, got := p[0], p[1]
			if len(got) > MaxRefusalField {
				t.Fatalf("a bounded field of %d bytes", len(got))
			}
			if len(orig) <= MaxRefusalField && got != orig {
				t.Fatalf("a field within the bound was changed: %q → %q", orig, got)
			}
			kept, _, _ := strings.Cut(got, "…(")
			if !strings.HasPrefix(orig, kept) {
				t.Fatalf("%q is not the start of the field", kept)
			}
			if utf8.ValidString(orig) && !utf8.ValidString(got) {
				t.Fatalf("cutting made invalid UTF-8: %q", got)
			}
		}
		if out.Dropped < 0 {
			t.Fatalf("dropped %d", out.Dropped)
		}
		rs := make([]AgentRefusal, MaxAgentRefusals)
		for i := range rs {
			rs[i] = out
		}
		if b, _ := json.Marshal(HostFacts{Refusals: rs}); len(b) > MaxBodyBytes/3 {
			t.Fatalf("a heartbeat of %d such refusals is %d bytes", MaxAgentRefusals, len(b))
		}
	})
}

// FuzzVMSpecBounds: any spec a center or agent decodes is refused by CheckBounds exactly
// when one of its counts or lengths is over its bound, without panicking.
func FuzzVMSpecBounds(f *testing.F) {
	f.Add(`{"name":"web-1","boot":{"kernel":"[shared] k","cmdline":"console=ttyS0"},"nics":[{"network":"lab"}],"disks":[{"datastore":"shared","path":"d","format":"raw","size_mib":1}]}`)
	f.Add(`{"name":"` + strings.Repeat("n", 64) + `"}`)
	f.Add(`{"nics":[` + strings.Repeat(`{},`, 8) + `{}]}`)
	f.Add(`{"disks":[{"size_mib":67108865}]}`)
	f.Add(`{"boot":{"cmdline":"` + strings.Repeat("c", 2048) + `"}}`)
	f.Fuzz(func(t *testing.T, body string) {
		var s VMSpec
		if DecodeJSON(strings.NewReader(body), &s) != nil {
			return
		}
		over := len(s.Name) > MaxVMName || len(s.NICs) > MaxNICs || len(s.Disks) > MaxDisks ||
			len(s.CPUModel) > MaxShortName || len(s.MigrationPolicy) > MaxShortName ||
			len(s.Boot.Kernel) > MaxPath || len(s.Boot.Initrd) > MaxPath || len(s.Boot.Cmdline) > MaxCmdline
		for _, d := range s.Disks {
			over = over || len(d.Datastore) > MaxShortName || len(d.Path) > MaxPath || len(d.Format) > MaxShortName || d.SizeMiB > MaxDiskMiB
		}
		for _, n := range s.NICs {
			over = over || len(n.Network) > MaxShortName || len(n.MAC) > MaxShortName || len(n.IP) > MaxShortName
		}
		err := s.CheckBounds()
		if over != (err != nil) {
			t.Fatalf("CheckBounds(%.200q) = %v; over a bound: %v", body, err, over)
		}
		if err != nil && !strings.Contains(err.Error(), "at most") {
			t.Fatalf("the refusal does not name the bound: %v", err)
		}
	})
}

func TestSpecMachine(t *testing.T) {
	for _, m := range []string{"", MachineQ35, MachineQ35Lean} {
		if err := (VMSpec{Name: "v", Machine: m}).CheckBounds(); err != nil {
			t.Errorf("machine %q refused: %v", m, err)
		}
	}
	err := (VMSpec{Name: "v", Machine: "q35,sata=on"}).CheckBounds()
	if err == nil || !strings.Contains(err.Error(), "the machines are q35-lean and q35") {
		t.Errorf("an unknown machine = %v; want a refusal naming the machines", err)
	}
}
