package lab

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"runtime"
	"sort"
	"strings"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
)

// netnsDir is where named network namespaces are bind-mounted, as iproute2 expects.
const netnsDir = "/run/netns"

// errNamespaceExists marks the failure to create a namespace that someone else made.
var errNamespaceExists = errors.New("namespace exists")

// roleRE matches the role suffixes of a lab's namespaces: switch, center, client, hosts.
var roleRE = regexp.MustCompile(`^(sw|c|cl|h[1-9][0-9]*)$`)

// shareNetnsDir makes /run/netns a shared mount point, as `ip netns add` does. Each
// daemon started with `ip netns exec` gets its own copy of the mount table; with a
// shared /run/netns, removing a namespace's bind mount here removes the copies too, so
// that a deleted namespace (and its veths) is really freed.
func shareNetnsDir() error {
	if err := os.MkdirAll(netnsDir, 0o755); err != nil {
		return fmt.Errorf("create %s: %w", netnsDir, err)
	}
	madeMount := false
	for {
		err := unix.Mount("", netnsDir, "none", unix.MS_SHARED|unix.MS_REC, "")
		if err == nil {
			return nil
		}
		if !errors.Is(err, unix.EINVAL) || madeMount {
			return fmt.Errorf("make %s a shared mount: %w", netnsDir, err)
		}
		// Not a mount point yet: bind it onto itself, then share it.
		if err := unix.Mount(netnsDir, netnsDir, "none", unix.MS_BIND|unix.MS_REC, ""); err != nil {
			return fmt.Errorf("bind-mount %s onto itself: %w", netnsDir, err)
		}
		madeMount = true
	}
}

// createNamespace creates the named network namespace with IPv6 and forwarding off
// (nothing is routed out of a lab, and no IPv6 chatter is generated) and lo up.
func createNamespace(name string) error {
	return onLockedThread(func() error {
		ns, err := netns.NewNamed(name)
		if err != nil {
			if errors.Is(err, fs.ErrExist) {
				return fmt.Errorf("network namespace %s already exists: run `godwit lab down` for its lab first: %w", name, errNamespaceExists)
			}
			// NewNamed leaves the file behind when the bind mount fails.
			_ = deleteNamespace(name)
			return fmt.Errorf("create network namespace %s: %w", name, err)
		}
		defer ns.Close()
		for path, value := range map[string]string{
			"/proc/sys/net/ipv6/conf/all/disable_ipv6":     "1",
			"/proc/sys/net/ipv6/conf/default/disable_ipv6": "1",
			"/proc/sys/net/ipv4/ip_forward":                "0",
		} {
			if err := os.WriteFile(path, []byte(value), 0o644); err != nil && !errors.Is(err, fs.ErrNotExist) {
				return fmt.Errorf("set %s in namespace %s: %w", path, name, err)
			}
		}
		lo, err := netlink.LinkByName("lo")
		if err == nil {
			err = netlink.LinkSetUp(lo)
		}
		if err != nil {
			return fmt.Errorf("set lo up in namespace %s: %w", name, err)
		}
		return nil
	})
}

// deleteNamespace removes the named namespace's bind mount and file. The kernel frees
// the namespace, with its links, once no process is left in it. A missing namespace
// is not an error.
func deleteNamespace(name string) error {
	path := filepath.Join(netnsDir, name)
	if err := unix.Unmount(path, unix.MNT_DETACH); err != nil && !errors.Is(err, unix.EINVAL) && !errors.Is(err, unix.ENOENT) {
		return fmt.Errorf("unmount network namespace %s: %w", name, err)
	}
	if err := os.Remove(path); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("remove network namespace %s: %w", name, err)
	}
	return nil
}

// labNamespaces lists the namespaces under /run/netns that belong to the lab called
// name, whether or not its lab.json knows them.
func labNamespaces(name string) ([]string, error) {
	entries, err := os.ReadDir(netnsDir)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("list network namespaces: %w", err)
	}
	prefix := nsName(name, "")
	var found []string
	for _, e := range entries {
		if role, ok := strings.CutPrefix(e.Name(), prefix); ok && roleRE.MatchString(role) {
			found = append(found, e.Name())
		}
	}
	sort.Strings(found)
	return found, nil
}

// nsID identifies a network namespace: the device and inode of its nsfs file, the same
// for /run/netns/NAME and /proc/PID/ns/net of every process inside it.
type nsID struct{ dev, ino uint64 }

// namespaceID returns the identity of the named namespace.
func namespaceID(name string) (nsID, error) {
	return statID(filepath.Join(netnsDir, name))
}

// statID returns the device and inode path resolves to.
func statID(path string) (nsID, error) {
	var st unix.Stat_t
	if err := unix.Stat(path, &st); err != nil {
		return nsID{}, err
	}
	return nsID{dev: st.Dev, ino: st.Ino}, nil
}

// inNamespace runs fn on an OS thread inside the named network namespace. Sockets fn
// creates belong to that namespace.
func inNamespace(name string, fn func() error) error {
	return onLockedThread(func() error {
		ns, err := netns.GetFromName(name)
		if err != nil {
			return fmt.Errorf("open network namespace %s: %w; is the lab down?", name, err)
		}
		defer ns.Close()
		if err := netns.Set(ns); err != nil {
			return fmt.Errorf("enter network namespace %s: %w", name, err)
		}
		return fn()
	})
}

// onLockedThread runs fn on a goroutine locked to its OS thread and waits for it. fn
// may switch the thread's network namespace: the thread is moved back afterwards, and
// if that fails the goroutine exits still locked, so the runtime destroys the thread
// instead of reusing it in the wrong namespace.
func onLockedThread(fn func() error) error {
	done := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		orig, err := netns.Get()
		if err != nil {
			done <- fmt.Errorf("get current network namespace: %w", err)
			return
		}
		defer orig.Close()
		err = fn()
		if rerr := netns.Set(orig); rerr != nil {
			done <- errors.Join(err, fmt.Errorf("return to the original network namespace: %w", rerr))
			return
		}
		runtime.UnlockOSThread()
		done <- err
	}()
	return <-done
}
