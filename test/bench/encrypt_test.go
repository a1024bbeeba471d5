package bench

import (
	"encoding/json"
	"fmt"
	"math"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/godwit/godwit/internal/api"
	"github.com/godwit/godwit/internal/labtest"
	"github.com/godwit/godwit/internal/migration"
)

// encryptionRuns is how many migrations each mode gets per scenario
// (GODWIT_BENCH_RUNS overrides it).
const encryptionRuns = 6

// encryptionSlack is the target: an encrypted migration takes at most this many times
// as long as the same migration in the clear.
const encryptionSlack = 1.25

// BenchmarkEncryption measures what encrypting the memory stream costs: the same 1 GiB
// guest migrated between the same two lab hosts with the balanced policy, the stream in
// the clear (--encryption off) and encrypted (--encryption required: carried by the
// agents over mutual TLS, AES-GCM), the two interleaved run by run (ABBA), in the
// issue's scenarios (a) the guest idle and (b) the guest rewriting 256 MiB as fast as it
// can. It reports the medians of total time, throughput and QEMU's downtime per mode,
// their ratios (encrypted / plain) and a verdict against the target (encrypted total at
// most encryptionSlack times the clear). It asserts nothing about times.
func BenchmarkEncryption(b *testing.B) {
	runs := encryptionRuns
	if s := os.Getenv("GODWIT_BENCH_RUNS"); s != "" {
		n, err := strconv.Atoi(s)
		if err != nil || n < 1 {
			b.Fatalf("GODWIT_BENCH_RUNS=%q: want a positive number of runs", s)
		}
		runs = n
	}
	fmt.Printf("\nload average at the start: %s\n", loadAvg())
	l := labtest.New(b, home, 2)
	var vm api.VM
	l.RunJSON(&vm, "vm", "create", "enc", "--host", "host-1", "--memory", strconv.Itoa(benchGuestMiB))
	l.WaitHTTP("client", "http://"+vm.IP+"/healthz", 2*time.Minute)
	time.Sleep(3 * time.Second)
	host := "host-1"
	modes := []string{migration.EncryptionOff, migration.EncryptionRequired}

	for _, sc := range []struct {
		name      string
		mib, rate int
	}{{"(a) idle", 0, 0}, {fmt.Sprintf("(b) rewriting %d MiB", dirtyMiB), dirtyMiB, 0}} {
		if sc.mib > 0 {
			startDirtier(b, l, vm.IP, sc.mib, sc.rate)
		}
		total := map[string][]float64{}
		rate := map[string][]float64{}
		down := map[string][]float64{}
		fmt.Printf("\nencryption, %s: %d migrations per mode\n", sc.name, runs)
		for i := range runs {
			order := modes
			if i%2 == 1 {
				order = []string{modes[1], modes[0]}
			}
			for _, mode := range order {
				to := "host-2"
				if host == "host-2" {
					to = "host-1"
				}
				out := l.MustRun("vm", "migrate", vm.Name, "--to", to, "--encryption", mode, "-o", "json")
				var sum migSummary
				if err := json.Unmarshal([]byte(out), &sum); err != nil {
					b.Fatalf("vm migrate printed no summary: %v\n%s", err, out)
				}
				if sum.State != api.MigrationSucceeded || sum.Encrypted != (mode == migration.EncryptionRequired) {
					b.Fatalf("migration %s (%s): %+v", sum.ID, mode, sum)
				}
				host = waitRunning(b, l, vm.Name, to)
				mbps := float64(sum.Bytes) / 1e6 / (sum.TotalMS / 1000)
				total[mode] = append(total[mode], sum.TotalMS)
				rate[mode] = append(rate[mode], mbps)
				down[mode] = append(down[mode], sum.DowntimeMS)
				fmt.Printf("  %s %2d %-9s total %6.0f ms  %6.0f MB/s  downtime %5.1f ms  %5.0f MB  %2d passes\n",
					sc.name, i+1, mode, sum.TotalMS, mbps, sum.DowntimeMS, float64(sum.Bytes)/1e6, sum.Passes)
				time.Sleep(300 * time.Millisecond)
			}
		}
		if sc.mib > 0 {
			startDirtier(b, l, vm.IP, 0, 0)
		}
		p, e := migration.EncryptionOff, migration.EncryptionRequired
		tp, te := summarise(total[p]).median, summarise(total[e]).median
		rp, re := summarise(rate[p]).median, summarise(rate[e]).median
		dp, de := summarise(down[p]).median, summarise(down[e]).median
		fmt.Printf("encryption, %s — medians: plain %0.f ms, %0.f MB/s, downtime %.1f ms; encrypted %0.f ms, %0.f MB/s, downtime %.1f ms\n"+
			"  encrypted/plain: total time ×%.2f, throughput ×%.2f, downtime ×%.2f\n",
			sc.name, tp, rp, dp, te, re, de, te/tp, re/rp, de/dp)
		verdict := "NOT MET"
		if math.Round(100*te/tp) <= math.Round(100*encryptionSlack) {
			verdict = "MET    "
		}
		fmt.Printf("%s (e) %s: encrypted total ×%.2f of the clear; want at most ×%.2f\n", verdict, sc.name, te/tp, encryptionSlack)
		key := strings.NewReplacer("(", "", ")", "", " ", "-").Replace(sc.name)
		b.ReportMetric(te/tp, key+"-tls/plain-total")
		b.ReportMetric(re/rp, key+"-tls/plain-throughput")
	}
}
