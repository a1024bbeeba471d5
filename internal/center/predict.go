package center

import (
	"context"
	"fmt"
	"net/http"
	"net/url"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/godwit/godwit/internal/api"
	"github.com/godwit/godwit/internal/migration"
	"github.com/godwit/godwit/internal/store"
)

// Predictions of migrations (migration.Predict): the VM's memory activity comes from its
// host, which measures it every 30 s, and again on request (about 5 s) when its newest is
// older than checkMaxAge for a check or the wizard, admitMaxAge for a migration about to
// start; the link between the two hosts is what past migrations between them achieved,
// either way, kept per encryption as moving averages, or, with no history, what
// migrations between other hosts achieved, or else the migration network's configured
// rate. Every prediction says which it used.

const (
	// checkMaxAge is the oldest memory measurement a check or the wizard uses, and
	// admitMaxAge the oldest a migration about to start uses: the hosts measure every
	// VM every 30 s unless it is migrating, and its measurement moves with it, so a
	// migration waits for a measurement only when a VM has none or moved for minutes.
	checkMaxAge = 10 * time.Second
	admitMaxAge = 2 * time.Minute
	// linkAlpha is the weight of the newest migration in a link's moving averages: half,
	// since a link's rate follows the load of the hosts at its ends, which changes (on
	// the development machine the median error of predicted total times was 0.23 with
	// 0.5, 0.25 with 0.3).
	linkAlpha = 0.5
	// cappedShare: a migration whose stream ran at this share of its cap or more was
	// held back by the cap, so its rate says only that the link is at least as fast.
	cappedShare = 0.9
	// historySeed is how many stored migrations the link averages start from.
	historySeed = 500
)

// linkKey names the link between two hosts, either way, encrypted or in the clear.
type linkKey struct {
	a, b      string // a < b
	encrypted bool
}

// keyOf is the key of the link between two hosts.
func keyOf(from, to string, encrypted bool) linkKey {
	if to < from {
		from, to = to, from
	}
	return linkKey{from, to, encrypted}
}

// linkStat is what the migrations of one linkKey achieved: moving averages.
type linkStat struct {
	rate, fixed, switchover float64 // bytes/s, seconds, seconds
	rates, others           int     // migrations averaged into rate and into the rest
}

// links keeps what past migrations achieved between each pair of hosts.
type links struct {
	mu    sync.Mutex
	stats map[linkKey]*linkStat
}

func newLinks() *links { return &links{stats: map[linkKey]*linkStat{}} }

// learn adds a migration that succeeded to its link's averages. A stream held back by
// its bandwidth cap or its policy's bandwidth says only that the link is at least that
// fast: its rate counts only when it beats the average.
func (l *links) learn(m api.Migration) {
	if m.State != api.MigrationSucceeded {
		return
	}
	o, ok := migration.Observe(dur(m.TotalMS), dur(m.Progress.ElapsedMS), dur(m.DowntimeMS), float64(m.Bytes),
		float64(m.Progress.TotalBytes), m.Prediction)
	if !ok {
		return
	}
	limit := float64(m.BandwidthCap)
	if p, err := migration.LookupPolicy(m.Policy); err == nil && p.MaxBandwidth > 0 && (limit == 0 || float64(p.MaxBandwidth) < limit) {
		limit = float64(p.MaxBandwidth)
	}
	capped := limit > 0 && o.Rate >= cappedShare*limit
	l.mu.Lock()
	defer l.mu.Unlock()
	k := keyOf(m.Source, m.Destination, m.Encrypted)
	s := l.stats[k]
	if s == nil {
		s = &linkStat{}
		l.stats[k] = s
	}
	if !capped || (s.rates > 0 && o.Rate > s.rate) {
		s.rate = average(s.rate, o.Rate, s.rates)
		s.rates++
	}
	s.fixed = average(s.fixed, o.Fixed.Seconds(), s.others)
	s.switchover = average(s.switchover, o.Switchover.Seconds(), s.others)
	s.others++
}

// average is the moving average of old (over n values) with v.
func average(old, v float64, n int) float64 {
	if n == 0 {
		return v
	}
	return old + linkAlpha*(v-old)
}

