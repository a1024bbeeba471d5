package placement

import (
	"encoding/json"
	"errors"
	"math"
	"reflect"
	"slices"
	"strings"
	"testing"
)

// goodVM is a VM that goodHost can take without any finding.
func goodVM() VM {
	return VM{
		Name: "web-1", Host: "host-1",
		MemoryMiB: 4096, CPUs: 2,
		CPUModel:    "Skylake-Client",
		CPUFlags:    []string{"sse4_2", "avx", "avx2", "bmi2", "fma"},
		Datastores:  []string{"ds-a"},
		Networks:    []string{"prod"},
		QEMUVersion: "10.0.2",
		Accel:       "kvm",
	}
}

// goodHost is a destination for goodVM with nothing to report.
func goodHost() Host {
	return Host{
		Name: "host-2", Connected: true, Health: HealthOK,
		Cores: 8, Load: 1.0,
		MemoryMiB: 65536, FreeMemoryMiB: 32768,
		CPUFlags:    []string{"fpu", "sse4_2", "avx", "avx2", "bmi2", "fma", "aes"},
		QEMUVersion: "10.0.2", Accel: "kvm",
		Datastores:        []string{"ds-a", "ds-b"},
		Networks:          []string{"mgmt", "prod"},
		MigrationsRunning: 0, MigrationsQueued: 0, MigrationSlots: 2,
		LinkLoad: 0.1,
	}
}

// codes returns the codes of findings, in order.
func codes(fs []Finding) []string {
	out := make([]string, len(fs))
	for i, f := range fs {
		out[i] = f.Code
	}
	return out
}

func TestCheckGoodHostHasNoFindings(t *testing.T) {
	if fs := Check(goodVM(), goodHost()); len(fs) != 0 {
		t.Fatalf("Check(good) = %+v, want no findings", fs)
	}
}

