package migration

import (
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/godwit/godwit/internal/qmp"
)

func TestDefaultPoliciesAreValidAndFresh(t *testing.T) {
	ps := DefaultPolicies()
	if len(ps) < 3 || ps[0].Name != DefaultPolicyName {
		t.Fatalf("policies %v: want at least three, the default first", PolicyNames())
	}
	for _, p := range ps {
		if err := p.Validate(); err != nil {
			t.Errorf("%s: %v", p.Name, err)
		}
		if p.AllowPostcopy {
			t.Errorf("%s allows post-copy", p.Name)
		}
	}
	ps[0].DowntimeTarget = time.Hour
	if DefaultPolicies()[0].DowntimeTarget == time.Hour {
		t.Error("changing the returned table changed the defaults")
	}

	fast, safe, bal := mustPolicy(t, PolicyFastSwitchover), mustPolicy(t, PolicySafe), mustPolicy(t, PolicyBalanced)
	for _, p := range []Policy{bal, safe} {
		if fast.DowntimeTarget >= p.DowntimeTarget || fast.downtimeMax() > p.downtimeMax() {
			t.Errorf("fast-switchover (%v, up to %v) is not the tightest compared with %s (%v, up to %v)",
				fast.DowntimeTarget, fast.downtimeMax(), p.Name, p.DowntimeTarget, p.downtimeMax())
		}
	}
	if safe.ThrottleMax > 50 || safe.TimeBudget <= bal.TimeBudget {
		t.Errorf("safe throttles up to %d%% with a budget of %v; want at most 50%% and a longer budget than balanced's %v",
			safe.ThrottleMax, safe.TimeBudget, bal.TimeBudget)
	}
}

func TestLookupPolicy(t *testing.T) {
	p, err := LookupPolicy("")
	if err != nil || p.Name != PolicyBalanced {
		t.Errorf(`LookupPolicy("") = %v, %v; want balanced`, p.Name, err)
	}
	p, err = LookupPolicy(PolicySafe)
	if err != nil || p.Name != PolicySafe {
		t.Errorf("LookupPolicy(safe) = %v, %v", p.Name, err)
	}
	_, err = LookupPolicy("turbo")
	if err == nil || !strings.Contains(err.Error(), `"turbo"`) || !strings.Contains(err.Error(), "balanced, fast-switchover, safe") {
		t.Errorf("LookupPolicy(turbo) error %v: want the name and the list of policies", err)
	}
}

func TestPolicyValidate(t *testing.T) {
	good := mustPolicy(t, PolicyBalanced)
	for _, tc := range []struct {
		name   string
		change func(*Policy)
		want   string
	}{
		{"no name", func(p *Policy) { p.Name = "" }, "has no name"},
		{"zero downtime", func(p *Policy) { p.DowntimeTarget = 0 }, "at least 1ms"},
		{"huge downtime", func(p *Policy) { p.DowntimeTarget = time.Hour; p.DowntimeMax = 0 }, "at most 33m20s"},
		{"max below target", func(p *Policy) { p.DowntimeMax = time.Millisecond }, "maximum downtime is 1ms"},
		{"negative bandwidth", func(p *Policy) { p.MaxBandwidth = -1 }, "bandwidth limit"},
		{"no budget", func(p *Policy) { p.TimeBudget = 0 }, "time budget"},
		{"channels", func(p *Policy) { p.Channels = 256 }, "multifd channels"},
		{"throttle max", func(p *Policy) { p.ThrottleMax = 100 }, "maximum vCPU throttle is 100%"},
		{"throttle initial", func(p *Policy) { p.ThrottleInitial = 90 }, "initial vCPU throttle is 90%"},
		{"throttle step", func(p *Policy) { p.ThrottleStep = 0 }, "throttle step is 0%"},
	} {
		p := good
		tc.change(&p)
		err := p.Validate()
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: Validate() = %v, want an error saying %q", tc.name, err, tc.want)
		}
	}
	// Every problem is reported, not just the first.
	err := Policy{Name: "x", ThrottleMax: 100, Channels: -1}.Validate()
	if err == nil || strings.Count(err.Error(), "\n") < 3 {
		t.Errorf("Validate() = %v, want every problem on its own line", err)
	}
	// No throttling at all is valid.
	p := good
	p.ThrottleMax, p.ThrottleInitial, p.ThrottleStep, p.DowntimeMax = 0, 0, 0, 0
	if err := p.Validate(); err != nil {
		t.Errorf("a policy that never throttles: %v", err)
	}
}

func TestPolicyJSON(t *testing.T) {
	b, err := json.Marshal(mustPolicy(t, PolicyBalanced))
	if err != nil {
		t.Fatal(err)
	}
	for _, key := range []string{`"name":"balanced"`, `"downtime_target":5000000`, `"time_budget":`, `"throttle_max":80`, `"allow_postcopy":false`} {
		if !strings.Contains(string(b), key) {
			t.Errorf("%s lacks %s", b, key)
		}
	}
	var back Policy
	if err := json.Unmarshal(b, &back); err != nil || back != mustPolicy(t, PolicyBalanced) {
		t.Errorf("round trip: %+v, %v", back, err)
	}
}