// link returns what is known of the link from one host to another: the pair's history
// (both ways: links are symmetric, and the two directions together follow a change of
// the hosts' load sooner), the average of every pair's, or the configured rate.
func (l *links) link(from, to string, encrypted bool, configured int64) migration.Link {
	l.mu.Lock()
	defer l.mu.Unlock()
	how := ""
	if !encrypted {
		how = " in the clear"
	}
	if s := l.stats[keyOf(from, to, encrypted)]; s != nil && s.rates > 0 {
		return migration.Link{Rate: s.rate, Fixed: seconds(s.fixed), Switchover: seconds(s.switchover),
			Source: fmt.Sprintf("past migrations%s between %s and %s (%d)", how, from, to, s.rates)}
	}
	var sum linkStat
	pairs := 0
	for k, s := range l.stats {
		if k.encrypted == encrypted && s.rates > 0 {
			sum.rate, sum.fixed, sum.switchover = sum.rate+s.rate, sum.fixed+s.fixed, sum.switchover+s.switchover
			pairs++
		}
	}
	if pairs > 0 {
		n := float64(pairs)
		return migration.Link{Rate: sum.rate / n, Fixed: seconds(sum.fixed / n), Switchover: seconds(sum.switchover / n),
			Source: fmt.Sprintf("past migrations%s between other hosts (%d %s; none yet between %s and %s)", how, pairs, pluralWord(pairs, "pair", "pairs"), from, to)}
	}
	return migration.Link{Rate: float64(configured), Fixed: migration.DefaultFixed, Switchover: migration.DefaultSwitchover,
		Source: fmt.Sprintf("the migration network's configured rate, %s/s (center --migration-network-rate); no migration has been measured yet", bytesWord(float64(configured)))}
}

// seedLinks starts the links' averages from the stored migrations, oldest first.
func (c *Center) seedLinks(ctx context.Context) error {
	ms, err := c.store.Migrations(ctx, "", false, historySeed)
	if err != nil {
		return err
	}
	sort.Slice(ms, func(i, j int) bool { return ms[i].Started.Before(ms[j].Started) })
	for _, m := range ms {
		c.links.learn(m)
	}
	return nil
}

// memoryOf returns a running VM's memory activity, no older than maxAge: the newest its
// host has, or measured again by the host when that is older. When the host cannot say,
// it is the one in the host's last heartbeat, if any. It says where it comes from; when
// nothing is known the activity's Measured is zero.
func (c *Center) memoryOf(ctx context.Context, r store.VMRecord, src store.HostRecord, maxAge time.Duration) (api.MemoryActivity, string) {
	cl, err := c.agent(src, 30*time.Second)
	if err == nil {
		var m api.MemoryActivity
		err = cl.Do(ctx, http.MethodGet, "/agent/v1/vms/"+url.PathEscape(r.Spec.Name)+"/memory?max_age="+maxAge.String(), nil, &m)
		if err == nil {
			return m, measuredWords(c.now(), m)
		}
	}
	for _, v := range src.Facts.VMs {
		if strings.EqualFold(v.UUID, r.Spec.UUID) && v.Memory != nil {
			return *v.Memory, fmt.Sprintf("%s (measuring again failed: %v)", measuredWords(c.now(), *v.Memory), err)
		}
	}
	return api.MemoryActivity{}, fmt.Sprintf("not measured: %v", err)
}

// measuredWords says when and where a measurement was made.
func measuredWords(now time.Time, m api.MemoryActivity) string {
	return fmt.Sprintf("measured by %s %v before", orUnknown(m.Host), now.Sub(m.Measured).Round(100*time.Millisecond))
}

// orUnknown is s, or "an unknown host" when empty.
func orUnknown(s string) string {
	if s == "" {
		return "an unknown host"
	}
	return s
}

// predict predicts a migration of VM r (memory activity act) from src to dst under
// policy p with the given encryption mode and bandwidth cap.
func (c *Center) predict(r store.VMRecord, act api.MemoryActivity, actSource, src, dst string, p migration.Policy, encryption string, bwCap int64) *api.Prediction {
	in := migration.PredictInput{
		Policy: p, MemoryBytes: float64(r.Spec.MemoryMiB) * (1 << 20), Activity: act, ActivitySource: actSource,
		Link:         c.links.link(src, dst, encryption != migration.EncryptionOff, c.cfg.LinkRate),
		BandwidthCap: bwCap,
	}
	pr := migration.Predict(in)
	return &pr
}

