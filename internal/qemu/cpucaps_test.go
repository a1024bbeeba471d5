package qemu

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/godwit/godwit/internal/qmp"
)

// cpuCapsTestContext returns a context that ends with the test or after a
// minute.
func cpuCapsTestContext(t *testing.T) context.Context {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
	t.Cleanup(cancel)
	return ctx
}

// cpuCapsIsolateTemp points $TMPDIR at an empty directory of the test and
// returns it, so that the test can see what a probe leaves there.
func cpuCapsIsolateTemp(t *testing.T) string {
	t.Helper()
	dir := t.TempDir()
	t.Setenv("TMPDIR", dir)
	return dir
}

// cpuCapsAssertClean fails the test if a probe left anything behind: a
// child process of the test (an unreaped or running QEMU) or a file in
// tmp.
func cpuCapsAssertClean(t *testing.T, tmp string) {
	t.Helper()
	if kids := cpuCapsChildren(t); len(kids) > 0 {
		t.Errorf("probe left child processes: %v", kids)
	}
	if entries, err := os.ReadDir(tmp); err != nil || len(entries) > 0 {
		t.Errorf("probe left files in $TMPDIR: %v (err %v)", entries, err)
	}
}

// cpuCapsChildren lists the child processes of the test ("pid comm").
func cpuCapsChildren(t *testing.T) []string {
	t.Helper()
	stats, err := filepath.Glob("/proc/[0-9]*/stat")
	if err != nil {
		t.Fatal(err)
	}
	var kids []string
	for _, p := range stats {
		b, err := os.ReadFile(p)
		if err != nil {
			continue // gone meanwhile
		}
		// pid (comm) state ppid ...
		i := bytes.LastIndexByte(b, ')')
		if i < 0 {
			continue
		}
		f := strings.Fields(string(b[i+1:]))
		if len(f) > 1 && f[1] == strconv.Itoa(os.Getpid()) {
			kids = append(kids, string(b[:i+1]))
		}
	}
	return kids
}

// probeTCG probes the test QEMU under TCG and checks that nothing is left
// behind; it also returns QEMU's own CPU definitions and the duration.
func probeTCG(t *testing.T) (CPUCaps, []cpuDefinition, time.Duration) {
	t.Helper()
	tmp := cpuCapsIsolateTemp(t)
	start := time.Now()
	caps, defs, err := probeCPUCaps(cpuCapsTestContext(t), qemuBinary(t), AccelTCG)
	elapsed := time.Since(start)
	if err != nil {
		t.Fatalf("probe: %v", err)
	}
	cpuCapsAssertClean(t, tmp)
	return caps, defs, elapsed
}

func TestCPUCapsParseFlagsHelp(t *testing.T) {
	qemu10 := "Available CPUs:\n  qemu64                (alias configured by machine type)\n\n" +
		"Recognized CPUID flags:\n  3dnow abm kvm-asyncpf kvmclock kvmclock\n  lahf-lm sse4.1 sse4.2 vmx-ept\n\n"
	got := parseCPUFlagsHelp(qemu10)
	want := map[string]bool{"3dnow": true, "abm": true, "lahf-lm": true, "sse4.1": true, "sse4.2": true, "vmx-ept": true}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("QEMU 10 format: got %v, want %v", got, want)
	}
	// QEMU 2.x: "|" separates alternative names, some with "_".
	old := "x86 qemu64  QEMU Virtual CPU version 2.5+\n\nRecognized CPUID flags:\n" +
		"  fpu pni|sse3 sse4.1|sse4_1 lahf_lm kvm_pv_eoi\n  xd|nx\n"
	got = parseCPUFlagsHelp(old)
	want = map[string]bool{"fpu": true, "pni": true, "sse4.1": true, "lahf-lm": true, "nx": true}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("old format: got %v, want %v", got, want)
	}
	if got := parseCPUFlagsHelp("Available CPUs:\n  qemu64\n"); len(got) != 0 {
		t.Errorf("no flags section: got %v", got)
	}
}

