package agent

import (
	"bufio"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"sort"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"

	"github.com/godwit/godwit/internal/api"
)

// readCPUInfo parses /proc/cpuinfo for the model name, vendor and flags.
func readCPUInfo(path string) (api.CPUInfo, error) {
	f, err := os.Open(path)
	if err != nil {
		return api.CPUInfo{}, fmt.Errorf("read CPU information: %w", err)
	}
	defer f.Close()
	info := api.CPUInfo{Threads: runtime.NumCPU()}
	cores := map[string]bool{}
	var phys, core string
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		k, v, ok := strings.Cut(sc.Text(), ":")
		if !ok {
			continue
		}
		k, v = strings.TrimSpace(k), strings.TrimSpace(v)
		switch k {
		case "model name":
			if info.Model == "" {
				info.Model = v
			}
		case "vendor_id":
			if info.Vendor == "" {
				info.Vendor = v
			}
		case "flags":
			if info.Flags == nil {
				info.Flags = strings.Fields(v)
				sort.Strings(info.Flags)
			}
		case "physical id":
			phys = v
		case "core id":
			core = v
			cores[phys+"/"+core] = true
		}
	}
	if err := sc.Err(); err != nil {
		return api.CPUInfo{}, fmt.Errorf("read CPU information: %w", err)
	}
	info.Cores = len(cores)
	if info.Cores == 0 {
		info.Cores = info.Threads
	}
	return info, nil
}

// readMemInfo returns total and available memory in MiB from /proc/meminfo.
func readMemInfo(path string) (total, avail int, err error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return 0, 0, fmt.Errorf("read memory information: %w", err)
	}
	for _, line := range strings.Split(string(data), "\n") {
		f := strings.Fields(line)
		if len(f) < 2 {
			continue
		}
		kb, _ := strconv.Atoi(f[1])
		switch f[0] {
		case "MemTotal:":
			total = kb / 1024
		case "MemAvailable:":
			avail = kb / 1024
		}
	}
	if total == 0 {
		return 0, 0, fmt.Errorf("no MemTotal in %s", path)
	}
	return total, avail, nil
}

// readLoad returns the 1-minute load average.
func readLoad(path string) float64 {
	data, err := os.ReadFile(path)
	if err != nil {
		return 0
	}
	f := strings.Fields(string(data))
	if len(f) == 0 {
		return 0
	}
	l, _ := strconv.ParseFloat(f[0], 64)
	return l
}

// datastoreFacts reports a datastore's capacity and the images it holds under images/.
func datastoreFacts(name, path string) (api.Datastore, error) {
	var st unix.Statfs_t
	if err := unix.Statfs(path, &st); err != nil {
		return api.Datastore{}, fmt.Errorf("datastore %s at %s: %w", name, path, err)
	}
	ds := api.Datastore{
		Name:      name,
		Path:      path,
		TotalByte: st.Blocks * uint64(st.Bsize),
		FreeByte:  st.Bavail * uint64(st.Bsize),
	}
	entries, _ := os.ReadDir(filepath.Join(path, "images"))
	for _, e := range entries {
		if e.IsDir() {
			if img, ok := readImage(name, path, e.Name()); ok {
				ds.Images = append(ds.Images, img)
			}
		}
	}
	return ds, nil
}

// readImage describes images/NAME/ in a datastore, if it holds something bootable.
func readImage(ds, root, name string) (api.Image, bool) {
	dir := filepath.Join(root, "images", name)
	ref := func(file string) string { return fmt.Sprintf("[%s] images/%s/%s", ds, name, file) }
	exists := func(file string) bool {
		st, err := os.Stat(filepath.Join(dir, file))
		return err == nil && st.Mode().IsRegular()
	}
	img := api.Image{Name: name}
	if exists("vmlinuz") {
		img.Kernel = ref("vmlinuz")
		if exists("initrd.img") {
			img.Initrd = ref("initrd.img")
		}
		if b, err := os.ReadFile(filepath.Join(dir, "cmdline")); err == nil {
			img.Cmdline = strings.TrimSpace(string(b))
		}
	}
	for _, d := range []string{"disk.qcow2", "disk.raw"} {
		if exists(d) {
			img.Disk = ref(d)
			break
		}
	}
	return img, img.Kernel != "" || img.Disk != ""
}
