// Package balance decides how to even out the load of a cluster's hosts, the way DRS
// and Proxmox's CRS do: a pure function of a model of hosts and VMs, so that the
// center's balancer loop and a simulator run the same code.
//
// A host's load is max(CPU, memory): the cores its VMs use over its threads, and the
// memory its VMs have over its memory. The imbalance is the standard deviation of the
// hosts' loads. Its target at aggressiveness level L (1–5) is (5−L)/(10·√n), DRS's
// rule: level 3 on four hosts tolerates 0.10, level 5 any imbalance, level 1 none is
// acted on (only mandatory moves, which are not the balancer's). A move is one VM to
// one host; it is accepted only if it lowers the imbalance by at least the margin
// (10 % by default), does not make the destination busier than the source is left
// (never swap the hotspot), is allowed there (the placement engine's word), and the VM
// is not in its cooldown nor going back to a host it left recently. Of those accepted,
// the one that leaves the least imbalance wins; the best rejected ones are kept, each
// with why.
package balance

import (
	"fmt"
	"math"
	"slices"
	"time"
)

// Host is one host of the model: its capacity and the VMs it runs.
type Host struct {
	Name      string
	Threads   int
	MemoryMiB int
	VMs       []VM
}

// VM is one running VM: the cores it uses (smoothed) and its memory.
type VM struct {
	Name      string
	CPU       float64
	MemoryMiB int
}

// Params are what a round decides with.
type Params struct {
	// Level is the aggressiveness, 1 to 5.
	Level int
	// Margin is the least relative drop of the imbalance a move must bring (0.10).
	Margin float64
	// Now is the round's time.
	Now time.Time
	// CooldownUntil holds, per VM, until when the balancer leaves it where it is.
	CooldownUntil map[string]time.Time
	// Left holds, per VM, the hosts it left recently, and until when it may not go back.
	Left map[string]map[string]time.Time
	// Allowed says whether vm may move to host and, if not, why (the placement
	// engine's first refusal).
	Allowed func(vm, host string) (bool, string)
}

// Move is a recommended move with its numbers.
type Move struct {
	VM, From, To string
	// Imbalance before and after; the loads of the source and destination, before and
	// after.
	Before, After                        float64
	FromLoad, FromAfter, ToLoad, ToAfter float64
}

// Rejected is a move considered and turned down.
type Rejected struct {
	VM, To string
	After  float64 // the imbalance it would have left
	Reason string
}

// Result is a round's decision.
type Result struct {
	// Loads are the hosts' loads, by host.
	Loads map[string]float64
	// Imbalance and Target: the standard deviation of the loads, and its target at
	// the level.
	Imbalance, Target float64
	// Move is the best accepted move; nil when none is (or none is needed).
	Move *Move
	// Rejected are the best rejected moves (at most MaxRejected), least imbalance first.
	Rejected []Rejected
	// Note says in words why there is no move, when there is none.
	Note string
}

// MaxRejected is how many rejected moves a result keeps.
const MaxRejected = 3

// DefaultMargin is the least relative drop of the imbalance a move must bring.
const DefaultMargin = 0.10

// Target is the imbalance tolerated at level (1–5) on n hosts: +Inf at level 1.
func Target(level, n int) float64 {
	if level <= 1 || n < 2 {
		return math.Inf(1)
	}
	return float64(5-level) / (10 * math.Sqrt(float64(n)))
}

// Load is a host's load: max(CPU, memory), each a fraction of the host's capacity.
func Load(h Host) float64 {
	var cpu float64
	mem := 0
	for _, v := range h.VMs {
		cpu += v.CPU
		mem += v.MemoryMiB
	}
	var c, m float64
	if h.Threads > 0 {
		c = cpu / float64(h.Threads)
	}
	if h.MemoryMiB > 0 {
		m = float64(mem) / float64(h.MemoryMiB)
	}
	return math.Max(c, m)
}

// stddev is the population standard deviation of xs.
func stddev(xs []float64) float64 {
	if len(xs) == 0 {
		return 0
	}
	var mean float64
	for _, x := range xs {
		mean += x
	}
	mean /= float64(len(xs))
	var ss float64
	for _, x := range xs {
		ss += (x - mean) * (x - mean)
	}
	return math.Sqrt(ss / float64(len(xs)))
}

