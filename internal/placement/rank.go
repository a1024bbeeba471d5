package placement

import (
	"cmp"
	"errors"
	"fmt"
	"math"
	"slices"
	"strings"
)

// Criterion names, in the order of every breakdown.
const (
	// CriterionCPU scores load per core: 0 load scores 100, 1.0 or more
	// scores 0.
	CriterionCPU = "cpu"
	// CriterionMemory scores the share of the host's memory free after the
	// move: that share, as a percentage.
	CriterionMemory = "memory"
	// CriterionMigrations scores running plus queued migrations against the
	// host's slots: none scores 100, as many as the slots or more scores 0.
	CriterionMigrations = "migrations"
	// CriterionLink scores the migration link's load: idle scores 100, full
	// scores 0.
	CriterionLink = "link"
)

// ErrInvalidWeights is the error Weights.Validate and Recommend wrap when
// weights are unusable.
var ErrInvalidWeights = errors.New("invalid placement weights")

// Weights say how much each criterion counts in a score. Only their ratios
// matter: Recommend normalizes them to sum to 1.
type Weights struct {
	// CPU weighs CriterionCPU.
	CPU float64 `json:"cpu"`
	// Memory weighs CriterionMemory.
	Memory float64 `json:"memory"`
	// Migrations weighs CriterionMigrations.
	Migrations float64 `json:"migrations"`
	// Link weighs CriterionLink.
	Link float64 `json:"link"`
}

// DefaultWeights returns cpu 0.35, memory 0.35, migrations 0.2, link 0.1:
// where the VM will run well counts most, how soon and how fast it gets
// there counts less.
func DefaultWeights() Weights {
	return Weights{CPU: 0.35, Memory: 0.35, Migrations: 0.2, Link: 0.1}
}

// Validate reports weights that are negative, not finite, or all zero.
func (w Weights) Validate() error {
	var errs []error
	for _, c := range w.named() {
		if !isFinite(c.weight) || c.weight < 0 {
			errs = append(errs, fmt.Errorf("weight %s is %v; it must be a finite number of 0 or more", c.name, c.weight))
		}
	}
	if len(errs) == 0 && w.sum() == 0 {
		errs = append(errs, errors.New("all weights are 0; at least one must be positive"))
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("%w: %w", ErrInvalidWeights, err)
	}
	return nil
}

// namedWeight is one weight with its criterion's name.
type namedWeight struct {
	name   string
	weight float64
}

// named returns the weights in breakdown order.
func (w Weights) named() [4]namedWeight {
	return [4]namedWeight{
		{CriterionCPU, w.CPU}, {CriterionMemory, w.Memory},
		{CriterionMigrations, w.Migrations}, {CriterionLink, w.Link},
	}
}

// sum returns the sum of the weights.
func (w Weights) sum() float64 { return w.CPU + w.Memory + w.Migrations + w.Link }

// normalized returns the weights scaled to sum to 1; w must be valid.
func (w Weights) normalized() Weights {
	s := w.sum()
	return Weights{CPU: w.CPU / s, Memory: w.Memory / s, Migrations: w.Migrations / s, Link: w.Link / s}
}

// rounded returns the weights rounded to 4 decimals, for display.
func (w Weights) rounded() Weights {
	return Weights{CPU: round(w.CPU, 4), Memory: round(w.Memory, 4),
		Migrations: round(w.Migrations, 4), Link: round(w.Link, 4)}
}

// Stars rates a score 0..100 like vCenter's recommendations: 5 stars from
// 80, 4 from 60, 3 from 40, 2 from 20, and 1 below.
func Stars(score float64) int {
	switch {
	case score >= 80:
		return 5
	case score >= 60:
		return 4
	case score >= 40:
		return 3
	case score >= 20:
		return 2
	default:
		return 1
	}
}

// Recommend checks every host for vm and ranks the compatible ones. It is
// NewIndex(hosts).Recommend(vm, w), by the DefaultEngine; build an Index to rank many
// VMs against the same hosts.
func Recommend(vm VM, hosts []Host, w Weights) (Recommendation, error) {
	return defaultEngine.Recommend(vm, hosts, w)
}

