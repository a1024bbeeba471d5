package bench

import (
	"context"
	"crypto/x509"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/godwit/godwit/internal/api"
	"github.com/godwit/godwit/internal/pki"
	"github.com/godwit/godwit/internal/store"
)

// The scale harness runs the center as users run it (the godwit binary, its own
// process, its SQLite database) against simulated hosts that speak the real protocol:
// each joins with a one-time token and a signing request, gets its certificate, and sends
// the heartbeat an agent sends (its facts, about 3.7 KB with no VM, and the status of
// each VM it runs) every 2 s over mutual TLS, on one keep-alive connection of its own.
// The VMs the hosts report are in the center's inventory (written into its database
// before it starts). The harness measures what the hosts see (heartbeat latency and
// errors), what users see (GET /hosts and GET /vms while it runs) and what the center
// costs (CPU, one core = 100 %, and resident memory). The window's first half has the
// heartbeats alone (the center's cost of keeping its hosts); in the second an
// administrator also lists the hosts and the VMs every second.

// scaleTargets are issue 11's targets at 1,000 hosts × 10 VMs.
const (
	targetHeartbeatP99 = 50 * time.Millisecond
	targetListP99      = 100 * time.Millisecond
	targetCPU          = 50.0 // % of one core
	targetRSSMiB       = 512
)

type scaleScenario struct {
	hosts, vms int
	// window is how long heartbeats are measured, after every host has sent one.
	window time.Duration
}

// BenchmarkScale runs the scenarios in GODWIT_SCALE (a comma-separated list of
// HOSTSxVMS, e.g. "100x0,1000x10"; default: 100x0, 1000x10 and 2500x16) and prints, for
// each, the measured figures beside the targets.
func BenchmarkScale(b *testing.B) {
	bin := os.Getenv("GODWIT_BIN")
	if bin == "" {
		b.Fatal("GODWIT_BIN: the godwit binary (`make bench` sets it)")
	}
	scs, err := parseScale(os.Getenv("GODWIT_SCALE"))
	if err != nil {
		b.Fatal(err)
	}
	for i := 0; i < b.N; i++ {
		var rows []scaleResult
		for _, sc := range scs {
			r := runScale(b, bin, sc)
			rows = append(rows, r)
			b.Logf("%s", r.line())
		}
		b.Logf("\n%s", scaleTable(rows))
	}
}

func parseScale(s string) ([]scaleScenario, error) {
	if s == "" {
		s = "100x0,1000x10,2500x16"
	}
	var out []scaleScenario
	for _, f := range strings.Split(s, ",") {
		h, v, ok := strings.Cut(strings.TrimSpace(f), "x")
		hosts, err1 := strconv.Atoi(h)
		vms, err2 := strconv.Atoi(v)
		if !ok || err1 != nil || err2 != nil || hosts < 1 || hosts > 10000 || vms < 0 || vms > 100 {
			return nil, fmt.Errorf("GODWIT_SCALE=%q: want HOSTSxVMS items such as 1000x10 (1–10,000 hosts, 0–100 VMs each)", s)
		}
		out = append(out, scaleScenario{hosts: hosts, vms: vms, window: 30 * time.Second})
	}
	return out, nil
}

type latencies struct {
	mu sync.Mutex
	d  []time.Duration
}

func (l *latencies) add(d time.Duration) {
	l.mu.Lock()
	l.d = append(l.d, d)
	l.mu.Unlock()
}

// pct returns the p-th percentile (0–100) of what was added.
func (l *latencies) pct(p float64) time.Duration {
	l.mu.Lock()
	defer l.mu.Unlock()
	if len(l.d) == 0 {
		return 0
	}
	s := slices.Clone(l.d)
	slices.Sort(s)
	i := int(float64(len(s)-1) * p / 100)
	return s[i]
}

func (l *latencies) n() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return len(l.d)
}

type scaleResult struct {
	sc                    scaleScenario
	beats                 int
	hbP50, hbP99          time.Duration
	errors                int64
	firstErr              string
	cpu, cpuLists         float64
	rssMiB                int
	hostsP50, hostsP99    time.Duration
	hostsBytes            int
	vmsP50, vmsP99        time.Duration
	vmsBytes              int
	connected, registered int
	setup                 time.Duration
	// errorsBySecond is, for each error, the second of the measurement it came in.
	errorsBySecond []int
}

