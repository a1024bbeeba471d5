package guest

import (
	"bytes"
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// The configuration scripts/build-guest-disk.sh writes.
const testSyslinuxCfg = `SERIAL 0 115200
PROMPT 0
TIMEOUT 0
DEFAULT linux
LABEL linux
  KERNEL vmlinuz
  INITRD initrd.img
  APPEND console=ttyS0 quiet panic=-1
`

// needTools fails the test (never skips) when the tools it needs are missing.
func needBootdiskTools(t *testing.T, tools ...string) {
	t.Helper()
	for _, tool := range tools {
		if _, err := exec.LookPath(tool); err != nil {
			t.Fatalf("%s is missing: run `make deps` (Debian packages mtools and dosfstools): %v", tool, err)
		}
	}
}

func runTool(t *testing.T, name string, args ...string) {
	t.Helper()
	cmd := exec.Command(name, args...)
	cmd.Env = append(os.Environ(), "MTOOLSRC=/dev/null", "MTOOLS_SKIP_CHECK=1")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, out)
	}
}

// fatImage makes a small FAT image (the "original", as build-guest-disk.sh would) with
// syslinux.cfg and another file in it, and returns the path of a copy of it to work on.
func fatImage(t *testing.T, cfg string) (image string) {
	t.Helper()
	needBootdiskTools(t, "mkfs.vfat", "mcopy")
	dir := t.TempDir()
	orig := filepath.Join(dir, "orig.raw")
	runTool(t, "mkfs.vfat", "-C", "-n", "GWTEST", orig, "2048") // 2 MiB
	if err := os.WriteFile(filepath.Join(dir, "syslinux.cfg"), []byte(cfg), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "vmlinuz"), bytes.Repeat([]byte("kernel"), 10000), 0o644); err != nil {
		t.Fatal(err)
	}
	runTool(t, "mcopy", "-i", orig, filepath.Join(dir, "syslinux.cfg"), filepath.Join(dir, "vmlinuz"), "::")
	b, err := os.ReadFile(orig)
	if err != nil {
		t.Fatal(err)
	}
	image = filepath.Join(dir, "copy.raw")
	if err := os.WriteFile(image, b, 0o644); err != nil {
		t.Fatal(err)
	}
	return image
}

// fileInImage reads a file out of a FAT image with mtools.
func fileInImage(t *testing.T, image, name string) string {
	t.Helper()
	out, err := mtools(context.Background(), nil, "mcopy", "-i", image, "::"+name, "-")
	if err != nil {
		t.Fatalf("read %s from %s: %v", name, image, err)
	}
	return string(out)
}

func TestSetBootCmdlineOnFATImage(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	image := fatImage(t, testSyslinuxCfg)
	kernelBefore := fileInImage(t, image, "vmlinuz")

	got, err := BootCmdline(ctx, image)
	if err != nil || got != "console=ttyS0 quiet panic=-1" {
		t.Fatalf("BootCmdline = %q, %v; want the APPEND line of the image", got, err)
	}

	want := "console=ttyS0 quiet panic=-1 godwit.ip=198.18.1.199/24 godwit.hostname=diskboot"
	if err := SetBootCmdline(ctx, image, want); err != nil {
		t.Fatalf("SetBootCmdline: %v", err)
	}
	if got, err := BootCmdline(ctx, image); err != nil || got != want {
		t.Fatalf("after SetBootCmdline, BootCmdline = %q, %v; want %q", got, err, want)
	}
	wantCfg := strings.Replace(testSyslinuxCfg, "APPEND console=ttyS0 quiet panic=-1", "APPEND "+want, 1)
	if cfg := fileInImage(t, image, "syslinux.cfg"); cfg != wantCfg {
		t.Fatalf("syslinux.cfg after SetBootCmdline:\n%s\nwant:\n%s", cfg, wantCfg)
	}
	if fileInImage(t, image, "vmlinuz") != kernelBefore {
		t.Fatal("SetBootCmdline changed another file of the image")
	}

	// A shorter line overwrites the longer one completely; an empty one writes "APPEND -".
	if err := SetBootCmdline(ctx, image, "quiet"); err != nil {
		t.Fatal(err)
	}
	if got, err := BootCmdline(ctx, image); err != nil || got != "quiet" {
		t.Fatalf("BootCmdline = %q, %v; want %q", got, err, "quiet")
	}
	if err := SetBootCmdline(ctx, image, ""); err != nil {
		t.Fatal(err)
	}
	if cfg := fileInImage(t, image, "syslinux.cfg"); !strings.Contains(cfg, "\n  APPEND -\n") {
		t.Fatalf("an empty command line should be written as APPEND -:\n%s", cfg)
	}
	if got, err := BootCmdline(ctx, image); err != nil || got != "" {
		t.Fatalf("BootCmdline = %q, %v; want empty", got, err)
	}
}

