package api

import (
	"fmt"
	"unicode/utf8"
)

// Refused requests that agents report in heartbeats are bounded, so that a heartbeat
// fits the center's MaxBodyBytes however many requests, and however large, strangers
// send: at most MaxAgentRefusals per heartbeat (older ones are dropped and counted in
// the next one's Dropped) and every text field cut at MaxRefusalField bytes. Even if
// JSON escapes every byte (6 bytes each), they take under 300 KiB of a heartbeat.
const (
	MaxAgentRefusals = 32
	MaxRefusalField  = 256
)

// Bounded returns r with every text field cut to MaxRefusalField bytes (see Truncate).
func (r AgentRefusal) Bounded() AgentRefusal {
	r.From = Truncate(r.From, MaxRefusalField)
	r.Method = Truncate(r.Method, MaxRefusalField)
	r.Path = Truncate(r.Path, MaxRefusalField)
	r.Subject = Truncate(r.Subject, MaxRefusalField)
	r.Reason = Truncate(r.Reason, MaxRefusalField)
	r.Dropped = max(r.Dropped, 0)
	return r
}

// Truncate returns s if it is at most n bytes long; otherwise its start, cut at a
// character boundary, followed by a note of how long s was ("…(614400 bytes)"), all
// within n bytes (the note is left out when n is too small for it). Every bound on text
// that a peer or a user sent (audit records, refusals, logins) cuts this way.
func Truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return TruncateNoting(s, n, len(s))
}

// TruncateNoting is Truncate for s, the start of a value total bytes long: the note
// gives total, and the result is cut even when s itself would fit.
func TruncateNoting(s string, n, total int) string {
	note := TruncationNote(total)
	if len(note) > n/2 {
		note = ""
	}
	cut := min(max(n-len(note), 0), len(s))
	for cut > 0 && cut < len(s) && !utf8.RuneStart(s[cut]) {
		cut--
	}
	return s[:cut] + note
}

// TruncationNote ends a value cut short; n is its length before the cut.
func TruncationNote(n int) string { return fmt.Sprintf("…(%d bytes)", n) }

// Bounds on a VM's spec, checked by the center when it creates a VM and again by the
// agent that defines or receives it (which does not take the center's word for it).
const (
	MaxVMName    = 63
	MaxNICs      = 8
	MaxDisks     = 16
	MaxPath      = 1024 // a kernel, initrd or disk path
	MaxCmdline   = 2047 // the x86 kernel's command line, without its terminating NUL
	MaxShortName = 128  // a CPU model, datastore, network or policy name; a MAC or an IP
	// MaxDiskMiB bounds the size of a disk the host creates: 64 TiB.
	MaxDiskMiB = 64 << 20
)

// MaxReason bounds the reason a user gives for an action (maintenance, a revocation),
// which is stored and shown with it.
const MaxReason = 1024

// CheckReason refuses a reason longer than MaxReason, saying so.
func CheckReason(reason string) error {
	if len(reason) > MaxReason {
		return BadRequest("the reason is %d bytes long; at most %d are allowed", len(reason), MaxReason)
	}
	return nil
}

// CheckBounds says which bound of the above s exceeds, if any, in a sentence.
func (s VMSpec) CheckBounds() error {
	long := func(what, v string, n int) error {
		if len(v) > n {
			return fmt.Errorf("%s is %d bytes long; at most %d are allowed", what, len(v), n)
		}
		return nil
	}
	switch {
	case len(s.Name) > MaxVMName:
		return long("the VM's name", s.Name, MaxVMName)
	case len(s.NICs) > MaxNICs:
		return fmt.Errorf("VM %s has %d NICs; a VM may have at most %d", s.Name, len(s.NICs), MaxNICs)
	case len(s.Disks) > MaxDisks:
		return fmt.Errorf("VM %s has %d disks; a VM may have at most %d", s.Name, len(s.Disks), MaxDisks)
	}
	if s.Machine != "" && s.Machine != MachineQ35 && s.Machine != MachineQ35Lean {
		return fmt.Errorf("VM %s asks for machine %q; the machines are %s and %s", s.Name, Truncate(s.Machine, MaxShortName), MachineQ35Lean, MachineQ35)
	}
	errs := []error{
		long("the CPU model", s.CPUModel, MaxShortName),
		long("the migration policy", s.MigrationPolicy, MaxShortName),
		long("the kernel's path", s.Boot.Kernel, MaxPath),
		long("the initrd's path", s.Boot.Initrd, MaxPath),
		long("the kernel command line", s.Boot.Cmdline, MaxCmdline),
	}
	for i, d := range s.Disks {
		errs = append(errs,
			long(fmt.Sprintf("disk %d's datastore name", i), d.Datastore, MaxShortName),
			long(fmt.Sprintf("disk %d's path", i), d.Path, MaxPath),
			long(fmt.Sprintf("disk %d's format", i), d.Format, MaxShortName))
		if d.SizeMiB > MaxDiskMiB {
			errs = append(errs, fmt.Errorf("disk %d asks for %d MiB; at most %d MiB (64 TiB) are allowed", i, d.SizeMiB, MaxDiskMiB))
		}
	}
	for i, n := range s.NICs {
		errs = append(errs,
			long(fmt.Sprintf("NIC %d's network name", i), n.Network, MaxShortName),
			long(fmt.Sprintf("NIC %d's MAC", i), n.MAC, MaxShortName),
			long(fmt.Sprintf("NIC %d's IP address", i), n.IP, MaxShortName))
	}
	for _, err := range errs {
		if err != nil {
			return err
		}
	}
	return nil
}

// MaxConsoleBytes bounds an answer of GET …/console (the end of a VM's serial console
// output) and each of the two console log files an agent keeps per VM.
const MaxConsoleBytes = 1 << 20
