package agent

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/godwit/godwit/internal/api"
)

func testAgent(t *testing.T) (*Agent, string) {
	t.Helper()
	ds := t.TempDir()
	// Short, as on a real host: a VM's QEMU sockets live below the state directory and
	// their paths must fit in 107 bytes (t.TempDir's names are long).
	state, err := os.MkdirTemp("", "gwa")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(state) })
	a, err := New(Config{
		Name: "host-1", Center: "https://198.18.1.2:7443", Listen: "198.18.1.11:7700",
		StateDir: state, Datastores: map[string]string{"shared": ds}, Networks: map[string]string{"lab": "br0"},
	}, "test")
	if err != nil {
		t.Fatal(err)
	}
	return a, ds
}

func write(t *testing.T, path, data string) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, []byte(data), 0o644); err != nil {
		t.Fatal(err)
	}
}

func TestNewRefusesBadConfig(t *testing.T) {
	base := Config{Name: "h", Center: "https://x", Listen: "198.18.1.11:1", StateDir: t.TempDir()}
	cases := map[string]func(*Config){
		"no name":            func(c *Config) { c.Name = "" },
		"no center":          func(c *Config) { c.Center = "" },
		"bad accel":          func(c *Config) { c.Accel = "fast" },
		"missing datastore":  func(c *Config) { c.Datastores = map[string]string{"d": "/nonexistent/ds"} },
		"center not a URL":   func(c *Config) { c.Center = "ftp://x" },
		"center not TLS":     func(c *Config) { c.Center = "http://x" },
		"advertise not TLS":  func(c *Config) { c.Advertise = "http://198.18.1.11:1" },
		"no state directory": func(c *Config) { c.StateDir = "" },
		"capital name":       func(c *Config) { c.Name = "Host-1" },
		"the center's name":  func(c *Config) { c.Name = "godwit-center" },
	}
	for name, change := range cases {
		c := base
		change(&c)
		if _, err := New(c, "test"); err == nil {
			t.Errorf("%s: New accepted it", name)
		}
	}
}

// TestResolvePath: boot files and disks resolve to real paths inside a datastore; a
// path outside every datastore, or a symbolic link that leads out of one (or to
// nothing), is refused with the reason.
func TestResolvePath(t *testing.T) {
	a, ds := testAgent(t)
	write(t, filepath.Join(ds, "images/x/vmlinuz"), "k")
	if err := os.Symlink("/etc/shadow", filepath.Join(ds, "images/x/shadow")); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink("/etc", filepath.Join(ds, "etc")); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(filepath.Join(ds, "images/x/vmlinuz"), filepath.Join(ds, "images/x/alias")); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink("/nonexistent/target", filepath.Join(ds, "dangling.qcow2")); err != nil {
		t.Fatal(err)
	}
	real, err := filepath.EvalSymlinks(ds)
	if err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		in, want, err string
	}{
		{"[shared] images/x/vmlinuz", filepath.Join(real, "images/x/vmlinuz"), ""},
		{"[shared]images/x", filepath.Join(real, "images/x"), ""},
		{filepath.Join(ds, "images/x/vmlinuz"), filepath.Join(real, "images/x/vmlinuz"), ""},
		{"[shared] images/x/alias", filepath.Join(real, "images/x/vmlinuz"), ""},
		{"[shared] vms/new/disk.qcow2", filepath.Join(real, "vms/new/disk.qcow2"), ""},
		{"/etc/shadow", "", "not inside a datastore"},
		{"[shared] images/x/shadow", "", "really /etc/shadow"},
		{"[shared] etc/passwd", "", "not inside a datastore"},
		{"[shared] dangling.qcow2", "", "symbolic link to nothing"},
		{"relative/path", "", "absolute"},
		{"[nosuch] a", "", "no datastore"},
		{"[shared] ../../etc/passwd", "", "inside the datastore"},
	}
	for _, c := range cases {
		got, err := a.resolvePath(c.in)
		if c.err != "" {
			if err == nil || !strings.Contains(err.Error(), c.err) {
				t.Errorf("resolvePath(%q) = %q, %v; want an error about %q", c.in, got, err, c.err)
			}
			continue
		}
		if err != nil || got != c.want {
			t.Errorf("resolvePath(%q) = %q, %v; want %q", c.in, got, err, c.want)
		}
	}
}