func TestCPUCapsCanonicalFlag(t *testing.T) {
	for in, want := range map[string]string{
		"sse4.1": "sse4.1", "sse4_1": "sse4.1", "sse4-1": "sse4.1", "SSE4_2": "sse4.2",
		"lahf_lm": "lahf-lm", "sse3": "pni", "pclmuldq": "pclmulqdq", "xd": "nx", "i64": "lm",
		"ffxsr": "fxsr-opt", "fxsr_opt": "fxsr-opt", "tsc_adjust": "tsc-adjust", "avx2": "avx2",
	} {
		if got := CanonicalCPUFlag(in); got != want {
			t.Errorf("CanonicalCPUFlag(%q) = %q, want %q", in, got, want)
		}
	}

	// QEMU's own spelling is canonical: every name `-cpu help` lists.
	out, err := exec.CommandContext(cpuCapsTestContext(t), qemuBinary(t), "-cpu", "help").Output()
	if err != nil {
		t.Fatal(err)
	}
	_, section, ok := strings.Cut(string(out), "Recognized CPUID flags:")
	if !ok {
		t.Fatalf("no flags section in -cpu help:\n%s", out)
	}
	names := strings.Fields(section)
	if len(names) < 100 {
		t.Fatalf("only %d flags in -cpu help", len(names))
	}
	for _, n := range names {
		if got := CanonicalCPUFlag(n); got != n {
			t.Errorf("CanonicalCPUFlag(%q) = %q; QEMU lists it as %q", n, got, n)
		}
	}
}

