package migration

import (
	"encoding/json"
	"strings"
	"testing"
	"time"
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
		{"postcopy", func(p *Policy) { p.AllowPostcopy = true }, "post-copy is not implemented"},
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
	for _, key := range []string{`"name":"balanced"`, `"downtime_target":20000000`, `"time_budget":`, `"throttle_max":80`, `"allow_postcopy":false`} {
		if !strings.Contains(string(b), key) {
			t.Errorf("%s lacks %s", b, key)
		}
	}
	var back Policy
	if err := json.Unmarshal(b, &back); err != nil || back != mustPolicy(t, PolicyBalanced) {
		t.Errorf("round trip: %+v, %v", back, err)
	}
}
