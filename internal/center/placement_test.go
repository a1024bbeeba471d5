package center

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/godwit/godwit/internal/api"
	"github.com/godwit/godwit/internal/placement"
	"github.com/godwit/godwit/internal/store"
)

// placementFacts are the facts of a healthy, connected host whose agent cannot be
// reached (nothing listens on port 9), with freeMiB of free memory.
func placementFacts(name string, freeMiB int) api.HostFacts {
	return api.HostFacts{Name: name, AgentURL: "https://127.0.0.1:9", Address: "127.0.0.1", Health: placement.HealthOK,
		CPU: api.CPUInfo{Cores: 4, Threads: 4}, MemoryMiB: 64 << 10, FreeMemoryMiB: freeMiB, QEMUVersion: "10.0.2", Accel: "tcg",
		Datastores: []api.Datastore{{Name: "shared", Path: "/srv/godwit/shared",
			Images: []api.Image{{Name: "godwit-test", Kernel: "[shared] images/godwit-test/vmlinuz"}}}},
		Networks: []api.Network{{Name: "lab", Bridge: "br0"}}}
}

// VM creation with --host, the wizard's check and bulk auto placement decide memory by
// one rule (placement.MemoryFits): a host one MiB short of a VM's memory, its overhead
// and the host's reserve is refused by all three with the same memory_short sentence,
// and with that MiB it is refused by none of them (each then fails further on, at the
// host's agent, which does not answer).
func TestOneMemoryRuleForCreationWizardAndBulk(t *testing.T) {
	const vmMiB = 512
	exact := vmMiB + placement.VMOverheadMiB + placement.HostReserveMiB
	if !placement.MemoryFits(exact, vmMiB) || placement.MemoryFits(exact-1, vmMiB) {
		t.Fatalf("MemoryFits does not put the boundary at %d MiB", exact)
	}
	for _, tc := range []struct {
		name    string
		freeMiB int
		short   bool
	}{
		{"one MiB short", exact - 1, true},
		{"exactly enough", exact, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := newTestCenter(t)
			ctx := context.Background()
			now := time.Now()
			for name, free := range map[string]int{"host-1": 32 << 10, "host-2": tc.freeMiB} {
				if _, err := c.store.SaveHeartbeat(ctx, placementFacts(name, free), now); err != nil {
					t.Fatal(err)
				}
			}
			if err := c.store.InsertVM(ctx, store.VMRecord{Spec: api.VMSpec{Name: "web-1", UUID: uuid.NewString(), CPUs: 1, MemoryMiB: vmMiB,
				Boot: api.Boot{Kernel: "[shared] images/godwit-test/vmlinuz"}}, Host: "host-1",
				Desired: api.VMRunning, State: api.VMRunning, PID: 4242, Created: now, Updated: now}); err != nil {
				t.Fatal(err)
			}
			srv := httptest.NewServer(c.Handler())
			t.Cleanup(srv.Close)
			call := func(method, path string, body any, out any) (int, api.Error) {
				t.Helper()
				var rd *strings.Reader
				if body != nil {
					b, _ := json.Marshal(body)
					rd = strings.NewReader(string(b))
				} else {
					rd = strings.NewReader("")
				}
				req, _ := http.NewRequest(method, srv.URL+path, rd)
				req.Header.Set("Content-Type", "application/json")
				resp, err := http.DefaultClient.Do(req)
				if err != nil {
					t.Fatal(err)
				}
				defer resp.Body.Close()
				var e api.Error
				if resp.StatusCode >= 400 {
					_ = json.NewDecoder(resp.Body).Decode(&e)
				} else if err := json.NewDecoder(resp.Body).Decode(out); err != nil {
					t.Fatalf("%s %s: %d, undecodable: %v", method, path, resp.StatusCode, err)
				}
				return resp.StatusCode, e
			}

			// The wizard's check of host-2 for web-1.
			var chk api.MigrationCheck
			if status, e := call(http.MethodGet, "/api/v1/vms/web-1/migrate/check?to=host-2", nil, &chk); status != http.StatusOK || len(chk.Hosts) != 1 {
				t.Fatalf("check: %d %+v %+v", status, e, chk)
			}
			hc := chk.Hosts[0]
			var wizard string
			if tc.short {
				if hc.Compatible || len(hc.Errors) != 1 || hc.Errors[0].Code != placement.CodeMemoryShort {
					t.Fatalf("check of host-2: %+v; want one memory_short error", hc)
				}
				wizard = hc.Errors[0].Message
				want := fmt.Sprintf("host-2 has %d MiB free, %d MiB after its 1024 MiB reserve, but web-1 needs %d MiB (%d MiB of memory plus 256 MiB overhead).",
					exact-1, exact-1-1024, vmMiB+256, vmMiB)
				if wizard != want {
					t.Fatalf("check of host-2 says %q; want %q", wizard, want)
				}
			} else if !hc.Compatible {
				t.Fatalf("check of host-2 with exactly enough memory: %+v; want compatible", hc)
			}

			// Creating a VM of the same size on host-2.
			var vm api.VM
			memMiB := vmMiB
			status, e := call(http.MethodPost, "/api/v1/vms", api.CreateVMRequest{Name: "new-1", Host: "host-2", MemoryMiB: &memMiB}, &vm)
			if tc.short {
				if status != http.StatusUnprocessableEntity || e.Code != placement.CodeMemoryShort ||
					!strings.Contains(e.Error, strings.ReplaceAll(wizard, "web-1", "new-1")) {
					t.Errorf("vm create --host host-2: %d %+v; want 422 memory_short saying %q", status, e, wizard)
				}
			} else if status/100 == 2 || e.Code == placement.CodeMemoryShort || !strings.Contains(e.Error, "host host-2 could not be reached to define VM new-1") {
				t.Errorf("vm create --host host-2 with exactly enough memory: %d %+v; want it placed there, then the unreachable agent", status, e)
			}

			// Moving web-1 with --auto: host-1 is its source, so host-2 is the only choice.
			var rep api.BulkMigrateReply
			if status, e := call(http.MethodPost, "/api/v1/migrations", api.BulkMigrateRequest{VMs: []string{"web-1"}, Auto: true}, &rep); status != http.StatusAccepted || len(rep.Refused) != 1 {
				t.Fatalf("vm migrate --auto web-1: %d %+v %+v; want 202 with web-1 refused", status, e, rep)
			}
			r := rep.Refused[0]
			if tc.short {
				if r.Code != "no_destination" || !strings.Contains(r.Error, wizard) {
					t.Errorf("vm migrate --auto web-1: %+v; want no_destination saying %q", r, wizard)
				}
			} else if r.Code != "host_unreachable" || !strings.Contains(r.Error, "host-2") {
				t.Errorf("vm migrate --auto web-1 with exactly enough memory on host-2: %+v; want it sent to host-2, whose agent does not answer", r)
			}
			if vms, err := c.store.VMs(ctx); err != nil || len(vms) != 1 {
				t.Errorf("VMs after the test: %d, %v; want only web-1", len(vms), err)
			}
		})
	}
}

