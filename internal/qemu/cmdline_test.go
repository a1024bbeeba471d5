package qemu

import (
	"reflect"
	"strings"
	"testing"
)

// ParseArgs reads back what Args wrote: an agent that lost a VM's definition rebuilds
// it from the running QEMU's command line.
func TestParseArgsReadsBackArgs(t *testing.T) {
	for _, s := range []Spec{
		{Name: "web,1", UUID: "0f8fad5b-d9cb-469f-a165-70867728950e", CPUs: 2, MemoryMiB: 512, CPUModel: "Nehalem",
			Machine: "q35", Accel: AccelTCG, Kernel: "/ds/images/g/vmlinuz", Initrd: "/ds/images/g/initrd.img",
			Cmdline: "console=ttyS0 ip=198.18.1.100", RunDir: "/var/lib/godwit/agent/vms/0f8fad5bd9cb469fa16570867728950e",
			Disks: []Disk{{ID: "disk0", Path: "/ds/vms/web,1/data.qcow2", Format: FormatQCOW2}, {ID: "disk1", Path: "/ds/iso.raw", Format: FormatRaw, ReadOnly: true}},
			NICs:  []NIC{{ID: "net0", MAC: "02:67:77:00:00:01", Tap: "gw1a2b3c4dn0"}, {ID: "net1", MAC: "02:67:77:00:00:02", Tap: "gw1a2b3c4dn1"}}},
		{Name: "disk-boot", UUID: "1f8fad5b-d9cb-469f-a165-70867728950e", CPUs: 1, MemoryMiB: 64, CPUModel: DefaultCPUModel,
			Machine: MachineQ35Lean, Accel: AccelKVM, BootFromDisk: true, RunDir: "/run/x", Incoming: IncomingDefer,
			Disks: []Disk{{ID: "disk0", Path: "/ds/disk.raw", Format: FormatRaw}}},
	} {
		got, err := ParseArgs(Args(s))
		if err != nil {
			t.Fatalf("%s: %v", s.Name, err)
		}
		if !reflect.DeepEqual(got, s) {
			t.Errorf("ParseArgs(Args(%+v))\n = %+v", s, got)
		}
	}
	if _, err := ParseArgs([]string{"qemu-system-x86_64", "-m", "64M"}); err == nil {
		t.Error("a command line without -uuid was taken for a VM's")
	}
}

// FuzzParseArgs: whatever a /proc cmdline holds (NUL-separated), ParseArgs does not
// panic, and what it accepts names a UUID; a Spec it reads back, written out again by
// Args, reads back the same.
func FuzzParseArgs(f *testing.F) {
	s := Spec{Name: "web,1", UUID: "0f8fad5b-d9cb-469f-a165-70867728950e", CPUs: 2, MemoryMiB: 512, CPUModel: "Nehalem",
		Machine: "q35", Accel: AccelTCG, Kernel: "/ds/vmlinuz", Initrd: "/ds/initrd.img", Cmdline: "console=ttyS0", RunDir: "/run/x",
		Disks: []Disk{{ID: "disk0", Path: "/ds/d.qcow2", Format: FormatQCOW2}}, NICs: []NIC{{ID: "net0", MAC: "02:67:77:00:00:01", Tap: "gw1n0"}}}
	f.Add(strings.Join(Args(s), "\x00"))
	f.Add("qemu\x00-uuid\x00x\x00-drive\x00id=,,,file=\x00-netdev\x00tap,id=a\x00-device\x00virtio-net,netdev=a,mac=")
	f.Add("-uuid")
	f.Fuzz(func(t *testing.T, cmdline string) {
		got, err := ParseArgs(strings.Split(cmdline, "\x00"))
		if err != nil {
			return
		}
		if got.UUID == "" {
			t.Fatalf("accepted a command line without a UUID: %q → %+v", cmdline, got)
		}
	})
}
