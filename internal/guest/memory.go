package guest

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"os"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"
)

// Memory layout of the checked regions.
const (
	PageSize      = 4096    // bytes per page; every page has its own generation
	ChunkSize     = 1 << 20 // bytes per chunk; every chunk has its own mutex
	pagesPerChunk = ChunkSize / PageSize
	wordsPerPage  = PageSize / 8
	// wordStep is added to a page's base value to get the next word (an odd constant,
	// so the 512 words of a page are all different).
	wordStep uint64 = 0x9E3779B97F4A7C15
	// maxLoggedErrors is how many memory mismatches are logged to the console.
	maxLoggedErrors = 10
)

// mix64 is SplitMix64's finaliser: a bijective scrambler of 64-bit values.
func mix64(x uint64) uint64 {
	x ^= x >> 30
	x *= 0xBF58476D1CE4E5B9
	x ^= x >> 27
	x *= 0x94D049BB133111EB
	x ^= x >> 31
	return x
}

// pageBase is the value of word 0 of a page in a given generation (gen != 0); word i
// holds pageBase + i*wordStep.
func pageBase(seed uint64, page int, gen uint32) uint64 {
	return mix64(seed ^ mix64(uint64(page)<<32|uint64(gen)))
}

// fillPage writes generation gen's pattern into one page (512 words).
func fillPage(words []uint64, seed uint64, page int, gen uint32) {
	v := pageBase(seed, page, gen)
	for i := range words {
		words[i] = v
		v += wordStep
	}
}

// checkPage counts the words of a page that do not hold generation gen's pattern
// (generation 0: all zeros) and returns the first bad word's index and values.
func checkPage(words []uint64, seed uint64, page int, gen uint32) (bad, first int, got, want uint64) {
	first = -1
	var v, step uint64
	if gen != 0 {
		v, step = pageBase(seed, page, gen), wordStep
	}
	for i, w := range words {
		if w != v {
			if bad == 0 {
				first, got, want = i, w, v
			}
			bad++
		}
		v += step
	}
	return bad, first, got, want
}

// mismatch describes the first wrong word of a corrupted page.
type mismatch struct {
	region   string
	page     int
	word     int
	badWords int
	gen      uint32
	got      uint64
	want     uint64
}

// region is an anonymous memory mapping outside the Go heap, organised in chunks.
type region struct {
	name  string
	seed  uint64
	mem   []byte   // the mapping
	words []uint64 // the same memory as 64-bit words

	chunks []chunk

	life  sync.RWMutex // read-held while the mapping is used, write-held to unmap it
	freed bool         // guarded by life
}

// chunk is one ChunkSize piece of a region: its mutex guards the memory and gen.
type chunk struct {
	mu  sync.Mutex
	gen [pagesPerChunk]uint32
}

func newRegion(name string, mib int, seed uint64) (*region, error) {
	if mib <= 0 {
		return nil, fmt.Errorf("region %s: size must be positive, got %d MiB", name, mib)
	}
	mem, err := unix.Mmap(-1, 0, mib*ChunkSize, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_PRIVATE|unix.MAP_ANONYMOUS)
	if err != nil {
		return nil, fmt.Errorf("region %s: mmap %d MiB: %w", name, mib, err)
	}
	return &region{
		name:   name,
		seed:   seed,
		mem:    mem,
		words:  unsafe.Slice((*uint64)(unsafe.Pointer(&mem[0])), len(mem)/8),
		chunks: make([]chunk, mib),
	}, nil
}

// free unmaps the region once nobody uses it; later users see freed.
func (r *region) free() error {
	r.life.Lock()
	defer r.life.Unlock()
	if r.freed {
		return nil
	}
	r.freed = true
	r.words = nil
	if err := unix.Munmap(r.mem); err != nil {
		return fmt.Errorf("region %s: munmap: %w", r.name, err)
	}
	r.mem = nil
	return nil
}

// pageWords returns the words of page p (global page index).
func (r *region) pageWords(p int) []uint64 {
	return r.words[p*wordsPerPage : (p+1)*wordsPerPage : (p+1)*wordsPerPage]
}

