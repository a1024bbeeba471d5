package placement

import (
	"math"
	"slices"
	"strings"
	"testing"
)

// Each checker of the engine refuses (or warns) with its own code: alone in an engine
// of its own, and in the default engine, for a change of goodVM or goodHost that only
// it objects to. Every checker of the default engine has a case here.
func TestEngineEachCheckerGivesItsCode(t *testing.T) {
	tests := []struct {
		checker string
		vm      func(*VM)
		host    func(*Host)
		code    string
		says    string
	}{
		{CheckerSameHost, nil, func(h *Host) { h.Name = "host-1" }, CodeSameHost, "already runs on host-1"},
		{CheckerConnected, nil, func(h *Host) { h.Connected = false }, CodeHostDisconnected, "not connected"},
		{CheckerHealth, nil, func(h *Host) { h.Health = "degraded" }, CodeHostUnhealthy, "degraded"},
		{CheckerMaintenance, nil, func(h *Host) { h.Maintenance = true }, CodeHostMaintenance, "maintenance mode"},
		{CheckerAccel, nil, func(h *Host) { h.Accel = "tcg" }, CodeAccelMismatch, "between accelerators"},
		{CheckerQEMU, nil, func(h *Host) { h.QEMUVersion = "10.1.0" }, CodeQEMUIncompatible, "same QEMU release"},
		{CheckerCPUFlags, nil, func(h *Host) { h.CPUFlags = []string{"fpu", "sse4_2"} }, CodeCPUUnsupported, "it lacks avx, avx2, bmi2, fma."},
		{CheckerCPUModel, func(v *VM) { v.CPUFlags = nil }, func(h *Host) { h.CPUModels = []string{"qemu64", "Nehalem"} },
			CodeCPUUnsupported, "cannot provide CPU model Skylake-Client: it provides only Nehalem, qemu64."},
		{CheckerMemory, nil, func(h *Host) { h.FreeMemoryMiB = 4000 }, CodeMemoryShort, "4000 MiB free"},
		{CheckerDatastores, func(v *VM) { v.Datastores = []string{"ds-a", "ds-z"} }, nil, CodeDatastoreMissing, "datastore ds-z"},
		{CheckerNetworks, func(v *VM) { v.Networks = []string{"dmz"} }, nil, CodeNetworkMissing, "network dmz"},
		{CheckerImage, func(v *VM) { v.Image = "alpine" }, func(h *Host) { h.Images = []string{"debian"} }, CodeImageMissing, "has no image alpine"},
		{CheckerLoad, nil, func(h *Host) { h.Load = 100 }, CodeHostLoaded, "per core"},
		{CheckerMemoryTight, nil, func(h *Host) { h.FreeMemoryMiB = 8000 }, CodeMemoryTight, "below the 10% margin"},
		{CheckerSlots, nil, func(h *Host) { h.MigrationsRunning = 2 }, CodeSlotsFull, "no free migration slot"},
		{CheckerLink, nil, func(h *Host) { h.LinkLoad = 0.9 }, CodeLinkBusy, "90% busy"},
	}
	var covered []string
	for _, tt := range tests {
		covered = append(covered, tt.checker)
		t.Run(tt.checker, func(t *testing.T) {
			vm, h := goodVM(), goodHost()
			if tt.vm != nil {
				tt.vm(&vm)
			}
			if tt.host != nil {
				tt.host(&h)
			}
			alone, err := NewEngine(tt.checker)
			if err != nil {
				t.Fatal(err)
			}
			if got := alone.Checkers(); !slices.Equal(got, []string{tt.checker}) {
				t.Fatalf("NewEngine(%s).Checkers() = %v", tt.checker, got)
			}
			if fs := alone.Check(goodVM(), goodHost()); len(fs) != 0 {
				t.Fatalf("%s alone finds %+v in the good VM and host", tt.checker, fs)
			}
			for name, en := range map[string]*Engine{"alone": alone, "default": DefaultEngine()} {
				fs := en.Check(vm, h)
				if got := codes(fs); !slices.Equal(got, []string{tt.code}) {
					t.Fatalf("%s engine: codes = %v, want [%s]; findings %+v", name, got, tt.code, fs)
				}
				if !strings.Contains(fs[0].Message, tt.says) {
					t.Errorf("%s engine: message %q does not say %q", name, fs[0].Message, tt.says)
				}
				warning := strings.HasPrefix(tt.checker, "load") || tt.checker == CheckerMemoryTight || tt.checker == CheckerSlots || tt.checker == CheckerLink
				if fs[0].Blocking() == warning {
					t.Errorf("%s engine: %s is blocking: %v", name, tt.code, fs[0].Blocking())
				}
			}
		})
	}
	if all := DefaultEngine().Checkers(); !slices.Equal(covered, all) {
		t.Errorf("checkers tested, in order: %v\nthe default engine's:        %v", covered, all)
	}
}

