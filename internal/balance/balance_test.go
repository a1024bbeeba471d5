package balance

import (
	"math"
	"strings"
	"testing"
	"time"
)

func host(name string, vms ...VM) Host {
	return Host{Name: name, Threads: 4, MemoryMiB: 64 << 10, VMs: vms}
}

func busy(name string, cpu float64) VM { return VM{Name: name, CPU: cpu, MemoryMiB: 1024} }

// Two busy VMs on one host of two: one moves to the idle host, which evens the loads.
func TestRecommendEvensASkewedPair(t *testing.T) {
	hosts := []Host{host("h1", busy("a", 2), busy("b", 1.5)), host("h2")}
	res := Recommend(hosts, Params{Level: 3, Now: time.Now()})
	if res.Move == nil {
		t.Fatalf("no move: %s", res.Note)
	}
	m := res.Move
	// a (2 cores) would leave h2 busier than h1: the hotspot would only move.
	if m.From != "h1" || m.To != "h2" || m.VM != "b" {
		t.Errorf("move %+v; want b from h1 to h2", m)
	}
	if !(m.After < m.Before) || m.ToAfter > m.FromAfter+1e-9 {
		t.Errorf("move %+v: want less imbalance, and the destination no busier than the source left", m)
	}
	if math.Abs(res.Loads["h1"]-0.875) > 1e-9 || res.Imbalance <= res.Target {
		t.Errorf("loads %v, imbalance %v, target %v", res.Loads, res.Imbalance, res.Target)
	}
}

// Balanced, or one VM alone (no move can beat the margin without swapping the
// hotspot), or level 1: no move.
func TestRecommendLeavesWhatShouldStay(t *testing.T) {
	now := time.Now()
	for _, tc := range []struct {
		name  string
		hosts []Host
		level int
		note  string
	}{
		{"balanced", []Host{host("h1", busy("a", 1)), host("h2", busy("b", 1))}, 5, "within the target"},
		{"a single busy VM", []Host{host("h1", busy("a", 3)), host("h2")}, 5, "no move pays"},
		{"level 1", []Host{host("h1", busy("a", 2), busy("b", 2)), host("h2")}, 1, "within the target"},
	} {
		res := Recommend(tc.hosts, Params{Level: tc.level, Now: now})
		if res.Move != nil || !strings.Contains(res.Note, tc.note) {
			t.Errorf("%s: move %+v, note %q; want none, saying %q", tc.name, res.Move, res.Note, tc.note)
		}
	}
	// The single busy VM: its move is rejected as moving the hotspot.
	res := Recommend([]Host{host("h1", busy("a", 3)), host("h2")}, Params{Level: 5, Now: now})
	if len(res.Rejected) != 1 || !strings.Contains(res.Rejected[0].Reason, "hotspot") {
		t.Errorf("rejected: %+v; want the move of a, as moving the hotspot", res.Rejected)
	}
}

// Cooldown, no move back, and the placement engine's refusal each turn a move down,
// with the reason; once the cooldown is over, the move is taken.
func TestRecommendHonoursCooldownReturnAndPlacement(t *testing.T) {
	now := time.Now()
	hosts := []Host{host("h1", busy("a", 2), busy("b", 1.5)), host("h2"), host("h3", busy("c", 0.5))}
	reasons := func(res Result) string {
		var rs []string
		for _, r := range res.Rejected {
			rs = append(rs, r.VM+"→"+r.To+": "+r.Reason)
		}
		return strings.Join(rs, "; ")
	}
	cool := map[string]time.Time{"b": now.Add(time.Minute)}
	res := Recommend(hosts, Params{Level: 3, Now: now, CooldownUntil: cool})
	if res.Move != nil || !strings.Contains(reasons(res), "cooldown") {
		t.Errorf("b in its cooldown: move %+v, rejected %q; want none, saying cooldown", res.Move, reasons(res))
	}
	res = Recommend(hosts, Params{Level: 3, Now: now,
		Left: map[string]map[string]time.Time{"b": {"h2": now.Add(time.Hour)}},
		Allowed: func(vm, h string) (bool, string) {
			if h == "h3" {
				return false, "host h3 lacks network lab"
			}
			return true, ""
		}})
	if res.Move != nil || !strings.Contains(reasons(res), "no move back") || !strings.Contains(reasons(res), "lacks network lab") {
		t.Errorf("b just left h2, h3 refused: move %+v, rejected %q; want none, saying both", res.Move, reasons(res))
	}
	res = Recommend(hosts, Params{Level: 3, Now: now.Add(2 * time.Minute), CooldownUntil: cool})
	if res.Move == nil || res.Move.VM != "b" {
		t.Fatalf("after the cooldown: %+v; want b to move", res.Move)
	}
}

// Target follows DRS: level 3 on 4 hosts is 0.10, level 5 is 0, level 1 never acts.
func TestTarget(t *testing.T) {
	if got := Target(3, 4); math.Abs(got-0.1) > 1e-12 {
		t.Errorf("level 3, 4 hosts: %v; want 0.10", got)
	}
	if Target(5, 9) != 0 || !math.IsInf(Target(1, 4), 1) || !math.IsInf(Target(3, 1), 1) {
		t.Error("level 5 must tolerate nothing, level 1 and a single host everything")
	}
}

// Check: a given move that still pays passes; one that would move the hotspot, one of a
// VM no longer there, or any once the imbalance is within target, each say why not.
func TestCheck(t *testing.T) {
	now := time.Now()
	hosts := []Host{host("h1", busy("a", 2), busy("b", 1.5)), host("h2")}
	p := Params{Level: 3, Now: now}
	if mv, why := Check(hosts, p, "b", "h2"); why != "" || mv.From != "h1" || !(mv.After < mv.Before) {
		t.Errorf("b to h2: %+v %q; want it to pay", mv, why)
	}
	if _, why := Check(hosts, p, "a", "h2"); !strings.Contains(why, "hotspot") {
		t.Errorf("a to h2: %q; want the hotspot refusal", why)
	}
	if _, why := Check(hosts, p, "gone", "h2"); why == "" {
		t.Error("a VM no longer there passed")
	}
	even := []Host{host("h1", busy("a", 1)), host("h2", busy("b", 1))}
	if _, why := Check(even, p, "a", "h2"); !strings.Contains(why, "within the target") {
		t.Errorf("an even cluster: %q; want within the target", why)
	}
}