// writeChunk moves every page of chunk c to its next generation. It reports false if
// the region was freed.
func (r *region) writeChunk(c int) bool {
	r.life.RLock()
	defer r.life.RUnlock()
	if r.freed {
		return false
	}
	ch := &r.chunks[c]
	ch.mu.Lock()
	for i := range ch.gen {
		g := ch.gen[i] + 1
		if g == 0 { // generation 0 means "never written"; skip it on wrap-around
			g = 1
		}
		p := c*pagesPerChunk + i
		fillPage(r.pageWords(p), r.seed, p, g)
		ch.gen[i] = g
	}
	ch.mu.Unlock()
	return true
}

// checkChunk verifies every page of chunk c against its generation, calling report for
// every bad page and then rewriting that page with its expected content (so every
// corruption is counted once). It returns the number of wrong words and false if the region was freed.
func (r *region) checkChunk(c int, report func(mismatch)) (badWords int, ok bool) {
	r.life.RLock()
	defer r.life.RUnlock()
	if r.freed {
		return 0, false
	}
	ch := &r.chunks[c]
	ch.mu.Lock()
	defer ch.mu.Unlock()
	for i, g := range ch.gen {
		p := c*pagesPerChunk + i
		bad, first, got, want := checkPage(r.pageWords(p), r.seed, p, g)
		if bad > 0 {
			badWords += bad
			report(mismatch{region: r.name, page: p, word: first, badWords: bad, gen: g, got: got, want: want})
			// Repair the page so the same corruption is counted once, not on every pass.
			if g == 0 {
				clear(r.pageWords(p))
			} else {
				fillPage(r.pageWords(p), r.seed, p, g)
			}
		}
	}
	return badWords, true
}

// DirtyStats is the dirtier's part of [Stats].
type DirtyStats struct {
	MiB          int     `json:"mib"`           // working-set size of the current (or last) run
	RateMiBps    float64 `json:"rate_mibps"`    // requested rate; 0 = as fast as possible
	Running      bool    `json:"running"`       // whether the dirtier is running
	BytesWritten uint64  `json:"bytes_written"` // bytes rewritten by the current (or last) run
	Passes       uint64  `json:"passes"`        // complete passes over the working set
}

// dirtyRun is one run of the dirtier goroutine.
type dirtyRun struct {
	mib     int
	rate    float64
	cancel  context.CancelFunc
	done    chan struct{}
	written atomic.Uint64
	passes  atomic.Uint64
}

// Memory owns the static region, the dirtier's working set, the dirtier goroutine and
// the checker. Create it with [NewMemory], drive it with [Memory.Run].
type Memory struct {
	log        *slog.Logger
	checkMiBps float64
	static     *region // nil when the static size is 0

	errors   atomic.Uint64 // wrong words found
	badPages atomic.Uint64 // pages with at least one wrong word
	checked  atomic.Uint64 // bytes verified
	passes   atomic.Uint64 // complete checker passes
	logged   atomic.Int64  // mismatches logged so far

	ctl    sync.Mutex // serialises StartDirty and StopDirty
	closed bool       // guarded by ctl: Run has ended, no new dirtier may start

	mu      sync.Mutex // guards ws, run and last
	ws      *region    // the dirtier's working set, nil when stopped
	run     *dirtyRun  // the running dirtier, nil when stopped
	lastRun *dirtyRun  // the current or last run, for statistics
}

// NewMemory maps the static region (staticMiB MiB, 0 = none). checkMiBps limits the
// checker's speed (0 = unlimited). The static region is filled by [Memory.Run].
func NewMemory(log *slog.Logger, staticMiB int, checkMiBps float64) (*Memory, error) {
	m := &Memory{log: log, checkMiBps: checkMiBps}
	if staticMiB > 0 {
		r, err := newRegion("static", staticMiB, rand.Uint64())
		if err != nil {
			return nil, fmt.Errorf("memory: %w", err)
		}
		m.static = r
	}
	return m, nil
}

