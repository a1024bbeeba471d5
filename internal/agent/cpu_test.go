package agent

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/godwit/godwit/internal/api"
	"github.com/godwit/godwit/internal/qemu"
)

// cpuTestAgent is an agent under TCG with the real QEMU, limited to cpuLimit (none when
// empty), with a datastore holding a kernel and an initrd. Run is not called; its CPU
// capabilities are probed by the caller (probeAccel).
func cpuTestAgent(t *testing.T, cpuLimit string) (*Agent, string) {
	t.Helper()
	ds := t.TempDir()
	write(t, filepath.Join(ds, "images/g/vmlinuz"), "k")
	write(t, filepath.Join(ds, "images/g/initrd.img"), "i")
	a, err := New(Config{
		Name: "host-1", Center: "https://198.18.1.2:7443", Listen: "198.18.1.11:7700",
		StateDir: t.TempDir(), Datastores: map[string]string{"shared": ds}, Accel: "tcg", CPULimit: cpuLimit,
		Registry: prometheus.NewRegistry(), Log: slog.New(slog.NewTextHandler(io.Discard, nil)),
	}, "test")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(func() { cancel(); a.wg.Wait() })
	a.runCtx = ctx
	return a, ds
}

// serve sends one request to the agent's API and returns the answer.
func serve(a *Agent, method, path string, body any) *httptest.ResponseRecorder {
	var r *http.Request
	if body == nil {
		r = httptest.NewRequest(method, path, nil)
	} else {
		b, _ := json.Marshal(body)
		r = httptest.NewRequest(method, path, strings.NewReader(string(b)))
		r.Header.Set("Content-Type", "application/json")
	}
	w := httptest.NewRecorder()
	a.Handler().ServeHTTP(w, r)
	return w
}

// errorOf decodes an error answer.
func errorOf(t *testing.T, w *httptest.ResponseRecorder) api.Error {
	t.Helper()
	var e api.Error
	if err := json.Unmarshal(w.Body.Bytes(), &e); err != nil {
		t.Fatalf("answer %d is not a JSON error: %q", w.Code, w.Body)
	}
	return e
}

func cpuSpec(name, model string) api.VMSpec {
	return api.VMSpec{Name: name, UUID: "0f8fad5b-d9cb-469f-a165-70867728950e", CPUs: 1, MemoryMiB: 64, CPUModel: model,
		Boot: api.Boot{Kernel: "[shared] images/g/vmlinuz", Initrd: "[shared] images/g/initrd.img"}}
}

