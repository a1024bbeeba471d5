package netdev

import (
	"errors"
	"fmt"
	"os"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// A Shadow is a TAP that belongs to this process alone: not persistent (the kernel
// removes it with the last descriptor, so a crash leaves nothing), on no bridge, with no
// address and IPv6 off, so that the host sends nothing of its own into it. Divert makes
// the kernel put on the shadow's queue, instead of a VM TAP's, every frame the host
// transmits towards the VM: while the VM's QEMU must read no more (it is stopped at a
// migration's switch-over), the frames wait here, where this process reads them, and
// none lands in the VM TAP's queue, where QEMU's main loop could still take one and
// drop it.
type Shadow struct {
	*TapQueue
	name  string
	index int
	// of is the TAP whose frames the shadow takes, and its link index.
	of      string
	ofIndex int
}

// ShadowName is the name of the shadow of the TAP of NIC nic of VM vmUUID: the TAP's
// name with "s" for "n".
func ShadowName(vmUUID string, nic int) string {
	n := []byte(TapName(vmUUID, nic))
	n[10] = 's'
	return string(n)
}

// OpenShadow creates the shadow TAP name for the TAP of, with of's MTU, and opens its
// only queue. The TAP has the clsact queueing discipline that Divert's filter hangs on
// from its creation (CreateTap): adding one later would stop the TAP's transmission for
// a moment and drop what it was sending.
func OpenShadow(name, of string) (*Shadow, error) {
	if err := checkName(name); err != nil {
		return nil, err
	}
	tap, err := tapLink(of)
	if err != nil {
		return nil, err
	}
	mtu := tap.Attrs().MTU
	fd, err := unix.Open("/dev/net/tun", unix.O_RDWR|unix.O_CLOEXEC|unix.O_NONBLOCK, 0)
	if err != nil {
		return nil, fmt.Errorf("open /dev/net/tun for shadow TAP %s: %w (needs CAP_NET_ADMIN)", name, err)
	}
	ifr, err := unix.NewIfreq(name)
	if err != nil {
		unix.Close(fd)
		return nil, err
	}
	ifr.SetUint16(unix.IFF_TAP | unix.IFF_NO_PI | unix.IFF_VNET_HDR)
	if err := unix.IoctlIfreq(fd, unix.TUNSETIFF, ifr); err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("create shadow TAP %s: %w (a link of that name may exist already)", name, err)
	}
	q, err := newTapQueue(fd, name)
	if err != nil {
		unix.Close(fd)
		return nil, err
	}
	s := &Shadow{TapQueue: q, name: name, of: of, ofIndex: tap.Attrs().Index}
	err = s.configure(mtu)
	if err == nil {
		err = ensureClsact(s.of, s.ofIndex)
	}
	if err != nil {
		_ = q.Close()
		return nil, err
	}
	return s, nil
}

func (s *Shadow) configure(mtu int) error {
	// Before it is up, or the host sends it IPv6 router solicitations and the like.
	p := "/proc/sys/net/ipv6/conf/" + s.name + "/disable_ipv6"
	if err := os.WriteFile(p, []byte("1"), 0); err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("turn IPv6 off on shadow TAP %s: %w", s.name, err)
	}
	link, err := netlink.LinkByName(s.name)
	if err != nil {
		return fmt.Errorf("shadow TAP %s: %w", s.name, err)
	}
	s.index = link.Attrs().Index
	if mtu > 0 && link.Attrs().MTU != mtu {
		if err := netlink.LinkSetMTU(link, mtu); err != nil {
			return fmt.Errorf("set MTU %d on shadow TAP %s: %w", mtu, s.name, err)
		}
	}
	if err := netlink.LinkSetTxQLen(link, TapQueueLen); err != nil {
		return fmt.Errorf("set the queue length of shadow TAP %s: %w", s.name, err)
	}
	if err := netlink.LinkSetUp(link); err != nil {
		return fmt.Errorf("set shadow TAP %s up: %w", s.name, err)
	}
	return nil
}

// Name is the shadow's link name.
func (s *Shadow) Name() string { return s.name }

