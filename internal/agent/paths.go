package agent

import (
	"errors"
	"fmt"
	"io/fs"
	"net"
	"os"
	"path/filepath"
	"regexp"
	"strings"

	"github.com/godwit/godwit/internal/api"
)

// dsRef matches a datastore path such as "[shared] images/godwit-test/vmlinuz".
var dsRef = regexp.MustCompile(`^\[([A-Za-z0-9_.-]+)\]\s*(.+)$`)

// resolvePath turns "[datastore] relative/path" or an absolute host path into the real
// path (symbolic links resolved) of a file inside one of this host's datastores. Boot
// files and disks must lie in a datastore: QEMU runs as root and would load any host
// file (/etc/shadow as an initrd) into guest memory, where the guest can read it.
func (a *Agent) resolvePath(p string) (string, error) {
	var host string
	if m := dsRef.FindStringSubmatch(p); m != nil {
		var err error
		if host, err = a.datastorePath(m[1], m[2]); err != nil {
			return "", err
		}
	} else {
		if !filepath.IsAbs(p) {
			return "", fmt.Errorf("path %q must be absolute or of the form \"[datastore] relative/path\"", p)
		}
		host = filepath.Clean(p)
	}
	return a.confine(host)
}

// confine resolves the symbolic links of p, as far as it exists, and returns the result
// when it lies inside one of this host's datastores.
func (a *Agent) confine(p string) (string, error) {
	real, err := realPath(p)
	if err != nil {
		return "", err
	}
	for _, name := range a.datastoreNames() {
		root, err := filepath.EvalSymlinks(a.cfg.Datastores[name])
		if err != nil {
			continue
		}
		if real == root || strings.HasPrefix(real, root+string(filepath.Separator)) {
			return real, nil
		}
	}
	shown := p
	if real != p {
		shown = fmt.Sprintf("%s (really %s)", p, real)
	}
	return "", fmt.Errorf("%s is not inside a datastore of host %s (%s): boot files and disks must lie in a datastore; use \"[datastore] path\"",
		shown, a.cfg.Name, strings.Join(a.datastoreNames(), ", "))
}

// realPath is filepath.EvalSymlinks for a path that may not exist yet (a disk to be
// created): the part that exists is resolved and the rest appended. A dangling
// symbolic link is refused, since creating the file would follow it elsewhere.
func realPath(p string) (string, error) {
	p = filepath.Clean(p)
	rest := ""
	for {
		r, err := filepath.EvalSymlinks(p)
		if err == nil {
			return filepath.Join(r, rest), nil
		}
		if !errors.Is(err, fs.ErrNotExist) {
			return "", fmt.Errorf("resolve %s: %w", p, err)
		}
		if _, lerr := os.Lstat(p); lerr == nil {
			return "", fmt.Errorf("%s is a symbolic link to nothing; it could lead anywhere once its target appears", p)
		}
		parent := filepath.Dir(p)
		if parent == p {
			return "", fmt.Errorf("resolve %s: %w", p, err)
		}
		rest = filepath.Join(filepath.Base(p), rest)
		p = parent
	}
}

// datastorePath joins a path relative to a datastore, refusing paths that leave it.
func (a *Agent) datastorePath(ds, rel string) (string, error) {
	root, ok := a.cfg.Datastores[ds]
	if !ok {
		return "", fmt.Errorf("host %s has no datastore %q (it has: %s)", a.cfg.Name, ds, strings.Join(a.datastoreNames(), ", "))
	}
	clean := filepath.Clean("/" + rel)
	if clean == "/" || strings.Contains(rel, "..") {
		return "", fmt.Errorf("path %q in datastore %s must name a file inside the datastore", rel, ds)
	}
	return filepath.Join(root, clean), nil
}

func mustExist(what, p string) error {
	st, err := os.Stat(p)
	if err != nil {
		if os.IsNotExist(err) {
			return fmt.Errorf("%s %s does not exist on this host", what, p)
		}
		return fmt.Errorf("%s %s: %w", what, p, err)
	}
	if st.IsDir() {
		return fmt.Errorf("%s %s is a directory, not a file", what, p)
	}
	return nil
}