func (r scaleResult) line() string {
	return fmt.Sprintf("%d hosts × %d VMs: %d heartbeats in %v, p50 %v p99 %v, %d errors%s; center CPU %.0f %% (%.0f %% with the lists), RSS %d MiB; GET /hosts p50 %v p99 %v (%d bytes); GET /vms p50 %v p99 %v (%d bytes); %d of %d hosts connected at the end (set-up %v)%s",
		r.sc.hosts, r.sc.vms, r.beats, r.sc.window, r.hbP50.Round(100*time.Microsecond), r.hbP99.Round(100*time.Microsecond), r.errors, firstErrNote(r.firstErr),
		r.cpu, r.cpuLists, r.rssMiB, r.hostsP50.Round(100*time.Microsecond), r.hostsP99.Round(100*time.Microsecond), r.hostsBytes,
		r.vmsP50.Round(100*time.Microsecond), r.vmsP99.Round(100*time.Microsecond), r.vmsBytes, r.connected, r.registered, r.setup.Round(time.Second), errorSeconds(r.errorsBySecond))
}

// errorSeconds says in which seconds of the measurement the errors came, as
// "second:count" pairs.
func errorSeconds(secs []int) string {
	if len(secs) == 0 {
		return ""
	}
	count := map[int]int{}
	for _, s := range secs {
		count[s]++
	}
	keys := make([]int, 0, len(count))
	for k := range count {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	parts := make([]string, len(keys))
	for i, k := range keys {
		parts[i] = fmt.Sprintf("%d:%d", k, count[k])
	}
	return " (errors by second of the measurement: " + strings.Join(parts, " ") + ")"
}

func firstErrNote(s string) string {
	if s == "" {
		return ""
	}
	return " (first: " + s + ")"
}

func verdict(ok bool) string {
	if ok {
		return "MET"
	}
	return "NOT MET"
}

// scaleTable prints the scenarios, and the targets beside the figures they judge.
func scaleTable(rows []scaleResult) string {
	var sb strings.Builder
	fmt.Fprintf(&sb, "| hosts × VMs | heartbeat p50 / p99 | errors | center CPU (with lists) | center RSS | GET /hosts p50 / p99 (default page) | GET /vms p50 / p99 (default page) | connected |\n|---|---|---|---|---|---|---|---|\n")
	for _, r := range rows {
		fmt.Fprintf(&sb, "| %d × %d | %v / %v | %d | %.0f %% (%.0f %%) | %d MiB | %v / %v (%d KB) | %v / %v (%d KB) | %d of %d |\n",
			r.sc.hosts, r.sc.vms, r.hbP50.Round(100*time.Microsecond), r.hbP99.Round(100*time.Microsecond), r.errors, r.cpu, r.cpuLists, r.rssMiB,
			r.hostsP50.Round(100*time.Microsecond), r.hostsP99.Round(100*time.Microsecond), r.hostsBytes/1000,
			r.vmsP50.Round(100*time.Microsecond), r.vmsP99.Round(100*time.Microsecond), r.vmsBytes/1000, r.connected, r.sc.hosts)
	}
	for _, r := range rows {
		switch {
		case r.sc.hosts == 1000 && r.sc.vms == 10:
			fmt.Fprintf(&sb, "\nTargets at 1,000 hosts × 10 VMs:\n")
			fmt.Fprintf(&sb, "- heartbeat p99 ≤ %v with no error: %v, %d errors: %s\n", targetHeartbeatP99, r.hbP99.Round(100*time.Microsecond), r.errors, verdict(r.hbP99 <= targetHeartbeatP99 && r.errors == 0))
			fmt.Fprintf(&sb, "- GET /hosts p99 ≤ %v: %v: %s\n", targetListP99, r.hostsP99.Round(100*time.Microsecond), verdict(r.hostsP99 <= targetListP99))
			fmt.Fprintf(&sb, "- GET /vms p99 ≤ %v: %v: %s\n", targetListP99, r.vmsP99.Round(100*time.Microsecond), verdict(r.vmsP99 <= targetListP99))
			fmt.Fprintf(&sb, "- center CPU < %.0f %% of a core: %.0f %%: %s\n", targetCPU, r.cpu, verdict(r.cpu < targetCPU))
			fmt.Fprintf(&sb, "- center memory < %d MiB: %d MiB: %s\n", targetRSSMiB, r.rssMiB, verdict(r.rssMiB < targetRSSMiB))
		case r.sc.hosts == 2500 && r.sc.vms == 16:
			fmt.Fprintf(&sb, "\nTarget at 2,500 hosts × 16 VMs (vCenter's largest):\n")
			fmt.Fprintf(&sb, "- every host connected, no error: %d of %d, %d errors: %s\n", r.connected, r.sc.hosts, r.errors, verdict(r.connected == r.sc.hosts && r.errors == 0))
		}
	}
	return sb.String()
}

// simHost is one simulated host: its name, its mutual-TLS client and the facts it sends.
type simHost struct {
	name  string
	c     *api.Client
	facts api.HostFacts
}

func runScale(b *testing.B, bin string, sc scaleScenario) scaleResult {
	b.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	res := scaleResult{sc: sc}
	start := time.Now()
	dir, err := os.MkdirTemp("", "godwit-scale-")
	if err != nil {
		b.Fatal(err)
	}
	defer os.RemoveAll(dir)

	// The inventory: each host's VMs, written before the center starts.
	if sc.vms > 0 {
		st, err := store.Open(ctx, filepath.Join(dir, "godwit.db"))
		if err != nil {
			b.Fatal(err)
		}
		now := time.Now()
		for h := range sc.hosts {
			for v := range sc.vms {
				n := h*sc.vms + v
				rec := store.VMRecord{Spec: simVMSpec(h, v, n), Host: simHostName(h), Desired: api.VMRunning, State: api.VMRunning,
					PID: 1000 + n, Accel: "tcg", Created: now, Updated: now}
				if err := st.InsertVM(ctx, rec); err != nil {
					b.Fatalf("write the inventory: %v", err)
				}
			}
		}
		if err := st.Close(); err != nil {
			b.Fatal(err)
		}
	}

	// The center, as users run it.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	sock := filepath.Join(dir, "center.sock")
	cmd := exec.Command(bin, "center", "--data-dir", dir, "--listen", addr, "--socket", sock, "--tls-name", "127.0.0.1")
	logf, err := os.Create(filepath.Join(dir, "center.log"))
	if err != nil {
		b.Fatal(err)
	}
	defer logf.Close()
	cmd.Stdout, cmd.Stderr = logf, logf
	if err := cmd.Start(); err != nil {
		b.Fatal(err)
	}
	defer func() {
		_ = cmd.Process.Signal(os.Interrupt)
		done := make(chan struct{})
		go func() { _ = cmd.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(20 * time.Second):
			_ = cmd.Process.Kill()
			<-done
		}
	}()
	admin, err := api.NewClient("unix://"+sock, time.Minute)
	if err != nil {
		b.Fatal(err)
	}
	var ca api.CAInfo
	for deadline := time.Now().Add(60 * time.Second); ; time.Sleep(50 * time.Millisecond) {
		if err = admin.Do(ctx, http.MethodGet, "/api/v1/pki/ca", nil, &ca); err == nil {
			break
		}
		if time.Now().After(deadline) {
			b.Fatalf("the center did not answer in 60 s: %v (log: %s)", err, filepath.Join(dir, "center.log"))
		}
	}
	caCert, err := pki.ParseCertPEM([]byte(ca.Certificate))
	if err != nil {
		b.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AddCert(caCert)
	base := "https://" + addr

	// Join every host: a one-time token from the administrator, then the join itself.
	hosts := make([]*simHost, sc.hosts)
	var joinErr atomic.Value
	var wg sync.WaitGroup
	next := atomic.Int64{}
	for range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				i := int(next.Add(1) - 1)
				if i >= sc.hosts || joinErr.Load() != nil {
					return
				}
				h, err := joinSimHost(ctx, admin, base, pool, i, sc.vms)
				if err != nil {
					joinErr.Store(err)
					return
				}
				hosts[i] = h
			}
		}()
	}
	wg.Wait()
	if err, _ := joinErr.Load().(error); err != nil {
		b.Fatalf("join: %v", err)
	}

	// Heartbeats: every host every 2 s, spread evenly; the first round registers them.
	var lat latencies
	var errs atomic.Int64
	var firstErr atomic.Value
	measuring := atomic.Bool{}
	// beaten counts the hosts whose heartbeats got through since they joined.
	var beaten atomic.Int64
	var errMu sync.Mutex
	var errAt []time.Duration // when each error came, from the start of the measurement
	var measureStart time.Time
	hbCtx, stopBeats := context.WithCancel(ctx)
	defer stopBeats()
	var beats sync.WaitGroup
	period := 2 * time.Second
	for i, h := range hosts {
		beats.Add(1)
		go func() {
			defer beats.Done()
			through := false
			phase := period * time.Duration(i) / time.Duration(len(hosts))
			select {
			case <-time.After(phase):
			case <-hbCtx.Done():
				return
			}
			t := time.NewTicker(period)
			defer t.Stop()
			for beat := 0; ; beat++ {
				// Live load changes every beat, as on a real host.
				h.facts.Load = 0.25 + float64((i*7+beat*13)%100)/100
				h.facts.FreeMemoryMiB = 20000 - (i*31+beat*17)%512
				c, cc := context.WithTimeout(hbCtx, 5*time.Second)
				t0 := time.Now()
				var rep api.HeartbeatReply
				err := h.c.Do(c, http.MethodPost, "/api/v1/hosts/heartbeat", h.facts, &rep)
				d := time.Since(t0)
				cc()
				if err == nil && !through {
					through = true
					beaten.Add(1)
				}
				if err == nil && rep.AuditCheckpoint != nil {
					// Held and sent back with the next heartbeat, as an agent does.
					h.facts.AuditCheckpoint = rep.AuditCheckpoint
				}
				if hbCtx.Err() != nil {
					return
				}
				if measuring.Load() {
					if err != nil {
						errs.Add(1)
						firstErr.CompareAndSwap(nil, err.Error())
						errMu.Lock()
						errAt = append(errAt, time.Since(measureStart))
						errMu.Unlock()
					} else {
						lat.add(d)
					}
				}
				select {
				case <-t.C:
				case <-hbCtx.Done():
					return
				}
			}
		}()
	}
	// Until every host's heartbeats have got through once (the first round registers
	// them: a TLS handshake and a first look at its VMs each), then one more round.
	for deadline := time.Now().Add(3 * time.Minute); beaten.Load() < int64(len(hosts)); time.Sleep(100 * time.Millisecond) {
		if time.Now().After(deadline) {
			b.Fatalf("after 3 minutes only %d of %d hosts' heartbeats got through", beaten.Load(), len(hosts))
		}
	}
	time.Sleep(period)
	res.setup = time.Since(start)

	measureStart = time.Now()
	measuring.Store(true)
	// The first half: heartbeats alone, for what the center costs to keep the hosts.
	cpu0, _ := procCPU(cmd.Process.Pid)
	w0 := time.Now()
	time.Sleep(sc.window / 2)
	cpu1, _ := procCPU(cmd.Process.Pid)
	res.cpu = 100 * (cpu1 - cpu0).Seconds() / time.Since(w0).Seconds()
	res.rssMiB = procRSSMiB(cmd.Process.Pid)
	// The second half: an administrator lists the hosts and the VMs every second too.
	w0 = time.Now()
	var hostsLat, vmsLat latencies
	// The lists as the administrator reads them, over the center's unix socket.
	users := &http.Client{Timeout: time.Minute, Transport: &http.Transport{DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
		var d net.Dialer
		return d.DialContext(ctx, "unix", sock)
	}}}
	deadline := time.Now().Add(sc.window / 2)
	for time.Now().Before(deadline) {
		for _, p := range []struct {
			path string
			l    *latencies
			size *int
		}{{"/api/v1/hosts", &hostsLat, &res.hostsBytes}, {"/api/v1/vms", &vmsLat, &res.vmsBytes}} {
			t0 := time.Now()
			n, err := getBytes(ctx, users, "http://godwit"+p.path)
			if err != nil {
				b.Fatalf("GET %s: %v", p.path, err)
			}
			p.l.add(time.Since(t0))
			*p.size = n
		}
		if rss := procRSSMiB(cmd.Process.Pid); rss > res.rssMiB {
			res.rssMiB = rss
		}
		time.Sleep(time.Second)
	}
	cpu2, _ := procCPU(cmd.Process.Pid)
	res.cpuLists = 100 * (cpu2 - cpu1).Seconds() / time.Since(w0).Seconds()
	measuring.Store(false)
	res.beats, res.hbP50, res.hbP99 = lat.n(), lat.pct(50), lat.pct(99)
	res.errors = errs.Load()
	errMu.Lock()
	for _, at := range errAt {
		res.errorsBySecond = append(res.errorsBySecond, int(at/time.Second))
	}
	errMu.Unlock()
	if s, ok := firstErr.Load().(string); ok {
		res.firstErr = s
	}
	res.hostsP50, res.hostsP99 = hostsLat.pct(50), hostsLat.pct(99)
	res.vmsP50, res.vmsP99 = vmsLat.pct(50), vmsLat.pct(99)

	list, err := api.GetAll[api.Host](ctx, admin, "/api/v1/hosts")
	if err != nil {
		b.Fatal(err)
	}
	res.registered = len(list)
	for _, h := range list {
		if h.State == api.HostConnected {
			res.connected++
		}
	}
	stopBeats()
	beats.Wait()
	return res
}