func TestCheckEachCode(t *testing.T) {
	tests := []struct {
		name     string
		vm       func(*VM)
		host     func(*Host)
		codes    []string
		severity string
		contains []string
	}{
		{"same host", nil, func(h *Host) { h.Name = "host-1" },
			[]string{CodeSameHost}, SeverityError, []string{"web-1 already runs on host-1"}},
		{"disconnected", nil, func(h *Host) { h.Connected = false },
			[]string{CodeHostDisconnected}, SeverityError, []string{"host-2 is not connected"}},
		{"unhealthy with reason", nil, func(h *Host) { h.Health, h.HealthReason = "degraded", "bridge br0 of network prod is down" },
			[]string{CodeHostUnhealthy}, SeverityError, []string{"degraded", "bridge br0 of network prod is down"}},
		{"unhealthy without reason", nil, func(h *Host) { h.Health = "failing" },
			[]string{CodeHostUnhealthy}, SeverityError, []string{"failing", "no reason"}},
		{"health not reported", nil, func(h *Host) { h.Health = "" },
			[]string{CodeHostUnhealthy}, SeverityError, []string{"not reported its health"}},
		{"maintenance", nil, func(h *Host) { h.Maintenance = true },
			[]string{CodeHostMaintenance}, SeverityError, []string{"maintenance mode"}},
		{"kvm to tcg", nil, func(h *Host) { h.Accel = "tcg" },
			[]string{CodeAccelMismatch}, SeverityError, []string{"tcg", "kvm", "between accelerators"}},
		{"tcg to kvm", func(v *VM) { v.Accel = "tcg" }, nil,
			[]string{CodeAccelMismatch}, SeverityError, []string{"host-2 runs guests with kvm but web-1 runs with tcg"}},
		{"accel not probed yet", nil, func(h *Host) { h.Accel = "" },
			[]string{CodeAccelMismatch}, SeverityError, []string{"not reported its accelerator"}},
		{"older QEMU", nil, func(h *Host) { h.QEMUVersion = "9.2.0" },
			[]string{CodeQEMUIncompatible}, SeverityError, []string{"QEMU 9.2.0", "10.0.2", "upgrade"}},
		{"older minor", func(v *VM) { v.QEMUVersion = "10.1.0" }, nil,
			[]string{CodeQEMUIncompatible}, SeverityError, []string{"QEMU 10.0.2, older than web-1's source QEMU 10.1.0"}},
		{"unparseable host QEMU", nil, func(h *Host) { h.QEMUVersion = "ten" },
			[]string{CodeQEMUIncompatible}, SeverityError, []string{`"ten"`, "cannot be parsed"}},
		{"missing host QEMU", nil, func(h *Host) { h.QEMUVersion = "" },
			[]string{CodeQEMUIncompatible}, SeverityError, []string{"not reported its QEMU version"}},
		{"unparseable source QEMU", func(v *VM) { v.QEMUVersion = "10" }, nil,
			[]string{CodeQEMUIncompatible}, SeverityError, []string{`source QEMU version "10" cannot be parsed`}},
		{"cpu flags", nil, func(h *Host) { h.CPUFlags = []string{"fpu", "sse4_2", "avx"} },
			[]string{CodeCPUUnsupported}, SeverityError,
			[]string{"host-2 cannot provide CPU model Skylake-Client: it lacks avx2, bmi2, fma."}},
		{"memory one MiB short", nil, func(h *Host) { h.FreeMemoryMiB = 4096 + VMOverheadMiB + HostReserveMiB - 1 },
			[]string{CodeMemoryShort}, SeverityError,
			[]string{"5375 MiB free", "4351 MiB after its 1024 MiB reserve", "needs 4352 MiB (4096 MiB of memory plus 256 MiB overhead)"}},
		{"memory below the reserve", nil, func(h *Host) { h.FreeMemoryMiB = 500 },
			[]string{CodeMemoryShort}, SeverityError,
			[]string{"only 500 MiB free, less than its 1024 MiB reserve", "needs 4352 MiB"}},
		{"datastore", func(v *VM) { v.Datastores = []string{"ds-z", "ds-a"} }, nil,
			[]string{CodeDatastoreMissing}, SeverityError, []string{"datastore ds-z"}},
		{"network", func(v *VM) { v.Networks = []string{"prod", "dmz"} }, nil,
			[]string{CodeNetworkMissing}, SeverityError, []string{"network dmz"}},
		{"loaded", nil, func(h *Host) { h.Load = 6.5 },
			[]string{CodeHostLoaded}, SeverityWarning, []string{"0.81 per core"}},
		{"memory tight", nil, func(h *Host) { h.FreeMemoryMiB = 10000 },
			[]string{CodeMemoryTight}, SeverityWarning, []string{"5648 MiB (9%) of its 65536 MiB"}},
		{"slots full", nil, func(h *Host) { h.MigrationsRunning = 2 },
			[]string{CodeSlotsFull}, SeverityWarning, []string{"host-2 has no free migration slot (2 running, 2 slots)", "will queue until a slot frees"}},
		{"no slots reported counts as one", nil, func(h *Host) { h.MigrationSlots, h.MigrationsRunning = 0, 1 },
			[]string{CodeSlotsFull}, SeverityWarning, []string{"(1 running, 1 slot)"}},
		{"link busy", nil, func(h *Host) { h.LinkLoad = 0.75 },
			[]string{CodeLinkBusy}, SeverityWarning, []string{"75% busy"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			vm, h := goodVM(), goodHost()
			if tt.vm != nil {
				tt.vm(&vm)
			}
			if tt.host != nil {
				tt.host(&h)
			}
			fs := Check(vm, h)
			if got := codes(fs); !slices.Equal(got, tt.codes) {
				t.Fatalf("codes = %v, want %v; findings %+v", got, tt.codes, fs)
			}
			f := fs[0]
			if f.Severity != tt.severity {
				t.Errorf("severity = %q, want %q", f.Severity, tt.severity)
			}
			for _, s := range tt.contains {
				if !strings.Contains(f.Message, s) {
					t.Errorf("message %q does not contain %q", f.Message, s)
				}
			}
			if !strings.HasSuffix(f.Message, ".") || strings.Count(f.Message, ". ") > 0 {
				t.Errorf("message %q is not one sentence", f.Message)
			}
			if Blocked(fs) != (tt.severity == SeverityError) {
				t.Errorf("Blocked = %v for severity %s", Blocked(fs), tt.severity)
			}
		})
	}
}

