package migration

import (
	"fmt"
	"math"
	"time"
)

// The prediction of a migration before it starts: its total time and its downtime, and
// whether it converges without throttling the guest's vCPUs. Predict follows, pass by
// pass, what QEMU and the Controller will do with the guest's measured memory activity
// (MemoryActivity) over the link between the hosts as past migrations measured it
// (Link):
//
//   - the first pass sends every page that holds data whole and every other page as a
//     zero-page marker; QEMU spends zeroPageCost checking each of those;
//   - each later pass sends what the guest dirtied during the pass before, read off the
//     measured curve of memory dirtied over time (MemoryActivity);
//   - QEMU switches over as soon as what is left fits the downtime limit at the link's
//     rate; the pause is that, plus the link's fixed switch-over cost;
//   - when three passes in a row do not shrink by a fifth while the guest dirties at
//     least 80% of what the link carries, the controller acts as Controller.act does:
//     it raises the downtime limit within the policy's maximum when that is enough, or
//     throttles the vCPUs a step more (taking effect throttleDelay later), and at the
//     policy's maximum throttle allows the maximum downtime; with nothing left to try,
//     the migration is cancelled when its time budget runs out.
//
// The fixed costs around the copy (preparing the destination, QEMU's setup, handing
// the VM over) come from the link too.

// Costs measured on the development machine (2 cores, QEMU 10.0, TCG guests), used
// where nothing better is known.
const (
	// zeroPageCost is how long QEMU's migration thread takes per page that is all zeros:
	// 1 GiB of never-written pages (262,144) took 126–139 ms.
	zeroPageCost = 500 * time.Nanosecond
	// zeroPageBytes is what a zero page costs on the wire (2.65 MB for those pages).
	zeroPageBytes = 10
	// pageBytes is what a whole page costs on the wire: its 8-byte header and 4 KiB.
	pageBytes = 4096 + 8
	// DefaultFixed is the time a migration took besides the copy between two hosts with
	// no history: starting the destination QEMU, QEMU's setup and the hand-over; 0.6 to
	// 2.5 s were measured in the lab on a loaded machine, mostly about 0.7 s.
	DefaultFixed = 700 * time.Millisecond
	// DefaultSwitchover is the fixed part of the pause between two hosts with no
	// history: QEMU reported 43–71 ms for idle 1 GiB guests, encrypted, in the lab.
	DefaultSwitchover = 50 * time.Millisecond
	// throttleDelay is how long QEMU takes to apply a throttle step the controller set
	// (see SourceParameters).
	throttleDelay = 2 * time.Second
	// maxPredictedPasses bounds the passes Predict follows.
	maxPredictedPasses = 10000
)

// Link is what is known of the migration path from one host to another.
type Link struct {
	// Rate is what a migration stream carries in whole pages, in bytes/s.
	Rate float64
	// Source says where Rate comes from, e.g. "past migrations host-1→host-2 (4)".
	Source string
	// Fixed is the time a migration takes besides the copy and the pause: preparing the
	// destination (its QEMU's start), QEMU's setup, handing the VM over.
	Fixed time.Duration
	// Switchover is the pause's fixed part: device state, and the destination's load of
	// it and confirmation.
	Switchover time.Duration
}

// PredictInput is what a prediction is made from.
type PredictInput struct {
	// Policy is the migration's policy (downtime target and maximum, bandwidth,
	// throttle steps, time budget).
	Policy Policy
	// MemoryBytes is the guest's memory.
	MemoryBytes float64
	// Activity is the guest's measured memory activity; a zero Measured means none was
	// measured (the guest is then assumed to dirty nothing and all its memory to hold
	// data).
	Activity MemoryActivity
	// ActivitySource says where Activity comes from, e.g. "measured 4 s before".
	ActivitySource string
	// Link is the path to the destination.
	Link Link
	// BandwidthCap caps the stream (its share of the network), in bytes/s; 0: none.
	BandwidthCap int64
}

// Prediction is what Godwit expects of a migration before it starts. Every migration
// keeps the prediction made when it was admitted beside what happened.
type Prediction struct {
	// TotalMS is the expected time from start to the VM running on the destination.
	TotalMS float64 `json:"total_ms"`
	// DowntimeMS is the expected pause (as QEMU reports it).
	DowntimeMS float64 `json:"downtime_ms"`
	// Converges says whether the migration converges without throttling the guest's
	// vCPUs (raising the downtime limit within the policy's maximum counts as
	// converging).
	Converges bool `json:"converges"`
	// ThrottlePercent is the vCPU throttle the migration is expected to need (0: none);
	// GivesUp says that even the policy's limits do not make it converge, so it is
	// cancelled when its time budget runs out (TotalMS is then the budget).
	ThrottlePercent int  `json:"throttle_percent,omitempty"`
	GivesUp         bool `json:"gives_up,omitempty"`
	// Note says the verdict in words.
	Note string `json:"note"`
	// DirtyRateBps is the guest's dirty rate (MemoryActivity.Rate), in bytes/s, and
	// DirtySource where the measurement comes from.
	DirtyRateBps float64 `json:"dirty_rate_bps"`
	DirtySource  string  `json:"dirty_source"`
	// LinkBps is the rate of the stream the prediction used (the link's, within the
	// policy's bandwidth and the migration's cap), in bytes/s, and LinkSource where the
	// link's rate comes from.
	LinkBps    float64 `json:"link_bps"`
	LinkSource string  `json:"link_source"`
	// Bytes is the expected amount sent and Passes the expected dirty-bitmap syncs (as
	// QEMU counts passes: the copy passes and two).
	Bytes  float64 `json:"bytes"`
	Passes int     `json:"passes"`
	// FixedMS and SwitchoverMS are the fixed costs the prediction includes: around the
	// copy (the destination's start, setup, hand-over), and in the pause.
	FixedMS      float64 `json:"fixed_ms"`
	SwitchoverMS float64 `json:"switchover_ms"`
}