func TestNewEngine(t *testing.T) {
	if en, err := NewEngine(); err != nil || en != DefaultEngine() {
		t.Errorf("NewEngine() = %p, %v; want the default engine", en, err)
	}
	// The named checkers run in the usual order, whatever the order of the names.
	en, err := NewEngine(CheckerNetworks, CheckerMemory, CheckerQEMU, CheckerMemory)
	if err != nil {
		t.Fatal(err)
	}
	if got, want := en.Checkers(), []string{CheckerQEMU, CheckerMemory, CheckerNetworks}; !slices.Equal(got, want) {
		t.Errorf("Checkers() = %v, want %v", got, want)
	}
	// Only those: a disconnected host in maintenance, short of memory, is refused for
	// its memory alone.
	h := goodHost()
	h.Connected, h.Maintenance, h.FreeMemoryMiB = false, true, 2000
	if got := codes(en.Check(goodVM(), h)); !slices.Equal(got, []string{CodeMemoryShort}) {
		t.Errorf("codes = %v, want only memory_short", got)
	}
	if _, err := NewEngine(CheckerMemory, "disk-speed"); err == nil || !strings.Contains(err.Error(), `"disk-speed"`) || !strings.Contains(err.Error(), CheckerImage) {
		t.Errorf("NewEngine with an unknown checker: %v; want an error naming it and listing the checkers", err)
	}
	want := []string{CriterionCPU, CriterionMemory, CriterionMigrations, CriterionLink}
	if got := en.Scorers(); !slices.Equal(got, want) {
		t.Errorf("Scorers() = %v, want %v", got, want)
	}
	rec, err := en.Recommend(goodVM(), []Host{goodHost()}, DefaultWeights())
	if err != nil {
		t.Fatal(err)
	}
	def, err := Recommend(goodVM(), []Host{goodHost()}, DefaultWeights())
	if err != nil {
		t.Fatal(err)
	}
	if len(rec.Candidates) != 1 || len(def.Candidates) != 1 || !slices.Equal(rec.Candidates[0].Breakdown, def.Candidates[0].Breakdown) {
		t.Errorf("a reduced engine scores %+v, the default one %+v; want the same breakdown", rec.Candidates, def.Candidates)
	}
}

// A VM with no source host (one being created) is not checked against a source: the
// same-host, accelerator and QEMU-release checks are skipped, the others are not.
func TestInitialPlacementSkipsSourceChecks(t *testing.T) {
	vm := goodVM()
	vm.QEMUVersion = "" // unparseable, were it checked
	h := goodHost()
	h.Name, h.Accel, h.QEMUVersion = "host-1", "tcg", "9.2.0"

	moved := codes(Check(vm, h))
	if want := []string{CodeSameHost, CodeAccelMismatch, CodeQEMUIncompatible}; !slices.Equal(moved, want) {
		t.Fatalf("a VM on host-1: codes = %v, want %v", moved, want)
	}
	vm.Host = ""
	if fs := Check(vm, h); len(fs) != 0 {
		t.Fatalf("a new VM: findings %+v, want none", fs)
	}
	h.Maintenance, h.FreeMemoryMiB = true, 1000
	if got, want := codes(Check(vm, h)), []string{CodeHostMaintenance, CodeMemoryShort}; !slices.Equal(got, want) {
		t.Errorf("a new VM on a host in maintenance, short of memory: codes = %v, want %v", got, want)
	}
	rec, err := Recommend(vm, []Host{goodHost()}, DefaultWeights())
	if err != nil {
		t.Fatal(err)
	}
	if best, ok := rec.Best(); !ok || best.Host != "host-2" || rec.Source != "" {
		t.Errorf("Recommend for a new VM = %+v; want host-2 and no source", rec)
	}
}

func TestImageChecker(t *testing.T) {
	tests := []struct {
		name   string
		image  string
		images []string
		refuse bool
	}{
		{"host holds the image", "alpine", []string{"debian", "alpine"}, false},
		{"host lacks it", "alpine", []string{"debian"}, true},
		{"host has no images", "alpine", nil, true},
		{"no other host has it either", "nosuch", []string{"alpine"}, true},
		{"boots from a kernel or disk", "", nil, false},
	}
	for _, tt := range tests {
		vm, h := goodVM(), goodHost()
		vm.Host = ""
		vm.Image, h.Images = tt.image, tt.images
		fs := Check(vm, h)
		if !tt.refuse {
			if len(fs) != 0 {
				t.Errorf("%s: findings %+v, want none", tt.name, fs)
			}
			continue
		}
		want := "host-2 has no image " + tt.image + " on its datastores, which web-1 boots from; copy the image to a datastore of the host or choose another host."
		if len(fs) != 1 || fs[0].Code != CodeImageMissing || !fs[0].Blocking() || fs[0].Message != want {
			t.Errorf("%s: findings %+v, want one image_missing error %q", tt.name, fs, want)
		}
	}
}

