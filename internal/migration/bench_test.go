package migration

import (
	"context"
	"fmt"
	"os"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/godwit/godwit/internal/qemu"
	"github.com/godwit/godwit/internal/qmp"
)

// benchVariant is one way of migrating in BenchmarkIdleGuest.
type benchVariant struct {
	name string
	// policy is Godwit's policy, or nil for a plain QEMU migration with
	// QEMU's default parameters and capabilities (nothing set at all).
	policy *Policy
	// rawCaps, for a plain QEMU migration, are capabilities set on both sides.
	rawCaps map[string]bool
	// rawParams, for a plain QEMU migration, are parameters set on the source.
	rawParams *qmp.MigrationParameters
}

// benchSample is one migration's figures.
type benchSample struct {
	total, downtime, pause time.Duration
	bytes                  uint64
	passes                 int
}

// BenchmarkIdleGuest compares Godwit's policies with QEMU's defaults on an
// idle 512 MiB TCG guest over loopback. One guest is booted and migrated back
// and forth; every round runs each variant once. It prints a table of
// medians on standard output and asserts nothing about time. Run it with
//
//	go test -run '^$' -bench IdleGuest -benchtime 1x ./internal/migration
//
// ($GODWIT_BENCH_ROUNDS rounds, default 3). "pause" is the host's view of the
// real pause: from the source's STOP event to the destination's RESUME event
// (both QEMUs stamp events with the same host clock).
func BenchmarkIdleGuest(b *testing.B) {
	rounds := 3
	if s := os.Getenv("GODWIT_BENCH_ROUNDS"); s != "" {
		n, err := strconv.Atoi(s)
		if err != nil || n < 1 {
			b.Fatalf("GODWIT_BENCH_ROUNDS=%q is not a positive number", s)
		}
		rounds = n
	}
	lookup := func(name string) *Policy {
		p, err := LookupPolicy(name)
		if err != nil {
			b.Fatal(err)
		}
		return &p
	}
	twoChannels := lookup(PolicyBalanced)
	twoChannels.Name, twoChannels.Channels = "balanced-multifd-2", 2
	noRP := SourceParameters(*lookup(PolicyBalanced))
	variants := []benchVariant{
		{name: "qemu-defaults"},
		{name: PolicyBalanced, policy: lookup(PolicyBalanced)},
		{name: PolicyFastSwitchover, policy: lookup(PolicyFastSwitchover)},
		{name: PolicySafe, policy: lookup(PolicySafe)},
		{name: twoChannels.Name, policy: twoChannels},
		{name: "balanced-no-return-path", rawParams: &noRP},
	}

	for range b.N {
		spec := guestSpec(b, 512, "")
		src := bootGuest(b, spec)
		time.Sleep(2 * time.Second) // let the guest settle after boot
		samples := map[string][]benchSample{}
		for round := range rounds {
			for _, v := range variants {
				s, dst := benchMigrate(b, spec, src, v)
				fmt.Printf("round %d %-24s total %6v downtime %5v pause %6v %6.1f MB %d passes\n",
					round+1, v.name, s.total, s.downtime, s.pause.Round(100*time.Microsecond), float64(s.bytes)/1e6, s.passes)
				samples[v.name] = append(samples[v.name], s)
				ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
				src.mon.Quit(ctx)
				cancel()
				src = dst
				time.Sleep(500 * time.Millisecond)
			}
		}
		var t strings.Builder
		fmt.Fprintf(&t, "idle 512 MiB TCG guest, loopback, median of %d:\n", rounds)
		fmt.Fprintf(&t, "%-24s %9s %9s %9s %9s %7s\n", "variant", "total", "downtime", "pause", "MB sent", "passes")
		for _, v := range variants {
			s := samples[v.name]
			fmt.Fprintf(&t, "%-24s %9v %9v %9v %9.1f %7d\n", v.name,
				median(s, func(x benchSample) time.Duration { return x.total }),
				median(s, func(x benchSample) time.Duration { return x.downtime }),
				median(s, func(x benchSample) time.Duration { return x.pause }).Round(100*time.Microsecond),
				float64(median(s, func(x benchSample) time.Duration { return time.Duration(x.bytes) }))/1e6,
				median(s, func(x benchSample) time.Duration { return time.Duration(x.passes) }))
		}
		fmt.Print(t.String()) // b.Log would truncate the table
	}
}