// passes is the outcome of following a migration pass by pass.
type passes struct {
	converged bool
	gaveUp    bool
	copyTime  time.Duration // from the start of the first pass to the switch-over
	bytes     float64       // sent, the pause's included
	final     float64       // sent during the pause
	syncs     int
	throttle  int
	limit     time.Duration
}

// Predict predicts a migration (see the package's prediction notes). It is pure.
func Predict(in PredictInput) Prediction {
	p := in.Policy
	rate := in.Link.Rate
	if b := float64(p.bandwidth()); b < rate {
		rate = b
	}
	if c := float64(in.BandwidthCap); c > 0 && c < rate {
		rate = c
	}
	memory := max(in.MemoryBytes, 0)
	act := in.Activity.clean(memory)
	measured := !act.Measured.IsZero()
	data := act.NonzeroBytes
	if !measured || data <= 0 || data > memory {
		data = memory
	}
	pred := Prediction{
		DirtyRateBps: act.Rate(), DirtySource: in.ActivitySource, LinkBps: rate, LinkSource: in.Link.Source,
		FixedMS: millis(in.Link.Fixed), SwitchoverMS: millis(in.Link.Switchover),
	}
	if rate <= 0 || math.IsNaN(rate) || math.IsInf(rate, 0) {
		pred.Note = "no prediction: the rate of the link between the hosts is not known"
		return pred
	}
	zeros := (memory - data) / 4096
	first := copyPlan{bytes: data/4096*pageBytes + zeros*zeroPageBytes,
		time: seconds(data/4096*pageBytes/rate) + time.Duration(zeros)*zeroPageCost}

	plain := p
	plain.ThrottleMax = 0
	free := follow(plain, act, memory, rate, first)
	out := free
	pred.Converges = free.converged
	if !free.converged && p.throttles() {
		out = follow(p, act, memory, rate, first)
	}
	pred.ThrottlePercent, pred.GivesUp = out.throttle, !out.converged
	pred.Bytes, pred.Passes = out.bytes, out.syncs
	if out.converged {
		pred.DowntimeMS = millis(seconds(out.final/rate) + in.Link.Switchover)
		pred.TotalMS = millis(in.Link.Fixed+out.copyTime) + pred.DowntimeMS
	} else {
		pred.TotalMS = millis(p.TimeBudget)
	}
	pred.Note = note(p, act, measured, rate, free, out)
	return pred
}

// copyPlan is the first pass: what it sends and how long it takes.
type copyPlan struct {
	bytes float64
	time  time.Duration
}

// follow follows one migration under policy p, pass by pass, until it switches over,
// or until the controller has nothing left to try or the time budget runs out.
func follow(p Policy, act MemoryActivity, memory, rate float64, first copyPlan) passes {
	out := passes{bytes: first.bytes, syncs: 2, limit: p.DowntimeTarget}
	elapsed, last := first.time, first.time
	var window []float64 // dirty sets since the controller last acted
	throttleWant, throttleFrom := 0, time.Duration(-1)
	for range maxPredictedPasses {
		if throttleFrom >= 0 && elapsed >= throttleFrom {
			out.throttle, throttleFrom, window = throttleWant, -1, nil
		}
		dirty := act.dirtied(last, out.throttle, memory)
		if dirty <= rate*out.limit.Seconds() {
			out.converged, out.final = true, dirty
			out.bytes += dirty / 4096 * pageBytes
			out.syncs++
			out.copyTime = elapsed
			return out
		}
		observed := dirty / last.Seconds()
		last = seconds(dirty / rate)
		elapsed += last
		out.bytes += dirty / 4096 * pageBytes
		out.syncs++
		if elapsed >= p.TimeBudget {
			break
		}
		if throttleFrom >= 0 {
			continue // the controller judges a throttle step on passes run under it
		}
		window = append(window, dirty)
		n := len(window)
		if n < stallWindow || dirty < shrinkRatio*window[n-stallWindow] || observed < convergeRatio*rate {
			continue
		}
		window = nil
		needed := roundUpMs(seconds(dirty / rate * downtimeMargin))
		most := p.downtimeMax()
		if needed <= most {
			if limit := min(max(needed, roundUpMs(out.limit*3/2)), most); limit > out.limit {
				out.limit = limit
				continue
			}
		}
		if p.throttles() && throttleWant < p.ThrottleMax {
			if throttleWant == 0 {
				throttleWant = p.ThrottleInitial
			} else {
				throttleWant = min(throttleWant+max(p.ThrottleStep, 1), p.ThrottleMax)
			}
			throttleFrom = elapsed + throttleDelay
			continue
		}
		if out.limit < most {
			out.limit = most
			continue
		}
		break // at the policy's limits: the controller waits for the budget to run out
	}
	out.throttle = max(out.throttle, throttleWant)
	out.copyTime = p.TimeBudget
	return out
}

