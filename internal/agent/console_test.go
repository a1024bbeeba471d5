package agent

import (
	"bytes"
	"context"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/godwit/godwit/internal/api"
	"github.com/godwit/godwit/internal/qemu"
)

// guestKernel copies the test guest's kernel (GODWIT_GUEST_DIR, else the repository's
// build/guest; `make guest` builds it) to images/g/vmlinuz on the datastore ds.
func guestKernel(t *testing.T, ds string) string {
	t.Helper()
	dir := os.Getenv("GODWIT_GUEST_DIR")
	if dir == "" {
		dir = filepath.Join("..", "..", "build", "guest")
	}
	b, err := os.ReadFile(filepath.Join(dir, "vmlinuz"))
	if err != nil {
		t.Fatalf("the test guest's kernel (run `make guest`): %v", err)
	}
	write(t, filepath.Join(ds, "images", "g", "vmlinuz"), string(b))
	return "[shared] images/g/vmlinuz"
}

// startTestQEMU starts the QEMU of defined VM name under TCG, as the agent would, and
// kills it when the test ends.
func startTestQEMU(ctx context.Context, t *testing.T, a *Agent, name string) (*vm, *qemu.Process, qemu.Spec) {
	t.Helper()
	v, err := a.get(name)
	if err != nil {
		t.Fatal(err)
	}
	q, err := a.qemuSpec(v, "tcg")
	if err != nil {
		t.Fatal(err)
	}
	p, err := qemu.Start(ctx, "qemu-system-x86_64", q)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = p.Kill() })
	return v, p, q
}

// consoleGet asks the agent's API for a VM's console with the query q.
func consoleGet(t *testing.T, a *Agent, name, q string) []byte {
	t.Helper()
	w := httptest.NewRecorder()
	a.Handler().ServeHTTP(w, httptest.NewRequest(http.MethodGet, "/agent/v1/vms/"+name+"/console"+q, nil))
	if w.Code != http.StatusOK {
		t.Fatalf("GET console%s: %d %s", q, w.Code, w.Body)
	}
	return w.Body.Bytes()
}

func fileSize(path string) int64 {
	st, err := os.Stat(path)
	if err != nil {
		return 0
	}
	return st.Size()
}

// A guest that prints a lot on its serial console — a kernel that panics and reboots
// over and over, logging every initcall — through a real QEMU: its console log is
// rotated whenever it reaches the limit, so the two files stay bounded on disk, and the
// console answer holds the newest output, bounded.
func TestConsoleLogOfChattyGuestStaysBounded(t *testing.T) {
	a, ds := testAgent(t)
	const limit = 32 << 10
	a.cfg.ConsoleLogMax = limit
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	spec := api.VMSpec{Name: "chatty", UUID: "5b0d3c4e-8f4f-4a43-9d0b-6c1f0e9a2b7d", CPUs: 1, MemoryMiB: 128,
		Boot: api.Boot{Kernel: guestKernel(t, ds), Cmdline: "console=ttyS0 panic=1 ignore_loglevel initcall_debug"}}
	if _, _, err := a.Define(ctx, spec); err != nil {
		t.Fatal(err)
	}
	v, p, _ := startTestQEMU(ctx, t, a, "chatty")
	keepCtx, stopKeeping := context.WithCancel(ctx)
	kept := make(chan struct{})
	go func() { defer close(kept); a.keepConsoles(keepCtx) }()

	current, older := consoleLogs(v.dir)
	var maxCurrent, maxOlder, written, last int64
	rotations := 0
	for start := time.Now(); time.Since(start) < 8*time.Second || rotations < 3; time.Sleep(20 * time.Millisecond) {
		if time.Since(start) > time.Minute {
			t.Fatalf("only %d rotations in a minute; the guest printed %d bytes", rotations, written)
		}
		c := fileSize(current)
		if c < last {
			rotations++
			written += last
		}
		last = c
		maxCurrent, maxOlder = max(maxCurrent, c), max(maxOlder, fileSize(older))
	}
	stopKeeping()
	<-kept
	if err := p.Kill(); err != nil {
		t.Fatal(err)
	}
	t.Logf("the guest printed over %d bytes; %d rotations; console.log reached %d bytes, console.log.1 %d", written+last, rotations, maxCurrent, maxOlder)
	// The log is checked every consoleCheckEvery; the guest prints up to some 80 KB a
	// second as it boots.
	if maxCurrent > limit+64<<10 || maxOlder > limit {
		t.Fatalf("console.log reached %d bytes and console.log.1 %d; the limit is %d", maxCurrent, maxOlder, limit)
	}

	// The answer is the newest output from both files, and a tail of it on request.
	cur, _ := os.ReadFile(current)
	old, _ := os.ReadFile(older)
	all := append(append([]byte{}, old...), cur...)
	if got := consoleGet(t, a, "chatty", "?tail=0"); !bytes.Equal(got, all) {
		t.Fatalf("GET console?tail=0: %d bytes; want the %d of console.log.1 and console.log", len(got), len(all))
	}
	if got := consoleGet(t, a, "chatty", "?tail=100"); !bytes.Equal(got, all[len(all)-100:]) {
		t.Fatalf("GET console?tail=100: %q; want the last 100 bytes %q", got, all[len(all)-100:])
	}
	if !strings.Contains(string(all), "Linux version") && !strings.Contains(string(all), "initcall") {
		t.Fatalf("the console holds no kernel output: %q", all[:min(len(all), 200)])
	}
}