// Run fills the static region once, then verifies the static region and the dirtier's
// working set over and over until ctx is done. When it returns, the dirtier is stopped
// and all memory is unmapped.
func (m *Memory) Run(ctx context.Context) {
	defer func() {
		m.ctl.Lock()
		m.closed = true
		m.stopDirtyLocked()
		m.ctl.Unlock()
		if m.static != nil {
			if err := m.static.free(); err != nil {
				m.log.Error("memory: freeing static region", "err", err)
			}
		}
	}()
	if m.static != nil {
		start := time.Now()
		for c := range m.static.chunks {
			if ctx.Err() != nil {
				return
			}
			m.static.writeChunk(c)
			runtime.Gosched()
		}
		m.log.Info("memory: static region written", "mib", len(m.static.chunks), "took", time.Since(start).Round(time.Millisecond))
	}
	p := newPacer(m.checkMiBps)
	for ctx.Err() == nil {
		n := 0
		if m.static != nil {
			n += m.checkRegion(ctx, m.static, p)
		}
		m.mu.Lock()
		ws := m.ws
		m.mu.Unlock()
		if ws != nil {
			n += m.checkRegion(ctx, ws, p)
		}
		if n == 0 { // nothing to check: idle
			sleepCtx(ctx, 100*time.Millisecond)
			continue
		}
		m.passes.Add(1)
	}
}

// checkRegion verifies every chunk of r once and returns the number of chunks checked.
func (m *Memory) checkRegion(ctx context.Context, r *region, p *pacer) int {
	n := 0
	for c := range r.chunks {
		if ctx.Err() != nil {
			return n
		}
		bad, ok := r.checkChunk(c, m.report)
		if !ok {
			return n
		}
		n++
		if bad > 0 {
			m.errors.Add(uint64(bad))
		}
		m.checked.Add(ChunkSize)
		p.pace(ctx, ChunkSize)
	}
	return n
}

func (m *Memory) report(mm mismatch) {
	m.badPages.Add(1)
	if n := m.logged.Add(1); n <= maxLoggedErrors {
		m.log.Error("MEMORY ERROR", "region", mm.region, "page", mm.page, "generation", mm.gen,
			"bad_words", mm.badWords, "first_bad_word", mm.word,
			"got", fmt.Sprintf("%#016x", mm.got), "want", fmt.Sprintf("%#016x", mm.want))
		if n == maxLoggedErrors {
			m.log.Error("memory: further errors are counted but not logged")
		}
	}
}