// Recommend checks every host of the index for vm with the engine's checkers and ranks
// the compatible ones with its scorers: candidates best first by score (rounded to 0.1),
// ties by host name; refused hosts by name, with their errors. It fails only on invalid
// weights.
func (ix *Index) Recommend(vm VM, w Weights) (Recommendation, error) {
	if err := w.Validate(); err != nil {
		return Recommendation{}, fmt.Errorf("recommend a destination for %s: %w", vmLabel(vm.Name), err)
	}
	nw := w.normalized()
	p := ix.prepare(vm)
	rec := Recommendation{
		VM: vm.Name, Source: vm.Host, Weights: nw.rounded(),
		Candidates: []Candidate{}, Refused: []Refusal{},
	}
	for i := range ix.entries {
		e := &ix.entries[i]
		fs, m := ix.engine.evaluate(p, e, true)
		if n := countErrors(fs); n > 0 {
			rec.Refused = append(rec.Refused, Refusal{Host: e.host.Name, Errors: fs[:n:n]})
			continue
		}
		rec.Candidates = append(rec.Candidates, ix.engine.candidate(e.host.Name, &m, nw, fs))
	}
	slices.SortStableFunc(rec.Candidates, byScore)
	slices.SortStableFunc(rec.Refused, func(a, b Refusal) int { return strings.Compare(a.Host, b.Host) })
	return rec, nil
}

// countErrors returns how many findings lead fs with SeverityError; the engine runs the
// error checkers before the warning ones.
func countErrors(fs []Finding) int {
	n := 0
	for n < len(fs) && fs[n].Blocking() {
		n++
	}
	return n
}

// byScore orders candidates best first, then by host name.
func byScore(a, b Candidate) int {
	if c := cmp.Compare(b.Score, a.Score); c != 0 {
		return c
	}
	return strings.Compare(a.Host, b.Host)
}

// scorer is one named scorer of an Engine: it scores one criterion of a compatible host.
type scorer struct {
	name string
	// weight picks the criterion's weight.
	weight func(Weights) float64
	// score is the unrounded criterion score, 0..100.
	score func(*metrics) float64
	// describe is the raw value behind the score, in words.
	describe func(*metrics) string
}

// allScorers are the scorers of every engine, in breakdown order.
var allScorers = []scorer{
	{
		name:     CriterionCPU,
		weight:   func(w Weights) float64 { return w.CPU },
		score:    func(m *metrics) float64 { return 100 * (1 - badness(m.loadPerCore)) },
		describe: func(m *metrics) string { return fmt.Sprintf("load %.2f/core", m.loadPerCore) },
	},
	{
		name:   CriterionMemory,
		weight: func(w Weights) float64 { return w.Memory },
		score:  func(m *metrics) float64 { return 100 * (1 - badness(1-m.freeShare)) }, // the free share, clamped to 0..1
		describe: func(m *metrics) string {
			return fmt.Sprintf("%.1f GiB free after move (%.0f%%)", float64(m.freeAfterMiB)/1024, 100*m.freeShare)
		},
	},
	{
		name:   CriterionMigrations,
		weight: func(w Weights) float64 { return w.Migrations },
		score: func(m *metrics) float64 {
			return 100 * (1 - badness(float64(m.running+m.queued)/float64(m.slots)))
		},
		describe: func(m *metrics) string {
			return fmt.Sprintf("%d running, %d queued of %s", m.running, m.queued, plural(m.slots, "slot", "slots"))
		},
	},
	{
		name:     CriterionLink,
		weight:   func(w Weights) float64 { return w.Link },
		score:    func(m *metrics) float64 { return 100 * (1 - badness(m.link)) },
		describe: func(m *metrics) string { return fmt.Sprintf("link %.0f%% busy", 100*m.link) },
	},
}

// candidate scores a compatible host with the engine's scorers and normalized weights w.
func (en *Engine) candidate(host string, m *metrics, w Weights, warnings []Finding) Candidate {
	if warnings == nil {
		warnings = []Finding{}
	}
	c := Candidate{Host: host, Breakdown: make([]Criterion, len(en.scorers)), Warnings: warnings}
	total := 0.0
	for i, s := range en.scorers {
		raw, weight := s.score(m), s.weight(w)
		contribution := raw * weight
		total += contribution
		c.Breakdown[i] = Criterion{
			Name:         s.name,
			Value:        s.describe(m),
			Score:        round(raw, 1),
			Weight:       round(weight, 4),
			Contribution: round(contribution, 1),
		}
	}
	c.Score = round(total, 1)
	c.Stars = Stars(c.Score)
	return c
}

// badness clamps x to 0..1; NaN, an unknown measure, counts as the worst.
func badness(x float64) float64 {
	switch {
	case math.IsNaN(x) || x > 1:
		return 1
	case x < 0:
		return 0
	}
	return x
}

// round rounds x to the given number of decimals.
func round(x float64, decimals int) float64 {
	p := math.Pow10(decimals)
	return math.Round(x*p) / p
}

// isFinite reports whether x is neither NaN nor infinite.
func isFinite(x float64) bool { return !math.IsNaN(x) && !math.IsInf(x, 0) }
