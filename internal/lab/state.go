package lab

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"sort"

	"golang.org/x/sys/unix"

	"github.com/godwit/godwit/internal/pki"
)

const (
	stateFile = "lab.json"
	lockName  = ".lock"
)

// reserve claims the lab's name and the lowest free lab number under the root's lock,
// creates the lab directory and records the plan in lab.json, so that two Ups running
// at once never pick the same name or number.
func reserve(o Options) (*Lab, error) {
	labs := filepath.Join(o.Root, "labs")
	if err := os.MkdirAll(labs, 0o755); err != nil {
		return nil, fmt.Errorf("create the labs directory: %w", err)
	}
	unlock, err := lockFile(filepath.Join(labs, lockName))
	if err != nil {
		return nil, err
	}
	defer unlock()

	dir := labDir(o.Root, o.Name)
	if _, err := os.Lstat(dir); err == nil {
		return nil, fmt.Errorf("a lab named %s already exists in %s: run `godwit lab down --name %s` first, or choose another name", o.Name, o.Root, o.Name)
	}
	leftovers, err := labNamespaces(o.Name)
	if err != nil {
		return nil, err
	}
	if len(leftovers) > 0 {
		return nil, fmt.Errorf("network namespaces of a lab named %s exist (%v), perhaps from another state root: run `godwit lab down --name %s` first, or choose another name", o.Name, leftovers, o.Name)
	}
	existing, err := List(o.Root)
	if err != nil {
		return nil, err
	}
	used := map[int]bool{}
	for _, l := range existing {
		used[l.Index] = true
	}
	k := 0
	for i := 1; i <= maxIndex; i++ {
		if !used[i] {
			k = i
			break
		}
	}
	if k == 0 {
		return nil, fmt.Errorf("all %d lab numbers are in use: take some labs down (`godwit lab list`)", maxIndex)
	}
	l := plan(o, k)
	if err := os.Mkdir(dir, 0o755); err != nil {
		return nil, fmt.Errorf("create lab directory: %w", err)
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	if err := l.saveLocked(); err != nil {
		_ = os.RemoveAll(dir)
		return nil, err
	}
	return l, nil
}

// Load reads the lab named name from its lab.json under root (empty root means
// DefaultRoot()).
func Load(root, name string) (*Lab, error) {
	if err := checkName(name); err != nil {
		return nil, err
	}
	root, err := resolveRoot(root)
	if err != nil {
		return nil, err
	}
	l, err := readState(labDir(root, name))
	if errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("no lab named %s in %s; `godwit lab list` shows the labs", name, root)
	}
	return l, err
}

// readState reads dir/lab.json.
func readState(dir string) (*Lab, error) {
	b, err := os.ReadFile(filepath.Join(dir, stateFile))
	if err != nil {
		return nil, err
	}
	l := &Lab{log: slog.New(slog.DiscardHandler)}
	if err := json.Unmarshal(b, l); err != nil {
		return nil, fmt.Errorf("read %s: %w; remove the lab with `godwit lab down`", filepath.Join(dir, stateFile), err)
	}
	return l, nil
}

// List returns the labs under root (empty root means DefaultRoot()), sorted by name. A
// lab directory without a readable lab.json is listed with State StateBroken so that
// it can be taken down.
func List(root string) ([]*Lab, error) {
	root, err := resolveRoot(root)
	if err != nil {
		return nil, err
	}
	entries, err := os.ReadDir(filepath.Join(root, "labs"))
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("list labs: %w", err)
	}
	var labs []*Lab
	for _, e := range entries {
		if !e.IsDir() || checkName(e.Name()) != nil {
			continue
		}
		dir := labDir(root, e.Name())
		l, err := readState(dir)
		if err != nil {
			l = &Lab{Name: e.Name(), Dir: dir, State: StateBroken, log: slog.New(slog.DiscardHandler)}
		}
		labs = append(labs, l)
	}
	sort.Slice(labs, func(i, j int) bool { return labs[i].Name < labs[j].Name })
	return labs, nil
}

// saveLocked writes lab.json atomically; l.mu must be held.
func (l *Lab) saveLocked() error {
	b, err := json.MarshalIndent(l, "", "  ")
	if err != nil {
		return fmt.Errorf("encode lab state: %w", err)
	}
	if err := pki.WriteFileAtomic(filepath.Join(l.Dir, stateFile), append(b, '\n'), 0o644); err != nil {
		return fmt.Errorf("record lab state: %w", err)
	}
	return nil
}

// recordNamespace appends ns to the lab's namespaces and saves, before ns is created.
func (l *Lab) recordNamespace(ns string) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.Namespaces = append(l.Namespaces, ns)
	return l.saveLocked()
}

// forgetNamespace removes ns, the last namespace recorded, from the record.
func (l *Lab) forgetNamespace(ns string) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	if n := len(l.Namespaces); n > 0 && l.Namespaces[n-1] == ns {
		l.Namespaces = l.Namespaces[:n-1]
	}
	return l.saveLocked()
}

// modify runs fn on the lab's daemon records while holding the lab's lock, after
// refreshing them from lab.json (another godwit process may have restarted a daemon),
// and saves the result.
func (l *Lab) modify(fn func() error) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	unlock, err := lockFile(filepath.Join(l.Dir, lockName))
	if err != nil {
		return err
	}
	defer unlock()
	l.refreshLocked()
	if err := fn(); err != nil {
		return err
	}
	return l.saveLocked()
}

// daemon returns daemon i as lab.json records it now.
func (l *Lab) daemon(i int) Daemon {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.refreshLocked()
	return l.Daemons[i]
}

// refreshLocked reloads the daemon records from lab.json, where another godwit process
// may have recorded a restart; l.mu must be held.
func (l *Lab) refreshLocked() {
	if disk, err := readState(l.Dir); err == nil && len(disk.Daemons) == len(l.Daemons) {
		l.Daemons = disk.Daemons
	}
}

// lockFile takes an exclusive advisory lock on path, creating it, and returns the
// function that releases it.
func lockFile(path string) (func(), error) {
	f, err := os.OpenFile(path, os.O_CREATE|os.O_RDWR, 0o644)
	if err != nil {
		return nil, fmt.Errorf("open lock %s: %w", path, err)
	}
	if err := unix.Flock(int(f.Fd()), unix.LOCK_EX); err != nil {
		f.Close()
		return nil, fmt.Errorf("lock %s: %w", path, err)
	}
	return func() { f.Close() }, nil
}

// copyGuest copies the test guest image files from src into dst.
func copyGuest(src, dst string) error {
	if err := os.MkdirAll(dst, 0o755); err != nil {
		return fmt.Errorf("create guest image directory: %w", err)
	}
	for _, name := range guestFiles {
		if err := copyFile(filepath.Join(src, name), filepath.Join(dst, name)); err != nil {
			return fmt.Errorf("copy the test guest image into the lab: %w", err)
		}
	}
	return nil
}

// copyFile copies the regular file src to dst.
func copyFile(src, dst string) error {
	in, err := os.Open(src)
	if err != nil {
		return err
	}
	defer in.Close()
	out, err := os.OpenFile(dst, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, 0o644)
	if err != nil {
		return err
	}
	if _, err := io.Copy(out, in); err != nil {
		out.Close()
		return err
	}
	return out.Close()
}
