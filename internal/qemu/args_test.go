package qemu

import (
	"slices"
	"strings"
	"testing"
)

func TestArgs(t *testing.T) {
	base := func() []string {
		return []string{
			"-name", "guest=web1,process=qemu-web1",
			"-uuid", "0b6e3c1e-8f0a-4c55-9d0e-1a2b3c4d5e6f",
		}
	}
	common := func(machine, accel, cpu, smp, mem, dir string) []string {
		return []string{
			"-machine", machine,
			"-accel", accel,
			"-cpu", cpu,
			"-smp", smp,
			"-m", mem,
			"-nodefaults", "-no-user-config",
			"-display", "none", "-vga", "none",
			"-daemonize",
			"-pidfile", dir + "/qemu.pid",
			"-D", dir + "/qemu.log",
			"-msg", "timestamp=on",
			"-trace", "enable=vmstate_downtime_checkpoint",
			"-trace", "enable=vmstate_downtime_save",
			"-trace", "enable=vmstate_downtime_load",
			"-trace", "enable=qemu_announce_self_iter",
			"-trace", "enable=migration_block_activation",
			"-trace", "enable=vm_state_notify",
			"-qmp", "unix:" + dir + "/qmp.sock,server=on,wait=off",
			"-qmp", "unix:" + dir + "/events.sock,server=on,wait=off",
			"-chardev", "socket,id=ser0,path=" + dir + "/console.sock,server=on,wait=off,logfile=" + dir + "/console.log,logappend=on",
			"-serial", "chardev:ser0",
		}
	}
	cat := func(parts ...[]string) []string { return slices.Concat(parts...) }

	tests := []struct {
		name string
		spec Spec
		want []string
	}{
		{
			name: "kernel boot with defaults",
			spec: Spec{
				Name: "web1", UUID: "0b6e3c1e-8f0a-4c55-9d0e-1a2b3c4d5e6f",
				CPUs: 2, MemoryMiB: 512, Accel: AccelTCG, RunDir: "/run/godwit/vms/web1",
				Kernel: "/k/vmlinuz", Initrd: "/k/initrd", Cmdline: "console=ttyS0 root=/dev/vda",
			},
			want: cat(base(),
				common("q35", "tcg,thread=multi", "qemu64", "2", "512M", "/run/godwit/vms/web1"),
				[]string{"-kernel", "/k/vmlinuz", "-initrd", "/k/initrd", "-append", "console=ttyS0 root=/dev/vda"}),
		},
		{
			name: "kernel without initrd or cmdline",
			spec: Spec{
				Name: "web1", UUID: "0b6e3c1e-8f0a-4c55-9d0e-1a2b3c4d5e6f",
				CPUs: 1, MemoryMiB: 128, Accel: AccelKVM, CPUModel: "host", Machine: "pc-q35-10.0",
				RunDir: "/r", Kernel: "/k/vmlinuz",
			},
			want: cat(base(),
				common("pc-q35-10.0", "kvm", "host", "1", "128M", "/r"),
				[]string{"-kernel", "/k/vmlinuz"}),
		},
		{
			name: "disks, nics, rng, paused, incoming",
			spec: Spec{
				Name: "web1", UUID: "0b6e3c1e-8f0a-4c55-9d0e-1a2b3c4d5e6f",
				CPUs: 4, MemoryMiB: 1024, Accel: AccelTCG, RunDir: "/r",
				BootFromDisk: true,
				Disks: []Disk{
					{ID: "root", Path: "/data/web1.qcow2", Format: FormatQCOW2},
					{ID: "seed", Path: "/data/seed.img", Format: FormatRaw, ReadOnly: true},
				},
				NICs:     []NIC{{ID: "net0", MAC: "52:54:00:aa:bb:cc", Tap: "tap-web1"}},
				RNG:      true,
				Paused:   true,
				Incoming: IncomingDefer,
			},
			want: cat(base(),
				common("q35", "tcg,thread=multi", "qemu64", "4", "1024M", "/r"),
				[]string{
					"-S",
					"-blockdev", "driver=file,node-name=root-file,filename=/data/web1.qcow2,cache.direct=on,cache.no-flush=off,aio=threads",
					"-blockdev", "driver=qcow2,node-name=root,file=root-file,cache.direct=on,cache.no-flush=off",
					"-device", "virtio-blk-pci,id=root-dev,drive=root,bootindex=1",
					"-blockdev", "driver=file,node-name=seed-file,filename=/data/seed.img,cache.direct=on,cache.no-flush=off,aio=threads,read-only=on",
					"-blockdev", "driver=raw,node-name=seed,file=seed-file,cache.direct=on,cache.no-flush=off,read-only=on",
					"-device", "virtio-blk-pci,id=seed-dev,drive=seed",
					"-netdev", "tap,id=net0,ifname=tap-web1,script=no,downscript=no",
					"-device", "virtio-net-pci,id=net0-dev,netdev=net0,mac=52:54:00:aa:bb:cc",
					"-object", "rng-random,id=rng0,filename=/dev/urandom",
					"-device", "virtio-rng-pci,id=rng0-dev,rng=rng0",
					"-incoming", "defer",
				}),
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := Args(tt.spec)
			if !slices.Equal(got, tt.want) {
				t.Errorf("Args mismatch\n got: %s\nwant: %s", strings.Join(got, " "), strings.Join(tt.want, " "))
			}
		})
	}
}

func TestArgsDetails(t *testing.T) {
	s := Spec{
		Name: "a-very-long-vm-name", UUID: "0b6e3c1e-8f0a-4c55-9d0e-1a2b3c4d5e6f",
		CPUs: 1, MemoryMiB: 64, Accel: AccelTCG, RunDir: "/srv/odd,dir",
		Disks:  []Disk{{ID: "d0", Path: "/img/with,comma.raw", Format: FormatRaw}},
		Kernel: "/k", BootFromDisk: true,
	}
	got := strings.Join(Args(s), " ")
	for _, want := range []string{
		"process=qemu-a-very-lon ",        // cut to the kernel's 15-byte comm
		"path=/srv/odd,,dir/console.sock", // commas doubled in option values
		"unix:/srv/odd,,dir/qmp.sock",
		"filename=/img/with,,comma.raw",
		"-pidfile /srv/odd,dir/qemu.pid", // plain arguments are not escaped
	} {
		if !strings.Contains(got, want) {
			t.Errorf("Args lacks %q:\n%s", want, got)
		}
	}
	if strings.Contains(got, "bootindex") {
		t.Errorf("a kernel boot must not set a disk bootindex: %s", got)
	}
}

// TestLeanMachine: q35-lean is q35 without its SATA and SMBus controllers and with the
// vAPIC's TPR patching off.
func TestLeanMachine(t *testing.T) {
	a := strings.Join(Args(Spec{Name: "v", UUID: "u", CPUs: 1, MemoryMiB: 64, Machine: MachineQ35Lean, RunDir: "/r"}), " ")
	if !strings.Contains(a, "-machine q35,sata=off,smbus=off -global apic-common.vapic=off") {
		t.Errorf("q35-lean's options missing: %s", a)
	}
	a = strings.Join(Args(Spec{Name: "v", UUID: "u", CPUs: 1, MemoryMiB: 64, RunDir: "/r"}), " ")
	if !strings.Contains(a, "-machine q35 ") || strings.Contains(a, "vapic") {
		t.Errorf("the default machine changed: %s", a)
	}
}
