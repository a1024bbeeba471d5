package guest

import (
	"fmt"
	"net/netip"
	"strconv"
	"strings"
)

// Defaults for the settings that the kernel command line can override.
const (
	DefaultStaticMiB  = 32
	DefaultCheckMiBps = 64
)

// Config is what the guest takes from the kernel command line.
type Config struct {
	// IP is the address and prefix for the first non-loopback interface
	// (godwit.ip); invalid (zero) means "leave the network alone".
	IP netip.Prefix
	// Gateway is the optional default gateway (godwit.gw).
	Gateway netip.Addr
	// Hostname is the optional hostname (godwit.hostname).
	Hostname string
	// StaticMiB is the size of the static checked region (godwit.static_mib).
	StaticMiB int
	// CheckMiBps limits the checker's speed; 0 means unlimited (godwit.check_mibps).
	CheckMiBps float64
	// DirtyMiB and DirtyMiBps start the dirtier at boot when DirtyMiB > 0
	// (godwit.dirty_mib, godwit.dirty_rate).
	DirtyMiB   int
	DirtyMiBps float64
	// Unknown lists godwit.* parameters that were not recognised, for logging.
	Unknown []string
}

// ParseCmdline parses a kernel command line (the content of /proc/cmdline). Parameters
// not starting with "godwit." are ignored; a malformed godwit.* value is an error (the
// returned Config then still holds everything that did parse, with defaults elsewhere).
func ParseCmdline(cmdline string) (Config, error) {
	cfg := Config{StaticMiB: DefaultStaticMiB, CheckMiBps: DefaultCheckMiBps}
	var errs []string
	bad := func(key, val string, err error) {
		errs = append(errs, fmt.Sprintf("%s=%q: %v", key, val, err))
	}
	for _, param := range splitCmdline(cmdline) {
		key, val, hasVal := strings.Cut(param, "=")
		if !strings.HasPrefix(key, "godwit.") {
			continue
		}
		if !hasVal {
			bad(key, val, fmt.Errorf("missing value"))
			continue
		}
		switch key {
		case "godwit.ip":
			p, err := netip.ParsePrefix(val)
			if err != nil {
				bad(key, val, err)
				continue
			}
			if !p.Addr().Is4() && !p.Addr().Is6() {
				bad(key, val, fmt.Errorf("not an IP address"))
				continue
			}
			cfg.IP = p
		case "godwit.gw":
			a, err := netip.ParseAddr(val)
			if err != nil {
				bad(key, val, err)
				continue
			}
			cfg.Gateway = a
		case "godwit.hostname":
			if err := validHostname(val); err != nil {
				bad(key, val, err)
				continue
			}
			cfg.Hostname = val
		case "godwit.static_mib":
			n, err := parseMiB(val)
			if err != nil {
				bad(key, val, err)
				continue
			}
			cfg.StaticMiB = n
		case "godwit.dirty_mib":
			n, err := parseMiB(val)
			if err != nil {
				bad(key, val, err)
				continue
			}
			cfg.DirtyMiB = n
		case "godwit.check_mibps", "godwit.dirty_rate":
			r, err := parseRate(val)
			if err != nil {
				bad(key, val, err)
				continue
			}
			if key == "godwit.check_mibps" {
				cfg.CheckMiBps = r
			} else {
				cfg.DirtyMiBps = r
			}
		default:
			cfg.Unknown = append(cfg.Unknown, param)
		}
	}
	if cfg.Gateway.IsValid() && cfg.IP.IsValid() && cfg.Gateway.Is4() != cfg.IP.Addr().Is4() {
		errs = append(errs, fmt.Sprintf("godwit.gw=%s and godwit.ip=%s are of different address families", cfg.Gateway, cfg.IP))
		cfg.Gateway = netip.Addr{}
	}
	if len(errs) > 0 {
		return cfg, fmt.Errorf("kernel command line: %s", strings.Join(errs, "; "))
	}
	return cfg, nil
}

// maxMiB bounds every size taken from the command line or the HTTP API (1 TiB).
const maxMiB = 1 << 20

func parseMiB(s string) (int, error) {
	n, err := strconv.Atoi(s)
	if err != nil {
		return 0, fmt.Errorf("not an integer")
	}
	if n < 0 || n > maxMiB {
		return 0, fmt.Errorf("out of range 0..%d", maxMiB)
	}
	return n, nil
}

func parseRate(s string) (float64, error) {
	r, err := strconv.ParseFloat(s, 64)
	if err != nil {
		return 0, fmt.Errorf("not a number")
	}
	if r < 0 || r > 1e7 || r != r {
		return 0, fmt.Errorf("out of range 0..1e7")
	}
	return r, nil
}

// validHostname accepts RFC 1123 host names of at most 64 characters (the kernel's limit).
func validHostname(s string) error {
	if s == "" || len(s) > 64 {
		return fmt.Errorf("length must be 1..64")
	}
	for _, label := range strings.Split(s, ".") {
		if label == "" || label[0] == '-' || label[len(label)-1] == '-' {
			return fmt.Errorf("empty label or label starting/ending with '-'")
		}
		for _, c := range label {
			if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-') {
				return fmt.Errorf("invalid character %q", c)
			}
		}
	}
	return nil
}

// splitCmdline splits a kernel command line on white space, honouring double quotes the
// way the kernel does (quotes may surround a whole parameter or its value; they are
// removed).
func splitCmdline(s string) []string {
	var out []string
	var cur strings.Builder
	inQuote, have := false, false
	for _, c := range s {
		switch {
		case c == '"':
			inQuote = !inQuote
			have = true
		case !inQuote && (c == ' ' || c == '\t' || c == '\n' || c == '\r'):
			if have {
				out = append(out, cur.String())
				cur.Reset()
				have = false
			}
		default:
			cur.WriteRune(c)
			have = true
		}
	}
	if have {
		out = append(out, cur.String())
	}
	return out
}
