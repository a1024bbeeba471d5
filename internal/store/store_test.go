package store

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/godwit/godwit/internal/api"
)

func openTemp(t *testing.T) (*Store, string) {
	t.Helper()
	path := filepath.Join(t.TempDir(), "godwit.db")
	s, err := Open(context.Background(), path)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s, path
}

func vmRec(name, uuid, mac, ip string) VMRecord {
	now := time.Now()
	return VMRecord{
		Spec: api.VMSpec{Name: name, UUID: uuid, CPUs: 1, MemoryMiB: 512, NICs: []api.NIC{{Network: "lab", MAC: mac, IP: ip}}},
		Host: "host-1", Desired: api.VMStopped, State: api.VMStopped, Created: now, Updated: now,
	}
}

func TestVMUniqueness(t *testing.T) {
	s, _ := openTemp(t)
	ctx := context.Background()
	if err := s.InsertVM(ctx, vmRec("a", "u1", "02:67:77:00:00:01", "198.18.1.100/24")); err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		rec   VMRecord
		field string
	}{
		{vmRec("a", "u2", "02:67:77:00:00:02", ""), "name"},
		{vmRec("b", "u1", "02:67:77:00:00:02", ""), "uuid"},
		{vmRec("b", "u2", "02:67:77:00:00:01", ""), "MAC"},
		{vmRec("b", "u2", "02:67:77:00:00:02", "198.18.1.100/24"), "IP"},
	}
	for _, c := range cases {
		err := s.InsertVM(ctx, c.rec)
		var dup *DuplicateError
		if !errors.As(err, &dup) || dup.Field != c.field {
			t.Errorf("insert %+v: got %v, want a duplicate %s", c.rec.Spec, err, c.field)
			continue
		}
		if c.field != "name" && dup.Owner != "a" {
			t.Errorf("duplicate %s: owner %q, want a", c.field, dup.Owner)
		}
	}
	// A failed insert leaves nothing behind: b can be inserted cleanly afterwards.
	if err := s.InsertVM(ctx, vmRec("b", "u2", "02:67:77:00:00:02", "198.18.1.101/24")); err != nil {
		t.Fatalf("clean insert after failures: %v", err)
	}
	vms, err := s.VMs(ctx)
	if err != nil || len(vms) != 2 {
		t.Fatalf("VMs: %d, %v; want 2", len(vms), err)
	}
}

func TestPersistenceAcrossReopen(t *testing.T) {
	s, path := openTemp(t)
	ctx := context.Background()
	now := time.Now()
	if _, err := s.SaveHeartbeat(ctx, api.HostFacts{Name: "host-1", AgentURL: "http://198.18.1.11:7700"}, now); err != nil {
		t.Fatal(err)
	}
	if err := s.InsertVM(ctx, vmRec("a", "u1", "02:67:77:00:00:01", "198.18.1.100/24")); err != nil {
		t.Fatal(err)
	}
	if err := s.SetState(ctx, "a", api.VMStatus{State: api.VMRunning, PID: 42, Accel: "tcg"}, now); err != nil {
		t.Fatal(err)
	}
	s.Close()
	s2, err := Open(ctx, path)
	if err != nil {
		t.Fatal(err)
	}
	defer s2.Close()
	v, err := s2.VM(ctx, "a")
	if err != nil || v.State != api.VMRunning || v.PID != 42 || v.Spec.NICs[0].MAC != "02:67:77:00:00:01" {
		t.Fatalf("after reopen: %+v, %v", v, err)
	}
	h, err := s2.Host(ctx, "host-1")
	if err != nil || h.Facts.AgentURL != "http://198.18.1.11:7700" {
		t.Fatalf("host after reopen: %+v, %v", h, err)
	}
	ips, _ := s2.UsedIPs(ctx, "lab")
	if !ips["198.18.1.100"] {
		t.Fatalf("UsedIPs = %v, want 198.18.1.100", ips)
	}
	if err := s2.DeleteVM(ctx, "a"); err != nil {
		t.Fatal(err)
	}
	if _, err := s2.VM(ctx, "a"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("VM after delete: %v, want ErrNotFound", err)
	}
	if ips, _ := s2.UsedIPs(ctx, "lab"); len(ips) != 0 {
		t.Fatalf("addresses of a deleted VM are still in use: %v", ips)
	}
	if err := s2.SetDesired(ctx, "nosuch", api.VMRunning, now); !errors.Is(err, ErrNotFound) {
		t.Fatalf("SetDesired on a missing VM: %v", err)
	}
}