func TestCheckBoundaries(t *testing.T) {
	tests := []struct {
		name string
		vm   func(*VM)
		host func(*Host)
	}{
		{"memory exactly enough", nil, func(h *Host) { h.MemoryMiB, h.FreeMemoryMiB = 8192, 4096+VMOverheadMiB+HostReserveMiB }},
		{"load exactly at threshold", nil, func(h *Host) { h.Load = 6.4 }},
		{"link exactly at threshold", nil, func(h *Host) { h.LinkLoad = 0.7 }},
		{"one slot still free", nil, func(h *Host) { h.MigrationsRunning, h.MigrationsQueued = 1, 3 }},
		{"memory exactly 10% free after", nil, func(h *Host) { h.MemoryMiB, h.FreeMemoryMiB = 40960, 4096+4352 }},
		{"newer micro on source", func(v *VM) { v.QEMUVersion = "10.0.9" }, nil},
		{"newer micro release on the destination", nil, func(h *Host) { h.QEMUVersion = "10.0.9" }},
		{"unknown source accelerator", func(v *VM) { v.Accel = "" }, func(h *Host) { h.Accel = "tcg" }},
		{"accelerator case", func(v *VM) { v.Accel = "KVM" }, nil},
		{"no flags needed", func(v *VM) { v.CPUModel, v.CPUFlags = "qemu64", nil }, func(h *Host) { h.CPUFlags = nil }},
		{"duplicate and empty needs", func(v *VM) {
			v.CPUFlags = append(v.CPUFlags, "avx", "")
			v.Datastores = []string{"ds-a", "ds-a", ""}
		}, nil},
		{"no source host", func(v *VM) { v.Host = "" }, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			vm, h := goodVM(), goodHost()
			if tt.vm != nil {
				tt.vm(&vm)
			}
			if tt.host != nil {
				tt.host(&h)
			}
			if fs := Check(vm, h); len(fs) != 0 {
				t.Fatalf("findings = %+v, want none", fs)
			}
		})
	}
}

func TestCheckMissingFlagsNamedAndSorted(t *testing.T) {
	vm := goodVM()
	vm.CPUModel = ""
	vm.CPUFlags = []string{"vmx", "avx512f", "pku", "avx", "avx512f"}
	h := goodHost()
	fs := Check(vm, h)
	want := "host-2 cannot provide the VM's CPU baseline: it lacks avx512f, pku, vmx."
	if len(fs) != 1 || fs[0].Message != want {
		t.Fatalf("findings = %+v, want one with message %q", fs, want)
	}
}

func TestCheckMissingDatastoresAndNetworksOnePerName(t *testing.T) {
	vm := goodVM()
	vm.Datastores = []string{"ds-z", "ds-c", "ds-a"}
	vm.Networks = []string{"storage", "backup", "prod"}
	fs := Check(vm, goodHost())
	want := []string{CodeDatastoreMissing, CodeDatastoreMissing, CodeNetworkMissing, CodeNetworkMissing}
	if got := codes(fs); !slices.Equal(got, want) {
		t.Fatalf("codes = %v, want %v", got, want)
	}
	for i, name := range []string{"ds-c", "ds-z", "backup", "storage"} {
		if !strings.Contains(fs[i].Message, " "+name+",") {
			t.Errorf("finding %d %q does not name %s", i, fs[i].Message, name)
		}
	}
}

func TestCheckOrderErrorsBeforeWarnings(t *testing.T) {
	vm := goodVM()
	vm.Networks = []string{"dmz"}
	h := goodHost()
	h.Name = "host-1"
	h.Connected = false
	h.Health, h.HealthReason = "degraded", "disk full"
	h.Maintenance = true
	h.Accel = "tcg"
	h.QEMUVersion = "9.0"
	h.CPUFlags = nil
	h.FreeMemoryMiB = 1000
	h.Datastores = nil
	h.Load = 100
	h.MigrationsRunning = 5
	h.LinkLoad = 1
	want := []string{
		CodeSameHost, CodeHostDisconnected, CodeHostUnhealthy, CodeHostMaintenance,
		CodeAccelMismatch, CodeQEMUIncompatible, CodeCPUUnsupported, CodeMemoryShort,
		CodeDatastoreMissing, CodeNetworkMissing,
		CodeHostLoaded, CodeSlotsFull, CodeLinkBusy, // memory_tight yields to memory_short
	}
	fs := Check(vm, h)
	if got := codes(fs); !slices.Equal(got, want) {
		t.Fatalf("codes = %v\nwant    %v", got, want)
	}
	if n := countErrors(fs); n != 10 {
		t.Errorf("countErrors = %d, want 10", n)
	}
	if !reflect.DeepEqual(fs, Check(vm, h)) {
		t.Error("Check is not deterministic")
	}
}

