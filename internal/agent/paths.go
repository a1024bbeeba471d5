package agent

import (
	"fmt"
	"net"
	"os"
	"path/filepath"
	"regexp"
	"strings"

	"github.com/godwit/godwit/internal/api"
)

// dsRef matches a datastore path such as "[shared] images/godwit-test/vmlinuz".
var dsRef = regexp.MustCompile(`^\[([A-Za-z0-9_.-]+)\]\s*(.+)$`)

// resolvePath turns an absolute host path or "[datastore] relative/path" into a host path.
func (a *Agent) resolvePath(p string) (string, error) {
	if m := dsRef.FindStringSubmatch(p); m != nil {
		return a.datastorePath(m[1], m[2])
	}
	if !filepath.IsAbs(p) {
		return "", fmt.Errorf("path %q must be absolute or of the form \"[datastore] relative/path\"", p)
	}
	return filepath.Clean(p), nil
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

// validateSpec checks a spec against this host; it changes nothing.
func (a *Agent) validateSpec(s api.VMSpec) error {
	switch {
	case s.Name == "":
		return fmt.Errorf("the VM has no name")
	case s.UUID == "":
		return fmt.Errorf("VM %s has no UUID", s.Name)
	case s.MemoryMiB <= 0:
		return fmt.Errorf("VM %s: memory must be at least 1 MiB, not %d", s.Name, s.MemoryMiB)
	case s.CPUs <= 0:
		return fmt.Errorf("VM %s: it needs at least 1 vCPU, not %d", s.Name, s.CPUs)
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
