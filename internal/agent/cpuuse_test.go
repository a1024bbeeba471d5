package agent

import (
	"math"
	"os"
	"testing"
	"time"
)

// A stat line's utime and stime are read past a command name with spaces and
// parentheses; the average starts with the first interval, moves a fraction of the way
// with each next one, and starts afresh for a new process.
func TestCPUSample(t *testing.T) {
	line := []byte("4242 (qemu (x) y) S 1 4242 4242 0 -1 4194624 100 0 0 0 1500 500 0 0 20 0 3 0 100 1000 200 18446744073709551615")
	ticks, start, err := parseStatTicks(line)
	if err != nil || ticks != 2000 || start != 100 {
		t.Fatalf("ticks %d, start %d, %v; want 1500 + 500, started at 100", ticks, start, err)
	}
	if _, _, err := parseStatTicks([]byte("4242 (qemu) S 1")); err == nil {
		t.Error("a short stat line was read")
	}
	t0 := time.Unix(1000, 0)
	var s cpuSample
	s = s.next(42, 1000, t0)
	if s.ok {
		t.Fatal("one reading gave an average")
	}
	s = s.next(42, 1200, t0.Add(2*time.Second)) // 200 ticks in 2 s: one core
	if !s.ok || math.Abs(s.cores-1) > 1e-9 {
		t.Fatalf("first interval: %+v; want 1 core", s)
	}
	s = s.next(42, 1200, t0.Add(4*time.Second)) // idle for 2 s
	want := 1 - (1 - math.Exp(-2.0/60))
	if math.Abs(s.cores-want) > 1e-9 {
		t.Fatalf("after an idle interval: %v cores; want %v (smoothed, not 0)", s.cores, want)
	}
	if s = s.next(43, 5, t0.Add(6*time.Second)); s.ok || s.pid != 43 {
		t.Fatalf("a new process: %+v; want the average started afresh", s)
	}
	// This test's own process: its ticks can be read.
	if _, age, err := processTicks(os.Getpid()); err != nil || age < 0 || age > time.Hour {
		t.Fatalf("this process: age %v, %v", age, err)
	}
}
