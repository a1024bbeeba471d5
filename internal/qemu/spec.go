// Package qemu starts, adopts and stops the QEMU processes that run VMs.
//
// A VM's QEMU is always started with -daemonize in its own session, so it
// is never a child of the agent: VMs keep running when the agent stops or
// crashes, and Adopt re-attaches to them after a restart. Every VM has a
// run directory holding its QMP socket, serial console socket and log,
// QEMU's own log and its pidfile (see the *Path methods of Spec).
package qemu

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strings"

	"golang.org/x/sys/unix"
)

// Defaults applied by Args for empty Spec fields.
const (
	DefaultMachine  = "q35"
	DefaultCPUModel = "qemu64"
)

// Accelerators.
const (
	AccelKVM = "kvm"
	AccelTCG = "tcg"
)

// Disk formats.
const (
	FormatRaw   = "raw"
	FormatQCOW2 = "qcow2"
)

// IncomingDefer starts QEMU waiting for an incoming migration whose
// address is given later over QMP (migrate-incoming).
const IncomingDefer = "defer"

// Spec is everything needed to start one VM's QEMU.
type Spec struct {
	// Name is the VM's name; QEMU shows it as the guest name and the
	// process name ("qemu-" + Name, cut to 15 bytes).
	Name string
	// UUID identifies the VM; Adopt uses it to recognise the process.
	UUID string
	// CPUs is the number of vCPUs (at least 1).
	CPUs int
	// MemoryMiB is the guest RAM in MiB (at least 1).
	MemoryMiB int
	// CPUModel is QEMU's -cpu model; DefaultCPUModel when empty.
	CPUModel string
	// Machine is QEMU's machine type; DefaultMachine when empty.
	Machine string
	// Accel is AccelKVM or AccelTCG (see ProbeAccel).
	Accel string
	// Kernel, Initrd and Cmdline boot a Linux kernel directly (optional).
	Kernel  string
	Initrd  string
	Cmdline string
	// BootFromDisk boots the first disk with the BIOS (SeaBIOS) when no
	// Kernel is given.
	BootFromDisk bool
	// Disks are attached as virtio-blk devices, in order.
	Disks []Disk
	// NICs are attached as virtio-net devices, in order.
	NICs []NIC
	// RNG adds a virtio-rng device fed from the host.
	RNG bool
	// RunDir is the VM's run directory (created by Start when missing).
	// Its path must be short enough for unix socket names (about 90 bytes).
	RunDir string
	// Incoming, when set, starts QEMU waiting for an incoming migration:
	// IncomingDefer ("defer") or a migration URI.
	Incoming string
	// Paused starts QEMU with its vCPUs stopped (-S); resume with cont.
	Paused bool
}

// Disk is one virtio-blk disk backed by an image file.
type Disk struct {
	// ID names the disk; the block nodes are ID+"-file" (protocol) and ID
	// (format), the guest device ID+"-dev".
	ID string
	// Path is the image file.
	Path string
	// Format is FormatRaw or FormatQCOW2.
	Format string
	// ReadOnly attaches the disk read-only.
	ReadOnly bool
}

// NIC is one virtio-net interface on an existing TAP device.
type NIC struct {
	// ID names the network backend; the guest device is ID+"-dev".
	ID string
	// MAC is the guest's MAC address, e.g. "52:54:00:12:34:56".
	MAC string
	// Tap is the name of an existing TAP device on the host.
	Tap string
}

// Paths of the files in a VM's run directory.

// QMPPath is the QMP socket.
func (s Spec) QMPPath() string { return filepath.Join(s.RunDir, "qmp.sock") }

// EventsPath is the second QMP socket, on which the host only listens to QEMU's
// events (the first, QMPPath, serves one client at a time for commands).
func (s Spec) EventsPath() string { return filepath.Join(s.RunDir, "events.sock") }

// ConsoleSocketPath is the serial console socket (attach interactively).
func (s Spec) ConsoleSocketPath() string { return filepath.Join(s.RunDir, "console.sock") }

// ConsoleLogPath is the log of everything the guest wrote to its serial
// console.
func (s Spec) ConsoleLogPath() string { return filepath.Join(s.RunDir, "console.log") }

// PIDPath is QEMU's pidfile (QEMU removes it when it exits).
func (s Spec) PIDPath() string { return filepath.Join(s.RunDir, "qemu.pid") }

// LogPath is QEMU's own log: its error messages from start-up on.
func (s Spec) LogPath() string { return filepath.Join(s.RunDir, "qemu.log") }

// maxSocketPath is the longest unix socket path the kernel accepts
// (sun_path is 108 bytes including the terminating NUL).
const maxSocketPath = 107

