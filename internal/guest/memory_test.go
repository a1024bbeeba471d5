package guest

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"testing"
	"time"
)

func quietLog() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

// checkAll checks every chunk of r and returns the wrong words and the reports.
func checkAll(t *testing.T, r *region) (int, []mismatch) {
	t.Helper()
	var reports []mismatch
	total := 0
	for c := range r.chunks {
		bad, ok := r.checkChunk(c, func(m mismatch) { reports = append(reports, m) })
		if !ok {
			t.Fatal("region unexpectedly freed")
		}
		total += bad
	}
	return total, reports
}

func TestRegionPatternDetectsCorruption(t *testing.T) {
	r, err := newRegion("test", 4, 42)
	if err != nil {
		t.Fatal(err)
	}
	defer r.free()

	// Generation 0: fresh memory must be zeros, and is.
	if bad, _ := checkAll(t, r); bad != 0 {
		t.Fatalf("fresh region: %d bad words", bad)
	}
	for c := range r.chunks {
		r.writeChunk(c)
	}
	if bad, rep := checkAll(t, r); bad != 0 {
		t.Fatalf("after writing: %d bad words: %+v", bad, rep)
	}
	// The pattern is not trivial: words differ within a page and between pages.
	if r.words[0] == r.words[1] || r.words[0] == r.words[wordsPerPage] || r.words[0] == 0 {
		t.Fatalf("pattern looks degenerate: %#x %#x %#x", r.words[0], r.words[1], r.words[wordsPerPage])
	}

	// One flipped bit in one byte: exactly one bad word, at the right place.
	const off = 3*ChunkSize + 7*PageSize + 8*100 + 5
	r.mem[off] ^= 0x10
	bad, rep := checkAll(t, r)
	if bad != 1 || len(rep) != 1 {
		t.Fatalf("flipped byte: %d bad words, %d reports, want 1 and 1", bad, len(rep))
	}
	if m := rep[0]; m.page != 3*pagesPerChunk+7 || m.word != 100 || m.got^m.want != 0x10<<40 {
		t.Errorf("report = %+v, want page %d word 100 differing in bit 44", m, 3*pagesPerChunk+7)
	}
	// The checker restored the page: the corruption is counted once.
	if bad, _ := checkAll(t, r); bad != 0 {
		t.Fatalf("second check after a flipped byte: %d bad words, want 0 (page restored)", bad)
	}

	// A page holding another page's (valid-looking) content is detected.
	copy(r.pageWords(9), r.pageWords(8))
	if bad, _ := checkAll(t, r); bad != wordsPerPage {
		t.Errorf("copied page: %d bad words, want %d", bad, wordsPerPage)
	}

	// A stale page (generation bumped, data not rewritten) is detected.
	r.chunks[1].gen[2]++
	if bad, _ := checkAll(t, r); bad != wordsPerPage {
		t.Errorf("stale page: %d bad words, want %d", bad, wordsPerPage)
	}
	if bad, _ := checkAll(t, r); bad != 0 {
		t.Errorf("stale page not restored: %d bad words", bad)
	}

	// A rewrite moves every page to a new generation with different content.
	before := r.words[5]
	r.writeChunk(0)
	if r.words[5] == before || r.chunks[0].gen[0] != 2 {
		t.Errorf("rewrite did not change the page (word %#x, gen %d)", r.words[5], r.chunks[0].gen[0])
	}
	if bad, _ := checkAll(t, r); bad != 0 {
		t.Errorf("after rewrite: %d bad words", bad)
	}

	if err := r.free(); err != nil {
		t.Fatal(err)
	}
	if _, ok := r.checkChunk(0, func(mismatch) {}); ok {
		t.Error("checkChunk on a freed region reported ok")
	}
	if r.writeChunk(0) {
		t.Error("writeChunk on a freed region reported ok")
	}
}

// waitFor polls cond until it holds or the timeout passes.
func waitFor(t *testing.T, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func TestMemoryDirtierAndChecker(t *testing.T) {
	m, err := NewMemory(quietLog(), 2, 0)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		m.Run(ctx)
	}()
	defer func() {
		cancel()
		<-done
	}()

	if err := m.StartDirty(4, 0); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 10*time.Second, "dirtier and checker passes", func() bool {
		s := m.Stats()
		return s.Dirty.Passes >= 20 && s.CheckPasses >= 20
	})
	s := m.Stats()
	if s.Errors != 0 || s.BadPages != 0 {
		t.Fatalf("false positives with concurrent writer and checker: %+v", s)
	}
	if !s.Dirty.Running || s.Dirty.MiB != 4 || s.Dirty.BytesWritten < 20*4*ChunkSize || s.StaticMiB != 2 {
		t.Errorf("stats = %+v", s)
	}

	m.StopDirty()
	s = m.Stats()
	if s.Dirty.Running || s.Dirty.BytesWritten == 0 {
		t.Errorf("after stop: %+v", s.Dirty)
	}
	m.mu.Lock()
	ws := m.ws
	m.mu.Unlock()
	if ws != nil {
		t.Error("working set still referenced after stop")
	}

	// Corrupt the static region: the running checker must find it.
	st := m.static
	st.chunks[1].mu.Lock()
	st.mem[ChunkSize+12345] ^= 0xff
	st.chunks[1].mu.Unlock()
	waitFor(t, 10*time.Second, "the checker to find the corruption", func() bool { return m.Stats().Errors > 0 })
	if s := m.Stats(); s.Errors != 1 || s.BadPages < 1 {
		t.Errorf("after one corrupted byte: %+v, want 1 error", s)
	}
}

func TestMemoryDirtyRate(t *testing.T) {
	m, err := NewMemory(quietLog(), 0, 0)
	if err != nil {
		t.Fatal(err)
	}
	if err := m.StartDirty(2, 20); err != nil {
		t.Fatal(err)
	}
	time.Sleep(500 * time.Millisecond)
	m.StopDirty()
	got := float64(m.Stats().Dirty.BytesWritten) / (1 << 20)
	// 20 MiB/s for 0.5 s is 10 MiB (+1 chunk written at once).
	if got < 5 || got > 14 {
		t.Errorf("wrote %.1f MiB in 0.5 s at 20 MiB/s", got)
	}
	if err := m.StartDirty(-1, 0); err == nil {
		t.Error("StartDirty(-1) succeeded")
	}
	avail, err := memAvailable()
	if err != nil || avail < 64<<20 {
		t.Fatalf("memAvailable = %d, %v", avail, err)
	}
	if err := m.StartDirty(int(avail>>20), 0); !errors.Is(err, ErrNoMemory) {
		t.Errorf("StartDirty of all available memory: err = %v, want ErrNoMemory", err)
	}
}

func TestMemoryClosedRefusesDirty(t *testing.T) {
	m, err := NewMemory(quietLog(), 1, 0)
	if err != nil {
		t.Fatal(err)
	}
	if err := m.StartDirty(1, 0); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	m.Run(ctx) // returns at once, stopping the dirtier
	if s := m.Stats(); s.Dirty.Running {
		t.Error("dirtier still running after Run returned")
	}
	if err := m.StartDirty(1, 0); err == nil {
		t.Error("StartDirty after Run returned succeeded")
	}
}
