package center

import (
	"strings"
	"testing"
)

func TestParsePool(t *testing.T) {
	p, err := ParsePool("198.18.1.0/24,198.18.1.100-198.18.1.102")
	if err != nil {
		t.Fatal(err)
	}
	if p.String() != "198.18.1.0/24,198.18.1.100-198.18.1.102" {
		t.Fatalf("round trip: %s", p)
	}
	used := map[string]bool{"198.18.1.100": true}
	for _, c := range []struct{ last, want string }{
		{"", "198.18.1.101/24"},
		{"198.18.1.100", "198.18.1.101/24"},
		{"198.18.1.101", "198.18.1.102/24"},
		{"198.18.1.102", "198.18.1.101/24"}, // wraps, skipping the used .100
		{"198.19.0.1", "198.18.1.101/24"},   // a cursor outside the pool starts over
	} {
		if ip, err := p.next(used, c.last); err != nil || ip != c.want {
			t.Errorf("next after %q = %s, %v; want %s", c.last, ip, err, c.want)
		}
	}
	used["198.18.1.101"], used["198.18.1.102"] = true, true
	if _, err := p.next(used, "198.18.1.101"); err == nil || !strings.Contains(err.Error(), "exhausted") {
		t.Fatalf("full pool: %v", err)
	}
	for _, bad := range []string{"198.18.1.0/24", "x/24,1-2", "198.18.1.0/24,198.18.2.1-198.18.2.5", "198.18.1.0/24,198.18.1.9-198.18.1.1"} {
		if _, err := ParsePool(bad); err == nil {
			t.Errorf("ParsePool(%q) accepted it", bad)
		}
	}
	if _, err := p.checkIP("198.19.0.1"); err == nil {
		t.Error("checkIP accepted an address outside the subnet")
	}
	if got, err := p.checkIP("198.18.1.7"); err != nil || got != "198.18.1.7/24" {
		t.Errorf("checkIP = %s, %v", got, err)
	}
}

func TestMACs(t *testing.T) {
	used := map[string]string{}
	for range 100 {
		m, err := newMAC(used)
		if _, dup := used[m]; err != nil || !strings.HasPrefix(m, "02:67:77:") || dup {
			t.Fatalf("newMAC = %s, %v", m, err)
		}
		used[m] = "vm"
	}
	if _, err := checkMAC("01:00:5e:00:00:01"); err == nil {
		t.Error("checkMAC accepted a multicast MAC")
	}
	if m, err := checkMAC("02:AA:bb:00:00:01"); err != nil || m != "02:aa:bb:00:00:01" {
		t.Errorf("checkMAC = %s, %v", m, err)
	}
}

func TestNameRule(t *testing.T) {
	check := nameRule("VM")
	for _, ok := range []string{"a", "web-1", "db_2.prod", strings.Repeat("x", 63)} {
		if err := check(ok); err != nil {
			t.Errorf("%q refused: %v", ok, err)
		}
	}
	for _, bad := range []string{"", "-a", "a/b", "a b", strings.Repeat("x", 64), "ä"} {
		if err := check(bad); err == nil {
			t.Errorf("%q accepted", bad)
		}
	}
}