// VM creation places with the engine: without --host it takes the best-ranked host the
// engine does not refuse (here the only one holding the image), and when none can take
// the VM it answers 409 no_host naming each host's reasons, including a host's health,
// which creation did not check before the engine.
func TestCreationPlacesWithTheEngine(t *testing.T) {
	c := newTestCenter(t)
	ctx := context.Background()
	now := time.Now()
	noImage := placementFacts("host-1", 48<<10)
	noImage.Datastores[0].Images = []api.Image{{Name: "other", Kernel: "[shared] images/other/vmlinuz"}}
	degraded := placementFacts("host-3", 60<<10)
	degraded.Health, degraded.HealthReason = "degraded", "bridge br0 of network lab is down"
	for _, f := range []api.HostFacts{noImage, placementFacts("host-2", 8<<10), degraded} {
		if _, err := c.store.SaveHeartbeat(ctx, f, now); err != nil {
			t.Fatal(err)
		}
	}
	// host-1 and host-3 have more free memory (the old rule's pick) but cannot take it.
	host, err := c.place(ctx, api.CreateVMRequest{Name: "new-1", Image: "godwit-test"}, api.VMSpec{Name: "new-1", CPUs: 1, MemoryMiB: 512})
	if err != nil || host.Facts.Name != "host-2" {
		t.Fatalf("place = %s, %v; want host-2", host.Facts.Name, err)
	}

	_, err = c.place(ctx, api.CreateVMRequest{Name: "big-1", Image: "godwit-test"}, api.VMSpec{Name: "big-1", CPUs: 1, MemoryMiB: 16 << 10})
	var se *api.StatusError
	if !asStatus(err, &se) || se.Status != http.StatusConflict || se.Code != "no_host" {
		t.Fatalf("place of a 16 GiB VM = %v; want 409 no_host", err)
	}
	for _, says := range []string{
		"no host can run VM big-1: ",
		"host-1 has no image godwit-test on its datastores",
		"host-2 has 8192 MiB free",
		"host-3 is degraded (bridge br0 of network lab is down)",
	} {
		if !strings.Contains(se.Msg, says) {
			t.Errorf("no_host says %q; want it to say %q", se.Msg, says)
		}
	}

	_, err = c.place(ctx, api.CreateVMRequest{Name: "new-2", Host: "host-3", Image: "godwit-test"}, api.VMSpec{Name: "new-2", CPUs: 1, MemoryMiB: 512})
	if !asStatus(err, &se) || se.Status != http.StatusUnprocessableEntity || se.Code != placement.CodeHostUnhealthy || !strings.Contains(se.Msg, "host host-3 cannot run VM new-2: host-3 is degraded") {
		t.Errorf("place on host-3 = %v; want 422 host_unhealthy", err)
	}
	// A typo is still a request error, not a lack of capacity.
	_, err = c.place(ctx, api.CreateVMRequest{Name: "new-3", Image: "godwit-tset"}, api.VMSpec{Name: "new-3", CPUs: 1, MemoryMiB: 512})
	if !asStatus(err, &se) || se.Code != "invalid_spec" || !strings.Contains(se.Msg, `no image "godwit-tset" on any datastore`) {
		t.Errorf("place with an unknown image = %v; want 422 invalid_spec", err)
	}
}

