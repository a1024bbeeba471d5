package guest

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"regexp"
	"strings"
)

// The disk-boot variant of the test image (build/guest/disk.raw, written by
// scripts/build-guest-disk.sh) is a FAT file system holding SYSLINUX, the kernel, the
// initramfs and syslinux.cfg, whose DEFAULT label's APPEND line is the kernel command
// line. A VM booted from a disk gets no command line from Godwit, so the guest's
// settings (godwit.ip=..., godwit.hostname=...) must be written into the image itself:
// [SetBootCmdline] does that on the host, on a stopped VM's copy of the image, with mtools
// (no loop device, no mount), and [BootCmdline] reads the line back.
//
// image is the image file's path; it may carry mtools' "@@OFFSET" suffix (for example
// "disk.raw@@1M") when the file system starts inside a partition rather than at sector 0.

// bootConfig is where SYSLINUX's configuration lives inside the image.
const bootConfig = "::syslinux.cfg"

// MaxBootCmdline is the longest command line SetBootCmdline writes: the x86 kernel keeps
// 2048 bytes including the terminating NUL, and SYSLINUX adds BOOT_IMAGE= and initrd=.
const MaxBootCmdline = 1900

// mtoolsOffset matches mtools' "@@offset" image suffix (bytes, or K, M, G, S units).
var mtoolsOffset = regexp.MustCompile(`@@[0-9]+[KkMmGgSs]?$`)

// SetBootCmdline rewrites the APPEND line of the DEFAULT label in the image's
// syslinux.cfg (adding one if that label has none), leaving every other line as it was.
// An empty cmdline writes "APPEND -" (no command line). The image must not be in use by
// a running VM.
func SetBootCmdline(ctx context.Context, image, cmdline string) error {
	if strings.ContainsAny(cmdline, "\n\r\x00") {
		return fmt.Errorf("set boot command line of %s: the command line must be one line without NUL bytes", image)
	}
	if len(cmdline) > MaxBootCmdline {
		return fmt.Errorf("set boot command line of %s: the command line is %d bytes, more than %d", image, len(cmdline), MaxBootCmdline)
	}
	cfg, err := readBootConfig(ctx, image)
	if err != nil {
		return fmt.Errorf("set boot command line of %s: %w", image, err)
	}
	updated, err := setSyslinuxAppend(cfg, cmdline)
	if err != nil {
		return fmt.Errorf("set boot command line of %s: %s: %w", image, bootConfig, err)
	}
	if _, err := mtools(ctx, strings.NewReader(updated), "mcopy", "-o", "-i", image, "-", bootConfig); err != nil {
		return fmt.Errorf("set boot command line of %s: write %s: %w", image, bootConfig, err)
	}
	return nil
}

// BootCmdline returns the kernel command line the image's SYSLINUX passes to the kernel:
// the APPEND line of the DEFAULT label, else the global APPEND line; "" if there is none
// (or it is "-").
func BootCmdline(ctx context.Context, image string) (string, error) {
	cfg, err := readBootConfig(ctx, image)
	if err != nil {
		return "", fmt.Errorf("boot command line of %s: %w", image, err)
	}
	c, err := syslinuxAppend(cfg)
	if err != nil {
		return "", fmt.Errorf("boot command line of %s: %s: %w", image, bootConfig, err)
	}
	return c, nil
}

// readBootConfig returns the contents of syslinux.cfg in the image.
func readBootConfig(ctx context.Context, image string) (string, error) {
	file := image
	if loc := mtoolsOffset.FindStringIndex(image); loc != nil {
		file = image[:loc[0]]
	}
	if _, err := os.Stat(file); err != nil {
		return "", fmt.Errorf("image: %w", err)
	}
	out, err := mtools(ctx, nil, "mcopy", "-i", image, bootConfig, "-")
	if err != nil {
		return "", fmt.Errorf("read %s: %w", bootConfig, err)
	}
	return string(out), nil
}

// mtools runs one mtools command and returns its standard output; its standard error
// becomes part of the error. mtools reads no user configuration and accepts any FAT
// geometry.
func mtools(ctx context.Context, stdin io.Reader, name string, args ...string) ([]byte, error) {
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.Env = append(os.Environ(), "MTOOLSRC=/dev/null", "MTOOLS_SKIP_CHECK=1")
	cmd.Stdin = stdin
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		if errors.Is(err, exec.ErrNotFound) {
			return nil, fmt.Errorf("%s is missing (Debian package mtools; run `make deps`): %w", name, err)
		}
		if ctxErr := ctx.Err(); ctxErr != nil {
			return nil, fmt.Errorf("%s: %w", name, ctxErr)
		}
		msg := strings.TrimSpace(stderr.String())
		if msg == "" {
			return nil, fmt.Errorf("%s %s: %w", name, strings.Join(args, " "), err)
		}
		return nil, fmt.Errorf("%s %s: %w: %s", name, strings.Join(args, " "), err, msg)
	}
	return stdout.Bytes(), nil
}

