package qemu

import (
	"strconv"
	"strings"
)

// Args builds QEMU's command line (without the binary) for s. It is a pure
// function of s: it applies the defaults for Machine and CPUModel but uses
// paths as given (Start makes them absolute first, because QEMU changes to
// / when it daemonizes). It does not validate s; see Spec.Validate.
//
// The VM gets no default devices and no display; its serial console is a
// unix socket server (attach at any time) that also appends everything to
// console.log; QEMU's own messages go to qemu.log (-D keeps QEMU's stderr
// pointed there after it daemonizes, instead of /dev/null).
func Args(s Spec) []string {
	machine := s.Machine
	if machine == "" {
		machine = DefaultMachine
	}
	cpu := s.CPUModel
	if cpu == "" {
		cpu = DefaultCPUModel
	}

	a := []string{
		"-name", "guest=" + esc(s.Name) + ",process=" + esc(processName(s.Name)),
		"-uuid", s.UUID,
	}
	a = append(a, machineArgs(machine)...)
	a = append(a,
		"-accel", accelOption(s.Accel),
		"-cpu", esc(cpu),
		"-smp", strconv.Itoa(s.CPUs),
		"-m", strconv.Itoa(s.MemoryMiB)+"M",
		"-nodefaults", "-no-user-config",
		"-display", "none", "-vga", "none",
		"-daemonize",
		"-pidfile", s.PIDPath(),
		"-D", s.LogPath(),
	)
	a = append(a, traceArgs...)
	a = append(a,
		"-qmp", "unix:"+esc(s.QMPPath())+",server=on,wait=off",
		"-qmp", "unix:"+esc(s.EventsPath())+",server=on,wait=off",
		"-chardev", "socket,id=ser0,path="+esc(s.ConsoleSocketPath())+
			",server=on,wait=off,logfile="+esc(s.ConsoleLogPath())+",logappend=on",
		"-serial", "chardev:ser0",
	)
	if s.Paused {
		a = append(a, "-S")
	}

	if s.Kernel != "" {
		a = append(a, "-kernel", s.Kernel)
		if s.Initrd != "" {
			a = append(a, "-initrd", s.Initrd)
		}
		if s.Cmdline != "" {
			a = append(a, "-append", s.Cmdline)
		}
	}

	for i, d := range s.Disks {
		a = append(a, diskArgs(d, i == 0 && s.Kernel == "" && s.BootFromDisk)...)
	}
	for _, n := range s.NICs {
		a = append(a,
			"-netdev", "tap,id="+n.ID+",ifname="+n.Tap+",script=no,downscript=no",
			"-device", "virtio-net-pci,id="+n.ID+"-dev,netdev="+n.ID+",mac="+n.MAC,
		)
	}
	if s.RNG {
		a = append(a,
			"-object", "rng-random,id=rng0,filename=/dev/urandom",
			"-device", "virtio-rng-pci,id=rng0-dev,rng=rng0",
		)
	}

	if s.Incoming != "" {
		a = append(a, "-incoming", s.Incoming)
	}
	return a
}

// diskArgs attaches one disk: a file protocol node that bypasses the host
// page cache (cache.direct=on, so that hosts sharing the storage never see
// stale data across a migration) with thread-pool I/O (aio=threads works
// on every file system), a format node on top, and a virtio-blk device.
func diskArgs(d Disk, boot bool) []string {
	ro := ""
	if d.ReadOnly {
		ro = ",read-only=on"
	}
	fileNode := d.ID + "-file"
	dev := "virtio-blk-pci,id=" + d.ID + "-dev,drive=" + d.ID
	if boot {
		dev += ",bootindex=1"
	}
	return []string{
		"-blockdev", "driver=file,node-name=" + fileNode + ",filename=" + esc(d.Path) +
			",cache.direct=on,cache.no-flush=off,aio=threads" + ro,
		"-blockdev", "driver=" + d.Format + ",node-name=" + d.ID + ",file=" + fileNode +
			",cache.direct=on,cache.no-flush=off" + ro,
		"-device", dev,
	}
}

// accelOption is the -accel value: multi-threaded TCG (one host thread per
// vCPU) or KVM.
func accelOption(accel string) string {
	if accel == AccelTCG {
		return "tcg,thread=multi"
	}
	return accel
}

// processName is the name QEMU gives its process (visible in ps and
// /proc/PID/comm); the kernel keeps 15 bytes.
func processName(name string) string {
	p := "qemu-" + name
	if len(p) > 15 {
		p = p[:15]
	}
	return p
}

// esc escapes a value for QEMU's key=value option syntax, where a comma
// is written twice.
func esc(v string) string { return strings.ReplaceAll(v, ",", ",,") }

// MachineQ35Lean is q35 without the devices a virtio guest does not use, whose state
// QEMU would otherwise restore during every migration's pause (see api.MachineQ35Lean).
const MachineQ35Lean = "q35-lean"

// leanMachine is how QEMU spells MachineQ35Lean; ParseArgs reads it back.
var leanMachine = []string{"-machine", "q35,sata=off,smbus=off", "-global", "apic-common.vapic=off"}

// machineArgs returns the options that give a VM the machine m.
func machineArgs(m string) []string {
	if m == MachineQ35Lean {
		return leanMachine
	}
	return []string{"-machine", esc(m)}
}