// However large a console log has grown (an older agent did not rotate it), an answer
// holds at most api.MaxConsoleBytes, the newest; the next check cuts the log back.
func TestConsoleAnswerBounded(t *testing.T) {
	a, ds := testAgent(t)
	ctx := context.Background()
	spec := api.VMSpec{Name: "big", UUID: "6c1e4d5f-9a5a-4b54-8e1c-7d2a1fab3c8e", CPUs: 1, MemoryMiB: 64,
		Boot: api.Boot{Kernel: guestKernel(t, ds)}}
	if _, _, err := a.Define(ctx, spec); err != nil {
		t.Fatal(err)
	}
	v, _ := a.get("big")
	current, older := consoleLogs(v.dir)
	f, err := os.OpenFile(current, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o644) // as QEMU opens it
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	line := []byte(strings.Repeat("x", 99) + "\n")
	for i := range 50000 { // 5 MB
		line[0] = byte('a' + i%26)
		if _, err := f.Write(line); err != nil {
			t.Fatal(err)
		}
	}
	whole, _ := os.ReadFile(current)
	newest := whole[len(whole)-api.MaxConsoleBytes:]
	for _, q := range []string{"", "?tail=0", "?tail=104857600"} {
		if got := consoleGet(t, a, "big", q); !bytes.Equal(got, newest) {
			t.Fatalf("GET console%s: %d bytes; want the newest %d", q, len(got), api.MaxConsoleBytes)
		}
	}
	if err := rotateConsole(v.dir, a.cfg.ConsoleLogMax); err != nil {
		t.Fatal(err)
	}
	if c, o := fileSize(current), fileSize(older); c != 0 || o != api.MaxConsoleBytes {
		t.Fatalf("after a rotation: console.log %d bytes, console.log.1 %d; want 0 and %d", c, o, api.MaxConsoleBytes)
	}
	// QEMU's handle appends at the new end; the answer joins both files.
	if _, err := f.Write([]byte("after the rotation\n")); err != nil {
		t.Fatal(err)
	}
	got := consoleGet(t, a, "big", "")
	if len(got) != api.MaxConsoleBytes || !bytes.HasSuffix(got, []byte("x\nafter the rotation\n")) {
		t.Fatalf("GET console after a rotation: %d bytes ending %q", len(got), got[max(len(got)-40, 0):])
	}
	if fileSize(current) != int64(len("after the rotation\n")) {
		t.Fatalf("console.log after the rotation holds %d bytes; the write went elsewhere", fileSize(current))
	}
}