// note says a prediction's verdict in words.
func note(p Policy, act MemoryActivity, measured bool, rate float64, free, out passes) string {
	dirty := act.Rate()
	s := ""
	if !measured {
		s = "the guest's dirty rate is not measured yet, so the prediction assumes it dirties nothing and that all its memory holds data; "
	}
	set := ""
	if l := act.longest(); l.PeriodMS > 0 && dirty > 0 {
		set = fmt.Sprintf(", %s in %v", fmtBytes(l.Bytes), time.Duration(l.PeriodMS*float64(time.Millisecond)))
	}
	if free.converged {
		s += fmt.Sprintf("converges without throttling in %d %s: the guest dirties %s/s%s and the link carries %s/s",
			free.syncs-2, plural(free.syncs-2, "pass", "passes"), fmtBytes(dirty), set, fmtBytes(rate))
		if free.limit > p.DowntimeTarget {
			s += fmt.Sprintf("; the downtime limit is raised to %v (target %v)", free.limit, p.DowntimeTarget)
		}
		return s
	}
	if dirty >= rate {
		s += fmt.Sprintf("does not converge without throttling: the guest dirties memory (%s/s%s) faster than the link carries it (%s/s)",
			fmtBytes(dirty), set, fmtBytes(rate))
	} else {
		s += fmt.Sprintf("does not converge without throttling: the guest dirties %s/s%s, nearly what the link carries (%s/s), more than the policy's maximum downtime of %v absorbs",
			fmtBytes(dirty), set, fmtBytes(rate), p.downtimeMax())
	}
	switch {
	case !p.throttles():
		return s + fmt.Sprintf("; policy %s does not throttle vCPUs, so the migration is cancelled when its time budget of %v runs out", p.Name, p.TimeBudget)
	case out.converged:
		return s + fmt.Sprintf("; throttling the vCPUs to %d%% (policy %s allows up to %d%%) makes it converge", out.throttle, p.Name, p.ThrottleMax)
	}
	return s + fmt.Sprintf("; even with the vCPUs throttled to policy %s's maximum of %d%% it does not, so the migration is cancelled when its time budget of %v runs out",
		p.Name, p.ThrottleMax, p.TimeBudget)
}

// LinkObservation is what one finished migration tells of its link (Observe).
type LinkObservation struct {
	// Rate is what the stream carried in whole pages, in bytes/s.
	Rate float64
	// Fixed is the time spent besides the copy and the pause.
	Fixed time.Duration
	// Switchover is the pause's fixed part: the pause less what the prediction expected
	// to send during it.
	Switchover time.Duration
}

// Observe reads what a migration that completed tells of its link, splitting its time
// the way Predict adds it up: total is the whole migration, stream the time from the
// start of QEMU's migration to its end (setup, copy and pause), downtime QEMU's pause,
// bytes what it sent and memory the guest's memory. pred, when not nil, is the
// prediction made for it, whose expected final pass is taken out of the pause. ok is
// false when the numbers do not add up to a measurement.
func Observe(total, stream, downtime time.Duration, bytes, memory float64, pred *Prediction) (LinkObservation, bool) {
	pages := memory / 4096
	if pages <= 0 || bytes <= 0 || stream <= 0 || total < stream || downtime < 0 {
		return LinkObservation{}, false
	}
	// Whole pages and zero pages of a first pass that sent bytes.
	whole := min(max((bytes-pages*zeroPageBytes)/(pageBytes-zeroPageBytes), 0), pages)
	copying := stream - downtime - time.Duration(pages-whole)*zeroPageCost
	if copying <= 0 || whole == 0 {
		return LinkObservation{}, false
	}
	o := LinkObservation{Rate: whole * pageBytes / copying.Seconds(), Fixed: total - stream, Switchover: downtime}
	if pred != nil && pred.LinkBps > 0 {
		expected := time.Duration((pred.DowntimeMS - pred.SwitchoverMS) * float64(time.Millisecond))
		o.Switchover = max(downtime-expected, 0)
	}
	return o, true
}

// seconds converts seconds to a Duration.
func seconds(s float64) time.Duration { return time.Duration(s * float64(time.Second)) }

// millis converts a Duration to milliseconds.
func millis(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }

// plural returns one or many by n.
func plural(n int, one, many string) string {
	if n == 1 {
		return one
	}
	return many
}
