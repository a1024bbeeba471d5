package lab

import (
	"context"
	"errors"
	"fmt"
	"net"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
)

// createNetwork creates the lab's namespaces, recording each in lab.json first, and
// wires them: a switch bridge, and a veth from it to every host's bridge, to the center
// and to the client.
func (l *Lab) createNetwork(ctx context.Context) error {
	if err := shareNetnsDir(); err != nil {
		return err
	}
	names := []string{nsName(l.Name, "sw"), nsName(l.Name, "c"), nsName(l.Name, "cl")}
	for _, h := range l.Hosts {
		names = append(names, h.Namespace)
	}
	for _, n := range names {
		if err := ctx.Err(); err != nil {
			return fmt.Errorf("building lab %s: %w", l.Name, err)
		}
		if err := l.recordNamespace(n); err != nil {
			return err
		}
		if err := createNamespace(n); err != nil {
			if errors.Is(err, errNamespaceExists) {
				// Not ours: keep the clean-up away from it.
				if uerr := l.forgetNamespace(n); uerr != nil {
					return errors.Join(err, uerr)
				}
			}
			return err
		}
	}
	return l.wire()
}

// nsLinks is a netlink handle bound to one namespace plus that namespace's file, which
// veth creation needs to place a peer in it.
type nsLinks struct {
	name string
	h    *netlink.Handle
	fd   netns.NsHandle
}

// openNS opens the named namespace for link work.
func openNS(name string) (*nsLinks, error) {
	fd, err := netns.GetFromName(name)
	if err != nil {
		return nil, fmt.Errorf("open network namespace %s: %w", name, err)
	}
	h, err := netlink.NewHandleAt(fd)
	if err != nil {
		fd.Close()
		return nil, fmt.Errorf("open netlink in namespace %s: %w", name, err)
	}
	return &nsLinks{name: name, h: h, fd: fd}, nil
}

// close releases the handle and the namespace file, so they do not keep the namespace
// alive after Down.
func (n *nsLinks) close() {
	n.h.Close()
	n.fd.Close()
}

// wire creates the lab's links in namespaces that already exist.
func (l *Lab) wire() error {
	sw, err := openNS(nsName(l.Name, "sw"))
	if err != nil {
		return err
	}
	defer sw.close()
	swBridge, err := sw.addBridge(switchBridge, l.mac(0, 0))
	if err != nil {
		return err
	}
	if err := sw.up(swBridge); err != nil {
		return err
	}

	for i, h := range l.Hosts {
		hn, err := openNS(h.Namespace)
		if err != nil {
			return err
		}
		err = l.wireHost(sw, swBridge, hn, i+1, h.Address)
		hn.close()
		if err != nil {
			return fmt.Errorf("wire %s: %w", h.Name, err)
		}
	}
	for _, e := range []struct{ target, port, ip string }{
		{"center", "c", fmt.Sprintf("198.18.%d.2", l.Index)},
		{"client", "cl", fmt.Sprintf("198.18.%d.3", l.Index)},
	} {
		ns, _ := l.Namespace(e.target)
		en, err := openNS(ns)
		if err != nil {
			return err
		}
		err = func() error {
			eth, err := en.veth("eth0", sw, swBridge, e.port)
			if err != nil {
				return err
			}
			if err := en.addAddr(eth, e.ip); err != nil {
				return err
			}
			return en.up(eth)
		}()
		en.close()
		if err != nil {
			return fmt.Errorf("wire %s: %w", e.target, err)
		}
	}
	return nil
}

// wireHost gives host i its bridge br0 with the host's address and plugs the bridge
// into the switch through veth uplink0 (switch side: hI).
func (l *Lab) wireHost(sw *nsLinks, swBridge netlink.Link, hn *nsLinks, i int, ip string) error {
	br, err := hn.addBridge(hostBridge, l.mac(1, i))
	if err != nil {
		return err
	}
	if err := hn.addAddr(br, ip); err != nil {
		return err
	}
	uplink, err := hn.veth("uplink0", sw, swBridge, fmt.Sprintf("h%d", i))
	if err != nil {
		return err
	}
	if err := hn.h.LinkSetMaster(uplink, br); err != nil {
		return fmt.Errorf("attach uplink0 to %s: %w", hostBridge, err)
	}
	if err := hn.up(uplink); err != nil {
		return err
	}
	return hn.up(br)
}

// mac returns the lab's fixed MAC address for a bridge: 06:67:77 (locally
// administered, then "gw"), the lab number, the kind (0 switch, 1 host) and the host
// number. A bridge with an explicit address keeps it as ports come and go, instead of
// taking the lowest port's. The first byte differs from the 02:67:77 of VM NICs so that
// no VM can get a bridge's address.
func (l *Lab) mac(kind, i int) net.HardwareAddr {
	return net.HardwareAddr{0x06, 0x67, 0x77, byte(l.Index), byte(kind), byte(i)}
}

// addBridge creates bridge name with address mac.
func (n *nsLinks) addBridge(name string, mac net.HardwareAddr) (netlink.Link, error) {
	br := &netlink.Bridge{LinkAttrs: netlink.LinkAttrs{Name: name, HardwareAddr: mac}}
	if err := n.h.LinkAdd(br); err != nil {
		return nil, fmt.Errorf("create bridge %s in %s: %w", name, n.name, err)
	}
	return n.link(name)
}

// veth creates a veth pair: name in this namespace, port in the switch namespace,
// where it is attached to the switch bridge and set up. It returns this side.
func (n *nsLinks) veth(name string, sw *nsLinks, swBridge netlink.Link, port string) (netlink.Link, error) {
	v := &netlink.Veth{
		LinkAttrs:     netlink.LinkAttrs{Name: name},
		PeerName:      port,
		PeerNamespace: netlink.NsFd(sw.fd),
	}
	if err := n.h.LinkAdd(v); err != nil {
		return nil, fmt.Errorf("create veth %s (%s) <-> %s (%s): %w", name, n.name, port, sw.name, err)
	}
	p, err := sw.link(port)
	if err != nil {
		return nil, err
	}
	if err := sw.h.LinkSetMaster(p, swBridge); err != nil {
		return nil, fmt.Errorf("attach %s to %s: %w", port, switchBridge, err)
	}
	if err := sw.up(p); err != nil {
		return nil, err
	}
	return n.link(name)
}

// addAddr assigns ip/24 to link.
func (n *nsLinks) addAddr(link netlink.Link, ip string) error {
	a, err := netlink.ParseAddr(ip + "/24")
	if err != nil {
		return fmt.Errorf("parse address %s: %w", ip, err)
	}
	if err := n.h.AddrAdd(link, a); err != nil {
		return fmt.Errorf("add address %s to %s in %s: %w", ip, link.Attrs().Name, n.name, err)
	}
	return nil
}

// up sets link up.
func (n *nsLinks) up(link netlink.Link) error {
	if err := n.h.LinkSetUp(link); err != nil {
		return fmt.Errorf("set %s up in %s: %w", link.Attrs().Name, n.name, err)
	}
	return nil
}

// link looks up link name in this namespace.
func (n *nsLinks) link(name string) (netlink.Link, error) {
	link, err := n.h.LinkByName(name)
	if err != nil {
		return nil, fmt.Errorf("find %s in %s: %w", name, n.name, err)
	}
	return link, nil
}