// syslinuxLine is one line of syslinux.cfg: its keyword (lower case, "" for blank and
// comment lines) and the rest of the line.
type syslinuxLine struct {
	raw     string // as in the file, without the line ending
	keyword string
	value   string
}

func parseSyslinuxLine(raw string) syslinuxLine {
	s := strings.TrimSpace(strings.TrimSuffix(raw, "\r"))
	if s == "" || s[0] == '#' {
		return syslinuxLine{raw: raw}
	}
	kw, val := s, ""
	if i := strings.IndexAny(s, " \t"); i >= 0 {
		kw, val = s[:i], s[i+1:]
	}
	return syslinuxLine{raw: raw, keyword: strings.ToLower(kw), value: strings.TrimSpace(val)}
}

// syslinuxConfig is a parsed syslinux.cfg.
type syslinuxConfig struct {
	lines []syslinuxLine
	// eol is the file's line ending, "\n" or "\r\n"; String ends every line with it.
	eol string
}

func parseSyslinuxConfig(cfg string) syslinuxConfig {
	c := syslinuxConfig{eol: "\n"}
	if strings.Contains(cfg, "\r\n") {
		c.eol = "\r\n"
	}
	if cfg == "" {
		return c
	}
	for _, raw := range strings.Split(strings.TrimSuffix(cfg, "\n"), "\n") {
		c.lines = append(c.lines, parseSyslinuxLine(strings.TrimSuffix(raw, "\r")))
	}
	return c
}

func (c syslinuxConfig) String() string {
	raws := make([]string, len(c.lines))
	for i, l := range c.lines {
		raws[i] = l.raw
	}
	if len(raws) == 0 {
		return ""
	}
	return strings.Join(raws, c.eol) + c.eol
}

// defaultLabel returns the index range [start, end) of the lines of the label SYSLINUX
// boots by default: the one DEFAULT names, else the first label.
func (c syslinuxConfig) defaultLabel() (start, end int, err error) {
	def := ""
	for _, l := range c.lines {
		if l.keyword == "default" {
			def, _, _ = strings.Cut(l.value, " ")
		}
	}
	start = -1
	for i, l := range c.lines {
		if l.keyword != "label" {
			continue
		}
		if start >= 0 {
			return start, i, nil
		}
		if def == "" || l.value == def {
			start = i
		}
	}
	if start >= 0 {
		return start, len(c.lines), nil
	}
	if def == "" {
		return 0, 0, errors.New("no LABEL to boot")
	}
	return 0, 0, fmt.Errorf("DEFAULT names label %q, which is not defined", def)
}

// syslinuxAppend returns the command line of the default label.
func syslinuxAppend(cfg string) (string, error) {
	c := parseSyslinuxConfig(cfg)
	start, end, err := c.defaultLabel()
	if err != nil {
		return "", err
	}
	val, found := "", false
	for _, l := range c.lines[start:end] {
		if l.keyword == "append" {
			val, found = l.value, true // the last APPEND of a label wins
		}
	}
	if !found {
		for _, l := range c.lines[:start] {
			if l.keyword == "append" {
				val = l.value
			}
		}
	}
	if val == "-" {
		val = ""
	}
	return val, nil
}

// setSyslinuxAppend returns cfg with the default label's command line set to cmdline.
func setSyslinuxAppend(cfg, cmdline string) (string, error) {
	c := parseSyslinuxConfig(cfg)
	start, end, err := c.defaultLabel()
	if err != nil {
		return "", err
	}
	if cmdline == "" {
		cmdline = "-"
	}
	indent := "  "
	replaced := false
	var lines []syslinuxLine
	lines = append(lines, c.lines[:start]...)
	for i, l := range c.lines[start:end] {
		if i > 0 && l.keyword != "" {
			indent = l.raw[:len(l.raw)-len(strings.TrimLeft(l.raw, " \t"))]
		}
		if l.keyword != "append" {
			lines = append(lines, l)
			continue
		}
		if replaced {
			continue // a later APPEND would override the one just written
		}
		lead := l.raw[:len(l.raw)-len(strings.TrimLeft(l.raw, " \t"))]
		kw := strings.TrimLeft(l.raw, " \t")[:len("append")] // keep the spelling's case
		lines = append(lines, parseSyslinuxLine(lead+kw+" "+cmdline))
		replaced = true
	}
	if !replaced {
		// Right after the LABEL line: the order of a label's directives does not matter.
		at := start + 1
		lines = append(lines[:at], append([]syslinuxLine{parseSyslinuxLine(indent + "APPEND " + cmdline)}, lines[at:]...)...)
	}
	lines = append(lines, c.lines[end:]...)
	c.lines = lines
	return c.String(), nil
}
