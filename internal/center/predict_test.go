package center

import (
	"math"
	"strings"
	"testing"
	"time"

	"github.com/godwit/godwit/internal/api"
	"github.com/godwit/godwit/internal/migration"
)

// done is a migration of an idle 1 GiB guest that succeeded between from and to: 160 MiB
// written, sent at rate bytes/s, with 700 ms besides the stream and a pause of 50 ms.
func done(from, to string, encrypted bool, rate float64) api.Migration {
	const memory = 1 << 30
	act := migration.MemoryActivity{NonzeroBytes: 160 << 20, Measured: time.Now()}
	link := migration.Link{Rate: rate, Fixed: 700 * time.Millisecond, Switchover: 50 * time.Millisecond}
	p, _ := migration.LookupPolicy("")
	pr := migration.Predict(migration.PredictInput{Policy: p, MemoryBytes: memory, Activity: act, Link: link})
	return api.Migration{ID: from + to, Source: from, Destination: to, Policy: p.Name, State: api.MigrationSucceeded, Encrypted: encrypted,
		TotalMS: pr.TotalMS, DowntimeMS: pr.DowntimeMS, Bytes: uint64(pr.Bytes),
		Progress: api.MigrationProgress{ElapsedMS: pr.TotalMS - 700, TotalBytes: memory}}
}

func TestLinks(t *testing.T) {
	const configured = 1.25e9
	l := newLinks()
	if k := l.link("host-1", "host-2", true, configured); k.Rate != configured || k.Fixed != migration.DefaultFixed ||
		!strings.Contains(k.Source, "configured rate") {
		t.Errorf("no history: %+v; want the configured rate and the default costs", k)
	}

	l.learn(done("host-1", "host-2", true, 100e6))
	k := l.link("host-1", "host-2", true, configured)
	if math.Abs(k.Rate/100e6-1) > 0.02 || (k.Fixed-700*time.Millisecond).Abs() > time.Millisecond ||
		(k.Switchover-50*time.Millisecond).Abs() > time.Millisecond || k.Source != "past migrations between host-1 and host-2 (1)" {
		t.Errorf("after one migration: %+v; want its 100 MB/s, 700 ms and 50 ms", k)
	}
	if back := l.link("host-2", "host-1", true, configured); back.Source != "past migrations between host-2 and host-1 (1)" || back.Rate != k.Rate {
		t.Errorf("the other direction: %+v; want the same link", back)
	}
	if other := l.link("host-3", "host-1", true, configured); !strings.Contains(other.Source, "between other hosts (1 pair; none yet between host-3 and host-1)") || other.Rate != k.Rate {
		t.Errorf("a pair without history: %+v; want the other pairs' average", other)
	}
	if plain := l.link("host-1", "host-2", false, configured); plain.Rate != configured {
		t.Errorf("in the clear with only encrypted history: %+v; want the configured rate", plain)
	}

	// A newer, faster migration moves the average by linkAlpha of the difference.
	l.learn(done("host-1", "host-2", true, 200e6))
	if k := l.link("host-1", "host-2", true, configured); math.Abs(k.Rate/(100e6+linkAlpha*100e6)-1) > 0.02 || !strings.HasSuffix(k.Source, "(2)") {
		t.Errorf("after two migrations: %+v; want %v", k, 100e6+linkAlpha*100e6)
	}

	// Failed migrations, and streams held back by their cap below the average, teach
	// nothing of the link's rate.
	failed := done("host-1", "host-2", true, 10e6)
	failed.State = api.MigrationFailed
	l.learn(failed)
	capped := done("host-1", "host-2", true, 10e6)
	capped.BandwidthCap = 10.2e6
	l.learn(capped)
	if k := l.link("host-1", "host-2", true, configured); math.Abs(k.Rate/(100e6+linkAlpha*100e6)-1) > 0.02 || !strings.HasSuffix(k.Source, "(2)") {
		t.Errorf("after a failed and a capped migration: %+v; want the rate unchanged", k)
	}
	slowPolicy := done("host-2", "host-3", false, 130e6)
	slowPolicy.Policy = migration.PolicyQEMUDefaults // capped at 128 MiB/s
	l.learn(slowPolicy)
	if k := l.link("host-2", "host-3", false, configured); k.Rate != configured {
		t.Errorf("a first migration held back by its policy's bandwidth: %+v; want no rate learnt", k)
	}
}