// validateSpec checks a spec against this host; it changes nothing. The spec's bounds
// (api.VMSpec.CheckBounds) come first: the center checked them too, but this host does
// not take its word for it.
func (a *Agent) validateSpec(s api.VMSpec) error {
	if err := s.CheckBounds(); err != nil {
		return err
	}
	switch {
	case s.Name == "":
		return fmt.Errorf("the VM has no name")
	case s.UUID == "":
		return fmt.Errorf("VM %s has no UUID", s.Name)
	case !canonicalUUID(s.UUID):
		return fmt.Errorf("VM %s: UUID %q is not of the form 0f8fad5b-d9cb-469f-a165-70867728950e", s.Name, s.UUID)
	case s.MemoryMiB <= 0 || s.MemoryMiB > maxMemoryMiB:
		return fmt.Errorf("VM %s: memory must be between 1 and %d MiB, not %d", s.Name, maxMemoryMiB, s.MemoryMiB)
	case s.CPUs <= 0 || s.CPUs > maxCPUs:
		return fmt.Errorf("VM %s: it needs between 1 and %d vCPUs, not %d", s.Name, maxCPUs, s.CPUs)
	}
	if s.Boot.Kernel == "" && !s.Boot.FromDisk {
		return fmt.Errorf("VM %s has nothing to boot: give a kernel (and initrd) or boot from a disk", s.Name)
	}
	if s.Boot.Kernel != "" {
		k, err := a.resolvePath(s.Boot.Kernel)
		if err != nil {
			return fmt.Errorf("kernel: %w", err)
		}
		if err := mustExist("kernel", k); err != nil {
			return err
		}
		if s.Boot.Initrd != "" {
			i, err := a.resolvePath(s.Boot.Initrd)
			if err != nil {
				return fmt.Errorf("initrd: %w", err)
			}
			if err := mustExist("initrd", i); err != nil {
				return err
			}
		}
	}
	if s.Boot.FromDisk && len(s.Disks) == 0 {
		return fmt.Errorf("VM %s boots from disk but has no disk", s.Name)
	}
	for i, d := range s.Disks {
		if d.Format != "raw" && d.Format != "qcow2" {
			return fmt.Errorf("disk %d: format must be raw or qcow2, not %q", i, d.Format)
		}
		p, err := a.datastorePath(d.Datastore, d.Path)
		if err == nil {
			_, err = a.confine(p)
		}
		if err != nil {
			return fmt.Errorf("disk %d: %w", i, err)
		}
		if _, err := os.Stat(p); os.IsNotExist(err) && d.SizeMiB <= 0 {
			return fmt.Errorf("disk %d: image %s does not exist; give a size to create it", i, p)
		}
	}
	for i, n := range s.NICs {
		if _, ok := a.cfg.Networks[n.Network]; !ok {
			return fmt.Errorf("NIC %d: host %s has no network %q", i, a.cfg.Name, n.Network)
		}
		if _, err := net.ParseMAC(n.MAC); err != nil || len(n.MAC) != 17 {
			return fmt.Errorf("NIC %d: MAC %q is not of the form 02:00:00:00:00:01", i, n.MAC)
		}
	}
	return nil
}

// Bounds on what a spec may ask of a host.
const (
	maxMemoryMiB = 4 << 20 // 4 TiB
	maxCPUs      = 1024
)

// canonicalUUID reports whether s is a UUID in its canonical lowercase or uppercase
// 8-4-4-4-12 form. The UUID names the VM's state directory, so nothing else may pass.
func canonicalUUID(s string) bool {
	if len(s) != 36 {
		return false
	}
	for i, r := range s {
		switch i {
		case 8, 13, 18, 23:
			if r != '-' {
				return false
			}
		default:
			if !strings.ContainsRune("0123456789abcdefABCDEF", r) {
				return false
			}
		}
	}
	return true
}
