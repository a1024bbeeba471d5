package guest

import (
	"net/netip"
	"reflect"
	"strings"
	"testing"
)

func TestParseCmdlineFull(t *testing.T) {
	cfg, err := ParseCmdline("BOOT_IMAGE=/vmlinuz console=ttyS0 quiet panic=-1 godwit.ip=198.18.1.100/24 " +
		"godwit.gw=198.18.1.1 godwit.hostname=vm-1.lab godwit.static_mib=8 godwit.check_mibps=0 " +
		"godwit.dirty_mib=16 godwit.dirty_rate=2.5\n")
	if err != nil {
		t.Fatalf("ParseCmdline: %v", err)
	}
	want := Config{
		IP:         netip.MustParsePrefix("198.18.1.100/24"),
		Gateway:    netip.MustParseAddr("198.18.1.1"),
		Hostname:   "vm-1.lab",
		StaticMiB:  8,
		CheckMiBps: 0,
		DirtyMiB:   16,
		DirtyMiBps: 2.5,
	}
	if !reflect.DeepEqual(cfg, want) {
		t.Errorf("got %+v\nwant %+v", cfg, want)
	}
}

func TestParseCmdlineDefaults(t *testing.T) {
	cfg, err := ParseCmdline("console=ttyS0 quiet ip=10.0.0.1 godwitx.ip=1.2.3.4/8")
	if err != nil {
		t.Fatalf("ParseCmdline: %v", err)
	}
	if cfg.IP.IsValid() || cfg.Gateway.IsValid() || cfg.Hostname != "" {
		t.Errorf("network settings taken from foreign parameters: %+v", cfg)
	}
	if cfg.StaticMiB != DefaultStaticMiB || cfg.CheckMiBps != DefaultCheckMiBps || cfg.DirtyMiB != 0 {
		t.Errorf("defaults wrong: %+v", cfg)
	}
}

func TestParseCmdlineQuotesAndUnknown(t *testing.T) {
	cfg, err := ParseCmdline(`foo="a b c" "godwit.hostname=quoted" godwit.ip="198.18.0.5/16" godwit.future=1`)
	if err != nil {
		t.Fatalf("ParseCmdline: %v", err)
	}
	if cfg.Hostname != "quoted" || cfg.IP != netip.MustParsePrefix("198.18.0.5/16") {
		t.Errorf("quoted values not parsed: %+v", cfg)
	}
	if !reflect.DeepEqual(cfg.Unknown, []string{"godwit.future=1"}) {
		t.Errorf("Unknown = %q", cfg.Unknown)
	}
}

func TestParseCmdlineErrors(t *testing.T) {
	for _, c := range []struct{ cmdline, wantErr string }{
		{"godwit.ip=198.18.1.100", "godwit.ip"},         // no prefix length
		{"godwit.ip=300.1.1.1/24", "godwit.ip"},         // bad address
		{"godwit.gw=nope", "godwit.gw"},                 // bad gateway
		{"godwit.hostname=bad_name", "godwit.hostname"}, // underscore
		{"godwit.hostname=-x", "godwit.hostname"},
		{"godwit.static_mib=-1", "godwit.static_mib"},
		{"godwit.dirty_rate=fast", "godwit.dirty_rate"},
		{"godwit.ip", "missing value"},
		{"godwit.ip=198.18.1.100/24 godwit.gw=fe80::1", "address families"},
	} {
		cfg, err := ParseCmdline(c.cmdline)
		if err == nil || !strings.Contains(err.Error(), c.wantErr) {
			t.Errorf("ParseCmdline(%q) error = %v, want one mentioning %q", c.cmdline, err, c.wantErr)
		}
		if cfg.StaticMiB != DefaultStaticMiB && !strings.Contains(c.cmdline, "static_mib") {
			t.Errorf("ParseCmdline(%q) lost defaults: %+v", c.cmdline, cfg)
		}
	}
	// The good parameters survive a bad one.
	cfg, err := ParseCmdline("godwit.gw=nope godwit.ip=198.18.1.100/24")
	if err == nil || cfg.IP != netip.MustParsePrefix("198.18.1.100/24") {
		t.Errorf("got %+v, %v; want the IP kept and an error", cfg, err)
	}
}
