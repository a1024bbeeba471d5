package qemu

import (
	"bufio"
	"bytes"
	"fmt"
	"os"
	"strconv"
)

// ResidentRAM returns how much of a guest's RAM is resident in its QEMU process (pid):
// the resident size of the anonymous mapping of exactly ramBytes that holds the guest's
// memory. Pages the guest never wrote are not resident, and a migration sends them as
// zero-page markers of a few bytes, so this bounds from above what the first copy of a
// migration sends in whole pages. When several mappings have that size (the TCG
// translation cache may), the largest resident size is taken.
func ResidentRAM(pid int, ramBytes int64) (int64, error) {
	path := fmt.Sprintf("/proc/%d/smaps", pid)
	b, err := os.ReadFile(path)
	if err != nil {
		return 0, fmt.Errorf("read the memory map of QEMU pid %d: %w", pid, err)
	}
	rss, ok := residentOfSize(b, ramBytes)
	if !ok {
		return 0, fmt.Errorf("QEMU pid %d has no mapping of %d MiB, the guest's RAM (%s)", pid, ramBytes>>20, path)
	}
	return rss, nil
}

// residentOfSize scans smaps text for the mappings of size bytes and returns the largest
// resident size among them, in bytes.
func residentOfSize(smaps []byte, size int64) (int64, bool) {
	var best int64
	found, match := false, false
	sc := bufio.NewScanner(bytes.NewReader(smaps))
	for sc.Scan() {
		line := sc.Bytes()
		switch {
		case bytes.HasPrefix(line, []byte("Size:")):
			kb, ok := kbField(line)
			match = ok && kb*1024 == size
		case bytes.HasPrefix(line, []byte("Rss:")) && match:
			if kb, ok := kbField(line); ok {
				found = true
				best = max(best, kb*1024)
			}
			match = false
		}
	}
	return best, found
}

// kbField parses "Name:   123 kB".
func kbField(line []byte) (int64, bool) {
	f := bytes.Fields(line)
	if len(f) != 3 || string(f[2]) != "kB" {
		return 0, false
	}
	n, err := strconv.ParseInt(string(f[1]), 10, 64)
	return n, err == nil && n >= 0
}
