package guest

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"sort"
	"time"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// linkWait is how long ConfigureNetwork waits for a network interface to appear.
const linkWait = 15 * time.Second

// ConfigureNetwork brings up lo and, if cfg.IP is set, gives the first non-loopback
// interface (waiting for it to appear) that address, brings it up and adds the default
// route via cfg.Gateway if set. It sets the hostname if cfg.Hostname is set. It returns
// the name of the interface it configured ("" if none).
//
// Once an IPv4 address is configured it also announces it with gratuitous ARP
// (garpCount rounds garpInterval apart, see announceAddress) from a goroutine that
// ends when that is done or ctx is done, so peers with a stale ARP entry for the
// address (from an earlier VM) learn this VM's MAC at once; it does not wait for that.
func ConfigureNetwork(ctx context.Context, cfg Config, log *slog.Logger) (string, error) {
	if cfg.Hostname != "" {
		if err := unix.Sethostname([]byte(cfg.Hostname)); err != nil {
			return "", fmt.Errorf("set hostname %q: %w", cfg.Hostname, err)
		}
		log.Info("net: hostname set", "hostname", cfg.Hostname)
	}
	lo, err := netlink.LinkByName("lo")
	if err != nil {
		return "", fmt.Errorf("net: find lo: %w", err)
	}
	if err := netlink.LinkSetUp(lo); err != nil {
		return "", fmt.Errorf("net: bring up lo: %w", err)
	}
	if !cfg.IP.IsValid() {
		log.Info("net: no godwit.ip on the kernel command line; leaving the network alone")
		return "", nil
	}
	link, err := waitForLink(ctx, linkWait)
	if err != nil {
		return "", err
	}
	name := link.Attrs().Name
	addr := &netlink.Addr{IPNet: &net.IPNet{
		IP:   net.IP(cfg.IP.Addr().AsSlice()),
		Mask: net.CIDRMask(cfg.IP.Bits(), cfg.IP.Addr().BitLen()),
	}}
	if err := netlink.AddrReplace(link, addr); err != nil {
		return "", fmt.Errorf("net: add %s to %s: %w", cfg.IP, name, err)
	}
	if err := netlink.LinkSetUp(link); err != nil {
		return "", fmt.Errorf("net: bring up %s: %w", name, err)
	}
	if cfg.Gateway.IsValid() {
		route := &netlink.Route{LinkIndex: link.Attrs().Index, Gw: net.IP(cfg.Gateway.AsSlice())}
		if err := netlink.RouteReplace(route); err != nil {
			return "", fmt.Errorf("net: default route via %s on %s: %w", cfg.Gateway, name, err)
		}
	}
	gw := "none"
	if cfg.Gateway.IsValid() {
		gw = cfg.Gateway.String()
	}
	mac := link.Attrs().HardwareAddr
	log.Info("net: configured", "if", name, "mac", mac.String(), "ip", cfg.IP.String(), "gw", gw)
	if ip := cfg.IP.Addr(); ip.Is4() {
		go announceInBackground(ctx, log, name, link.Attrs().Index, mac, ip)
	}
	return name, nil
}

// announceInBackground sends the gratuitous ARP announcements of ip by mac on the
// interface (name, ifindex) and logs the outcome in one line.
func announceInBackground(ctx context.Context, log *slog.Logger, name string, ifindex int, mac net.HardwareAddr, ip netip.Addr) {
	n, err := announceAddress(ctx, ifindex, mac, ip, garpCount, garpInterval)
	if err != nil {
		log.Warn("net: gratuitous ARP failed", "if", name, "ip", ip.String(), "sent", n, "err", err)
		return
	}
	log.Info("net: gratuitous ARP sent", "if", name, "mac", mac.String(), "ip", ip.String(), "count", n)
}

// waitForLink returns the non-loopback Ethernet-like interface with the lowest index,
// polling until one appears or the timeout passes.
func waitForLink(ctx context.Context, timeout time.Duration) (netlink.Link, error) {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	for {
		links, err := netlink.LinkList()
		if err != nil {
			return nil, fmt.Errorf("net: list interfaces: %w", err)
		}
		sort.Slice(links, func(i, j int) bool { return links[i].Attrs().Index < links[j].Attrs().Index })
		for _, l := range links {
			a := l.Attrs()
			if a.Flags&net.FlagLoopback != 0 || a.EncapType == "loopback" || len(a.HardwareAddr) != 6 {
				continue
			}
			return l, nil
		}
		select {
		case <-ctx.Done():
			return nil, fmt.Errorf("net: no network interface appeared within %s (is virtio_net loaded?)", timeout)
		case <-time.After(50 * time.Millisecond):
		}
	}
}
