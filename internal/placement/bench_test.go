package placement

import (
	"fmt"
	"math/rand/v2"
	"testing"
)

// benchFlags is a universe of 160 CPU flag names.
func benchFlags() []string {
	flags := make([]string, 160)
	for i := range flags {
		flags[i] = fmt.Sprintf("flag%03d", i)
	}
	return flags
}

// benchHosts simulates n hosts: varied load, memory and migrations, about 100
// CPU flags each, and every 10th refused for a rotating reason.
func benchHosts(n int, flags []string) []Host {
	rng := rand.New(rand.NewPCG(1, 2))
	hosts := make([]Host, n)
	for i := range hosts {
		total := 16384 * (1 + rng.IntN(16))
		h := Host{
			Name:      fmt.Sprintf("host-%04d", i),
			Connected: true, Health: HealthOK,
			Cores: 8 * (1 + rng.IntN(8)), MemoryMiB: total,
			FreeMemoryMiB:     total/8 + rng.IntN(total*7/8),
			QEMUVersion:       "10.0.2",
			Accel:             "kvm",
			Datastores:        []string{"ds-local", "ds-shared", fmt.Sprintf("ds-%d", i%20)},
			Networks:          []string{"mgmt", "prod", fmt.Sprintf("vlan%d", i%50)},
			MigrationsRunning: rng.IntN(4), MigrationsQueued: rng.IntN(2), MigrationSlots: 2 + rng.IntN(3),
			LinkLoad: rng.Float64(),
		}
		h.Load = rng.Float64() * float64(h.Cores)
		// The first 80 flags everywhere, then about 20 of the remaining 80.
		h.CPUFlags = append(make([]string, 0, 110), flags[:80]...)
		for _, f := range flags[80:] {
			if rng.IntN(4) == 0 {
				h.CPUFlags = append(h.CPUFlags, f)
			}
		}
		refuse(&h, i)
		hosts[i] = h
	}
	return hosts
}

// refuse makes every 10th host incompatible, for one of six reasons.
func refuse(h *Host, i int) {
	if i%10 != 0 {
		return
	}
	switch i / 10 % 6 {
	case 0:
		h.Connected = false
	case 1:
		h.Maintenance = true
	case 2:
		h.QEMUVersion = "9.2.0"
	case 3:
		h.Accel = "tcg"
	case 4:
		h.FreeMemoryMiB = 2048
	case 5:
		h.CPUFlags = h.CPUFlags[:60]
	}
}

// benchVM needs 70 of the common flags and one of the optional ones.
func benchVM(flags []string) VM {
	return VM{
		Name: "db-1", Host: "host-0001", MemoryMiB: 8192, CPUs: 4,
		CPUModel:    "Cascadelake-Server",
		CPUFlags:    append(append([]string(nil), flags[:70]...), flags[85]),
		Datastores:  []string{"ds-shared"},
		Networks:    []string{"prod"},
		QEMUVersion: "10.0.2", Accel: "kvm",
	}
}

func BenchmarkRecommend1000Hosts(b *testing.B) {
	flags := benchFlags()
	hosts, vm := benchHosts(1000, flags), benchVM(flags)
	rec, err := Recommend(vm, hosts, DefaultWeights())
	if err != nil {
		b.Fatal(err)
	}
	if len(rec.Candidates) < 100 || len(rec.Refused) < 100 {
		b.Fatalf("%d candidates, %d refused: the simulation should give many of both", len(rec.Candidates), len(rec.Refused))
	}
	b.ReportAllocs()
	for b.Loop() {
		if _, err := Recommend(vm, hosts, DefaultWeights()); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/1e6/float64(b.N), "ms/recommend")
}

func BenchmarkIndexRecommend1000Hosts(b *testing.B) {
	flags := benchFlags()
	ix, vm := NewIndex(benchHosts(1000, flags)), benchVM(flags)
	b.ReportAllocs()
	for b.Loop() {
		if _, err := ix.Recommend(vm, DefaultWeights()); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/1e6/float64(b.N), "ms/recommend")
}
