package qemu

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestValidate(t *testing.T) {
	dir := t.TempDir()
	kernel := filepath.Join(dir, "vmlinuz")
	disk := filepath.Join(dir, "disk.raw")
	for _, f := range []string{kernel, disk} {
		if err := os.WriteFile(f, make([]byte, 4096), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	good := func() Spec {
		return Spec{
			Name: "vm1", UUID: "0b6e3c1e-8f0a-4c55-9d0e-1a2b3c4d5e6f",
			CPUs: 1, MemoryMiB: 256, Accel: AccelTCG, RunDir: dir,
			Kernel: kernel,
			Disks:  []Disk{{ID: "d0", Path: disk, Format: FormatRaw}},
			NICs:   []NIC{{ID: "n0", MAC: "52:54:00:00:00:01", Tap: "tap0"}},
		}
	}
	tests := []struct {
		name   string
		mutate func(*Spec)
		want   string // substring of the error; "" for valid
	}{
		{"valid kernel without initrd", func(s *Spec) {}, ""},
		{"valid disk boot", func(s *Spec) { s.Kernel = ""; s.BootFromDisk = true }, ""},
		{"valid incoming", func(s *Spec) { s.Incoming = IncomingDefer }, ""},
		{"zero memory", func(s *Spec) { s.MemoryMiB = 0 }, "zero memory"},
		{"no cpus", func(s *Spec) { s.CPUs = 0 }, "no CPUs"},
		{"missing disk", func(s *Spec) { s.Disks[0].Path = dir + "/nope.raw" }, "disk 0 (d0) image " + dir + "/nope.raw does not exist"},
		{"missing kernel", func(s *Spec) { s.Kernel = dir + "/nokernel" }, "kernel " + dir + "/nokernel does not exist"},
		{"missing initrd", func(s *Spec) { s.Initrd = dir + "/noinitrd" }, "initrd " + dir + "/noinitrd does not exist"},
		{"nothing to boot", func(s *Spec) { s.Kernel = "" }, "nothing to boot: give a kernel, or a disk with BootFromDisk"},
		{"boot from no disk", func(s *Spec) { s.Kernel = ""; s.BootFromDisk = true; s.Disks = nil }, "BootFromDisk needs at least one disk"},
		{"cmdline without kernel", func(s *Spec) { s.Kernel = ""; s.BootFromDisk = true; s.Cmdline = "x" }, "without a kernel"},
		{"bad accel", func(s *Spec) { s.Accel = "hvf" }, `accelerator "hvf"`},
		{"no accel", func(s *Spec) { s.Accel = "" }, "no accelerator"},
		{"bad format", func(s *Spec) { s.Disks[0].Format = "vmdk" }, `format "vmdk"`},
		{"bad uuid", func(s *Spec) { s.UUID = "nope" }, "not a UUID"},
		{"bad name", func(s *Spec) { s.Name = "a,b" }, "name"},
		{"bad mac", func(s *Spec) { s.NICs[0].MAC = "52:54:00" }, "MAC"},
		{"bad tap", func(s *Spec) { s.NICs[0].Tap = "a-name-too-long-for-linux" }, "TAP device name"},
		{"duplicate ids", func(s *Spec) { s.NICs[0].ID = "d0" }, "duplicate id"},
		{"disk is a directory", func(s *Spec) { s.Disks[0].Path = dir }, "not a regular file"},
		{"run dir too long", func(s *Spec) { s.RunDir = "/" + strings.Repeat("x", 100) }, "too long for unix sockets"},
		{"bad incoming", func(s *Spec) { s.Incoming = "later" }, `incoming "later"`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := good()
			tt.mutate(&s)
			err := s.Validate()
			switch {
			case tt.want == "" && err != nil:
				t.Errorf("Validate() = %v, want nil", err)
			case tt.want != "" && err == nil:
				t.Errorf("Validate() = nil, want error containing %q", tt.want)
			case tt.want != "" && !strings.Contains(err.Error(), tt.want):
				t.Errorf("Validate() = %v\nwant it to contain %q", err, tt.want)
			}
		})
	}

	// All problems are reported at once.
	s := good()
	s.CPUs, s.MemoryMiB = 0, 0
	err := s.Validate()
	if err == nil || !strings.Contains(err.Error(), "no CPUs") || !strings.Contains(err.Error(), "zero memory") {
		t.Errorf("Validate() = %v, want both problems", err)
	}
}