func TestValidateSpec(t *testing.T) {
	a, ds := testAgent(t)
	write(t, filepath.Join(ds, "images/g/vmlinuz"), "k")
	write(t, filepath.Join(ds, "images/g/initrd.img"), "i")
	good := api.VMSpec{
		Name: "v", UUID: "0f8fad5b-d9cb-469f-a165-70867728950e", CPUs: 1, MemoryMiB: 512,
		Boot:  api.Boot{Kernel: "[shared] images/g/vmlinuz", Initrd: "[shared] images/g/initrd.img"},
		Disks: []api.Disk{{Datastore: "shared", Path: "vms/v/data.qcow2", Format: "qcow2", SizeMiB: 64}},
		NICs:  []api.NIC{{Network: "lab", MAC: "02:67:77:00:00:01"}},
	}
	if err := a.validateSpec(good); err != nil {
		t.Fatalf("a good spec was refused: %v", err)
	}
	cases := map[string]struct {
		change func(*api.VMSpec)
		want   string
	}{
		"zero memory":     {func(s *api.VMSpec) { s.MemoryMiB = 0 }, "memory"},
		"no cpus":         {func(s *api.VMSpec) { s.CPUs = 0 }, "vCPU"},
		"nothing to boot": {func(s *api.VMSpec) { s.Boot = api.Boot{} }, "nothing to boot"},
		"missing kernel":  {func(s *api.VMSpec) { s.Boot.Kernel = "[shared] images/g/nope" }, "does not exist"},
		"missing initrd":  {func(s *api.VMSpec) { s.Boot.Initrd = "[shared] images/g/nope" }, "does not exist"},
		"host initrd":     {func(s *api.VMSpec) { s.Boot.Initrd = "/etc/shadow" }, "not inside a datastore"},
		"host kernel":     {func(s *api.VMSpec) { s.Boot.Kernel = "/boot/../etc/passwd" }, "not inside a datastore"},
		"kernel is a dir": {func(s *api.VMSpec) { s.Boot.Kernel = "[shared] images/g" }, "directory"},
		"bad format":      {func(s *api.VMSpec) { s.Disks[0].Format = "vmdk" }, "raw or qcow2"},
		"unknown ds":      {func(s *api.VMSpec) { s.Disks[0].Datastore = "other" }, "no datastore"},
		"no size":         {func(s *api.VMSpec) { s.Disks[0].SizeMiB = 0 }, "give a size"},
		"unknown network": {func(s *api.VMSpec) { s.NICs[0].Network = "wan" }, "no network"},
		"bad MAC":         {func(s *api.VMSpec) { s.NICs[0].MAC = "02:67:77" }, "MAC"},
		"path as UUID":    {func(s *api.VMSpec) { s.UUID = "../../../../.." }, "UUID"},
		"NUL in UUID":     {func(s *api.VMSpec) { s.UUID = "0f8fad5b-d9cb-469f-a165-70867728950\x00" }, "UUID"},
		"huge memory":     {func(s *api.VMSpec) { s.MemoryMiB = 1 << 62 }, "memory"},
		"disk boot, none": {func(s *api.VMSpec) { s.Boot = api.Boot{FromDisk: true}; s.Disks = nil }, "no disk"},
	}
	for name, c := range cases {
		s := good
		s.Disks = append([]api.Disk(nil), good.Disks...)
		s.NICs = append([]api.NIC(nil), good.NICs...)
		c.change(&s)
		err := a.validateSpec(s)
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: got %v; want an error about %q", name, err, c.want)
		}
	}
}