func TestCheckMemoryTightAlone(t *testing.T) {
	h := goodHost()
	h.Load, h.LinkLoad = 100, 1
	h.FreeMemoryMiB = 4352 + 1500
	h.MemoryMiB = 65536
	got := codes(Check(goodVM(), h))
	want := []string{CodeHostLoaded, CodeMemoryTight, CodeLinkBusy}
	if !slices.Equal(got, want) {
		t.Fatalf("codes = %v, want %v", got, want)
	}
}

func TestParseVersion(t *testing.T) {
	tests := []struct {
		in   string
		want version
		ok   bool
	}{
		{"10.0.2", version{10, 0, 2}, true},
		{"9.2.0", version{9, 2, 0}, true},
		{"10.1", version{10, 1, 0}, true},
		{" 8.2.10 ", version{8, 2, 10}, true},
		{"", version{}, false},
		{"10", version{}, false},
		{"10.x", version{}, false},
		{"10.0.2.1", version{}, false},
		{"10..2", version{}, false},
		{"v10.0.2", version{}, false},
		{"10.0.-2", version{}, false},
		{"10.0.2-rc1", version{}, false},
		{"99999999999999999999.0", version{}, false},
	}
	for _, tt := range tests {
		got, err := parseVersion(tt.in)
		if (err == nil) != tt.ok {
			t.Errorf("parseVersion(%q) error = %v, want ok %v", tt.in, err, tt.ok)
			continue
		}
		if tt.ok && got != tt.want {
			t.Errorf("parseVersion(%q) = %v, want %v", tt.in, got, tt.want)
		}
		if !tt.ok && !strings.Contains(err.Error(), "parse QEMU version") {
			t.Errorf("parseVersion(%q) error %q lacks context", tt.in, err)
		}
	}
}

func TestQEMUCompatibility(t *testing.T) {
	tests := []struct {
		src, dst string
		ok       bool
	}{
		{"10.0.2", "9.2.0", false},
		{"10.0.2", "10.0.2", true},
		{"10.0.2", "10.0.0", true},
		{"10.0.2", "10.1", false}, // newer, but q35 differs between releases
		{"10.1", "10.0.9", false},
		{"10.1.0", "10.1", true},
		{"9.2.0", "10.0.2", false},
		{"9.10.0", "9.2.0", false},
		{"9.2.0", "9.10.0", false},
		{"10.0.2", "11.0", false},
		{"11.0", "10.99", false},
	}
	for _, tt := range tests {
		vm, h := goodVM(), goodHost()
		vm.QEMUVersion, h.QEMUVersion = tt.src, tt.dst
		fs := Check(vm, h)
		if ok := len(fs) == 0; ok != tt.ok {
			t.Errorf("source %s to %s: findings %+v, want compatible %v", tt.src, tt.dst, fs, tt.ok)
		}
		if !tt.ok && !slices.Equal(codes(fs), []string{CodeQEMUIncompatible}) {
			t.Errorf("source %s to %s: codes %v, want qemu_incompatible", tt.src, tt.dst, codes(fs))
		}
	}
}

func TestWeightsValidate(t *testing.T) {
	valid := []Weights{DefaultWeights(), {CPU: 1}, {Link: 0.001}, {CPU: 3, Memory: 3, Migrations: 2, Link: 1}}
	for _, w := range valid {
		if err := w.Validate(); err != nil {
			t.Errorf("%+v.Validate() = %v, want nil", w, err)
		}
	}
	invalid := []struct {
		w    Weights
		want string
	}{
		{Weights{}, "all weights are 0"},
		{Weights{CPU: -0.1, Memory: 1}, "weight cpu"},
		{Weights{Memory: math.NaN(), CPU: 1}, "weight memory"},
		{Weights{Migrations: math.Inf(1)}, "weight migrations"},
		{Weights{CPU: 1, Link: -1}, "weight link"},
	}
	for _, tt := range invalid {
		err := tt.w.Validate()
		if err == nil || !errors.Is(err, ErrInvalidWeights) || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("%+v.Validate() = %v, want ErrInvalidWeights mentioning %q", tt.w, err, tt.want)
		}
	}
	if sum := DefaultWeights().sum(); math.Abs(sum-1) > 1e-9 {
		t.Errorf("default weights sum to %v, want 1", sum)
	}
}