// ensureClsact gives the TAP the clsact queueing discipline, unless it has it.
func ensureClsact(tap string, index int) error {
	qs, err := netlink.QdiscList(&netlink.Dummy{LinkAttrs: netlink.LinkAttrs{Index: index}})
	if err != nil {
		return fmt.Errorf("list TAP %s's queueing disciplines: %w", tap, err)
	}
	for _, q := range qs {
		if q.Type() == "clsact" {
			return nil
		}
	}
	q := &netlink.GenericQdisc{
		QdiscAttrs: netlink.QdiscAttrs{LinkIndex: index, Handle: netlink.MakeHandle(0xffff, 0), Parent: netlink.HANDLE_CLSACT},
		QdiscType:  "clsact",
	}
	if err := netlink.QdiscAdd(q); err != nil && !errors.Is(err, unix.EEXIST) {
		return fmt.Errorf("add the clsact queueing discipline to TAP %s: %w (needs CONFIG_NET_SCH_INGRESS)", tap, err)
	}
	return nil
}

// Divert redirects every frame the host transmits on the shadow's TAP to the shadow (a
// u32 filter that matches all, with a mirred redirect, on the TAP's egress). Frames
// already on the TAP's queue stay there.
func (s *Shadow) Divert() error {
	f := &netlink.U32{
		FilterAttrs: netlink.FilterAttrs{LinkIndex: s.ofIndex, Parent: netlink.HANDLE_MIN_EGRESS, Priority: 1, Protocol: unix.ETH_P_ALL},
		Actions:     []netlink.Action{netlink.NewMirredAction(s.index)},
	}
	err := netlink.FilterAdd(f)
	if err != nil {
		// Someone removed the queueing discipline: add it again, and try once more.
		if err = ensureClsact(s.of, s.ofIndex); err == nil {
			err = netlink.FilterAdd(f)
		}
	}
	if err != nil {
		return fmt.Errorf("divert TAP %s's frames to %s: %w (needs CONFIG_NET_CLS_U32 and CONFIG_NET_ACT_MIRRED)", s.of, s.name, err)
	}
	return nil
}

// Undivert removes the diversion of tap's frames (every filter on its egress; the
// queueing discipline stays): the host transmits on tap again. A tap that is gone is not
// an error.
func Undivert(tap string) error {
	link, err := tapLink(tap)
	if errors.Is(err, errNoTap) {
		return nil
	}
	if err != nil {
		return err
	}
	fs, err := netlink.FilterList(link, netlink.HANDLE_MIN_EGRESS)
	if err != nil {
		if errors.Is(err, unix.EINVAL) || errors.Is(err, unix.ENOENT) {
			return nil // no clsact: nothing diverted
		}
		return fmt.Errorf("list TAP %s's egress filters: %w", tap, err)
	}
	for _, f := range fs {
		if err := netlink.FilterDel(f); err != nil && !errors.Is(err, unix.ENOENT) {
			return fmt.Errorf("remove the diversion of TAP %s: %w", tap, err)
		}
	}
	return nil
}

// Diverted reports whether tap's frames go to a shadow.
func Diverted(tap string) (bool, error) {
	link, err := tapLink(tap)
	if err != nil {
		return false, err
	}
	fs, err := netlink.FilterList(link, netlink.HANDLE_MIN_EGRESS)
	if err != nil {
		if errors.Is(err, unix.EINVAL) || errors.Is(err, unix.ENOENT) {
			return false, nil
		}
		return false, fmt.Errorf("list TAP %s's egress filters: %w", tap, err)
	}
	return len(fs) > 0, nil
}

var errNoTap = errors.New("no such TAP")

func tapLink(tap string) (netlink.Link, error) {
	if err := checkName(tap); err != nil {
		return nil, err
	}
	link, err := lookup(tap)
	if err != nil {
		return nil, err
	}
	if link == nil {
		return nil, fmt.Errorf("TAP %s: %w", tap, errNoTap)
	}
	return link, nil
}

// Drain reads every packet already on the queue, without waiting, and hands each to f
// (the slice is reused after f returns).
func (q *TapQueue) Drain(f func(pkt []byte)) error {
	rc, err := q.f.SyscallConn()
	if err != nil {
		return err
	}
	buf := make([]byte, MaxPacket+2)
	for {
		var pkt []byte
		var rerr error
		if err := rc.Read(func(fd uintptr) bool {
			pkt, rerr = q.readPacket(buf, func(b []byte) (int, error) { return unix.Read(int(fd), b) })
			return true // never wait
		}); err != nil {
			return err
		}
		switch {
		case errors.Is(rerr, unix.EAGAIN):
			return nil
		case rerr != nil:
			return fmt.Errorf("drain the TAP's queue: %w", rerr)
		}
		f(pkt)
	}
}