var (
	idRE   = regexp.MustCompile(`^[A-Za-z][A-Za-z0-9_.-]{0,19}$`)
	nameRE = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$`)
	uuidRE = regexp.MustCompile(`^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$`)
	macRE  = regexp.MustCompile(`^[0-9a-fA-F]{2}(:[0-9a-fA-F]{2}){5}$`)
)

// Validate checks the spec and the files it names, and reports every
// problem found, one per line.
func (s Spec) Validate() error {
	var errs []error
	bad := func(format string, a ...any) { errs = append(errs, fmt.Errorf(format, a...)) }

	if !nameRE.MatchString(s.Name) {
		bad("name %q: use 1-63 letters, digits, '.', '_' or '-', starting with a letter or digit", s.Name)
	}
	if !uuidRE.MatchString(s.UUID) {
		bad("uuid %q is not a UUID like 8-4-4-4-12 hex digits", s.UUID)
	}
	if s.CPUs < 1 {
		bad("no CPUs: give at least 1 vCPU")
	}
	if s.MemoryMiB < 1 {
		bad("zero memory: give the guest RAM in MiB")
	}
	switch s.Accel {
	case AccelKVM, AccelTCG:
	case "":
		bad("no accelerator: give %q or %q (see ProbeAccel)", AccelKVM, AccelTCG)
	default:
		bad("accelerator %q: want %q or %q", s.Accel, AccelKVM, AccelTCG)
	}
	if s.RunDir == "" {
		bad("no run directory")
	} else if abs, err := filepath.Abs(s.RunDir); err == nil && len(abs)+len("/console.sock") > maxSocketPath {
		bad("run directory %s is too long for unix sockets (at most %d bytes)", abs, maxSocketPath-len("/console.sock"))
	}

	if s.Kernel == "" && !s.BootFromDisk {
		bad("nothing to boot: give a kernel, or a disk with BootFromDisk")
	}
	if s.Kernel == "" && s.BootFromDisk && len(s.Disks) == 0 {
		bad("BootFromDisk needs at least one disk")
	}
	if s.Kernel == "" && (s.Initrd != "" || s.Cmdline != "") {
		bad("initrd or kernel command line given without a kernel")
	}
	if s.Kernel != "" {
		checkFile(&errs, "kernel", s.Kernel)
	}
	if s.Initrd != "" {
		checkFile(&errs, "initrd", s.Initrd)
	}

	ids := map[string]bool{}
	for i, d := range s.Disks {
		what := fmt.Sprintf("disk %d (%s)", i, d.ID)
		if !idRE.MatchString(d.ID) {
			bad("%s: id must be 1-20 letters, digits, '.', '_' or '-', starting with a letter", what)
		} else if ids[d.ID] {
			bad("%s: duplicate id", what)
		}
		ids[d.ID] = true
		if d.Format != FormatRaw && d.Format != FormatQCOW2 {
			bad("%s: format %q: want %q or %q", what, d.Format, FormatRaw, FormatQCOW2)
		}
		if d.Path == "" {
			bad("%s: no image path", what)
			continue
		}
		if !checkFile(&errs, what+" image", d.Path) {
			continue
		}
		if err := checkDirectIO(d.Path); err != nil {
			bad("%s: %v", what, err)
		}
	}
	for i, n := range s.NICs {
		what := fmt.Sprintf("nic %d (%s)", i, n.ID)
		if !idRE.MatchString(n.ID) {
			bad("%s: id must be 1-20 letters, digits, '.', '_' or '-', starting with a letter", what)
		} else if ids[n.ID] {
			bad("%s: duplicate id", what)
		}
		ids[n.ID] = true
		if !macRE.MatchString(n.MAC) {
			bad("%s: MAC %q is not like 52:54:00:12:34:56", what, n.MAC)
		}
		if n.Tap == "" || len(n.Tap) >= unix.IFNAMSIZ || strings.ContainsAny(n.Tap, "/ ,") {
			bad("%s: TAP device name %q is not a valid interface name", what, n.Tap)
		}
	}
	if s.Incoming != "" && s.Incoming != IncomingDefer && !strings.Contains(s.Incoming, ":") {
		bad("incoming %q: want %q or a migration URI like tcp:HOST:PORT", s.Incoming, IncomingDefer)
	}

	if len(errs) == 0 {
		return nil
	}
	return fmt.Errorf("invalid spec for VM %q: %w", s.Name, errors.Join(errs...))
}

// checkFile records an error unless path is an existing regular file.
func checkFile(errs *[]error, what, path string) bool {
	fi, err := os.Stat(path)
	switch {
	case errors.Is(err, os.ErrNotExist):
		*errs = append(*errs, fmt.Errorf("%s %s does not exist", what, path))
	case err != nil:
		*errs = append(*errs, fmt.Errorf("%s: %w", what, err))
	case !fi.Mode().IsRegular():
		*errs = append(*errs, fmt.Errorf("%s %s is not a regular file", what, path))
	default:
		return true
	}
	return false
}

// checkDirectIO checks that the disk image can be opened with O_DIRECT, as
// QEMU will (cache.direct=on). Storage shared between hosts must bypass the
// host page cache so that a migrated VM never reads stale data, so a file
// system without O_DIRECT support is refused rather than silently cached.
func checkDirectIO(path string) error {
	fd, err := unix.Open(path, unix.O_RDONLY|unix.O_DIRECT|unix.O_CLOEXEC, 0)
	if err != nil {
		if errors.Is(err, unix.EINVAL) {
			return fmt.Errorf("the file system of %s does not support O_DIRECT, which disks need (cache.direct=on); put the image on a file system that does", path)
		}
		return fmt.Errorf("open %s with O_DIRECT: %w", path, err)
	}
	unix.Close(fd)
	return nil
}

// withDefaults returns s with empty optional fields filled in and every
// path made absolute (QEMU changes to / when it daemonizes).
func (s Spec) withDefaults() (Spec, error) {
	if s.Machine == "" {
		s.Machine = DefaultMachine
	}
	if s.CPUModel == "" {
		s.CPUModel = DefaultCPUModel
	}
	abs := func(p *string) error {
		if *p == "" {
			return nil
		}
		a, err := filepath.Abs(*p)
		if err != nil {
			return err
		}
		*p = a
		return nil
	}
	for _, p := range []*string{&s.RunDir, &s.Kernel, &s.Initrd} {
		if err := abs(p); err != nil {
			return s, err
		}
	}
	disks := make([]Disk, len(s.Disks))
	copy(disks, s.Disks)
	for i := range disks {
		if err := abs(&disks[i].Path); err != nil {
			return s, err
		}
	}
	s.Disks = disks
	return s, nil
}
