package qemu

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"sync"
	"testing"
)

// testKernelState finds the test kernel once per test binary, on first
// use, and removes any temporary copy when the tests end.
var testKernelState struct {
	once    sync.Once
	path    string
	err     error
	cleanup func()
}

// TestMain removes the temporary test kernel (see testKernel) after the
// tests.
func TestMain(m *testing.M) {
	code := m.Run()
	if testKernelState.cleanup != nil {
		testKernelState.cleanup()
	}
	os.Exit(code)
}

const guestCache = "/var/cache/godwit/guest"

func findTestKernel() (string, func(), error) {
	none := func() {}
	if k := os.Getenv("GODWIT_TEST_KERNEL"); k != "" {
		return k, none, nil
	}
	for _, pattern := range []string{
		"/boot/vmlinuz-*",
		guestCache + "/vmlinuz*",
		guestCache + "/*/vmlinuz*",
		guestCache + "/*/boot/vmlinuz-*",
	} {
		if m, _ := filepath.Glob(pattern); len(m) > 0 {
			sort.Strings(m)
			return m[len(m)-1], none, nil
		}
	}
	debs, _ := filepath.Glob(guestCache + "/linux-image-*.deb")
	if len(debs) == 0 {
		return "", none, fmt.Errorf("none found; download one with: cd %s && apt-get download $(apt-cache depends linux-image-cloud-amd64 | awk '/Depends/{print $2}')", guestCache)
	}
	sort.Strings(debs)
	dir, err := os.MkdirTemp("", "godwit-test-kernel-")
	if err != nil {
		return "", none, err
	}
	cleanup := func() { os.RemoveAll(dir) }
	if out, err := exec.Command("dpkg", "-x", debs[len(debs)-1], dir).CombinedOutput(); err != nil {
		cleanup()
		return "", none, fmt.Errorf("dpkg -x %s: %v: %s", debs[len(debs)-1], err, out)
	}
	m, _ := filepath.Glob(dir + "/boot/vmlinuz-*")
	if len(m) == 0 {
		cleanup()
		return "", none, fmt.Errorf("no vmlinuz in %s", debs[len(debs)-1])
	}
	return m[0], cleanup, nil
}

// testKernel returns a standard Linux kernel for the tests, or skips the
// test: $GODWIT_TEST_KERNEL, /boot/vmlinuz-*, an unpacked kernel under
// /var/cache/godwit/guest, or the Debian kernel package cached there,
// unpacked into a temporary directory for this run.
func testKernel(t *testing.T) string {
	t.Helper()
	st := &testKernelState
	st.once.Do(func() { st.path, st.cleanup, st.err = findTestKernel() })
	if st.path == "" {
		t.Fatalf("no test kernel (set GODWIT_TEST_KERNEL): %v", st.err)
	}
	return st.path
}

// qemuBinary returns the QEMU to test with ($GODWIT_QEMU or
// qemu-system-x86_64 on PATH) or skips the test.
func qemuBinary(t *testing.T) string {
	t.Helper()
	bin := os.Getenv("GODWIT_QEMU")
	if bin == "" {
		bin = "qemu-system-x86_64"
	}
	p, err := exec.LookPath(bin)
	if err != nil {
		t.Fatalf("no QEMU: %v", err)
	}
	return p
}
