// Package netdev owns the host networking the agent manages: the Linux bridge a Godwit
// network maps to and the TAP devices QEMU attaches VM NICs to.
//
// Every function acts on the network namespace of the calling OS thread. In an agent that
// is the namespace the process was started in; callers that switch namespaces (tests, the
// lab) must lock the OS thread first.
package netdev

import (
	"crypto/rand"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"sort"
	"strings"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// maxNameLen is IFNAMSIZ-1: the longest interface name the kernel accepts.
const maxNameLen = 15

// Bridge describes a Linux bridge as reported in host heartbeats.
type Bridge struct {
	// Name is the bridge's interface name.
	Name string `json:"name"`
	// MTU is the bridge's current MTU.
	MTU int `json:"mtu"`
	// Up reports whether the bridge is administratively up.
	Up bool `json:"up"`
	// Ports lists the interfaces enslaved to the bridge, sorted by name.
	Ports []string `json:"ports"`
}

// EnsureBridge creates the Linux bridge name if it does not exist and sets it up. It is
// idempotent. A bridge it creates gets a fixed, locally administered MAC address, so the
// bridge's address does not change as TAPs join and leave (which would leave stale ARP
// entries on the network). It fails if a link that is not a bridge already has the name.
func EnsureBridge(name string) error {
	if err := checkName(name); err != nil {
		return err
	}
	link, err := lookup(name)
	if err != nil {
		return err
	}
	if link == nil {
		mac, err := randomMAC()
		if err != nil {
			return err
		}
		br := &netlink.Bridge{LinkAttrs: netlink.LinkAttrs{Name: name, HardwareAddr: mac}}
		if err := netlink.LinkAdd(br); err != nil && !errors.Is(err, unix.EEXIST) {
			return fmt.Errorf("create bridge %s: %w; check that the process has CAP_NET_ADMIN", name, err)
		}
		// Look it up again: someone may have won a race with a link of another kind.
		if link, err = lookup(name); err != nil {
			return err
		}
		if link == nil {
			return fmt.Errorf("bridge %s vanished right after it was created; is another process deleting links?", name)
		}
	}
	if _, ok := link.(*netlink.Bridge); !ok {
		return fmt.Errorf("link %s exists and is a %s, not a bridge: delete it or configure another bridge name", name, link.Type())
	}
	if err := netlink.LinkSetUp(link); err != nil {
		return fmt.Errorf("set bridge %s up: %w", name, err)
	}
	return nil
}

// BridgeInfo reports the bridge name: its MTU, whether it is up and its ports.
func BridgeInfo(name string) (Bridge, error) {
	br, err := bridgeByName(name)
	if err != nil {
		return Bridge{}, err
	}
	links, err := linkList()
	if err != nil {
		return Bridge{}, err
	}
	attrs := br.Attrs()
	info := Bridge{Name: attrs.Name, MTU: attrs.MTU, Up: attrs.Flags&net.FlagUp != 0, Ports: []string{}}
	for _, l := range links {
		if l.Attrs().MasterIndex == attrs.Index {
			info.Ports = append(info.Ports, l.Attrs().Name)
		}
	}
	sort.Strings(info.Ports)
	return info, nil
}

// bridgeByName returns the bridge name, or an error that says what to do when it is
// missing or is not a bridge.
func bridgeByName(name string) (netlink.Link, error) {
	if err := checkName(name); err != nil {
		return nil, err
	}
	link, err := lookup(name)
	if err != nil {
		return nil, err
	}
	if link == nil {
		return nil, fmt.Errorf("bridge %s does not exist: create it (EnsureBridge) or check the network's bridge name", name)
	}
	if _, ok := link.(*netlink.Bridge); !ok {
		return nil, fmt.Errorf("link %s is a %s, not a bridge: check the network's bridge name", name, link.Type())
	}
	return link, nil
}

// lookup returns the link called name, or nil when there is none.
func lookup(name string) (netlink.Link, error) {
	link, err := netlink.LinkByName(name)
	if err != nil {
		var nf netlink.LinkNotFoundError
		if errors.As(err, &nf) {
			return nil, nil
		}
		return nil, fmt.Errorf("look up link %s: %w", name, err)
	}
	return link, nil
}

// linkList lists all links, retrying when the kernel reports that the dump was
// interrupted by a concurrent change.
func linkList() ([]netlink.Link, error) {
	var err error
	for range 5 {
		var links []netlink.Link
		links, err = netlink.LinkList()
		if err == nil {
			return links, nil
		}
		if !errors.Is(err, netlink.ErrDumpInterrupted) {
			break
		}
	}
	return nil, fmt.Errorf("list network links: %w", err)
}

// checkName rejects names the kernel would refuse, with a message naming the limit.
func checkName(name string) error {
	if name == "" || len(name) > maxNameLen || strings.ContainsAny(name, "/: \t\n") || name == "." || name == ".." {
		return fmt.Errorf("invalid interface name %q: use 1 to %d characters without '/', ':' or spaces", name, maxNameLen)
	}
	return nil
}

// randomMAC returns a random unicast, locally administered MAC address.
func randomMAC() (net.HardwareAddr, error) {
	mac := make(net.HardwareAddr, 6)
	if _, err := rand.Read(mac); err != nil {
		return nil, fmt.Errorf("generate a MAC address: %w", err)
	}
	mac[0] = mac[0]&^0x01 | 0x02
	return mac, nil
}

// TapName returns the TAP device name for NIC number nic (0..9999) of the VM vmUUID.
// The name is "gw", 8 hex digits of a hash of the UUID, "n" and the NIC number, so it is
// at most 15 characters, the same on every host and after every restart, and different
// for different VMs with overwhelming probability even when their UUIDs share a prefix
// (as time-ordered UUIDs created together do); the agent refuses, with a 409, a VM
// whose TAP name another VM on the host has. Case, dashes and braces in the UUID do
// not change the name. It panics if nic is out of range, a programming error since no
// VM has that many NICs.
func TapName(vmUUID string, nic int) string {
	if nic < 0 || nic > 9999 {
		panic(fmt.Sprintf("netdev.TapName: NIC index %d out of range 0..9999", nic))
	}
	norm := strings.Map(func(r rune) rune {
		switch r {
		case '-', '{', '}', ' ':
			return -1
		}
		return r
	}, strings.ToLower(vmUUID))
	sum := sha256.Sum256([]byte(norm))
	return fmt.Sprintf("gw%08xn%d", binary.BigEndian.Uint32(sum[:4]), nic)
}
