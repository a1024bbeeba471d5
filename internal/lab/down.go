package lab

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
)

// Down removes the lab called name under root (empty root means DefaultRoot()): it
// stops every process in the lab's network namespaces (the center, the agents and the
// QEMU processes they started), deletes the namespaces, which takes their veths,
// bridges and TAPs with them, and removes the lab directory. It also cleans up a lab
// that Up left half-made or whose lab.json is lost: namespaces named gw-NAME-* are
// found under /run/netns. It fails only when there is nothing at all by that name, or
// when something could not be removed.
func Down(ctx context.Context, root, name string) error {
	return teardown(ctx, root, name, true)
}

// teardown removes what lab name recorded in its lab.json and, with scan set, every
// namespace named like one of the lab's. Up's own clean-up does not scan: a namespace
// it found already there belongs to someone else.
func teardown(ctx context.Context, root, name string, scan bool) error {
	if err := checkName(name); err != nil {
		return err
	}
	root, err := resolveRoot(root)
	if err != nil {
		return err
	}
	dir := labDir(root, name)
	_, statErr := os.Lstat(dir)
	dirExists := statErr == nil

	var namespaces []string
	if scan {
		if namespaces, err = labNamespaces(name); err != nil {
			return err
		}
	}
	var daemonPIDs []int
	if l, err := readState(dir); err == nil {
		for _, n := range l.Namespaces {
			if _, err := os.Stat(filepath.Join(netnsDir, n)); err == nil && !slices.Contains(namespaces, n) {
				namespaces = append(namespaces, n)
			}
		}
		for _, d := range l.Daemons {
			daemonPIDs = append(daemonPIDs, d.PID)
		}
	}
	if !dirExists && len(namespaces) == 0 {
		return fmt.Errorf("no lab named %s in %s; `godwit lab list` shows the labs", name, root)
	}

	ids := map[nsID]bool{}
	for _, n := range namespaces {
		if id, err := namespaceID(n); err == nil {
			ids[id] = true
		}
	}
	if err := killProcessesIn(ctx, ids, daemonPIDs); err != nil {
		// Deleting the namespaces anyway would hide the survivors from the next Down.
		return fmt.Errorf("take lab %s down: %w", name, err)
	}
	var errs []error
	for _, n := range namespaces {
		if err := deleteNamespace(n); err != nil {
			errs = append(errs, err)
		}
	}
	if dirExists {
		if err := os.RemoveAll(dir); err != nil && !errors.Is(err, fs.ErrNotExist) {
			errs = append(errs, fmt.Errorf("remove lab directory: %w", err))
		}
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("take lab %s down: %w; run `godwit lab down --name %s` again", name, err, name)
	}
	return nil
}