func TestQEMUDefaultsPolicyLeavesQEMUsDefaults(t *testing.T) {
	p := mustPolicy(t, PolicyQEMUDefaults)
	if err := p.Validate(); err != nil {
		t.Fatal(err)
	}
	if p != QEMUDefaultsPolicy() {
		t.Errorf("LookupPolicy(%s) = %+v, want %+v", PolicyQEMUDefaults, p, QEMUDefaultsPolicy())
	}
	for _, name := range PolicyNames() {
		if name == PolicyQEMUDefaults {
			t.Errorf("the benchmark baseline %s is listed among the policies to run VMs with", name)
		}
	}
	// The parameters Run sets are QEMU 10's defaults: downtime-limit 300 ms,
	// max-bandwidth 128 MiB/s, avail-switchover-bandwidth 0; nothing else.
	mp := SourceParameters(p)
	if mp.DowntimeLimit == nil || *mp.DowntimeLimit != 300 || mp.MaxBandwidth == nil || *mp.MaxBandwidth != 128<<20 ||
		mp.AvailSwitchoverBandwidth == nil || *mp.AvailSwitchoverBandwidth != 0 {
		t.Errorf("source parameters %+v: want QEMU's defaults (300 ms, 128 MiB/s, 0)", mp)
	}
	mp.DowntimeLimit, mp.MaxBandwidth, mp.AvailSwitchoverBandwidth = nil, nil, nil
	if b, err := json.Marshal(mp); err != nil || string(b) != "{}" {
		t.Errorf("source parameters set more than QEMU's defaults: %s %v", b, err)
	}
	caps := SourceCapabilities(p)
	for _, c := range []string{"multifd", "auto-converge", "postcopy-ram", "xbzrle"} {
		if caps[c] {
			t.Errorf("capability %s is on", c)
		}
	}
	if DestinationCapabilities(p)["return-path"] != caps["return-path"] {
		t.Error("return-path differs between source and destination")
	}

	// The controller never changes anything, even for a migration that does not
	// converge (a guest rewriting 64 MiB at 500 MB/s over 100 MB/s), until the
	// budget of a day runs out.
	r := simulate(p, newSim(1024, 100*mb, 500*mb, 64*mib), 2*time.Minute)
	for _, d := range r.decisions {
		if d.Changes() {
			t.Errorf("the controller acted under %s: %+v", p.Name, d.Decision)
		}
	}
	if r.result.MaxThrottle != 0 {
		t.Errorf("throttled to %d%%", r.result.MaxThrottle)
	}
	if p.TimeBudget < 24*time.Hour {
		t.Errorf("time budget %v; the baseline should practically never cancel", p.TimeBudget)
	}
}

// TestQEMUTunedPolicy checks the hand-tuned baseline sets exactly what its user would.
func TestQEMUTunedPolicy(t *testing.T) {
	p, err := LookupPolicy(PolicyQEMUTuned)
	if err != nil {
		t.Fatal(err)
	}
	if err := p.Validate(); err != nil {
		t.Fatal(err)
	}
	sc, dc := SourceCapabilities(p), DestinationCapabilities(p)
	if sc[qmp.CapReturnPath] || dc[qmp.CapReturnPath] || !sc[qmp.CapAutoConverge] || sc[qmp.CapPauseBeforeSwitchover] {
		t.Errorf("capabilities: source %v, destination %v; want no return path, QEMU's auto-converge", sc, dc)
	}
	sp := SourceParameters(p)
	if *sp.DowntimeLimit != 5 || *sp.MaxBandwidth != 10<<30 || *sp.CPUThrottleInitial != 20 ||
		*sp.CPUThrottleIncrement != 10 || *sp.MaxCPUThrottle != 99 || *sp.ThrottleTriggerThreshold != 50 {
		t.Errorf("source parameters %+v", sp)
	}
	dp := DestinationParameters(p)
	if *dp.AnnounceInitial != 1 || *dp.AnnounceStep != 10 || *dp.AnnounceRounds != 5 {
		t.Errorf("destination announce %d/%d/%d; want 1 ms, 10 ms, 5 rounds", *dp.AnnounceInitial, *dp.AnnounceStep, *dp.AnnounceRounds)
	}
	// Godwit's own policies keep the return path and their announce timing.
	b, _ := LookupPolicy("")
	if !SourceCapabilities(b)[qmp.CapReturnPath] || *DestinationParameters(b).AnnounceInitial != AnnounceInitial.Milliseconds() {
		t.Error("the default policy lost the return path or its announce timing")
	}
}