func TestRecommendRejectsInvalidWeights(t *testing.T) {
	_, err := Recommend(goodVM(), []Host{goodHost()}, Weights{CPU: -1})
	if !errors.Is(err, ErrInvalidWeights) || !strings.Contains(err.Error(), "web-1") {
		t.Fatalf("err = %v, want ErrInvalidWeights naming the VM", err)
	}
}

func TestStars(t *testing.T) {
	tests := []struct {
		score float64
		want  int
	}{{100, 5}, {80, 5}, {79.9, 4}, {60, 4}, {59.9, 3}, {40, 3}, {39.9, 2}, {20, 2}, {19.9, 1}, {0, 1}}
	for _, tt := range tests {
		if got := Stars(tt.score); got != tt.want {
			t.Errorf("Stars(%v) = %d, want %d", tt.score, got, tt.want)
		}
	}
}

// rankHost returns a compatible host with the given name and measures.
func rankHost(name string, cores int, load float64, totalMiB, freeMiB, running, queued, slots int, link float64) Host {
	h := goodHost()
	h.Name, h.Cores, h.Load = name, cores, load
	h.MemoryMiB, h.FreeMemoryMiB = totalMiB, freeMiB
	h.MigrationsRunning, h.MigrationsQueued, h.MigrationSlots = running, queued, slots
	h.LinkLoad = link
	return h
}

func TestRecommendBreakdown(t *testing.T) {
	// 1.2 load on 4 cores; 12 GiB of 20 GiB free after the 4352 MiB move.
	h := rankHost("host-2", 4, 1.2, 20480, 12288+4352, 1, 0, 4, 0.1)
	rec, err := Recommend(goodVM(), []Host{h}, DefaultWeights())
	if err != nil {
		t.Fatal(err)
	}
	c, ok := rec.Best()
	if !ok {
		t.Fatalf("no candidate: %+v", rec)
	}
	want := []Criterion{
		{Name: CriterionCPU, Value: "load 0.30/core", Score: 70, Weight: 0.35, Contribution: 24.5},
		{Name: CriterionMemory, Value: "12.0 GiB free after move (60%)", Score: 60, Weight: 0.35, Contribution: 21},
		{Name: CriterionMigrations, Value: "1 running, 0 queued of 4 slots", Score: 75, Weight: 0.2, Contribution: 15},
		{Name: CriterionLink, Value: "link 10% busy", Score: 90, Weight: 0.1, Contribution: 9},
	}
	if !reflect.DeepEqual(c.Breakdown, want) {
		t.Errorf("breakdown =\n%+v\nwant\n%+v", c.Breakdown, want)
	}
	if c.Score != 69.5 || c.Stars != 4 {
		t.Errorf("score %v, %d stars; want 69.5, 4 stars", c.Score, c.Stars)
	}
	if len(c.Warnings) != 0 {
		t.Errorf("warnings = %+v, want none", c.Warnings)
	}
	if rec.VM != "web-1" || rec.Source != "host-1" || rec.Weights != DefaultWeights() {
		t.Errorf("header = %q %q %+v", rec.VM, rec.Source, rec.Weights)
	}
}

func TestRecommendRanksLightAndRoomyFirst(t *testing.T) {
	hosts := []Host{
		rankHost("busy", 8, 7.5, 65536, 12000, 2, 1, 2, 0.65),
		rankHost("idle", 8, 0.4, 65536, 60000, 0, 0, 2, 0.05),
		rankHost("middle", 8, 3, 65536, 30000, 1, 0, 2, 0.3),
	}
	rec, err := Recommend(goodVM(), hosts, DefaultWeights())
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, c := range rec.Candidates {
		names = append(names, c.Host)
		sum := 0.0
		for _, cr := range c.Breakdown {
			sum += cr.Contribution
			if cr.Score < 0 || cr.Score > 100 {
				t.Errorf("%s: %s score %v outside 0..100", c.Host, cr.Name, cr.Score)
			}
		}
		if math.Abs(sum-c.Score) > 0.25 {
			t.Errorf("%s: contributions sum to %v, score %v", c.Host, sum, c.Score)
		}
		if c.Stars != Stars(c.Score) {
			t.Errorf("%s: %d stars for score %v", c.Host, c.Stars, c.Score)
		}
	}
	if want := []string{"idle", "middle", "busy"}; !slices.Equal(names, want) {
		t.Fatalf("order = %v, want %v", names, want)
	}
	if rec.Candidates[0].Stars != 5 || rec.Candidates[2].Stars > 2 {
		t.Errorf("stars idle %d, busy %d; want 5 and at most 2", rec.Candidates[0].Stars, rec.Candidates[2].Stars)
	}
	busy := rec.Candidates[2]
	if got := codes(busy.Warnings); !slices.Equal(got, []string{CodeHostLoaded, CodeSlotsFull}) {
		t.Errorf("busy warnings = %v, want host_loaded, slots_full", got)
	}
	if len(rec.Refused) != 0 {
		t.Errorf("refused = %+v, want none", rec.Refused)
	}
}