// TestCPUCapsAliasesAgree checks the spelling map against QEMU: in the
// expansion of "max", every property whose name canonicalises to a
// different, recognised flag is an alias with that flag's value.
func TestCPUCapsAliasesAgree(t *testing.T) {
	ctx := cpuCapsTestContext(t)
	bin := qemuBinary(t)
	known, err := cpuFlagNames(ctx, bin)
	if err != nil {
		t.Fatal(err)
	}
	aliases := 0
	err = withCPUProbeQEMU(ctx, bin, AccelTCG, func(ctx context.Context, mon *qmp.Monitor) error {
		props, err := expandCPUModel(ctx, mon, "max")
		if err != nil {
			return err
		}
		for k, v := range props {
			c := CanonicalCPUFlag(k)
			if c == k || !known[c] {
				continue
			}
			aliases++
			if props[c] != v {
				t.Errorf("property %s = %v but %s = %v", k, v, c, props[c])
			}
		}
		for _, notFlag := range []string{"pmu", "migratable", "check", "enforce", "l3-cache", "full-cpuid-auto-level", "lmce", "hv-relaxed", "x-force-features"} {
			if _, ok := props[notFlag]; ok && known[CanonicalCPUFlag(notFlag)] {
				t.Errorf("property %s counts as a CPUID flag", notFlag)
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if aliases < 5 {
		t.Errorf("only %d alias properties found in the expansion of max (sse3, xd, i64, sse4_1, lahf_lm, ...)", aliases)
	}
}

func TestCPUCapsProbeTCG(t *testing.T) {
	caps, defs, elapsed := probeTCG(t)
	t.Logf("TCG probe took %v: %d host flags, %d models", elapsed, len(caps.Flags), len(caps.Models))
	if elapsed > 5*time.Second {
		t.Errorf("probe took %v; it runs at agent start and should take well under 2s", elapsed)
	}
	if caps.Accel != AccelTCG || caps.LimitedTo != "" {
		t.Errorf("caps: accel %q, limited to %q", caps.Accel, caps.LimitedTo)
	}

	// Flags: sorted, unique, canonical CPUID flags only.
	known, err := cpuFlagNames(cpuCapsTestContext(t), qemuBinary(t))
	if err != nil {
		t.Fatal(err)
	}
	checkFlags := func(what string, flags []string) {
		if !slices.IsSorted(flags) || len(slices.Compact(slices.Clone(flags))) != len(flags) {
			t.Errorf("%s: flags not sorted and unique: %v", what, flags)
		}
		for _, f := range flags {
			if !known[f] || CanonicalCPUFlag(f) != f || strings.HasPrefix(f, "kvm") {
				t.Errorf("%s: %q is not a canonical CPUID flag", what, f)
			}
		}
	}
	checkFlags("host", caps.Flags)
	for _, f := range []string{"sse2", "sse4.1", "pni", "avx2", "bmi2", "lm", "nx"} {
		if !slices.Contains(caps.Flags, f) {
			t.Errorf("TCG host flags lack %s: %v", f, caps.Flags)
		}
	}
	if !slices.IsSortedFunc(caps.Models, func(a, b CPUModel) int { return strings.Compare(a.Name, b.Name) }) {
		t.Error("models not sorted by name")
	}
	for _, m := range caps.Models {
		checkFlags(m.Name, m.Flags)
	}

	// The named models, aliases included; not host and max.
	for _, name := range []string{"qemu64", "Nehalem", "Nehalem-v1", "Westmere", "SandyBridge", "Haswell", "Skylake-Client", "EPYC"} {
		if _, ok := caps.Model(name); !ok {
			t.Errorf("model %s missing", name)
		}
	}
	for _, name := range []string{"host", "max"} {
		if _, ok := caps.Model(name); ok {
			t.Errorf("model %s listed; its flags are the host's, not a baseline", name)
		}
	}
	nehalem, _ := caps.Model("Nehalem")
	nehalemV1, _ := caps.Model("Nehalem-v1")
	if len(nehalem.Flags) == 0 || !slices.Equal(nehalem.Flags, nehalemV1.Flags) {
		t.Errorf("Nehalem %v, Nehalem-v1 %v: an alias must have its model's flags", nehalem.Flags, nehalemV1.Flags)
	}

	// qemu64 runs everywhere.
	qemu64, _ := caps.Model("qemu64")
	if len(qemu64.Flags) < 10 || len(cpuFlagsMinus(qemu64.Flags, caps.Flags)) > 0 {
		t.Errorf("qemu64 flags %v are not a subset of the host's %v", qemu64.Flags, caps.Flags)
	}
	if missing, ok := caps.Supports("qemu64"); !ok || missing != nil {
		t.Errorf("Supports(qemu64) = %v, %v", missing, ok)
	}
	if err := caps.CheckModel("qemu64"); err != nil {
		t.Errorf("CheckModel(qemu64): %v", err)
	}

	// QEMU's own verdict (query-cpu-definitions' unavailable-features)
	// agrees: a model is supported exactly when QEMU finds nothing
	// unavailable, and every feature QEMU names is among the missing.
	// (We may name more: flags QEMU drops silently because they depend
	// on a missing one, e.g. the arch-capabilities MSR bits.)
	for _, d := range defs {
		if !cpuModelIsBaseline(d) {
			continue
		}
		missing, ok := caps.Supports(d.Name)
		if ok != (len(d.Unavailable) == 0) {
			t.Errorf("%s: Supports = %v (missing %v) but QEMU finds unavailable %v", d.Name, ok, missing, d.Unavailable)
		}
		for _, u := range d.Unavailable {
			if u := CanonicalCPUFlag(u); known[u] && !slices.Contains(missing, u) {
				t.Errorf("%s: QEMU finds %s unavailable, Supports names only %v", d.Name, u, missing)
			}
		}
	}

	supported := caps.Supported()
	for _, name := range []string{"qemu64", "Nehalem", "Westmere"} {
		if !slices.Contains(supported, name) {
			t.Errorf("Supported() lacks %s: %v", name, supported)
		}
	}
	for _, name := range []string{"Nehalem", "Westmere", "SandyBridge", "IvyBridge", "Haswell", "Broadwell",
		"Skylake-Client", "Skylake-Server", "Cascadelake-Server", "Icelake-Server", "EPYC", "EPYC-Rome", "EPYC-Milan"} {
		missing, ok := caps.Supports(name)
		t.Logf("TCG %-18s supported=%-5v missing=%v", name, ok, missing)
	}
	t.Logf("TCG supports %d of %d models: %v", len(supported), len(caps.Models), supported)
}

func TestCPUCapsMissingFlags(t *testing.T) {
	caps, _, _ := probeTCG(t)
	// Haswell has flags TCG lacks (e.g. tsc-deadline, pcid, invpcid).
	missing, ok := caps.Supports("Haswell")
	if ok || len(missing) == 0 {
		t.Fatalf("Supports(Haswell) under TCG = %v, %v; want missing flags", missing, ok)
	}
	haswell, _ := caps.Model("Haswell")
	for _, f := range missing {
		if !slices.Contains(haswell.Flags, f) || slices.Contains(caps.Flags, f) {
			t.Errorf("missing flag %s: not a Haswell flag the host lacks", f)
		}
	}
	if !slices.Contains(missing, "tsc-deadline") {
		t.Errorf("Haswell under TCG: missing %v, expected tsc-deadline among them", missing)
	}
	err := caps.CheckModel("Haswell")
	var mf *MissingCPUFlagsError
	if !errors.As(err, &mf) || !slices.Equal(mf.Missing, missing) || mf.Model != "Haswell" || errors.Is(err, ErrUnknownCPUModel) {
		t.Fatalf("CheckModel(Haswell) = %v", err)
	}
	t.Logf("CheckModel(Haswell): %v", err)
	for _, f := range missing {
		if !strings.Contains(err.Error(), f) {
			t.Errorf("error %q does not name %s", err, f)
		}
	}
	if slices.Contains(caps.Supported(), "Haswell") {
		t.Error("Supported() lists Haswell")
	}
}

func TestCPUCapsUnknownModel(t *testing.T) {
	caps, _, _ := probeTCG(t)
	if _, ok := caps.Model("Pentium-9000"); ok {
		t.Error("Model(Pentium-9000) found")
	}
	if missing, ok := caps.Supports("Pentium-9000"); ok || missing != nil {
		t.Errorf("Supports(Pentium-9000) = %v, %v", missing, ok)
	}
	err := caps.CheckModel("Pentium-9000")
	var mf *MissingCPUFlagsError
	if !errors.Is(err, ErrUnknownCPUModel) || errors.As(err, &mf) || !strings.Contains(err.Error(), "Pentium-9000") {
		t.Errorf("CheckModel(Pentium-9000) = %v", err)
	}
	t.Logf("CheckModel(Pentium-9000): %v", err)
	if _, err := caps.LimitTo("Pentium-9000"); !errors.Is(err, ErrUnknownCPUModel) {
		t.Errorf("LimitTo(Pentium-9000) = %v", err)
	}
}

func TestCPUCapsLimitTo(t *testing.T) {
	caps, _, _ := probeTCG(t)
	orig, err := json.Marshal(caps)
	if err != nil {
		t.Fatal(err)
	}
	// Westmere is Nehalem plus aes and pclmulqdq; TCG has them.
	if _, ok := caps.Supports("Westmere"); !ok {
		t.Fatal("TCG does not support Westmere")
	}
	if missing, _ := caps.Supports("Haswell"); slices.Contains(missing, "avx2") || slices.Contains(missing, "bmi2") {
		t.Fatalf("TCG lacks avx2 or bmi2 of Haswell: %v", missing)
	}

	old, err := caps.LimitTo("Nehalem")
	if err != nil {
		t.Fatal(err)
	}
	if old.LimitedTo != "Nehalem" || len(old.Models) != len(caps.Models) {
		t.Errorf("limited caps: limited to %q, %d models", old.LimitedTo, len(old.Models))
	}
	// Nehalem's flags, and the host's svm (TCG emulates it; qemu64 has
	// it, Nehalem does not).
	nehalem, _ := caps.Model("Nehalem")
	if slices.Contains(nehalem.Flags, "svm") || !slices.Contains(caps.Flags, "svm") {
		t.Fatalf("expected svm in TCG's flags (%v) but not in Nehalem's (%v)", caps.Flags, nehalem.Flags)
	}
	if want := slices.Sorted(slices.Values(append(slices.Clone(nehalem.Flags), "svm"))); !slices.Equal(old.Flags, want) {
		t.Errorf("flags limited to Nehalem = %v, want Nehalem's and svm: %v", old.Flags, want)
	}
	for _, m := range []string{"Nehalem", "qemu64"} {
		if missing, ok := old.Supports(m); !ok {
			t.Errorf("limited to Nehalem: Supports(%s) misses %v", m, missing)
		}
	}
	westmere, _ := caps.Model("Westmere")
	wantMissing := cpuFlagsMinus(westmere.Flags, nehalem.Flags)
	if missing, ok := old.Supports("Westmere"); ok || len(missing) == 0 || !slices.Equal(missing, wantMissing) {
		t.Errorf("limited to Nehalem: Supports(Westmere) = %v, %v; want missing %v", missing, ok, wantMissing)
	}
	missing, ok := old.Supports("Haswell")
	if ok || !slices.Contains(missing, "avx2") || !slices.Contains(missing, "bmi2") {
		t.Errorf("limited to Nehalem: Supports(Haswell) = %v, %v; want avx2 and bmi2 missing", missing, ok)
	}
	err = old.CheckModel("Haswell")
	if err == nil || !strings.Contains(err.Error(), "avx2") || !strings.Contains(err.Error(), "limited to Nehalem") {
		t.Errorf("limited to Nehalem: CheckModel(Haswell) = %v", err)
	}
	if s := old.Supported(); slices.Contains(s, "Westmere") || !slices.Contains(s, "Nehalem") || !slices.Contains(s, "Penryn") {
		t.Errorf("limited to Nehalem: Supported() = %v", s)
	}

	// The receiver is unchanged.
	after, err := json.Marshal(caps)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(orig, after) {
		t.Error("LimitTo changed its receiver")
	}
	// Limits only narrow.
	older, err := old.LimitTo("qemu64")
	if err != nil {
		t.Fatal(err)
	}
	qemu64, _ := caps.Model("qemu64")
	if !slices.Equal(older.Flags, qemu64.Flags) || older.LimitedTo != "qemu64" {
		t.Errorf("limited to Nehalem then qemu64: %v (%s), want %v", older.Flags, older.LimitedTo, qemu64.Flags)
	}
	if _, ok := older.Supports("Nehalem"); ok {
		t.Error("limited to qemu64 but supports Nehalem")
	}
}

func TestCPUCapsCache(t *testing.T) {
	ctx := cpuCapsTestContext(t)
	bin := qemuBinary(t)
	tmp := cpuCapsIsolateTemp(t)
	cache := filepath.Join(t.TempDir(), "cpucaps.json")

	first, err := CachedProbeCPUCaps(ctx, bin, AccelTCG, cache)
	if err != nil {
		t.Fatal(err)
	}
	cpuCapsAssertClean(t, tmp)
	fresh, err := ProbeCPUCaps(ctx, bin, AccelTCG)
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(first, fresh) {
		t.Fatal("cached probe and fresh probe differ")
	}
	written, err := os.ReadFile(cache)
	if err != nil {
		t.Fatal(err)
	}

	// The same answer again, from the file, which stays as it is.
	start := time.Now()
	second, err := CachedProbeCPUCaps(ctx, bin, AccelTCG, cache)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("cache hit took %v (hashing the QEMU binary)", time.Since(start))
	if !reflect.DeepEqual(first, second) {
		t.Error("second call returned other caps")
	}
	if now, _ := os.ReadFile(cache); !bytes.Equal(now, written) {
		t.Error("cache rewritten although nothing changed")
	}

	// It really is the file that answers: a marker put into it comes back.
	editCache := func(edit func(*cpuCapsCache)) {
		t.Helper()
		var c cpuCapsCache
		b, err := os.ReadFile(cache)
		if err != nil {
			t.Fatal(err)
		}
		if err := json.Unmarshal(b, &c); err != nil {
			t.Fatal(err)
		}
		edit(&c)
		if b, err = json.Marshal(c); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(cache, b, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	const marker = "godwit-test-marker"
	editCache(func(c *cpuCapsCache) { c.Caps.Flags = append(c.Caps.Flags, marker) })
	if got, err := CachedProbeCPUCaps(ctx, bin, AccelTCG, cache); err != nil || !slices.Contains(got.Flags, marker) {
		t.Fatalf("cache not used: %v, flags %v", err, got.Flags)
	}

	// A cache made under another key is redone and rewritten.
	readKey := func() cpuCapsCache {
		t.Helper()
		var c cpuCapsCache
		b, err := os.ReadFile(cache)
		if err != nil {
			t.Fatal(err)
		}
		if err := json.Unmarshal(b, &c); err != nil {
			t.Fatal(err)
		}
		return c
	}
	for _, change := range []struct {
		name string
		edit func(*cpuCapsCache)
	}{
		{"other accel", func(c *cpuCapsCache) { c.Key.Accel, c.Caps.Accel = AccelKVM, AccelKVM }},
		{"other binary", func(c *cpuCapsCache) { c.Key.BinarySHA256 = strings.Repeat("0", 64) }},
		{"other format", func(c *cpuCapsCache) { c.Key.Format = cpuCapsCacheFormat - 1 }},
	} {
		editCache(func(c *cpuCapsCache) { change.edit(c); c.Caps.Flags = append(c.Caps.Flags, marker) })
		got, err := CachedProbeCPUCaps(ctx, bin, AccelTCG, cache)
		if err != nil {
			t.Fatalf("%s: %v", change.name, err)
		}
		if !reflect.DeepEqual(got, first) {
			t.Errorf("%s: stale cache used", change.name)
		}
		c := readKey()
		if c.Key.Accel != AccelTCG || c.Key.Format != cpuCapsCacheFormat || slices.Contains(c.Caps.Flags, marker) || !reflect.DeepEqual(c.Caps, first) {
			t.Errorf("%s: cache not rewritten: key %+v", change.name, c.Key)
		}
	}

	// A corrupt cache is redone.
	if err := os.WriteFile(cache, []byte("{not json"), 0o644); err != nil {
		t.Fatal(err)
	}
	if got, err := CachedProbeCPUCaps(ctx, bin, AccelTCG, cache); err != nil || !reflect.DeepEqual(got, first) {
		t.Errorf("corrupt cache: %v", err)
	}
	if c := readKey(); !reflect.DeepEqual(c.Caps, first) {
		t.Error("corrupt cache not rewritten")
	}

	// A changed binary (same QEMU with a byte appended: another
	// SHA-256) is probed anew, and the cache rewritten for it.
	copyBin := filepath.Join(t.TempDir(), "qemu-system-x86_64")
	src, err := os.Open(bin)
	if err != nil {
		t.Fatal(err)
	}
	defer src.Close()
	dst, err := os.OpenFile(copyBin, os.O_CREATE|os.O_WRONLY, 0o755)
	if err != nil {
		t.Fatal(err)
	}
	_, cerr := io.Copy(dst, src)
	_, werr := dst.Write([]byte{0})
	if err := errors.Join(cerr, werr, dst.Close()); err != nil {
		t.Fatal(err)
	}
	before := readKey().Key
	got, err := CachedProbeCPUCaps(ctx, copyBin, AccelTCG, cache)
	if err != nil {
		t.Fatalf("changed binary: %v", err)
	}
	afterKey := readKey().Key
	if afterKey.BinarySHA256 == before.BinarySHA256 || afterKey.BinarySHA256 == "" {
		t.Errorf("changed binary: cache key still %s", afterKey.BinarySHA256)
	}
	if !reflect.DeepEqual(got, first) {
		t.Error("the same QEMU, copied, gives other caps")
	}
	cpuCapsAssertClean(t, tmp)
}

func TestCPUCapsErrors(t *testing.T) {
	ctx := cpuCapsTestContext(t)
	tmp := cpuCapsIsolateTemp(t)
	const missing = "/nonexistent/qemu-system-x86_64"
	_, err := ProbeCPUCaps(ctx, missing, AccelTCG)
	if err == nil || !strings.Contains(err.Error(), missing) || !strings.Contains(err.Error(), "QEMU not found") {
		t.Errorf("missing binary: %v", err)
	}
	t.Logf("missing binary: %v", err)
	cache := filepath.Join(t.TempDir(), "cpucaps.json")
	_, err = CachedProbeCPUCaps(ctx, missing, AccelTCG, cache)
	if err == nil || !strings.Contains(err.Error(), "QEMU not found") {
		t.Errorf("missing binary, cached: %v", err)
	}
	if _, err := os.Stat(cache); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("cache written for a missing binary: %v", err)
	}

	bin := qemuBinary(t)
	if _, err := ProbeCPUCaps(ctx, bin, "hvf"); err == nil || !strings.Contains(err.Error(), `"hvf"`) {
		t.Errorf("accel hvf: %v", err)
	}
	// QEMU's own message comes through when it refuses to start.
	err = withCPUProbeQEMU(ctx, bin, "no-such-accel", func(context.Context, *qmp.Monitor) error {
		t.Error("QEMU with a bogus accelerator answered")
		return nil
	})
	if err == nil || !strings.Contains(err.Error(), "no-such-accel") || !strings.Contains(err.Error(), "QEMU failed") {
		t.Errorf("bogus accelerator: %v", err)
	}
	t.Logf("bogus accelerator: %v", err)
	// A context that ends stops the probe.
	done, cancel := context.WithCancel(ctx)
	cancel()
	if _, err := ProbeCPUCaps(done, bin, AccelTCG); !errors.Is(err, context.Canceled) {
		t.Errorf("cancelled probe: %v", err)
	}
	cpuCapsAssertClean(t, tmp)
}

// TestCPUCapsProbeKVM probes under KVM where /dev/kvm opens (QEMU only
// creates a VM without CPUs, which works even where KVM cannot run real
// guests); elsewhere the probe must fail with QEMU's own reason.
func TestCPUCapsProbeKVM(t *testing.T) {
	ctx := cpuCapsTestContext(t)
	tmp := cpuCapsIsolateTemp(t)
	start := time.Now()
	caps, err := ProbeCPUCaps(ctx, qemuBinary(t), AccelKVM)
	elapsed := time.Since(start)
	cpuCapsAssertClean(t, tmp)
	f, openErr := os.OpenFile("/dev/kvm", os.O_RDWR, 0)
	if openErr != nil {
		if err == nil || !strings.Contains(strings.ToLower(err.Error()), "kvm") || !strings.Contains(err.Error(), "QEMU failed") {
			t.Errorf("/dev/kvm does not open (%v), yet the KVM probe says: %v", openErr, err)
		}
		return
	}
	f.Close()
	if err != nil {
		t.Fatalf("/dev/kvm opens but the KVM probe failed: %v", err)
	}
	supported := caps.Supported()
	t.Logf("KVM probe took %v: %d host flags, %d models, %d supported: %v", elapsed, len(caps.Flags), len(caps.Models), len(supported), supported)
	if caps.Accel != AccelKVM || len(caps.Flags) < 10 || len(caps.Models) < 50 {
		t.Fatalf("KVM caps: accel %s, %d flags, %d models", caps.Accel, len(caps.Flags), len(caps.Models))
	}
	for _, f := range caps.Flags {
		if strings.HasPrefix(f, "kvm") {
			t.Errorf("KVM paravirtual feature %s among the host flags", f)
		}
	}
	if _, ok := caps.Model("qemu64"); !ok {
		t.Error("no qemu64 under KVM")
	}
	key, err := cpuCapsKeyFor(ctx, qemuBinary(t), AccelKVM)
	if err != nil {
		t.Fatal(err)
	}
	if key.HostKernel == "" || len(key.HostCPU) != 64 {
		t.Errorf("KVM cache key without the host kernel and CPU: %+v", key)
	}
}