// TestCPUCapabilitiesLimited probes the real QEMU on an agent limited to Nehalem and on
// one that is not, and checks what each reports and refuses.
func TestCPUCapabilitiesLimited(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	a, _ := cpuTestAgent(t, "Nehalem")
	full, _ := cpuTestAgent(t, "")

	// Before the probe: heartbeats have no guest CPU, and the catalog is not served.
	if g := a.Facts().GuestCPU; g.Accel != "" || len(g.Models) != 0 {
		t.Errorf("guest CPU before the probe: %+v", g)
	}
	if w := serve(a, http.MethodGet, "/agent/v1/cpu-models", nil); w.Code != http.StatusServiceUnavailable || !strings.Contains(errorOf(t, w).Error, "still probing") {
		t.Errorf("GET cpu-models before the probe: %d %s; want 503, still probing", w.Code, w.Body)
	}

	for _, ag := range []*Agent{a, full} {
		if err := ag.probeAccel(ctx); err != nil {
			t.Fatalf("probeAccel (limit %q): %v", ag.cfg.CPULimit, err)
		}
	}
	g, gf := a.Facts().GuestCPU, full.Facts().GuestCPU
	t.Logf("limited: %d flags, %d models; unlimited: %d flags, %d models; catalog %s", len(g.Flags), len(g.Models), len(gf.Flags), len(gf.Models), g.Catalog)
	if g.Accel != qemu.AccelTCG || g.LimitedTo != "Nehalem" || !slices.Contains(g.Models, "Nehalem") || !slices.Contains(g.Models, "qemu64") ||
		slices.Contains(g.Models, "Westmere") || slices.Contains(g.Flags, "aes") {
		t.Errorf("the host limited to Nehalem reports %+v", g)
	}
	if gf.LimitedTo != "" || !slices.Contains(gf.Models, "Westmere") || !slices.Contains(gf.Flags, "aes") || len(gf.Models) <= len(g.Models) {
		t.Errorf("the unlimited host reports limit %q, %d models (Westmere: %v), aes: %v",
			gf.LimitedTo, len(gf.Models), slices.Contains(gf.Models, "Westmere"), slices.Contains(gf.Flags, "aes"))
	}
	if !regexp.MustCompile(`^[0-9a-f]{16}$`).MatchString(g.Catalog) || g.Catalog != gf.Catalog {
		t.Errorf("catalogs %q and %q; want the same 16 hex digits (same QEMU, same models)", g.Catalog, gf.Catalog)
	}

	// The whole catalog, for the center.
	w := serve(a, http.MethodGet, "/agent/v1/cpu-models", nil)
	var caps qemu.CPUCaps
	if err := json.Unmarshal(w.Body.Bytes(), &caps); w.Code != http.StatusOK || err != nil {
		t.Fatalf("GET cpu-models: %d %v %.300s", w.Code, err, w.Body)
	}
	if _, ok := caps.Model("Westmere"); !ok || caps.LimitedTo != "Nehalem" || cpuCatalog(caps.Models) != g.Catalog {
		t.Errorf("GET cpu-models: %d models (Westmere known: %v), limited to %q", len(caps.Models), ok, caps.LimitedTo)
	}

	// What the host can and cannot give.
	err := a.checkCPU(ctx, "Westmere")
	var se *api.StatusError
	if !errors.As(err, &se) || se.Status != 422 || se.Code != codeCPUUnsupported ||
		!strings.Contains(se.Msg, "aes") || !strings.Contains(se.Msg, "pclmulqdq") || !strings.Contains(se.Msg, "Nehalem") {
		t.Errorf("checkCPU(Westmere) on the Nehalem host = %v; want a 422 cpu_unsupported naming aes, pclmulqdq and the limit", err)
	}
	for _, m := range []string{"Nehalem", "qemu64", ""} {
		if err := a.checkCPU(ctx, m); err != nil {
			t.Errorf("checkCPU(%q) on the Nehalem host = %v", m, err)
		}
	}
	if err := full.checkCPU(ctx, "Westmere"); err != nil {
		t.Errorf("checkCPU(Westmere) on the unlimited host = %v", err)
	}
	if err := a.checkCPU(ctx, "max"); !errors.Is(err, qemu.ErrUnknownCPUModel) {
		t.Errorf("checkCPU(max) = %v; want it left to QEMU (ErrUnknownCPUModel)", err)
	}

	// Preflight refuses a VM it cannot give the CPU, naming the flags, with the code.
	w = serve(a, http.MethodPost, "/agent/v1/preflight", api.IncomingRequest{ID: "m1", Spec: cpuSpec("x", "Westmere")})
	if e := errorOf(t, w); w.Code != 422 || e.Code != codeCPUUnsupported || !strings.Contains(e.Error, "host-1 cannot take VM x") || !strings.Contains(e.Error, "aes") {
		t.Errorf("preflight of a Westmere VM on the Nehalem host: %d %s", w.Code, w.Body)
	}
	if w := serve(a, http.MethodPost, "/agent/v1/preflight", api.IncomingRequest{ID: "m1", Spec: cpuSpec("x", "Nehalem")}); w.Code != http.StatusNoContent {
		t.Errorf("preflight of a Nehalem VM on the Nehalem host: %d %s", w.Code, w.Body)
	}

	// Starting one is refused before QEMU runs; the VM is left in the error state.
	if _, _, err := a.Define(ctx, cpuSpec("west", "Westmere")); err != nil {
		t.Fatal(err)
	}
	st, err := a.Start(ctx, "west")
	if !errors.As(err, &se) || se.Code != codeCPUUnsupported || !strings.Contains(se.Msg, "did not start on host host-1") || !strings.Contains(se.Msg, "aes") {
		t.Errorf("Start of a Westmere VM on the Nehalem host = %v; want a cpu_unsupported refusal naming aes", err)
	}
	if st.State != api.VMError || !strings.Contains(st.Error, "pclmulqdq") || st.PID != 0 {
		t.Errorf("after the refused start the VM is %+v; want the error state naming the flags, no process", st)
	}
}