// The CPU-model-name check is the engine's: with the flags of the VM's model unknown (no
// host has reported a CPU catalog), a host that lists its models without the VM's is
// refused with cpu_unsupported by the wizard's check and recommendation and by creation.
func TestModelNameCheckedByTheEngine(t *testing.T) {
	c := newTestCenter(t)
	ctx := context.Background()
	now := time.Now()
	for name, models := range map[string][]string{"host-1": nil, "host-2": {"qemu64", "Nehalem"}, "host-3": {"qemu64", "Nehalem", "Westmere"}} {
		f := placementFacts(name, 32<<10)
		f.GuestCPU.Models = models
		if _, err := c.store.SaveHeartbeat(ctx, f, now); err != nil {
			t.Fatal(err)
		}
	}
	if err := c.store.InsertVM(ctx, store.VMRecord{Spec: api.VMSpec{Name: "west-1", UUID: uuid.NewString(), CPUs: 1, MemoryMiB: 256,
		CPUModel: "Westmere", Boot: api.Boot{Kernel: "[shared] images/godwit-test/vmlinuz"}}, Host: "host-1",
		Desired: api.VMRunning, State: api.VMRunning, Created: now, Updated: now}); err != nil {
		t.Fatal(err)
	}
	want := "host-2 cannot provide CPU model Westmere: it provides only Nehalem, qemu64."
	chk, err := c.checkMigration(ctx, "west-1", "host-2")
	if err != nil || len(chk.Hosts) != 1 || len(chk.Hosts[0].Errors) != 1 || chk.Hosts[0].Errors[0].Code != placement.CodeCPUUnsupported ||
		chk.Hosts[0].Errors[0].Message != want {
		t.Fatalf("check of host-2 = %+v, %v; want one cpu_unsupported %q", chk, err, want)
	}
	rec, err := c.recommend(ctx, "west-1")
	if err != nil {
		t.Fatal(err)
	}
	if best, ok := rec.Best(); !ok || best.Host != "host-3" || len(rec.Candidates) != 1 {
		t.Errorf("candidates %+v; want only host-3", rec.Candidates)
	}
	if len(rec.Refused) != 2 || rec.Refused[1].Host != "host-2" || rec.Refused[1].Errors[0].Message != want {
		t.Errorf("refused %+v; want host-1 (the source) and host-2 for its CPU", rec.Refused)
	}
	spec := api.VMSpec{Name: "west-2", CPUs: 1, MemoryMiB: 256, CPUModel: "Westmere"}
	_, err = c.place(ctx, api.CreateVMRequest{Name: "west-2", Host: "host-2", Image: "godwit-test"}, spec)
	var se *api.StatusError
	if !asStatus(err, &se) || se.Code != placement.CodeCPUUnsupported || !strings.Contains(se.Msg, strings.ReplaceAll(want, "west-1", "west-2")) {
		t.Errorf("vm create west-2 --host host-2 = %v; want 422 cpu_unsupported", err)
	}
	// host-1 has not reported its models: it is not refused for them.
	if h, err := c.place(ctx, api.CreateVMRequest{Name: "west-2", Host: "host-1", Image: "godwit-test"}, spec); err != nil || h.Facts.Name != "host-1" {
		t.Errorf("vm create west-2 --host host-1 = %s, %v; want host-1", h.Facts.Name, err)
	}
}