func TestCPUModelChecker(t *testing.T) {
	models := []string{"qemu64", "Nehalem", "Westmere"}
	tests := []struct {
		name   string
		vm     func(*VM)
		models []string
		want   string // the message, or "" for no finding
	}{
		{"flags unknown, model missing", func(v *VM) { v.CPUModel, v.CPUFlags = "Skylake-Client", nil }, models,
			"host-2 cannot provide CPU model Skylake-Client: it provides only Nehalem, Westmere, qemu64."},
		{"flags unknown, model listed", func(v *VM) { v.CPUModel, v.CPUFlags = "Nehalem", nil }, models, ""},
		{"flags unknown, host lists no models yet", func(v *VM) { v.CPUModel, v.CPUFlags = "Skylake-Client", nil }, nil, ""},
		{"flags unknown, no model", func(v *VM) { v.CPUModel, v.CPUFlags = "", nil }, models, ""},
		{"only empty flags count as unknown", func(v *VM) { v.CPUModel, v.CPUFlags = "Skylake-Client", []string{""} }, models,
			"host-2 cannot provide CPU model Skylake-Client: it provides only Nehalem, Westmere, qemu64."},
		// With the flags known the flags decide: goodHost has every flag the model needs.
		{"flags known", nil, models, ""},
	}
	for _, tt := range tests {
		vm, h := goodVM(), goodHost()
		if tt.vm != nil {
			tt.vm(&vm)
		}
		h.CPUModels = tt.models
		fs := Check(vm, h)
		switch {
		case tt.want == "" && len(fs) != 0:
			t.Errorf("%s: findings %+v, want none", tt.name, fs)
		case tt.want != "" && (len(fs) != 1 || fs[0].Code != CodeCPUUnsupported || fs[0].Message != tt.want):
			t.Errorf("%s: findings %+v, want one cpu_unsupported %q", tt.name, fs, tt.want)
		}
	}
	// A host that has not reported its flags, for a VM whose flags are known.
	h := goodHost()
	h.CPUFlags = nil
	fs := Check(goodVM(), h)
	if len(fs) != 1 || fs[0].Code != CodeCPUUnsupported || !strings.Contains(fs[0].Message, "has not reported the CPU flags") {
		t.Errorf("host without flags: %+v; want cpu_unsupported saying it has not reported its flags", fs)
	}
}

// The memory rule at its boundary: a host fits a VM when its free memory is exactly the
// VM's memory plus VMOverheadMiB plus HostReserveMiB, and not with one MiB less; the
// engine's memory checker refuses exactly the hosts MemoryFits does not fit.
func TestMemoryRuleBoundary(t *testing.T) {
	if got := MemoryNeedMiB(4096); got != 4096+256 {
		t.Errorf("MemoryNeedMiB(4096) = %d, want 4352", got)
	}
	if HostReserveMiB != 1024 || VMOverheadMiB != 256 {
		t.Errorf("reserve %d, overhead %d; want 1024 and 256", HostReserveMiB, VMOverheadMiB)
	}
	for _, vmMiB := range []int{16, 512, 4096, 1 << 20} {
		exact := vmMiB + VMOverheadMiB + HostReserveMiB
		if !MemoryFits(exact, vmMiB) {
			t.Errorf("MemoryFits(%d, %d) = false; want true (exactly enough)", exact, vmMiB)
		}
		if MemoryFits(exact-1, vmMiB) {
			t.Errorf("MemoryFits(%d, %d) = true; want false (one MiB short)", exact-1, vmMiB)
		}
		for free := exact - 3; free <= exact+3; free++ {
			vm, h := goodVM(), goodHost()
			vm.MemoryMiB = vmMiB
			h.MemoryMiB, h.FreeMemoryMiB = 4*exact, free
			short := slices.Contains(codes(Check(vm, h)), CodeMemoryShort)
			if short == MemoryFits(free, vmMiB) {
				t.Errorf("%d MiB free for a %d MiB VM: memory_short %v, MemoryFits %v", free, vmMiB, short, MemoryFits(free, vmMiB))
			}
		}
	}
	// Nothing fits below the reserve, and sizes near the limits of int do not wrap.
	if MemoryFits(HostReserveMiB-1, -10000) {
		t.Error("a host below its reserve fits a VM")
	}
	if MemoryNeedMiB(math.MaxInt) != math.MaxInt || MemoryFits(math.MaxInt, math.MaxInt) || MemoryFits(math.MinInt, 16) {
		t.Error("MemoryNeedMiB or MemoryFits wrap around near the limits of int")
	}
}

func TestIndexKeepsNoModelOrImageSlices(t *testing.T) {
	h := goodHost()
	h.CPUModels, h.Images = []string{"Skylake-Client"}, []string{"alpine"}
	ix := NewIndex([]Host{h})
	h.CPUModels[0], h.Images[0] = "gone", "gone"
	vm := goodVM()
	vm.CPUFlags, vm.Image = nil, "alpine"
	if fs := ix.Check(vm)[0]; len(fs) != 0 {
		t.Errorf("findings after the caller changed its slices: %+v; want none", fs)
	}
}
