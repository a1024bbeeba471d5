package integration

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/godwit/godwit/internal/api"
	"github.com/godwit/godwit/internal/guest"
)

// TestDiskBoot boots the test guest from a disk image with SeaBIOS and SYSLINUX (the
// disk.raw variant of the test image, see scripts/build-guest-disk.sh) instead of from a
// kernel and initrd: the user's image is copied onto the datastore, the VM is created
// stopped, the guest's address and hostname are written into the copy's syslinux.cfg
// (Godwit passes no command line to a disk-booted VM), and the VM must come up on the
// lab network, show the bootloader on its console, and leave the user's image in place
// when it is deleted.
func TestDiskBoot(t *testing.T) {
	guestDir := os.Getenv("GODWIT_GUEST_DIR")
	src := filepath.Join(guestDir, "disk.raw")
	if _, err := os.Stat(src); err != nil {
		t.Fatalf("the disk-boot test image is missing (run `make guest`, which writes %s): %v", src, err)
	}
	cmdlineFile, err := os.ReadFile(filepath.Join(guestDir, "cmdline"))
	if err != nil {
		t.Fatalf("the test image's cmdline: %v", err)
	}

	l := newLab(t, 1)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()

	// The lab network's subnet and pool, and a free address in it: the pool's last one.
	var nets []api.Network
	if err := l.API().Do(ctx, http.MethodGet, "/api/v1/networks", nil, &nets); err != nil {
		t.Fatalf("GET /api/v1/networks: %v", err)
	}
	var subnet netip.Prefix
	var last netip.Addr
	for _, n := range nets {
		if n.Name != "lab" {
			continue
		}
		if subnet, err = netip.ParsePrefix(n.Subnet); err != nil {
			t.Fatalf("network lab has subnet %q: %v", n.Subnet, err)
		}
		_, lastText, ok := strings.Cut(n.Pool, "-")
		if last, err = netip.ParseAddr(lastText); !ok || err != nil || !subnet.Contains(last) {
			t.Fatalf("network lab has pool %q; want FIRST-LAST inside %s", n.Pool, subnet)
		}
	}
	if !subnet.IsValid() {
		t.Fatalf("GET /api/v1/networks has no network lab: %+v", nets)
	}
	var vms []api.VM
	l.RunJSON(&vms, "vm", "list")
	for _, v := range vms {
		if strings.SplitN(v.IP, "/", 2)[0] == last.String() {
			t.Fatalf("%s, the last address of the pool, is already used by VM %s", last, v.Name)
		}
	}
	ip := last.String()

	// The user's image, on the shared datastore.
	image := filepath.Join(l.Dir(), "datastore", "vms", "diskboot", "boot.raw")
	copyDiskImage(t, src, image)

	var vm api.VM
	l.RunJSON(&vm, "vm", "create", "diskboot", "--disk", "[shared] vms/diskboot/boot.raw",
		"--network", "lab", "--ip", ip, "--start=false")
	if vm.State != api.VMStopped || !vm.Spec.Boot.FromDisk || vm.Spec.Boot.Kernel != "" ||
		len(vm.Spec.Disks) != 1 || vm.Spec.Disks[0].Format != "raw" || strings.SplitN(vm.IP, "/", 2)[0] != ip {
		t.Fatalf("vm create returned %+v; want a stopped VM booting from its only disk, a raw image, with IP %s", vm, ip)
	}

	cmdline := fmt.Sprintf("%s godwit.ip=%s/%d godwit.hostname=diskboot", strings.TrimSpace(string(cmdlineFile)), ip, subnet.Bits())
	if err := guest.SetBootCmdline(ctx, image, cmdline); err != nil {
		t.Fatalf("SetBootCmdline: %v", err)
	}
	if got, err := guest.BootCmdline(ctx, image); err != nil || got != cmdline {
		t.Fatalf("the image's command line is %q (%v); want %q", got, err, cmdline)
	}

	start := time.Now()
	var started api.VM
	l.RunJSON(&started, "vm", "start", "diskboot")
	if started.State != api.VMRunning || started.PID == 0 {
		t.Fatalf("vm start returned %+v; want a running VM with a PID", started)
	}
	l.WaitHTTP("client", "http://"+ip+"/healthz", 90*time.Second)
	t.Logf("disk-booted guest answered HTTP %s after vm start (accel %s)", time.Since(start).Round(time.Millisecond), started.Accel)

	st := l.Stats(ip)
	if st.Hostname != "diskboot" || st.MemoryErrors != 0 || st.BootID == "" {
		t.Fatalf("guest stats %+v: want hostname diskboot (from the image's syslinux.cfg), no memory errors and a boot id", st)
	}

	// The boot went through the disk: SYSLINUX (SERIAL 0 in the image's syslinux.cfg)
	// printed its banner on the serial console before Linux and the guest program started;
	// the hostname above came from the APPEND line it passed on. (With "quiet" on that
	// line SYSLINUX leaves out its "Loading vmlinuz... ok" lines.)
	console := l.MustRun("vm", "console", "diskboot")
	iBanner := strings.Index(console, "SYSLINUX ")
	iGuest := strings.Index(console, "godwit-guest starting")
	iReady := strings.Index(console, "godwit-guest ready")
	if iBanner < 0 || iGuest < iBanner || iReady < iGuest {
		t.Fatalf("the console does not show the SYSLINUX banner from the disk before the guest came up:\n%s", console)
	}

	var stopped api.VM
	l.RunJSON(&stopped, "vm", "stop", "diskboot", "--force")
	if stopped.State != api.VMStopped {
		t.Fatalf("vm stop --force left state %s", stopped.State)
	}
	if !processGone(started.PID, 10*time.Second) {
		t.Fatalf("QEMU process %d still runs after vm stop --force", started.PID)
	}
	if got, err := guest.BootCmdline(ctx, image); err != nil || got != cmdline {
		t.Fatalf("after the run the image's command line is %q (%v); want %q", got, err, cmdline)
	}

	l.MustRun("vm", "delete", "diskboot")
	l.RunJSON(&vms, "vm", "list")
	if len(vms) != 0 {
		t.Fatalf("vm list after delete: %+v", vms)
	}
	if fi, err := os.Stat(image); err != nil || fi.Size() == 0 {
		t.Fatalf("the user's image %s must survive vm delete (Godwit deletes only disks it created): %v", image, err)
	}
}

// copyDiskImage copies src to dst, creating dst's folder.
func copyDiskImage(t *testing.T, src, dst string) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(dst), 0o755); err != nil {
		t.Fatal(err)
	}
	in, err := os.Open(src)
	if err != nil {
		t.Fatal(err)
	}
	defer in.Close()
	out, err := os.OpenFile(dst, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o644)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := io.Copy(out, in); err != nil {
		out.Close()
		t.Fatalf("copy %s to %s: %v", src, dst, err)
	}
	if err := out.Close(); err != nil {
		t.Fatalf("copy %s to %s: %v", src, dst, err)
	}
}
