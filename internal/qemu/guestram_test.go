package qemu

import (
	"context"
	"os"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// TestReadGuestRAMCounts measures a mapping of this process whose pages are known: 1,000
// written with data, 500 written with zeros, the rest never touched.
func TestReadGuestRAMCounts(t *testing.T) {
	const size = 64<<20 + 3*pageSize // a size no other mapping of the test has
	mem, err := unix.Mmap(-1, 0, size, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_PRIVATE|unix.MAP_ANONYMOUS)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Munmap(mem)
	for i := range 1500 {
		p := mem[(7*i)*pageSize : (7*i+1)*pageSize]
		if i < 1000 {
			p[i%pageSize] = 1
		} else {
			clear(p) // written, so resident, but all zeros
		}
	}
	all, err := ReadGuestRAM(os.Getpid(), size, 4096)
	if err != nil {
		t.Fatal(err)
	}
	if all.Resident != 1500*pageSize || all.Nonzero != 1000*pageSize {
		t.Errorf("every resident page read: %+v; want 1,500 pages resident and 1,000 not zero", all)
	}
	some, err := ReadGuestRAM(os.Getpid(), size, 300)
	if err != nil {
		t.Fatal(err)
	}
	if some.Resident != 1500*pageSize || some.Nonzero < 800*pageSize || some.Nonzero > 1200*pageSize {
		t.Errorf("300 resident pages read: %+v; want 1,500 pages resident and about 1,000 not zero", some)
	}
	if _, err := ReadGuestRAM(os.Getpid(), size+pageSize, 10); err == nil {
		t.Errorf("a size no mapping has: no error")
	}
}

// TestReadGuestRAM boots a kernel in 512 MiB and measures its RAM: some of it holds data
// (the kernel ran), far from all (it never touched most of it).
func TestReadGuestRAM(t *testing.T) {
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
	g, err := ReadGuestRAM(p.PID, ram, 4096)
	if err != nil {
		t.Fatalf("ReadGuestRAM: %v", err)
	}
	t.Logf("%d MiB guest: %.1f MiB resident, %.1f MiB not zero", s.MemoryMiB, float64(g.Resident)/(1<<20), float64(g.Nonzero)/(1<<20))
	if g.Nonzero < 1<<20 || g.Nonzero > g.Resident || g.Resident >= ram/2 {
		t.Errorf("guest RAM %+v; want at least 1 MiB of data, no more than is resident, less than half of %d resident", g, ram)
	}
}
