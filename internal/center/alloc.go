package center

import (
	"crypto/rand"
	"fmt"
	"net"
	"net/netip"
	"strings"
)

// Pool is a network's subnet and the range of addresses the center hands to VMs.
type Pool struct {
	Subnet netip.Prefix
	First  netip.Addr
	Last   netip.Addr
}

// ParsePool parses "198.18.1.0/24,198.18.1.100-198.18.1.199".
func ParsePool(s string) (Pool, error) {
	subnet, rng, ok := strings.Cut(s, ",")
	if !ok {
		return Pool{}, fmt.Errorf("address pool %q must look like 198.18.1.0/24,198.18.1.100-198.18.1.199", s)
	}
	p, err := netip.ParsePrefix(strings.TrimSpace(subnet))
	if err != nil {
		return Pool{}, fmt.Errorf("address pool %q: subnet: %w", s, err)
	}
	a, b, ok := strings.Cut(rng, "-")
	if !ok {
		return Pool{}, fmt.Errorf("address pool %q: the range must be FIRST-LAST", s)
	}
	first, err1 := netip.ParseAddr(strings.TrimSpace(a))
	last, err2 := netip.ParseAddr(strings.TrimSpace(b))
	if err1 != nil || err2 != nil {
		return Pool{}, fmt.Errorf("address pool %q: the range must be two IPv4 addresses", s)
	}
	p = p.Masked()
	if !p.Contains(first) || !p.Contains(last) || last.Less(first) {
		return Pool{}, fmt.Errorf("address pool %q: the range must lie inside %s, first before last", s, p)
	}
	return Pool{Subnet: p, First: first, Last: last}, nil
}

// String is the inverse of ParsePool.
func (p Pool) String() string {
	return fmt.Sprintf("%s,%s-%s", p.Subnet, p.First, p.Last)
}

// next returns the first free address after last (wrapping round the pool), in CIDR
// form. Going round rather than taking the lowest free address keeps a just-released
// address out of use while other machines may still have its old MAC cached.
func (p Pool) next(used map[string]bool, last string) (string, error) {
	start := p.First
	if l, err := netip.ParseAddr(last); err == nil && !l.Less(p.First) && l.Less(p.Last) {
		start = l.Next()
	}
	for a := start; ; {
		if !used[a.String()] {
			return fmt.Sprintf("%s/%d", a, p.Subnet.Bits()), nil
		}
		if a = a.Next(); a == p.Last.Next() {
			a = p.First
		}
		if a == start {
			return "", fmt.Errorf("the address pool %s-%s is exhausted", p.First, p.Last)
		}
	}
}

// checkIP validates a user-given address against the pool's subnet and returns it in
// CIDR form.
func (p Pool) checkIP(ip string) (string, error) {
	addr, err := netip.ParseAddr(strings.SplitN(ip, "/", 2)[0])
	if err != nil {
		return "", fmt.Errorf("IP %q is not an IPv4 address", ip)
	}
	if !p.Subnet.Contains(addr) {
		return "", fmt.Errorf("IP %s is outside the network's subnet %s", addr, p.Subnet)
	}
	return fmt.Sprintf("%s/%d", addr, p.Subnet.Bits()), nil
}

// newMAC returns a random locally administered unicast MAC with Godwit's prefix
// 02:67:77 ("gw"), avoiding those in use.
func newMAC(used map[string]string) (string, error) {
	for range 1000 {
		var b [3]byte
		if _, err := rand.Read(b[:]); err != nil {
			return "", fmt.Errorf("random MAC: %w", err)
		}
		m := fmt.Sprintf("02:67:77:%02x:%02x:%02x", b[0], b[1], b[2])
		if _, taken := used[m]; !taken {
			return m, nil
		}
	}
	return "", fmt.Errorf("no free MAC address found")
}

// checkMAC validates a user-given MAC: a unicast address in canonical form.
func checkMAC(s string) (string, error) {
	hw, err := net.ParseMAC(s)
	if err != nil || len(hw) != 6 {
		return "", fmt.Errorf("MAC %q is not of the form 02:00:00:00:00:01", s)
	}
	if hw[0]&1 == 1 {
		return "", fmt.Errorf("MAC %s is a multicast address; a NIC needs a unicast one", s)
	}
	return hw.String(), nil
}
