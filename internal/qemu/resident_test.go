package qemu

import (
	"context"
	"os"
	"testing"
	"time"
)

// TestResidentRAM boots a kernel in 512 MiB and reads how much of the guest's RAM is
// resident: some (the kernel wrote it), far from all (it never touched most of it).
func TestResidentRAM(t *testing.T) {
	bin, kernel := qemuBinary(t), testKernel(t)
	s := testSpec(t, kernel)
	s.MemoryMiB = 512
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	p, err := Start(ctx, bin, s)
	if err != nil {
		t.Fatalf("Start: %v", err)
	}
	defer p.Close()
	defer p.Kill()
	waitFile(t, s.ConsoleLogPath(), "Kernel panic - not syncing", 30*time.Second)

	ram := int64(s.MemoryMiB) << 20
	rss, err := ResidentRAM(p.PID, ram)
	if err != nil {
		t.Fatalf("ResidentRAM: %v", err)
	}
	t.Logf("%d MiB guest: %.1f MiB resident", s.MemoryMiB, float64(rss)/(1<<20))
	if rss < 1<<20 || rss >= ram/2 {
		t.Errorf("resident guest RAM = %d bytes; want at least 1 MiB (the kernel ran) and less than half of %d", rss, ram)
	}
	if _, err := ResidentRAM(p.PID, ram+4096); err == nil {
		t.Errorf("ResidentRAM with a size no mapping has: no error")
	}
	if _, err := ResidentRAM(os.Getpid(), ram); err == nil {
		t.Errorf("ResidentRAM of a process without guest RAM (the test): no error")
	}
}

func TestResidentOfSize(t *testing.T) {
	smaps := []byte(`7f0000000000-7f0040000000 rw-p 00000000 00:00 0
Size:            1048576 kB
KernelPageSize:        4 kB
Rss:              161792 kB
Pss:              161792 kB
VmFlags: rd wr mr mw me ac sd
7f0040000000-7f007ffff000 rwxp 00000000 00:00 0
Size:            1048572 kB
Rss:               65536 kB
7f0080000000-7f00c0000000 rw-p 00000000 00:00 0
Size:            1048576 kB
Rss:                1024 kB
`)
	if got, ok := residentOfSize(smaps, 1<<30); !ok || got != 161792*1024 {
		t.Errorf("residentOfSize(1 GiB) = %d, %v; want the larger of the two 1 GiB mappings, %d", got, ok, 161792*1024)
	}
	if _, ok := residentOfSize(smaps, 512<<20); ok {
		t.Errorf("residentOfSize(512 MiB) found a mapping that is not there")
	}
	if _, ok := residentOfSize([]byte("Size: lots\nRss: 12 kB\n"), 0); ok {
		t.Errorf("a malformed size matched")
	}
}
