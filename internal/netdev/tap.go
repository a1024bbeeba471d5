package netdev

import (
	"errors"
	"fmt"
	"net"
	"sort"
	"strings"

	"github.com/vishvananda/netlink"
)

// tapFlags are the flags QEMU's tap backend opens a single-queue TAP with; a persistent
// device must be created with the same queueing mode or QEMU cannot attach.
const tapFlags = netlink.TUNTAP_NO_PI | netlink.TUNTAP_VNET_HDR

// CreateTap creates the persistent TAP device name (IFF_TAP|IFF_NO_PI|IFF_VNET_HDR,
// single queue), sets its MTU (mtu <= 0 means the bridge's MTU) and its transmit queue
// length (TapQueueLen), enslaves it to bridge and sets it up. QEMU can later attach with
// -netdev tap,ifname=NAME,script=no,downscript=no.
//
// It is idempotent so that a restarted agent can replay its VMs: a TAP of that name that
// is already on bridge is accepted (and brought up), and one on no bridge is enslaved,
// which finishes a creation that was interrupted. A TAP on another bridge, or a link of
// another kind with that name, is an error. A TAP created here is owned by root: QEMU
// must run as root, or with CAP_NET_ADMIN, to attach to it.
func CreateTap(name, bridge string, mtu int) error {
	if err := checkName(name); err != nil {
		return err
	}
	br, err := bridgeByName(bridge)
	if err != nil {
		return fmt.Errorf("create TAP %s: %w", name, err)
	}
	if mtu <= 0 {
		mtu = br.Attrs().MTU
	}
	existing, err := lookup(name)
	if err != nil {
		return err
	}
	if existing != nil {
		return adoptTap(existing, br, mtu)
	}

	tap := &netlink.Tuntap{
		LinkAttrs: netlink.LinkAttrs{Name: name},
		Mode:      netlink.TUNTAP_MODE_TAP,
		Flags:     tapFlags,
	}
	if err := netlink.LinkAdd(tap); err != nil {
		return fmt.Errorf("create TAP %s: %w; check that /dev/net/tun exists and the process has CAP_NET_ADMIN", name, err)
	}
	link, err := lookup(name)
	if err == nil && link == nil {
		err = fmt.Errorf("TAP %s vanished right after it was created; is another process deleting links?", name)
	}
	if err == nil {
		err = configureTap(link, br, mtu)
	}
	if err != nil {
		if link != nil {
			// Leave nothing half-made behind; the configure error is the one that matters.
			_ = netlink.LinkDel(link)
		}
		return err
	}
	return nil
}

// adoptTap accepts an existing link as the TAP being created, if it is one and is not
// attached elsewhere, and finishes its configuration.
func adoptTap(link, br netlink.Link, mtu int) error {
	name := link.Attrs().Name
	if !isTap(link) {
		return fmt.Errorf("link %s exists and is a %s, not a TAP: delete it or use another name", name, link.Type())
	}
	if m := link.Attrs().MasterIndex; m != 0 && m != br.Attrs().Index {
		other := fmt.Sprintf("index %d", m)
		if l, err := netlink.LinkByIndex(m); err == nil {
			other = l.Attrs().Name
		}
		return fmt.Errorf("TAP %s is attached to %s, not to bridge %s: delete the TAP (DeleteTap) and create it again", name, other, br.Attrs().Name)
	}
	// A diversion left by a migration whose agent stopped mid-way would send the VM's
	// frames to a shadow that went with that agent.
	if err := Undivert(name); err != nil {
		return err
	}
	return configureTap(link, br, mtu)
}

// configureTap sets the MTU, the queue length, the bridge and the up flag, each only
// when needed.
func configureTap(link, br netlink.Link, mtu int) error {
	attrs := link.Attrs()
	if attrs.MTU != mtu {
		if err := netlink.LinkSetMTU(link, mtu); err != nil {
			return fmt.Errorf("set MTU %d on TAP %s: %w; the bridge and the NIC must agree on a supported MTU", mtu, attrs.Name, err)
		}
	}
	if attrs.TxQLen != TapQueueLen {
		if err := netlink.LinkSetTxQLen(link, TapQueueLen); err != nil {
			return fmt.Errorf("set the queue length of TAP %s to %d: %w", attrs.Name, TapQueueLen, err)
		}
	}
	if attrs.MasterIndex != br.Attrs().Index {
		if err := netlink.LinkSetMaster(link, br); err != nil {
			return fmt.Errorf("attach TAP %s to bridge %s: %w", attrs.Name, br.Attrs().Name, err)
		}
	}
	// Before it is up, while it carries nothing: adding it stops transmission a moment.
	if err := ensureClsact(attrs.Name, attrs.Index); err != nil {
		return err
	}
	if attrs.Flags&net.FlagUp == 0 {
		if err := netlink.LinkSetUp(link); err != nil {
			return fmt.Errorf("set TAP %s up: %w", attrs.Name, err)
		}
	}
	return nil
}

// DeleteTap deletes the TAP device name. A missing TAP is not an error; a link of
// another kind with that name is left alone and reported.
func DeleteTap(name string) error {
	if err := checkName(name); err != nil {
		return err
	}
	link, err := lookup(name)
	if err != nil || link == nil {
		return err
	}
	if !isTap(link) {
		return fmt.Errorf("link %s is a %s, not a TAP: refusing to delete it", name, link.Type())
	}
	if err := netlink.LinkDel(link); err != nil {
		var nf netlink.LinkNotFoundError
		if errors.As(err, &nf) {
			return nil
		}
		return fmt.Errorf("delete TAP %s: %w", name, err)
	}
	return nil
}

// TapExists reports whether a TAP device called name exists. A link of another kind
// with that name is reported as an error, since no TAP can be created under it.
func TapExists(name string) (bool, error) {
	if err := checkName(name); err != nil {
		return false, err
	}
	link, err := lookup(name)
	if err != nil || link == nil {
		return false, err
	}
	if !isTap(link) {
		return false, fmt.Errorf("link %s exists and is a %s, not a TAP", name, link.Type())
	}
	return true, nil
}

// ListTaps returns the names of the TAP devices whose names start with prefix, sorted.
// The agent lists "gw" to find the TAPs of its VMs after a restart.
func ListTaps(prefix string) ([]string, error) {
	links, err := linkList()
	if err != nil {
		return nil, err
	}
	names := []string{}
	for _, l := range links {
		if isTap(l) && strings.HasPrefix(l.Attrs().Name, prefix) {
			names = append(names, l.Attrs().Name)
		}
	}
	sort.Strings(names)
	return names, nil
}

// isTap reports whether link is a TAP (not a TUN) device.
func isTap(link netlink.Link) bool {
	t, ok := link.(*netlink.Tuntap)
	return ok && t.Mode == netlink.TUNTAP_MODE_TAP
}