func TestFactsReaders(t *testing.T) {
	dir := t.TempDir()
	cpuinfo := filepath.Join(dir, "cpuinfo")
	write(t, cpuinfo, "processor\t: 0\nvendor_id\t: GenuineIntel\nmodel name\t: Test CPU\nflags\t\t: sse2 avx fpu\nphysical id\t: 0\ncore id\t\t: 0\n\nprocessor\t: 1\nvendor_id\t: GenuineIntel\nmodel name\t: Test CPU\nflags\t\t: sse2 avx fpu\nphysical id\t: 0\ncore id\t\t: 1\n")
	info, err := readCPUInfo(cpuinfo)
	if err != nil || info.Model != "Test CPU" || info.Vendor != "GenuineIntel" || info.Cores != 2 || strings.Join(info.Flags, ",") != "avx,fpu,sse2" {
		t.Fatalf("readCPUInfo = %+v, %v", info, err)
	}
	meminfo := filepath.Join(dir, "meminfo")
	write(t, meminfo, "MemTotal:       2048000 kB\nMemFree:   100 kB\nMemAvailable:   1024000 kB\n")
	total, avail, err := readMemInfo(meminfo)
	if err != nil || total != 2000 || avail != 1000 {
		t.Fatalf("readMemInfo = %d, %d, %v", total, avail, err)
	}
	if _, _, err := readMemInfo(cpuinfo); err == nil {
		t.Fatal("readMemInfo accepted a file without MemTotal")
	}
	write(t, filepath.Join(dir, "loadavg"), "0.52 0.40 0.30 1/100 42\n")
	if l := readLoad(filepath.Join(dir, "loadavg")); l != 0.52 {
		t.Fatalf("readLoad = %v", l)
	}

	ds := filepath.Join(dir, "ds")
	write(t, filepath.Join(ds, "images/linux/vmlinuz"), "k")
	write(t, filepath.Join(ds, "images/linux/initrd.img"), "i")
	write(t, filepath.Join(ds, "images/linux/cmdline"), "console=ttyS0\n")
	write(t, filepath.Join(ds, "images/win/disk.qcow2"), "d")
	write(t, filepath.Join(ds, "images/empty/readme"), "nothing bootable")
	facts, err := datastoreFacts("shared", ds)
	if err != nil || facts.TotalByte == 0 || len(facts.Images) != 2 {
		t.Fatalf("datastoreFacts = %+v, %v; want 2 images", facts, err)
	}
	linux, win := facts.Images[0], facts.Images[1]
	if linux.Kernel != "[shared] images/linux/vmlinuz" || linux.Cmdline != "console=ttyS0" || win.Disk != "[shared] images/win/disk.qcow2" {
		t.Fatalf("images = %+v", facts.Images)
	}
}

// TestIncomingEncryption: without the migration's ticket a destination cannot take a
// carried (encrypted) stream: a required encryption is refused before anything moves,
// an opportunistic one goes in the clear with a note that says why, and off needs
// nothing. With the ticket's key, encryption means a carried stream.
func TestIncomingEncryption(t *testing.T) {
	req := api.IncomingRequest{ID: "m1", Encryption: "required"}
	if _, _, err := incomingEncryption(req, nil, "host-2"); err == nil || !strings.Contains(err.Error(), "must be encrypted") {
		t.Errorf("required without a key: %v", err)
	} else if se, ok := err.(*api.StatusError); !ok || se.Code != "encryption_unavailable" || se.Status != 422 {
		t.Errorf("required without a key: %#v; want 422 encryption_unavailable", err)
	}
	req.Encryption = "opportunistic"
	carried, note, err := incomingEncryption(req, nil, "host-2")
	if err != nil || carried || !strings.Contains(note, "not encrypted") {
		t.Errorf("opportunistic without a key: %v %q %v; want the clear, with a note", carried, note, err)
	}
	key := make([]byte, 32)
	for _, mode := range []string{"", "opportunistic", "required"} {
		req.Encryption = mode
		if carried, note, err := incomingEncryption(req, key, "host-2"); err != nil || !carried || note != "" {
			t.Errorf("%q with a key: %v %q %v; want carried", mode, carried, note, err)
		}
	}
	req.Encryption = "off"
	if carried, note, err := incomingEncryption(req, key, "host-2"); err != nil || carried || note != "" {
		t.Errorf("off: %v %q %v", carried, note, err)
	}
	req.Encryption = "maybe"
	if _, _, err := incomingEncryption(req, key, "host-2"); err == nil {
		t.Error("an unknown encryption mode was accepted")
	}
}