// TestHeartbeatsCommittedInGroups saves heartbeats from many hosts at once: each host is
// registered once, each acknowledged heartbeat is on disk (the database opened again
// has the last facts of every host), and a closed store refuses more without hanging.
func TestHeartbeatsCommittedInGroups(t *testing.T) {
	s, path := openTemp(t)
	ctx := context.Background()
	const hosts, rounds = 200, 3
	var mu sync.Mutex
	registered := map[string]int{}
	var wg sync.WaitGroup
	for h := range hosts {
		wg.Add(1)
		go func() {
			defer wg.Done()
			name := fmt.Sprintf("host-%03d", h)
			for r := range rounds {
				reg, err := s.SaveHeartbeat(ctx, api.HostFacts{Name: name, AgentURL: "https://198.18.1.11:7700", Load: float64(r)}, time.Now())
				if err != nil {
					t.Errorf("heartbeat %d of %s: %v", r, name, err)
					return
				}
				if reg {
					mu.Lock()
					registered[name]++
					mu.Unlock()
				}
			}
		}()
	}
	wg.Wait()
	if len(registered) != hosts {
		t.Errorf("%d hosts registered; want %d", len(registered), hosts)
	}
	for name, n := range registered {
		if n != 1 {
			t.Errorf("%s registered %d times; want once", name, n)
		}
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := s.SaveHeartbeat(ctx, api.HostFacts{Name: "late"}, time.Now()); err == nil || !strings.Contains(err.Error(), "closed") {
		t.Errorf("a heartbeat to a closed store: %v; want it refused as closed", err)
	}
	s2, err := Open(ctx, path)
	if err != nil {
		t.Fatal(err)
	}
	defer s2.Close()
	hs, err := s2.Hosts(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(hs) != hosts {
		t.Fatalf("%d hosts on disk; want %d", len(hs), hosts)
	}
	for _, h := range hs {
		if h.Facts.Load != rounds-1 {
			t.Errorf("%s on disk with load %v; want the last heartbeat's %d", h.Facts.Name, h.Facts.Load, rounds-1)
		}
	}
}

// TestVMStatesOnAndCounts lists one host's VMs and counts every host's.
func TestVMStatesOnAndCounts(t *testing.T) {
	s, _ := openTemp(t)
	ctx := context.Background()
	for i, host := range []string{"host-1", "host-2", "host-2"} {
		r := vmRec(fmt.Sprintf("v%d", i), fmt.Sprintf("u%d", i), fmt.Sprintf("02:67:77:00:00:0%d", i), "")
		r.Host = host
		if err := s.InsertVM(ctx, r); err != nil {
			t.Fatal(err)
		}
	}
	on, err := s.VMStatesOn(ctx, "host-2")
	if err != nil || len(on) != 2 || on[0].Spec.Name != "v1" || on[1].Spec.Name != "v2" {
		t.Errorf("VMStatesOn(host-2) = %v, %v; want v1, v2", on, err)
	}
	if on, _ := s.VMStatesOn(ctx, "host-3"); len(on) != 0 {
		t.Errorf("VMStatesOn(host-3) = %v; want none", on)
	}
	counts, err := s.VMCounts(ctx)
	if err != nil || counts["host-1"] != 1 || counts["host-2"] != 2 || len(counts) != 2 {
		t.Errorf("VMCounts = %v, %v; want host-1: 1, host-2: 2", counts, err)
	}
}

// TestPages reads VMs and hosts a page at a time, with and without a filter.
func TestPages(t *testing.T) {
	s, _ := openTemp(t)
	ctx := context.Background()
	for i := range 25 {
		r := vmRec(fmt.Sprintf("v%02d", i), fmt.Sprintf("u%02d", i), fmt.Sprintf("02:67:77:00:01:%02x", i), "")
		r.Host = fmt.Sprintf("host-%d", i%3)
		if i%5 == 0 {
			r.State = api.VMRunning
		}
		if err := s.InsertVM(ctx, r); err != nil {
			t.Fatal(err)
		}
		if i < 7 {
			if _, err := s.SaveHeartbeat(ctx, api.HostFacts{Name: fmt.Sprintf("host-%d", i)}, time.Now()); err != nil {
				t.Fatal(err)
			}
		}
	}
	var names []string
	after := ""
	for {
		page, total, err := s.VMsPage(ctx, VMFilter{}, after, 10)
		if err != nil || total != 25 {
			t.Fatalf("page after %q: total %d, %v", after, total, err)
		}
		if len(page) == 0 {
			break
		}
		for _, r := range page {
			names = append(names, r.Spec.Name)
		}
		after = page[len(page)-1].Spec.Name
	}
	if len(names) != 25 || names[0] != "v00" || names[24] != "v24" {
		t.Errorf("pages of 10 gave %v; want v00..v24", names)
	}
	page, total, err := s.VMsPage(ctx, VMFilter{Host: "host-1", State: api.VMRunning}, "", 100)
	// host-1 holds v01, v04, …, v22; of those only v10 is running (i%5 == 0).
	if err != nil || total != 1 || len(page) != 1 || page[0].Spec.Name != "v10" {
		t.Errorf("running VMs on host-1: %d of %d, %v; want only v10", len(page), total, err)
	}
	hosts, total, err := s.HostsPage(ctx, "host-2", 3)
	if err != nil || total != 7 || len(hosts) != 3 || hosts[0].Facts.Name != "host-3" || hosts[2].Facts.Name != "host-5" {
		t.Errorf("hosts after host-2, 3 of them: %v of %d, %v; want host-3..host-5 of 7", hosts, total, err)
	}
}
