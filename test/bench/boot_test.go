// Package bench holds Godwit's benchmarks. Each runs on a real lab and reports its
// figures as benchmark metrics and as a printed table; none of them asserts a time.
package bench

import (
	"fmt"
	"sort"
	"testing"
	"time"

	"github.com/godwit/godwit/internal/api"
	"github.com/godwit/godwit/internal/labtest"
)

var home string

func TestMain(m *testing.M) { labtest.Main(m, &home) }

// BenchmarkCreateToHTTP measures the time from `godwit vm create` to the 512 MiB test
// guest answering HTTP from the client namespace, five times, and reports the median.
func BenchmarkCreateToHTTP(b *testing.B) {
	const runs = 5
	l := labtest.New(b, home, 2)
	var times []time.Duration
	for range b.N {
		times = times[:0]
		for i := range runs {
			name := fmt.Sprintf("boot-%d", i)
			start := time.Now()
			var vm api.VM
			l.RunJSON(&vm, "vm", "create", name, "--host", "host-1", "--memory", "512")
			l.WaitHTTP("client", "http://"+vm.IP+"/healthz", 2*time.Minute)
			times = append(times, time.Since(start))
			l.MustRun("vm", "stop", name, "--force")
			l.MustRun("vm", "delete", name)
		}
	}
	sorted := append([]time.Duration(nil), times...)
	sort.Slice(sorted, func(i, j int) bool { return sorted[i] < sorted[j] })
	median := sorted[len(sorted)/2]
	b.ReportMetric(float64(median.Milliseconds()), "median-ms")
	b.ReportMetric(0, "ns/op")
	fmt.Printf("\nvm create → guest answers HTTP (512 MiB test guest, TCG, %d runs)\n", runs)
	fmt.Printf("%-8s %10s\n", "run", "seconds")
	for i, d := range times {
		fmt.Printf("%-8d %10.2f\n", i+1, d.Seconds())
	}
	fmt.Printf("%-8s %10.2f\n\n", "median", median.Seconds())
}
