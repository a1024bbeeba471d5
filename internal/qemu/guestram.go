package qemu

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"strconv"
	"strings"
)

// GuestRAM is how much of a guest's RAM holds data, as its QEMU process has it.
type GuestRAM struct {
	// Resident is the guest RAM resident in the process: the pages the guest (or an
	// incoming migration) wrote. The rest reads as zeros.
	Resident int64
	// Nonzero is the guest RAM that is not all zeros, estimated from a sample of the
	// resident pages (exact when the sample is all of them): a migration's first copy
	// sends these pages whole and every other page as a zero-page marker.
	Nonzero int64
}

// pageSize is the size of the pages QEMU's migration and the host's page tables count.
const pageSize = 4096

// ReadGuestRAM measures the guest RAM of QEMU process pid: its anonymous mapping of
// exactly ramBytes. It finds the resident pages in /proc/PID/pagemap and reads up to
// samples of them, chosen at random, through /proc/PID/mem to count those that are not
// all zeros. It reads no page that is not resident, so it leaves the process's memory
// as it was. When several mappings have that size (the TCG translation cache may), the
// one with the most data is taken.
func ReadGuestRAM(pid int, ramBytes int64, samples int) (GuestRAM, error) {
	starts, err := mappingsOfSize(pid, ramBytes)
	if err != nil {
		return GuestRAM{}, err
	}
	if len(starts) == 0 {
		return GuestRAM{}, fmt.Errorf("QEMU pid %d has no mapping of %d MiB, the guest's RAM", pid, ramBytes>>20)
	}
	pagemap, err := os.Open(fmt.Sprintf("/proc/%d/pagemap", pid))
	if err != nil {
		return GuestRAM{}, fmt.Errorf("read the page map of QEMU pid %d: %w", pid, err)
	}
	defer pagemap.Close()
	mem, err := os.Open(fmt.Sprintf("/proc/%d/mem", pid))
	if err != nil {
		return GuestRAM{}, fmt.Errorf("read the memory of QEMU pid %d: %w", pid, err)
	}
	defer mem.Close()
	var best GuestRAM
	for _, start := range starts {
		g, err := readMapping(pagemap, mem, start, ramBytes/pageSize, samples)
		if err != nil {
			return GuestRAM{}, fmt.Errorf("QEMU pid %d: %w", pid, err)
		}
		if g.Nonzero > best.Nonzero || g.Resident > best.Resident {
			best = g
		}
	}
	return best, nil
}

// mappingsOfSize returns the start addresses of pid's private anonymous mappings of
// exactly size bytes, from /proc/PID/maps.
func mappingsOfSize(pid int, size int64) ([]uint64, error) {
	f, err := os.Open(fmt.Sprintf("/proc/%d/maps", pid))
	if err != nil {
		return nil, fmt.Errorf("read the memory map of QEMU pid %d: %w", pid, err)
	}
	defer f.Close()
	var starts []uint64
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		// "start-end perms offset dev inode [path]"; anonymous mappings have inode 0
		// and no path.
		fields := strings.Fields(sc.Text())
		if len(fields) != 5 || fields[4] != "0" || !strings.HasPrefix(fields[1], "rw") {
			continue
		}
		lo, hi, ok := strings.Cut(fields[0], "-")
		start, err1 := strconv.ParseUint(lo, 16, 64)
		end, err2 := strconv.ParseUint(hi, 16, 64)
		if ok && err1 == nil && err2 == nil && end > start && int64(end-start) == size {
			starts = append(starts, start)
		}
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("read the memory map of QEMU pid %d: %w", pid, err)
	}
	return starts, nil
}

// readMapping measures one mapping of pages pages at start: it picks up to samples of
// its resident pages uniformly at random (reservoir sampling over the page map) and
// reads them.
func readMapping(pagemap, mem io.ReaderAt, start uint64, pages int64, samples int) (GuestRAM, error) {
	rng := rand.New(rand.NewPCG(rand.Uint64(), rand.Uint64()))
	chosen := make([]uint64, 0, samples)
	var resident int64
	buf := make([]byte, 8*8192)
	for first := int64(0); first < pages; first += 8192 {
		n := min(pages-first, 8192)
		b := buf[:8*n]
		if _, err := pagemap.ReadAt(b, int64(start/pageSize+uint64(first))*8); err != nil {
			return GuestRAM{}, fmt.Errorf("read its page map: %w", err)
		}
		for i := range n {
			// Bit 63 of an entry: the page is present in RAM.
			if binary.LittleEndian.Uint64(b[8*i:])&(1<<63) == 0 {
				continue
			}
			addr := start + uint64(first+i)*pageSize
			resident++
			switch {
			case len(chosen) < samples:
				chosen = append(chosen, addr)
			default:
				if j := rng.Int64N(resident); j < int64(samples) {
					chosen[j] = addr
				}
			}
		}
	}
	g := GuestRAM{Resident: resident * pageSize}
	if len(chosen) == 0 {
		return g, nil
	}
	page, zero := make([]byte, pageSize), make([]byte, pageSize)
	nonzero := 0
	for _, addr := range chosen {
		if _, err := mem.ReadAt(page, int64(addr)); err != nil && !errors.Is(err, io.EOF) {
			return GuestRAM{}, fmt.Errorf("read its memory at %#x: %w", addr, err)
		}
		if !bytes.Equal(page, zero) {
			nonzero++
		}
	}
	g.Nonzero = g.Resident * int64(nonzero) / int64(len(chosen))
	return g, nil
}