// median returns the median of f over s.
func median[T any](s []T, f func(T) time.Duration) time.Duration {
	v := make([]time.Duration, len(s))
	for i, x := range s {
		v[i] = f(x)
	}
	sort.Slice(v, func(i, j int) bool { return v[i] < v[j] })
	if len(v) == 0 {
		return 0
	}
	return v[len(v)/2]
}

// benchMigrate migrates src to a new destination in variant v and returns the
// figures and the destination, now running the guest.
func benchMigrate(b *testing.B, spec qemu.Spec, src *testVM, v benchVariant) (benchSample, *testVM) {
	b.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 120*time.Second)
	defer cancel()
	drain(src.mon)
	// QEMU's defaults everywhere unless the variant says otherwise: the
	// source may have been prepared as a destination before.
	reset := map[string]bool{qmp.CapEvents: false, qmp.CapReturnPath: false, qmp.CapMultifd: false, qmp.CapAutoConverge: false}
	var dst *testVM
	var uri string
	if v.policy != nil {
		dst, uri = startDestination(b, spec, v.policy, true)
	} else {
		dst, uri = startDestination(b, spec, nil, true)
		if err := src.mon.MigrateSetCapabilities(ctx, reset); err != nil {
			b.Fatal(err)
		}
		defaults := qmp.MigrationParameters{DowntimeLimit: qmp.Ptr(int64(300)), MaxBandwidth: qmp.Ptr(int64(128 << 20))}
		if err := src.mon.MigrateSetParameters(ctx, defaults); err != nil {
			b.Fatal(err)
		}
		if v.rawParams != nil {
			if err := src.mon.MigrateSetParameters(ctx, *v.rawParams); err != nil {
				b.Fatal(err)
			}
		}
	}

	var s benchSample
	if v.policy != nil {
		res, err := Run(ctx, src.mon, Options{Policy: *v.policy, URI: uri})
		if err != nil {
			b.Fatalf("%s: %v", v.name, err)
		}
		s = benchSample{total: res.Total, downtime: res.Downtime, bytes: res.Bytes, passes: res.Passes}
	} else {
		if err := src.mon.Migrate(ctx, uri); err != nil {
			b.Fatal(err)
		}
		for {
			info, err := src.mon.QueryMigrate(ctx)
			if err != nil {
				b.Fatal(err)
			}
			if info.Status == qmp.MigrationFailed || info.Status == qmp.MigrationCancelled {
				b.Fatalf("%s: migration %s: %s", v.name, info.Status, info.ErrorDesc)
			}
			if info.Status == qmp.MigrationCompleted {
				s = benchSample{total: ms(info.TotalTime), downtime: ms(info.Downtime),
					bytes: uint64(info.RAM.Transferred), passes: int(info.RAM.DirtySyncCount)}
				break
			}
			time.Sleep(DefaultPollInterval)
		}
	}
	waitStatus(b, dst, qmp.StatusRunning, 10*time.Second)
	stop := eventTime(b, src.mon, qmp.EventStop)
	resume := eventTime(b, dst.mon, qmp.EventResume)
	s.pause = resume.Sub(stop)
	return s, dst
}

// ms converts QEMU's optional millisecond figure.
func ms(v *int64) time.Duration {
	if v == nil {
		return 0
	}
	return time.Duration(*v) * time.Millisecond
}

// drain discards the monitor's buffered events.
func drain(mon *qmp.Monitor) {
	for {
		select {
		case <-mon.Events():
		default:
			return
		}
	}
}

// eventTime returns the timestamp of the first buffered event called name.
func eventTime(b *testing.B, mon *qmp.Monitor, name string) time.Time {
	b.Helper()
	timeout := time.After(5 * time.Second)
	for {
		select {
		case e, ok := <-mon.Events():
			if !ok {
				b.Fatalf("the monitor closed before a %s event", name)
			}
			if e.Name == name {
				return e.Timestamp
			}
		case <-timeout:
			b.Fatalf("no %s event within 5 s", name)
		}
	}
}