func simHostName(i int) string { return fmt.Sprintf("sim-%04d", i) }

func simVMSpec(h, v, n int) api.VMSpec {
	return api.VMSpec{
		Name: fmt.Sprintf("sim-%04d-vm%02d", h, v), UUID: fmt.Sprintf("5e000000-0000-4000-8000-%012x", n),
		CPUs: 1, MemoryMiB: 512,
		NICs: []api.NIC{{Network: "lab", MAC: fmt.Sprintf("02:67:5e:%02x:%02x:%02x", n>>16&0xff, n>>8&0xff, n&0xff),
			IP: fmt.Sprintf("10.%d.%d.%d", n>>16&0xff, n>>8&0xff, n&0xff)}},
	}
}

// simFacts are the facts of simulated host i: what an agent on this machine reports,
// with a full set of CPU flags and models, running vms VMs.
func simFacts(i, vms int) api.HostFacts {
	flags := strings.Fields("fpu vme de pse tsc msr pae mce cx8 apic sep mtrr pge mca cmov pat pse36 clflush mmx fxsr sse sse2 ss ht syscall nx pdpe1gb rdtscp lm constant_tsc arch_perfmon rep_good nopl xtopology cpuid tsc_known_freq pni pclmulqdq ssse3 fma cx16 pcid sse4_1 sse4_2 x2apic movbe popcnt tsc_deadline_timer aes xsave avx f16c rdrand hypervisor lahf_lm abm 3dnowprefetch cpuid_fault invpcid_single ssbd ibrs ibpb stibp ibrs_enhanced fsgsbase tsc_adjust bmi1 avx2 smep bmi2 erms invpcid avx512f avx512dq rdseed adx smap avx512ifma clflushopt clwb avx512cd sha_ni avx512bw avx512vl xsaveopt xsavec xgetbv1 xsaves avx_vnni avx512_bf16 wbnoinvd arat avx512vbmi umip pku ospke waitpkg avx512_vbmi2 gfni vaes vpclmulqdq avx512_vnni avx512_bitalg avx512_vpopcntdq la57 rdpid bus_lock_detect cldemote movdiri movdir64b md_clear serialize tsxldtrk amx_bf16 avx512_fp16 amx_tile amx_int8 flush_l1d arch_capabilities")
	models := strings.Fields("qemu64 kvm64 Nehalem Nehalem-v1 Nehalem-v2 Westmere Westmere-v1 Westmere-v2 SandyBridge SandyBridge-v1 SandyBridge-v2 IvyBridge IvyBridge-v1 IvyBridge-v2 Haswell-noTSX Haswell-v2 Broadwell-noTSX Broadwell-v2 Skylake-Client-noTSX-IBRS Skylake-Server-noTSX-IBRS Cascadelake-Server-noTSX Icelake-Server-noTSX EPYC EPYC-v1 EPYC-Rome")
	f := api.HostFacts{
		Name: simHostName(i), AgentURL: fmt.Sprintf("https://198.18.%d.%d:7700", 64+i/250, 1+i%250), Address: fmt.Sprintf("198.18.%d.%d", 64+i/250, 1+i%250),
		Version: "bench", CPU: api.CPUInfo{Model: "Intel(R) Xeon(R) Platinum 8481C CPU @ 2.70GHz", Vendor: "GenuineIntel", Cores: 2, Threads: 2, Flags: flags},
		MemoryMiB: 24576, FreeMemoryMiB: 20000, Load: 0.5, QEMUVersion: "10.0.2", Accel: "tcg", AccelReason: "no /dev/kvm",
		Datastores: []api.Datastore{{Name: "shared", Path: "/srv/godwit/shared", TotalByte: 500 << 30, FreeByte: 300 << 30}},
		Networks:   []api.Network{{Name: "lab", Bridge: "br-lab", MTU: 1500}},
		Health:     "ok", BootTime: time.Now().Add(-time.Hour).Truncate(time.Second),
		GuestCPU: api.GuestCPU{Accel: "tcg", Flags: flags, Models: models},
	}
	for v := range vms {
		n := i*vms + v
		spec := simVMSpec(i, v, n)
		f.VMs = append(f.VMs, api.VMStatus{Name: spec.Name, UUID: spec.UUID, State: api.VMRunning, PID: 1000 + n, Accel: "tcg"})
	}
	return f
}