func TestRecommendWeightsChangeOrder(t *testing.T) {
	hosts := []Host{
		rankHost("cool-cpu", 8, 0.1, 65536, 8000, 0, 0, 2, 0.1),
		rankHost("big-memory", 8, 6, 65536, 64000, 0, 0, 2, 0.1),
	}
	best := func(w Weights) string {
		rec, err := Recommend(goodVM(), hosts, w)
		if err != nil {
			t.Fatal(err)
		}
		return rec.Candidates[0].Host
	}
	if got := best(Weights{CPU: 1}); got != "cool-cpu" {
		t.Errorf("cpu-only best = %s, want cool-cpu", got)
	}
	if got := best(Weights{Memory: 1}); got != "big-memory" {
		t.Errorf("memory-only best = %s, want big-memory", got)
	}
	rec, err := Recommend(goodVM(), hosts, Weights{CPU: 2, Memory: 2})
	if err != nil {
		t.Fatal(err)
	}
	if w := rec.Weights; w.CPU != 0.5 || w.Memory != 0.5 || w.Migrations != 0 || w.Link != 0 {
		t.Errorf("normalized weights = %+v, want 0.5, 0.5, 0, 0", w)
	}
}

func TestRecommendRefusedHostsWithReasons(t *testing.T) {
	mk := func(name string, f func(*Host)) Host {
		h := goodHost()
		h.Name = name
		if f != nil {
			f(&h)
		}
		return h
	}
	hosts := []Host{
		mk("zeta-tcg", func(h *Host) { h.Accel = "tcg" }),
		mk("host-1", nil), // the source
		mk("alpha-down", func(h *Host) { h.Connected = false; h.LinkLoad = 0.9 }),
		mk("ok-loaded", func(h *Host) { h.Load = 20 }),
		mk("mid-old", func(h *Host) { h.QEMUVersion = "9.2.0"; h.CPUFlags = []string{"avx"} }),
		mk("ok-fine", nil),
	}
	rec, err := Recommend(goodVM(), hosts, DefaultWeights())
	if err != nil {
		t.Fatal(err)
	}
	var refused []string
	for _, r := range rec.Refused {
		refused = append(refused, r.Host+":"+strings.Join(codes(r.Errors), ","))
		for _, f := range r.Errors {
			if f.Severity != SeverityError {
				t.Errorf("%s: refusal carries %+v", r.Host, f)
			}
		}
	}
	wantRefused := []string{
		"alpha-down:host_disconnected",
		"host-1:same_host",
		"mid-old:qemu_incompatible,cpu_unsupported",
		"zeta-tcg:accel_mismatch",
	}
	if !slices.Equal(refused, wantRefused) {
		t.Errorf("refused = %v\nwant      %v", refused, wantRefused)
	}
	var cands []string
	for _, c := range rec.Candidates {
		cands = append(cands, c.Host+":"+strings.Join(codes(c.Warnings), ","))
	}
	if want := []string{"ok-fine:", "ok-loaded:host_loaded"}; !slices.Equal(cands, want) {
		t.Errorf("candidates = %v, want %v", cands, want)
	}
}