// TestCPULimitUnknownModel checks that an agent does not run with a --cpu-limit QEMU
// does not define: refused at start-up, and by the probe.
func TestCPULimitUnknownModel(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	for _, limit := range []string{"NoSuchCPU", "nehalem", "max", "host"} {
		a, _ := cpuTestAgent(t, limit)
		if err := a.checkCPULimit(ctx); err == nil || !strings.Contains(err.Error(), "--cpu-limit "+limit) {
			t.Errorf("checkCPULimit(%q) = %v; want a refusal naming it", limit, err)
		}
	}
	a, _ := cpuTestAgent(t, "NoSuchCPU")
	if err := a.probeAccel(ctx); err == nil || !strings.Contains(err.Error(), "NoSuchCPU") || !errors.Is(err, qemu.ErrUnknownCPUModel) {
		t.Errorf("probeAccel with --cpu-limit NoSuchCPU = %v; want an error naming it", err)
	}
	ok, _ := cpuTestAgent(t, "Nehalem")
	if err := ok.checkCPULimit(ctx); err != nil {
		t.Errorf("checkCPULimit(Nehalem) = %v", err)
	}
}

// TestCPUProbeFailure checks a host whose QEMU cannot be probed: degraded, and VMs are
// refused with the reason rather than started unchecked.
func TestCPUProbeFailure(t *testing.T) {
	a, _ := cpuTestAgent(t, "")
	a.cfg.QEMU = "/nonexistent/qemu-system-x86_64"
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if err := a.probeAccel(ctx); err != nil {
		t.Fatalf("probeAccel with a missing QEMU = %v; want the failure kept, not returned", err)
	}
	f := a.Facts()
	if f.Health != "degraded" || !strings.Contains(f.HealthReason, "CPUs this host can give guests are unknown") || f.GuestCPU.Accel != "" {
		t.Errorf("facts after a failed probe: health %q (%s), guest CPU %+v", f.Health, f.HealthReason, f.GuestCPU)
	}
	w := serve(a, http.MethodPost, "/agent/v1/preflight", api.IncomingRequest{ID: "m1", Spec: cpuSpec("x", "qemu64")})
	if e := errorOf(t, w); w.Code != 422 || e.Code != codeCPUUnknown || !strings.Contains(e.Error, "probing QEMU failed") {
		t.Errorf("preflight on a host that does not know its CPUs: %d %s", w.Code, w.Body)
	}
	if w := serve(a, http.MethodGet, "/agent/v1/cpu-models", nil); w.Code != http.StatusServiceUnavailable || errorOf(t, w).Code != codeCPUUnknown {
		t.Errorf("GET cpu-models after a failed probe: %d %s", w.Code, w.Body)
	}
}

func TestCPUCatalog(t *testing.T) {
	m := []qemu.CPUModel{{Name: "A", Flags: []string{"fpu", "sse"}}, {Name: "B", Flags: []string{"fpu"}}}
	swapped := []qemu.CPUModel{m[1], m[0]}
	other := []qemu.CPUModel{{Name: "A", Flags: []string{"fpu"}}, {Name: "B", Flags: []string{"fpu"}}}
	renamed := []qemu.CPUModel{{Name: "A", Flags: []string{"fpu", "sse"}}, {Name: "C", Flags: []string{"fpu"}}}
	c := cpuCatalog(m)
	if len(c) != 16 || cpuCatalog(swapped) != c {
		t.Errorf("catalog %q; want 16 hex digits, whatever the order of the models (got %q swapped)", c, cpuCatalog(swapped))
	}
	if cpuCatalog(other) == c || cpuCatalog(renamed) == c {
		t.Error("catalogs of different models or flags are equal")
	}
}