// predictionPolicy is the policy a check or a ranking predicts with: the one named, else
// the VM's, else the default.
func predictionPolicy(r store.VMRecord, name string) (migration.Policy, error) {
	if name == "" {
		name = r.Spec.MigrationPolicy
	}
	p, err := migration.LookupPolicy(name)
	if err != nil {
		return p, invalid("%v", err)
	}
	return p, nil
}

// checkWithPredictions is checkMigration with a prediction for each compatible host, for
// a running VM.
func (c *Center) checkWithPredictions(ctx context.Context, name, to, policy string) (api.MigrationCheck, error) {
	r, err := c.record(ctx, name)
	if err != nil {
		return api.MigrationCheck{}, err
	}
	p, err := predictionPolicy(r, policy)
	if err != nil {
		return api.MigrationCheck{}, err
	}
	chk, err := c.checkMigration(ctx, name, to)
	if err != nil || r.State != api.VMRunning {
		return chk, err
	}
	src, err := c.store.Host(ctx, chk.Source)
	if err != nil {
		return chk, err
	}
	act, actSource := c.memoryOf(ctx, r, src, checkMaxAge)
	for i, h := range chk.Hosts {
		if h.Compatible {
			chk.Hosts[i].Prediction = c.predict(r, act, actSource, chk.Source, h.Host, p, p.EncryptionMode(), 0)
		}
	}
	return chk, nil
}

// recommendWithPredictions is recommend with a prediction for each candidate, for a
// running VM.
func (c *Center) recommendWithPredictions(ctx context.Context, name, policy string) (api.Recommendation, error) {
	r, err := c.record(ctx, name)
	if err != nil {
		return api.Recommendation{}, err
	}
	p, err := predictionPolicy(r, policy)
	if err != nil {
		return api.Recommendation{}, err
	}
	rec, err := c.recommend(ctx, name)
	if err != nil || r.State != api.VMRunning || len(rec.Candidates) == 0 {
		return rec, err
	}
	src, err := c.store.Host(ctx, rec.Source)
	if err != nil {
		return rec, err
	}
	act, actSource := c.memoryOf(ctx, r, src, checkMaxAge)
	for i, cand := range rec.Candidates {
		rec.Candidates[i].Prediction = c.predict(r, act, actSource, rec.Source, cand.Host, p, p.EncryptionMode(), 0)
	}
	return rec, nil
}

// predictAdmitted predicts a migration the limiter has just admitted, with the VM's
// memory activity as its host measures it now and the migration's bandwidth cap.
func (c *Center) predictAdmitted(ctx context.Context, m api.Migration, src store.HostRecord) *api.Prediction {
	r, err := c.store.VM(ctx, m.VM)
	if err != nil {
		return nil
	}
	p, err := migration.LookupPolicy(m.Policy)
	if err != nil {
		return nil
	}
	act, actSource := c.memoryOf(ctx, r, src, admitMaxAge)
	return c.predict(r, act, actSource, m.Source, m.Destination, p, m.Encryption, c.bandwidthShare(m.ID))
}

// dur converts milliseconds to a Duration.
func dur(ms float64) time.Duration { return time.Duration(ms * float64(time.Millisecond)) }

// seconds converts seconds to a Duration.
func seconds(s float64) time.Duration { return time.Duration(s * float64(time.Second)) }

// pluralWord returns one or many by n.
func pluralWord(n int, one, many string) string {
	if n == 1 {
		return one
	}
	return many
}

// bytesWord formats a rate's bytes with decimal units.
func bytesWord(b float64) string {
	switch {
	case b >= 1e9:
		return fmt.Sprintf("%.1f GB", b/1e9)
	case b >= 1e6:
		return fmt.Sprintf("%.1f MB", b/1e6)
	}
	return fmt.Sprintf("%.0f kB", b/1e3)
}