func TestRecommendDeterministic(t *testing.T) {
	hosts := []Host{
		rankHost("c", 8, 1, 65536, 30000, 0, 0, 2, 0.1),
		rankHost("a", 8, 1, 65536, 30000, 0, 0, 2, 0.1), // ties with c and b
		rankHost("b", 8, 1, 65536, 30000, 0, 0, 2, 0.1),
		rankHost("d", 8, 2, 65536, 30000, 0, 0, 2, 0.1),
		rankHost("host-1", 8, 1, 65536, 30000, 0, 0, 2, 0.1),
		rankHost("e-off", 8, 1, 65536, 30000, 0, 0, 2, 0.1),
	}
	hosts[5].Maintenance = true
	first, err := Recommend(goodVM(), hosts, DefaultWeights())
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, c := range first.Candidates {
		names = append(names, c.Host)
	}
	if want := []string{"a", "b", "c", "d"}; !slices.Equal(names, want) {
		t.Fatalf("order = %v, want %v (ties by name)", names, want)
	}
	want, err := json.Marshal(first)
	if err != nil {
		t.Fatal(err)
	}
	for i := range hosts {
		rotated := append(slices.Clone(hosts[i:]), hosts[:i]...)
		slices.Reverse(rotated)
		rec, err := Recommend(goodVM(), rotated, DefaultWeights())
		if err != nil {
			t.Fatal(err)
		}
		got, err := json.Marshal(rec)
		if err != nil {
			t.Fatal(err)
		}
		if string(got) != string(want) {
			t.Fatalf("rotation %d differs:\n%s\nwant\n%s", i, got, want)
		}
	}
}

func TestRecommendJSON(t *testing.T) {
	rec, err := Recommend(goodVM(), nil, DefaultWeights())
	if err != nil {
		t.Fatal(err)
	}
	b, err := json.Marshal(rec)
	if err != nil {
		t.Fatal(err)
	}
	want := `{"vm":"web-1","source":"host-1","weights":{"cpu":0.35,"memory":0.35,"migrations":0.2,"link":0.1},"candidates":[],"refused":[]}`
	if string(b) != want {
		t.Errorf("empty recommendation JSON =\n%s\nwant\n%s", b, want)
	}
	if _, ok := rec.Best(); ok {
		t.Error("Best of an empty recommendation reports a candidate")
	}

	h := goodHost()
	h.LinkLoad = math.NaN() // an unknown measure must not break the JSON
	rec, err = Recommend(goodVM(), []Host{h}, DefaultWeights())
	if err != nil {
		t.Fatal(err)
	}
	b, err = json.Marshal(rec.Candidates[0])
	if err != nil {
		t.Fatalf("marshal candidate with NaN link load: %v", err)
	}
	for _, key := range []string{`"host":`, `"score":`, `"stars":`, `"breakdown":[{"name":"cpu","value":`, `"contribution":`, `"warnings":[{"code":"link_busy","severity":"warning","message":`} {
		if !strings.Contains(string(b), key) {
			t.Errorf("candidate JSON %s lacks %s", b, key)
		}
	}
	if got := rec.Candidates[0].Breakdown[3].Score; got != 0 {
		t.Errorf("link score with NaN load = %v, want 0", got)
	}
}

func TestIndexMatchesCheckAndKeepsNoSlices(t *testing.T) {
	hosts := []Host{goodHost(), goodHost(), goodHost()}
	hosts[1].Name, hosts[1].CPUFlags = "host-3", []string{"avx"}
	hosts[2].Name, hosts[2].Networks = "host-4", []string{"mgmt"}
	vm := goodVM()
	var want [][]Finding
	for _, h := range hosts {
		want = append(want, Check(vm, h))
	}
	ix := NewIndex(hosts)
	// Changing the caller's slices afterwards must not change the index.
	hosts[0].CPUFlags[1] = "gone"
	hosts[2].Networks[0] = "prod"
	if ix.Len() != 3 {
		t.Fatalf("Len = %d, want 3", ix.Len())
	}
	if got := ix.Check(vm); !reflect.DeepEqual(got, want) {
		t.Fatalf("Index.Check =\n%+v\nwant\n%+v", got, want)
	}
	if len(want[0]) != 0 || codes(want[1])[0] != CodeCPUUnsupported || codes(want[2])[0] != CodeNetworkMissing {
		t.Errorf("unexpected findings %+v", want)
	}
}

func TestBitsetAcrossWords(t *testing.T) {
	var u universe
	var names []string
	for i := range 200 {
		names = append(names, "f"+strings.Repeat("x", i%7)+string(rune('a'+i%26))+string(rune('a'+i/26)))
	}
	have := u.bits(names[:150])
	n := u.need([]string{names[3], names[140], names[149]})
	if m := n.missing(have); m != nil {
		t.Errorf("missing = %v, want none", m)
	}
	u.bits(names[150:]) // numbered later: beyond have's words
	n = u.need([]string{names[199], names[3], "unknown"})
	want := sortedSet([]string{names[199], "unknown"})
	if m := n.missing(have); !slices.Equal(m, want) {
		t.Errorf("missing = %v, want %v", m, want)
	}
}
