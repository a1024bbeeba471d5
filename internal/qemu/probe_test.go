package qemu

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"
)

// TestBootToPanicTCG proves the probe's detection string: the same kernel
// and command line reach probeMarker under TCG, which always works.
func TestBootToPanicTCG(t *testing.T) {
	bin, kernel := qemuBinary(t), testKernel(t)
	ctx, cancel := context.WithTimeout(context.Background(), 40*time.Second)
	defer cancel()
	res, err := bootToPanic(ctx, bin, kernel, AccelTCG, DefaultCPUModel, 30*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	if !res.reached {
		t.Fatalf("TCG boot did not reach %q: %+v", probeMarker, res)
	}
	t.Logf("TCG: kernel panic line after %v (last line %q)", res.elapsed, res.lastLine)
}

// TestProbeAccel holds on every kind of host these machines show: no /dev/kvm at all
// (the kvm_pvm module loaded or not), a /dev/kvm backed by paravirtual KVM (PVM), which
// hangs standard kernels, and real KVM.
func TestProbeAccel(t *testing.T) {
	bin, kernel := qemuBinary(t), testKernel(t)
	ctx, cancel := context.WithTimeout(context.Background(), 40*time.Second)
	defer cancel()
	start := time.Now()
	p, err := ProbeAccel(ctx, bin, kernel, DefaultProbeTimeout)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("ProbeAccel after %v: %+v", time.Since(start), p)
	if p.Accel != AccelKVM && p.Accel != AccelTCG || p.Reason == "" {
		t.Fatalf("ProbeAccel = %+v", p)
	}
	_, devErr := os.Stat(kvmDevice)
	_, pvmErr := os.Stat("/sys/module/kvm_pvm")
	switch {
	case errors.Is(devErr, os.ErrNotExist):
		// No device (on some machines of this kind kvm_pvm is loaded without one).
		if p.Accel != AccelTCG || p.Reason != "no /dev/kvm on this host" {
			t.Errorf("without /dev/kvm ProbeAccel = %+v, want tcg because there is no /dev/kvm", p)
		}
	case devErr == nil && pvmErr == nil:
		// A device backed by PVM: standard kernels never get far.
		if p.Accel != AccelTCG || !strings.Contains(p.Reason, "KVM present but") {
			t.Errorf("on a PVM host ProbeAccel = %+v, want tcg with the reason KVM did not run the kernel", p)
		}
	case devErr == nil:
		// Real KVM on ordinary hardware: the probe must choose it (or say why not).
		if p.Accel == AccelTCG && !strings.Contains(p.Reason, "KVM present but") && !strings.Contains(p.Reason, "cannot be opened") {
			t.Errorf("with a KVM device ProbeAccel = %+v without a reason about KVM", p)
		}
	}
	if pids := probePIDs(kernel); len(pids) > 0 {
		t.Errorf("probe QEMU left running: %v", pids)
	}

	if _, err := ProbeAccel(ctx, bin, "/nonexistent/vmlinuz", time.Second); err == nil {
		t.Error("ProbeAccel with a missing kernel succeeded")
	}
}

// TestProbeAccelDevice shows the answers for hosts without a usable device, whatever
// this machine has: no device at all, and one that cannot be opened.
func TestProbeAccelDevice(t *testing.T) {
	bin, kernel := qemuBinary(t), testKernel(t)
	ctx := context.Background()
	missing := filepath.Join(t.TempDir(), "kvm")
	p, err := probeAccel(ctx, bin, kernel, missing, time.Second)
	if err != nil || p.Accel != AccelTCG || p.Reason != "no "+missing+" on this host" {
		t.Errorf("no device: %+v, %v", p, err)
	}
	// A directory cannot be opened for writing: the answer names the device and the error.
	dir := t.TempDir()
	p, err = probeAccel(ctx, bin, kernel, dir, time.Second)
	if err != nil || p.Accel != AccelTCG || !strings.Contains(p.Reason, dir+" cannot be opened") {
		t.Errorf("unusable device: %+v, %v", p, err)
	}
}

// probePIDs lists running probe QEMUs booting kernel.
func probePIDs(kernel string) []int {
	var out []int
	entries, _ := os.ReadDir("/proc")
	for _, e := range entries {
		b, err := os.ReadFile(filepath.Join("/proc", e.Name(), "cmdline"))
		if err == nil && strings.Contains(string(b), "qemu") && strings.Contains(string(b), kernel) && strings.Contains(string(b), "panic=-1") {
			if pid, err := strconv.Atoi(e.Name()); err == nil {
				out = append(out, pid)
			}
		}
	}
	return out
}

func TestProbeCache(t *testing.T) {
	bin := qemuBinary(t)
	dir := t.TempDir()
	kernel := filepath.Join(dir, "vmlinuz")
	if err := os.WriteFile(kernel, []byte("not really a kernel"), 0o644); err != nil {
		t.Fatal(err)
	}
	cache := filepath.Join(dir, "accel.json")
	ctx := context.Background()

	key, err := ProbeKeyFor(ctx, bin, kernel)
	if err != nil {
		t.Fatal(err)
	}
	if key.QEMUVersion == "" || key.HostKernel == "" || key.KernelSize != 19 {
		t.Errorf("ProbeKeyFor = %+v", key)
	}
	if _, ok, err := LoadProbe(cache, key); ok || err != nil {
		t.Errorf("LoadProbe without a file = %v, %v", ok, err)
	}
	want := Probe{Accel: AccelTCG, Reason: "test reason", Elapsed: 8 * time.Second}
	if err := SaveProbe(cache, key, want); err != nil {
		t.Fatal(err)
	}
	got, ok, err := LoadProbe(cache, key)
	if err != nil || !ok || got != want {
		t.Errorf("LoadProbe = %+v, %v, %v; want %+v", got, ok, err, want)
	}

	// The cached answer is used without probing (the fake kernel would
	// not boot, and no KVM probe of 8 s runs).
	start := time.Now()
	p, cached, err := CachedProbeAccel(ctx, bin, kernel, cache, 0)
	if err != nil || !cached || p != want || time.Since(start) > 2*time.Second {
		t.Errorf("CachedProbeAccel = %+v, cached=%v, %v after %v", p, cached, err, time.Since(start))
	}

	// Any change of conditions invalidates the cache.
	for name, change := range map[string]func(*ProbeKey){
		"qemu":   func(k *ProbeKey) { k.QEMUVersion += "x" },
		"host":   func(k *ProbeKey) { k.HostKernel = "other" },
		"size":   func(k *ProbeKey) { k.KernelSize++ },
		"kernel": func(k *ProbeKey) { k.KernelSHA256 = "x" + k.KernelSHA256[1:] },
	} {
		k := key
		change(&k)
		if _, ok, err := LoadProbe(cache, k); ok || err != nil {
			t.Errorf("%s changed: LoadProbe = %v, %v; want a miss", name, ok, err)
		}
	}
	// Rewriting the kernel changes its key.
	if err := os.WriteFile(kernel, []byte("a different kernel image"), 0o644); err != nil {
		t.Fatal(err)
	}
	key2, _ := ProbeKeyFor(ctx, bin, kernel)
	if _, ok, _ := LoadProbe(cache, key2); ok {
		t.Error("cache hit after the kernel changed")
	}

	if err := os.WriteFile(cache, []byte("{corrupt"), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, ok, err := LoadProbe(cache, key); ok || err == nil {
		t.Errorf("corrupt cache: %v, %v; want an error", ok, err)
	}
}