// Recommend decides one round: the best single move, if the imbalance is over its
// target and some move pays, and the best moves it turned down.
func Recommend(hosts []Host, p Params) Result {
	if p.Margin <= 0 {
		p.Margin = DefaultMargin
	}
	res := Result{Loads: map[string]float64{}}
	loads := make([]float64, len(hosts))
	mean := 0.0
	for i, h := range hosts {
		loads[i] = Load(h)
		res.Loads[h.Name] = loads[i]
		mean += loads[i]
	}
	if len(hosts) > 0 {
		mean /= float64(len(hosts))
	}
	res.Imbalance, res.Target = stddev(loads), Target(p.Level, len(hosts))
	if res.Imbalance <= res.Target {
		res.Note = fmt.Sprintf("imbalance %.3f is within the target %.3f of level %d", res.Imbalance, res.Target, p.Level)
		return res
	}
	var rejected []Rejected
	after := make([]float64, len(loads))
	for si, src := range hosts {
		if loads[si] <= mean {
			continue // only the busier hosts give VMs away
		}
		for _, v := range src.VMs {
			for di := range hosts {
				if di == si {
					continue
				}
				mv, why := evaluate(hosts, loads, si, di, v, res.Imbalance, p, after)
				if why != "" {
					rejected = append(rejected, Rejected{VM: v.Name, To: hosts[di].Name, After: mv.After, Reason: why})
					continue
				}
				sigma := mv.After
				if res.Move == nil || sigma < res.Move.After-1e-12 {
					if res.Move != nil {
						prev := *res.Move
						rejected = append(rejected, Rejected{VM: prev.VM, To: prev.To, After: prev.After, Reason: fmt.Sprintf("leaves more imbalance (%.3f) than the move chosen", prev.After)})
					}
					res.Move = &mv
				} else {
					rejected = append(rejected, Rejected{VM: v.Name, To: hosts[di].Name, After: sigma, Reason: fmt.Sprintf("leaves more imbalance (%.3f) than the move chosen", sigma)})
				}
			}
		}
	}
	slices.SortStableFunc(rejected, func(a, b Rejected) int {
		switch {
		case a.After < b.After:
			return -1
		case a.After > b.After:
			return 1
		}
		return 0
	})
	if len(rejected) > MaxRejected {
		rejected = rejected[:MaxRejected]
	}
	res.Rejected = rejected
	if res.Move == nil {
		res.Note = fmt.Sprintf("imbalance %.3f is over the target %.3f, but no move pays", res.Imbalance, res.Target)
	}
	return res
}

// evaluate is the move of v from hosts[si] to hosts[di], with the loads (loads) and the
// imbalance as they are, and why it is turned down ("" when it is not). scratch holds
// len(loads) floats.
func evaluate(hosts []Host, loads []float64, si, di int, v VM, imbalance float64, p Params, scratch []float64) (Move, string) {
	src, dst := hosts[si], hosts[di]
	s2 := src
	s2.VMs = slices.DeleteFunc(slices.Clone(src.VMs), func(x VM) bool { return x.Name == v.Name })
	d2 := dst
	d2.VMs = append(slices.Clone(dst.VMs), v)
	copy(scratch, loads)
	scratch[si], scratch[di] = Load(s2), Load(d2)
	sigma := stddev(scratch)
	mv := Move{VM: v.Name, From: src.Name, To: dst.Name, Before: imbalance, After: sigma,
		FromLoad: loads[si], FromAfter: scratch[si], ToLoad: loads[di], ToAfter: scratch[di]}
	if until, ok := p.CooldownUntil[v.Name]; ok && p.Now.Before(until) {
		return mv, fmt.Sprintf("moved by the balancer lately; cooldown until %s", until.UTC().Format(time.RFC3339))
	}
	if until, ok := p.Left[v.Name][dst.Name]; ok && p.Now.Before(until) {
		return mv, fmt.Sprintf("left %s lately; no move back before %s", dst.Name, until.UTC().Format(time.RFC3339))
	}
	switch {
	case scratch[di] > scratch[si]+1e-9:
		return mv, fmt.Sprintf("would make %s (%.2f) busier than %s is left (%.2f): the hotspot would only move", dst.Name, scratch[di], src.Name, scratch[si])
	case imbalance <= 0 || (imbalance-sigma)/imbalance < p.Margin:
		return mv, fmt.Sprintf("lowers the imbalance only from %.3f to %.3f, less than the %.0f %% margin", imbalance, sigma, 100*p.Margin)
	}
	if p.Allowed != nil {
		if ok, why := p.Allowed(v.Name, dst.Name); !ok {
			return mv, why
		}
	}
	return mv, ""
}

// Check evaluates one given move — vm to host to — as Recommend would: its numbers, and
// why it is turned down ("" when it still pays). A recommendation is kept while it does,
// rather than replaced by one a little better each round.
func Check(hosts []Host, p Params, vm, to string) (Move, string) {
	if p.Margin <= 0 {
		p.Margin = DefaultMargin
	}
	loads := make([]float64, len(hosts))
	si, di := -1, -1
	var v VM
	for i, h := range hosts {
		loads[i] = Load(h)
		if h.Name == to {
			di = i
		}
		for _, x := range h.VMs {
			if x.Name == vm {
				si, v = i, x
			}
		}
	}
	if si < 0 || di < 0 || si == di {
		return Move{VM: vm, To: to}, fmt.Sprintf("%s no longer runs on a balanced host other than %s", vm, to)
	}
	imbalance := stddev(loads)
	if imbalance <= Target(p.Level, len(hosts)) {
		return Move{VM: vm, From: hosts[si].Name, To: to, Before: imbalance, After: imbalance},
			fmt.Sprintf("the imbalance %.3f is within the target %.3f now", imbalance, Target(p.Level, len(hosts)))
	}
	return evaluate(hosts, loads, si, di, v, imbalance, p, make([]float64, len(loads)))
}