func TestSetBootCmdlineWithOffset(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	fat := fatImage(t, testSyslinuxCfg)
	b, err := os.ReadFile(fat)
	if err != nil {
		t.Fatal(err)
	}
	// The file system one MiB into the file, as in a partition.
	disk := filepath.Join(t.TempDir(), "disk.raw")
	if err := os.WriteFile(disk, append(make([]byte, 1<<20), b...), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := SetBootCmdline(ctx, disk+"@@1M", "root=/dev/vda1"); err != nil {
		t.Fatalf("SetBootCmdline with an offset: %v", err)
	}
	if got, err := BootCmdline(ctx, disk+"@@1M"); err != nil || got != "root=/dev/vda1" {
		t.Fatalf("BootCmdline with an offset = %q, %v", got, err)
	}
}

func TestSetBootCmdlineErrors(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	image := fatImage(t, testSyslinuxCfg)

	for _, bad := range []string{"a\nDEFAULT evil", "a\rb", "a\x00b", strings.Repeat("x", MaxBootCmdline+1)} {
		if err := SetBootCmdline(ctx, image, bad); err == nil {
			t.Errorf("SetBootCmdline accepted %.20q", bad)
		}
	}
	if got, err := BootCmdline(ctx, image); err != nil || got != "console=ttyS0 quiet panic=-1" {
		t.Fatalf("a refused command line changed the image: %q, %v", got, err)
	}

	missing := filepath.Join(t.TempDir(), "nope.raw")
	if _, err := BootCmdline(ctx, missing); err == nil || !strings.Contains(err.Error(), missing) {
		t.Errorf("BootCmdline of a missing image: %v; want an error naming it", err)
	}
	if err := SetBootCmdline(ctx, missing, "x"); err == nil {
		t.Error("SetBootCmdline of a missing image succeeded")
	}

	// A FAT image without syslinux.cfg.
	empty := filepath.Join(t.TempDir(), "empty.raw")
	runTool(t, "mkfs.vfat", "-C", empty, "1024")
	if _, err := BootCmdline(ctx, empty); err == nil || !strings.Contains(err.Error(), "syslinux.cfg") {
		t.Errorf("BootCmdline without syslinux.cfg: %v; want an error about syslinux.cfg", err)
	}
	if err := SetBootCmdline(ctx, empty, "x"); err == nil {
		t.Error("SetBootCmdline without syslinux.cfg succeeded")
	}

	// Not a FAT image at all.
	junk := filepath.Join(t.TempDir(), "junk.raw")
	if err := os.WriteFile(junk, make([]byte, 1<<20), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := BootCmdline(ctx, junk); err == nil {
		t.Error("BootCmdline of a zeroed file succeeded")
	}
}

func TestSyslinuxAppendEdits(t *testing.T) {
	tests := []struct {
		name, cfg, cmdline, want, before string
	}{
		{
			name:    "label without APPEND gets one after its LABEL line",
			cfg:     "DEFAULT a\nLABEL a\n\tKERNEL k\nLABEL b\n\tKERNEL k2\n\tAPPEND b=1\n",
			cmdline: "x=1",
			before:  "",
			want:    "DEFAULT a\nLABEL a\n\tAPPEND x=1\n\tKERNEL k\nLABEL b\n\tKERNEL k2\n\tAPPEND b=1\n",
		},
		{
			name:    "DEFAULT picks the second label; keyword case and CRLF kept",
			cfg:     "default b\r\nlabel a\r\n  append a=1\r\nlabel b\r\n  kernel k\r\n  append b=1\r\n",
			cmdline: "y=2",
			before:  "b=1",
			want:    "default b\r\nlabel a\r\n  append a=1\r\nlabel b\r\n  kernel k\r\n  append y=2\r\n",
		},
		{
			name:    "no DEFAULT: the first label; a second APPEND in the label is dropped",
			cfg:     "# comment\nLABEL one\nAPPEND p=1\nAPPEND p=2\n",
			cmdline: "z",
			before:  "p=2",
			want:    "# comment\nLABEL one\nAPPEND z\n",
		},
		{
			name:    "global APPEND is what a label without one gets",
			cfg:     "APPEND g=1\nDEFAULT l\nLABEL l\n  KERNEL k",
			cmdline: "own",
			before:  "g=1",
			want:    "APPEND g=1\nDEFAULT l\nLABEL l\n  APPEND own\n  KERNEL k\n",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got, err := syslinuxAppend(tt.cfg); err != nil || got != tt.before {
				t.Fatalf("syslinuxAppend = %q, %v; want %q", got, err, tt.before)
			}
			got, err := setSyslinuxAppend(tt.cfg, tt.cmdline)
			if err != nil {
				t.Fatal(err)
			}
			if got != tt.want {
				t.Fatalf("setSyslinuxAppend:\n%q\nwant:\n%q", got, tt.want)
			}
			if back, err := syslinuxAppend(got); err != nil || back != tt.cmdline {
				t.Fatalf("read back %q, %v; want %q", back, err, tt.cmdline)
			}
		})
	}
	for _, bad := range []string{"", "DEFAULT x\nLABEL y\n", "SERIAL 0\n"} {
		if _, err := setSyslinuxAppend(bad, "x"); err == nil {
			t.Errorf("setSyslinuxAppend(%q) succeeded; want an error (no label to boot)", bad)
		}
		if _, err := syslinuxAppend(bad); err == nil {
			t.Errorf("syslinuxAppend(%q) succeeded; want an error", bad)
		}
	}
}
