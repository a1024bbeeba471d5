package qemu

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
)

// ParseArgs reads back the Spec a command line written by Args describes: the VM's
// name, UUID, CPUs, memory, CPU model, machine, accelerator, kernel boot, disks and
// NICs. It is how an agent that lost a VM's definition (a torn state file) learns
// from the running QEMU what the VM is. A command line without -uuid is an error.
func ParseArgs(args []string) (Spec, error) {
	var s Spec
	files := map[string]string{} // protocol node → image file
	type format struct {
		id, driver, file string
		ro               bool
	}
	var formats []format
	macs := map[string]string{} // netdev id → MAC
	bootDrive := ""
	for i := 0; i+1 < len(args); i++ {
		flag, val := args[i], args[i+1]
		opts := func() map[string]string { return options(val) }
		switch flag {
		case "-name":
			s.Name = opts()["guest"]
		case "-uuid":
			s.UUID = val
		case "-machine":
			s.Machine = unesc(val)
			if val == leanMachine[1] {
				s.Machine = MachineQ35Lean
			}
		case "-accel":
			s.Accel, _, _ = strings.Cut(val, ",")
		case "-cpu":
			s.CPUModel = unesc(val)
		case "-smp":
			s.CPUs, _ = strconv.Atoi(val)
		case "-m":
			s.MemoryMiB, _ = strconv.Atoi(strings.TrimSuffix(val, "M"))
		case "-pidfile":
			s.RunDir = filepath.Dir(val)
		case "-kernel":
			s.Kernel = val
		case "-initrd":
			s.Initrd = val
		case "-append":
			s.Cmdline = val
		case "-incoming":
			s.Incoming = val
		case "-blockdev":
			o := opts()
			if o["driver"] == "file" {
				files[o["node-name"]] = o["filename"]
			} else {
				formats = append(formats, format{id: o["node-name"], driver: o["driver"], file: o["file"], ro: o["read-only"] == "on"})
			}
		case "-netdev":
			o := opts()
			if strings.HasPrefix(val, "tap,") {
				s.NICs = append(s.NICs, NIC{ID: o["id"], Tap: o["ifname"]})
			}
		case "-device":
			o := opts()
			if o["netdev"] != "" {
				macs[o["netdev"]] = o["mac"]
			}
			if o["bootindex"] == "1" {
				bootDrive = o["drive"]
			}
		default:
			continue
		}
		i++ // the value was consumed
	}
	if s.UUID == "" {
		return Spec{}, errors.New("the command line has no -uuid: it is not the QEMU of a VM")
	}
	for _, f := range formats {
		s.Disks = append(s.Disks, Disk{ID: f.id, Path: files[f.file], Format: f.driver, ReadOnly: f.ro})
	}
	for i := range s.NICs {
		s.NICs[i].MAC = macs[s.NICs[i].ID]
	}
	s.BootFromDisk = s.Kernel == "" && bootDrive != ""
	return s, nil
}

// options splits a QEMU key=value option list, where ",," is a literal comma. A
// leading value without "=" (the backend or device type) is left out.
func options(v string) map[string]string {
	out := map[string]string{}
	var cur strings.Builder
	flush := func() {
		if k, val, ok := strings.Cut(cur.String(), "="); ok {
			out[k] = val
		}
		cur.Reset()
	}
	for i := 0; i < len(v); i++ {
		if v[i] == ',' {
			if i+1 < len(v) && v[i+1] == ',' {
				cur.WriteByte(',')
				i++
				continue
			}
			flush()
			continue
		}
		cur.WriteByte(v[i])
	}
	flush()
	return out
}

func unesc(v string) string { return strings.ReplaceAll(v, ",,", ",") }

// AdoptRunDir re-attaches to the running QEMU whose pidfile is in runDir without
// knowing the VM's UUID beforehand, and returns the Spec its command line describes.
// It is for a VM whose definition is lost: the process must be alive and started with
// "-pidfile runDir/qemu.pid"; otherwise the error wraps ErrNotRunning.
func AdoptRunDir(ctx context.Context, runDir string) (*Process, Spec, error) {
	pid, err := readPID(filepath.Join(runDir, "qemu.pid"))
	if err != nil {
		return nil, Spec{}, fmt.Errorf("adopt qemu in %s: %w (%w)", runDir, err, ErrNotRunning)
	}
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
	if err != nil {
		return nil, Spec{}, fmt.Errorf("adopt qemu in %s: pid %d: %w (%w)", runDir, pid, err, ErrNotRunning)
	}
	s, err := ParseArgs(strings.Split(string(bytes.TrimRight(b, "\x00")), "\x00"))
	if err != nil {
		return nil, Spec{}, fmt.Errorf("adopt qemu in %s: pid %d: %w (%w)", runDir, pid, err, ErrNotRunning)
	}
	// Adopt checks the identity again, after opening the pidfd, so that the process
	// parsed is the process held.
	p, err := Adopt(ctx, runDir, s.UUID)
	if err != nil {
		return nil, Spec{}, err
	}
	return p, s, nil
}