// joinSimHost joins simulated host i as an agent does and returns it, ready to beat.
func joinSimHost(ctx context.Context, admin *api.Client, base string, pool *x509.CertPool, i, vms int) (*simHost, error) {
	name := simHostName(i)
	var tok api.JoinToken
	if err := admin.Do(ctx, http.MethodPost, "/api/v1/join-tokens", api.CreateJoinTokenRequest{Host: name}, &tok); err != nil {
		return nil, fmt.Errorf("join token for %s: %w", name, err)
	}
	key, err := pki.NewKey()
	if err != nil {
		return nil, err
	}
	csr, err := pki.NewCSR(key, name)
	if err != nil {
		return nil, err
	}
	anon, err := api.NewClient(base, 30*time.Second, api.WithTLS(pki.ClientTLS(pool, pki.CenterName, nil)))
	if err != nil {
		return nil, err
	}
	var rep api.JoinReply
	if err := anon.Do(ctx, http.MethodPost, "/api/v1/hosts/join", api.JoinRequest{Name: name, Token: tok.Secret, CSR: string(csr)}, &rep); err != nil {
		return nil, fmt.Errorf("join %s: %w", name, err)
	}
	anon.CloseIdle()
	keyPEM, err := pki.MarshalKeyPEM(key)
	if err != nil {
		return nil, err
	}
	id, err := pki.NewIdentity(name, keyPEM, []byte(rep.Certificate), []byte(rep.CA))
	if err != nil {
		return nil, fmt.Errorf("the certificate %s received: %w", name, err)
	}
	c, err := api.NewClient(base, 30*time.Second, api.WithTLS(pki.ClientTLS(pool, pki.CenterName, &id.Cert)))
	if err != nil {
		return nil, err
	}
	return &simHost{name: name, c: c, facts: simFacts(i, vms)}, nil
}

// getBytes fetches url and returns the size of the answer.
func getBytes(ctx context.Context, c *http.Client, url string) (int, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return 0, err
	}
	resp, err := c.Do(req)
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return 0, api.ErrorOf(resp, "GET "+url)
	}
	n, err := io.Copy(io.Discard, resp.Body)
	return int(n), err
}

// procCPU is the CPU time process pid has used.
func procCPU(pid int) (time.Duration, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, err
	}
	s := string(b)
	f := strings.Fields(s[strings.LastIndexByte(s, ')')+2:])
	ut, _ := strconv.ParseInt(f[11], 10, 64)
	st, _ := strconv.ParseInt(f[12], 10, 64)
	return time.Duration(ut+st) * time.Second / 100, nil // USER_HZ is 100 on Linux
}

// procRSSMiB is process pid's resident memory.
func procRSSMiB(pid int) int {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0
	}
	for _, l := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(l, "VmRSS:"); ok {
			kb, _ := strconv.Atoi(strings.TrimSuffix(strings.TrimSpace(v), " kB"))
			return kb / 1024
		}
	}
	return 0
}