// StartDirty (re)starts the dirtier on a fresh working set of mib MiB rewritten at
// rateMiBps MiB/s (0 = as fast as possible). mib == 0 just stops it.
func (m *Memory) StartDirty(mib int, rateMiBps float64) error {
	if mib < 0 || mib > maxMiB || rateMiBps < 0 || rateMiBps != rateMiBps {
		return fmt.Errorf("dirty: invalid size %d MiB or rate %g MiB/s", mib, rateMiBps)
	}
	m.ctl.Lock()
	defer m.ctl.Unlock()
	m.stopDirtyLocked()
	if mib == 0 {
		return nil
	}
	if m.closed {
		return fmt.Errorf("dirty: shutting down")
	}
	if avail, err := memAvailable(); err == nil && int64(mib)*ChunkSize > avail-dirtyReserve {
		return fmt.Errorf("dirty: %d MiB requested but only %d MiB available (keeping %d MiB free): %w",
			mib, avail>>20, dirtyReserve>>20, ErrNoMemory)
	}
	ws, err := newRegion("dirty", mib, rand.Uint64())
	if err != nil {
		return fmt.Errorf("dirty: %w", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	run := &dirtyRun{mib: mib, rate: rateMiBps, cancel: cancel, done: make(chan struct{})}
	m.mu.Lock()
	m.ws, m.run, m.lastRun = ws, run, run
	m.mu.Unlock()
	go m.dirtyLoop(ctx, ws, run)
	m.log.Info("dirty: started", "mib", mib, "rate_mibps", rateMiBps)
	return nil
}

// ErrNoMemory is returned by [Memory.StartDirty] when the working set would not fit.
var ErrNoMemory = errors.New("not enough memory")

// dirtyReserve is the memory StartDirty leaves free: as PID 1 the guest must never run
// the kernel out of memory (init cannot be OOM-killed; the kernel would panic).
const dirtyReserve = 48 << 20

// memAvailable returns MemAvailable from /proc/meminfo, in bytes.
func memAvailable() (int64, error) {
	b, err := os.ReadFile("/proc/meminfo")
	if err != nil {
		return 0, fmt.Errorf("read /proc/meminfo: %w", err)
	}
	for _, line := range strings.Split(string(b), "\n") {
		if f := strings.Fields(line); len(f) >= 2 && f[0] == "MemAvailable:" {
			kb, err := strconv.ParseInt(f[1], 10, 64)
			if err != nil {
				return 0, fmt.Errorf("parse MemAvailable %q: %w", f[1], err)
			}
			return kb << 10, nil
		}
	}
	return 0, errors.New("no MemAvailable in /proc/meminfo")
}

// StopDirty stops the dirtier, waits for it and unmaps its working set.
func (m *Memory) StopDirty() {
	m.ctl.Lock()
	defer m.ctl.Unlock()
	m.stopDirtyLocked()
}

func (m *Memory) stopDirtyLocked() {
	m.mu.Lock()
	ws, run := m.ws, m.run
	m.ws, m.run = nil, nil
	m.mu.Unlock()
	if run == nil {
		return
	}
	run.cancel()
	<-run.done
	if err := ws.free(); err != nil {
		m.log.Error("dirty: freeing working set", "err", err)
	}
	m.log.Info("dirty: stopped", "mib", run.mib, "bytes_written", run.written.Load())
}

// dirtyLoop rewrites the working set chunk by chunk until ctx is done.
func (m *Memory) dirtyLoop(ctx context.Context, ws *region, run *dirtyRun) {
	defer close(run.done)
	p := newPacer(run.rate)
	for {
		for c := range ws.chunks {
			if ctx.Err() != nil || !ws.writeChunk(c) {
				return
			}
			run.written.Add(ChunkSize)
			p.pace(ctx, ChunkSize)
		}
		run.passes.Add(1)
	}
}

// MemoryStats is the memory part of [Stats].
type MemoryStats struct {
	Errors       uint64
	BadPages     uint64
	CheckedBytes uint64
	CheckPasses  uint64
	StaticMiB    int
	Dirty        DirtyStats
}

// Stats returns the counters.
func (m *Memory) Stats() MemoryStats {
	s := MemoryStats{
		Errors:       m.errors.Load(),
		BadPages:     m.badPages.Load(),
		CheckedBytes: m.checked.Load(),
		CheckPasses:  m.passes.Load(),
	}
	if m.static != nil {
		s.StaticMiB = len(m.static.chunks)
	}
	m.mu.Lock()
	if r := m.lastRun; r != nil {
		s.Dirty = DirtyStats{
			MiB: r.mib, RateMiBps: r.rate, Running: m.run == r,
			BytesWritten: r.written.Load(), Passes: r.passes.Load(),
		}
	}
	m.mu.Unlock()
	return s
}

// pacer limits a loop to a rate in MiB/s (0 = unlimited, but it still yields the
// processor after every step so that the 1 ms pause meter is not starved on one vCPU).
type pacer struct {
	bytesPerSec float64
	start       time.Time
	done        float64
}

func newPacer(mibps float64) *pacer {
	return &pacer{bytesPerSec: mibps * (1 << 20), start: time.Now()}
}

func (p *pacer) pace(ctx context.Context, n int) {
	if p.bytesPerSec <= 0 {
		runtime.Gosched()
		return
	}
	p.done += float64(n)
	due := p.start.Add(time.Duration(p.done / p.bytesPerSec * float64(time.Second)))
	now := time.Now()
	switch d := due.Sub(now); {
	case d > 0:
		sleepCtx(ctx, d)
	case d < -10*time.Millisecond: // behind (the VM was paused or starved): never burst to catch up
		p.start, p.done = now, 0
		runtime.Gosched()
	default:
		runtime.Gosched()
	}
}

// sleepCtx sleeps for d or until ctx is done.
func sleepCtx(ctx context.Context, d time.Duration) {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
	case <-t.C:
	}
}
