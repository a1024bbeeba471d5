package integration

import (
	"bytes"
	"encoding/json"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/godwit/godwit/internal/api"
	"github.com/godwit/godwit/internal/audit"
	"github.com/godwit/godwit/internal/labtest"
	"github.com/godwit/godwit/internal/pki"
	"github.com/godwit/godwit/internal/ticket"
)

// ticketCall sends one request with a ticket (when not "") and returns status and body.
func ticketCall(t *testing.T, hc *http.Client, method, url, tk string, body any) (int, string) {
	t.Helper()
	var b []byte
	if body != nil {
		b, _ = json.Marshal(body)
	}
	req, err := http.NewRequest(method, url, bytes.NewReader(b))
	if err != nil {
		t.Fatal(err)
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	if tk != "" {
		req.Header.Set(ticket.Header, tk)
	}
	resp, err := hc.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, url, err)
	}
	defer resp.Body.Close()
	var out bytes.Buffer
	_, _ = out.ReadFrom(resp.Body)
	return resp.StatusCode, out.String()
}

// hostTraces is what a VM the host must not have started would leave: QEMU processes
// with its UUID, a state directory naming it, links in the host's namespace.
func hostTraces(t *testing.T, l *labtest.Lab, host, stateDir, vmUUID string) (procs int, dirs []string, links string) {
	t.Helper()
	for _, pid := range qemuProcesses(vmUUID) {
		if b, err := os.ReadFile(filepath.Join("/proc", strconv.Itoa(pid), "cmdline")); err == nil && bytes.Contains(b, []byte(stateDir)) {
			procs++
		}
	}
	entries, _ := filepath.Glob(filepath.Join(stateDir, "vms", "*"))
	for _, e := range entries {
		if b, err := os.ReadFile(filepath.Join(e, "vm.json")); err == nil && bytes.Contains(b, []byte(vmUUID)) {
			dirs = append(dirs, e)
		}
	}
	out, err := exec.Command("ip", "netns", "exec", l.NS(host), "ip", "-o", "link", "show").CombinedOutput()
	if err != nil {
		t.Fatalf("links of %s: %v\n%s", host, err, out)
	}
	return procs, dirs, string(out)
}

// TestHostsActOnTheCentersWord attacks the hosts with a host certificate, as a leaked
// one or a host turned hostile would: a destination starts a VM only for the source a
// ticket from the center names, with exactly the spec the ticket names; a forged,
// expired or misdirected ticket starts nothing (no QEMU, TAP or directory); a host not
// in a migration can neither abort it nor read it; boot files outside a datastore are
// refused; revoked certificates are refused on the connections the center and the
// agents open; and following a migration costs a handful of connections, not hundreds.
func TestHostsActOnTheCentersWord(t *testing.T) {
	l := newLab(t, 2)
	lb := l.Lab()
	ca, err := pki.LoadOrCreateCA(filepath.Join(l.Dir(), "center", "pki"), time.Now())
	if err != nil {
		t.Fatal(err)
	}
	id1, err := pki.LoadIdentity(filepath.Join(lb.Hosts[0].StateDir, "pki"))
	if err != nil {
		t.Fatal(err)
	}
	agent1, agent2 := lb.Hosts[0].AgentURL, lb.Hosts[1].AgentURL
	as1to2 := l.HTTPS("client", "host-2", &id1.Cert)
	evil, err := pki.LoadOrCreateCA(t.TempDir(), time.Now())
	if err != nil {
		t.Fatal(err)
	}

	// A VM host-1 wrote itself: its own kernel command line, the host's /etc/shadow as
	// its initrd, a NIC on the lab network, no encryption.
	legit := api.VMSpec{Name: "intruder", UUID: uuid.NewString(), CPUs: 1, MemoryMiB: 64, CPUModel: "qemu64",
		Boot: api.Boot{Kernel: "[shared] images/godwit-test/vmlinuz", Initrd: "[shared] images/godwit-test/initrd.img", Cmdline: "console=ttyS0"},
		NICs: []api.NIC{{Network: "lab", MAC: "02:66:66:00:00:01"}}}
	shadow := legit
	shadow.Boot.Initrd = "/etc/shadow"
	incoming := func(spec api.VMSpec, enc string) api.IncomingRequest {
		return api.IncomingRequest{ID: "evil-1", Source: "host-1", SourceURL: agent1, Spec: spec, Policy: "balanced",
			Address: strings.TrimSuffix(strings.TrimPrefix(agent2, "https://"), ":7700"), Encryption: enc}
	}
	postcopy := incoming(legit, "off")
	postcopy.Postcopy = true
	sign := func(by *pki.CA, change func(*ticket.Ticket)) string {
		key, _ := ticket.NewKey()
		tk := ticket.Ticket{Migration: "evil-1", VM: legit.Name, VMUUID: legit.UUID, Source: "host-1", Destination: "host-2",
			SpecSHA256: ticket.SpecHash(legit), Encryption: "off", Key: key, Issued: time.Now(), Expires: time.Now().Add(time.Minute)}
		if change != nil {
			change(&tk)
		}
		s, err := ticket.Sign(tk, by.Signer())
		if err != nil {
			t.Fatal(err)
		}
		return s
	}
	_, _, linksBefore := hostTraces(t, l, "host-2", lb.Hosts[1].StateDir, legit.UUID)
	for _, c := range []struct {
		name   string
		tk     string
		req    api.IncomingRequest
		status int
		says   string
	}{
		{"no ticket", "", incoming(legit, "off"), 403, "no migration ticket"},
		{"forged ticket", sign(evil, nil), incoming(legit, "off"), 403, "forged or altered"},
		{"another destination", sign(ca, func(k *ticket.Ticket) { k.Destination = "host-3" }), incoming(legit, "off"), 403, "is for host host-3, not host-2"},
		{"another source", sign(ca, func(k *ticket.Ticket) { k.Source = "host-3" }), incoming(legit, "off"), 403, "names host-3 as its source"},
		{"expired", sign(ca, func(k *ticket.Ticket) { k.Expires = time.Now().Add(-time.Second) }), incoming(legit, "off"), 403, "expired"},
		{"another spec", sign(ca, nil), incoming(shadow, "off"), 403, "spec differs"},
		{"weaker encryption", sign(ca, func(k *ticket.Ticket) { k.Encryption = "required" }), incoming(legit, "off"), 403, "the center decided"},
		{"another migration id", sign(ca, func(k *ticket.Ticket) { k.Migration = "other" }), incoming(legit, "off"), 403, "its ticket for other"},
		{"post-copy the center did not allow", sign(ca, nil), postcopy, 403, "post-copy allowed, the center said not allowed"},
		// The center's word for a VM whose initrd is a host file: the destination still
		// refuses to load it.
		{"boot file outside a datastore", sign(ca, func(k *ticket.Ticket) { k.SpecSHA256 = ticket.SpecHash(shadow) }), incoming(shadow, "off"), 422, "not inside a datastore"},
	} {
		code, body := ticketCall(t, as1to2, http.MethodPost, agent2+"/agent/v1/incoming", c.tk, c.req)
		if code != c.status || !strings.Contains(body, c.says) {
			t.Errorf("%s: %d %s; want %d saying %q", c.name, code, body, c.status, c.says)
		}
		procs, dirs, links := hostTraces(t, l, "host-2", lb.Hosts[1].StateDir, legit.UUID)
		if procs != 0 || len(dirs) != 0 || links != linksBefore {
			t.Fatalf("%s: host-2 was left with %d QEMU processes, directories %v, links changed %v", c.name, procs, dirs, links != linksBefore)
		}
	}
	// Only the center asks for a preflight (it reads the host's files).
	code, body := ticketCall(t, as1to2, http.MethodPost, agent2+"/agent/v1/preflight", "", incoming(legit, "off"))
	expectRefusal(t, "preflight by a host", code, body, 403, "only for the steps of a migration")

	// The CLI: a boot file outside every datastore is refused with the reason.
	_, errOut, err := l.Run("vm", "create", "leak", "--host", "host-1", "--kernel", "[shared] images/godwit-test/vmlinuz", "--initrd", "/etc/shadow")
	if err == nil || !strings.Contains(errOut, "not inside a datastore") || !strings.Contains(errOut, "422") && !strings.Contains(errOut, "/etc/shadow") {
		t.Errorf("vm create --initrd /etc/shadow: %v\n%s", err, errOut)
	}
	var vms []api.VM
	l.RunJSON(&vms, "vm", "list")
	for _, v := range vms {
		if v.Name == "leak" {
			t.Errorf("the refused VM exists: %+v", v)
		}
	}

	// A real migration, slowed down so that it is in flight: a host that is not part
	// of it (host-9, joined with its own token) can neither abort it nor read it, even
	// with a valid ticket of another migration.
	var tok api.JoinToken
	l.RunJSON(&tok, "host", "join-token", "create", "--host", "host-9")
	_, _, cert9 := join(t, l.HTTPS("client", "", nil), lb.CenterURL, "host-9", tok.Secret)
	l.MustRun("vm", "create", "tk-1", "--host", "host-1", "--memory", "256")
	vm := waitVM(t, l, "tk-1", func(v api.VM) bool { return v.State == api.VMRunning })
	l.WaitHTTP("client", "http://"+vm.IP+"/healthz", 90*time.Second)
	connsBefore := agentConnections(t, l, "host-1")
	l.Shape("host-1", "40mbit")
	var started api.Migration
	l.RunJSON(&started, "vm", "migrate", "tk-1", "--to", "host-2", "--detach")
	as9to2, as9to1 := l.HTTPS("client", "host-2", &cert9), l.HTTPS("client", "host-1", &cert9)
	other := sign(ca, func(k *ticket.Ticket) { k.Source, k.VM = "host-9", "tk-1" })
	deadline := time.Now().Add(30 * time.Second)
	for {
		var m api.Migration
		l.RunJSON(&m, "migration", "show", started.ID)
		if m.State == api.MigrationRunning {
			break
		}
		if time.Now().After(deadline) || m.State == api.MigrationSucceeded || m.State == api.MigrationFailed {
			t.Fatalf("the migration did not get under way: %+v", m)
		}
		time.Sleep(100 * time.Millisecond)
	}
	for _, c := range []struct {
		name, method, url, tk, says string
	}{
		{"abort without a ticket", http.MethodPost, agent2 + "/agent/v1/vms/tk-1/incoming/" + started.ID + "/abort", "", "no migration ticket"},
		{"abort with another migration's ticket", http.MethodPost, agent2 + "/agent/v1/vms/tk-1/incoming/" + started.ID + "/abort", other, "not " + started.ID},
		{"finish without a ticket", http.MethodPost, agent2 + "/agent/v1/vms/tk-1/incoming/" + started.ID + "/finish", "", "no migration ticket"},
		{"reading the migration", http.MethodGet, agent1 + "/agent/v1/migrations/" + started.ID, "", "no migration ticket"},
	} {
		hc := as9to2
		if strings.HasPrefix(c.url, agent1) {
			hc = as9to1
		}
		code, body := ticketCall(t, hc, c.method, c.url, c.tk, nil)
		expectRefusal(t, "host-9: "+c.name, code, body, 403, c.says)
	}
	l.Shape("host-1", "off")
	var done api.Migration
	deadline = time.Now().Add(2 * time.Minute)
	for done.State != api.MigrationSucceeded {
		l.RunJSON(&done, "migration", "show", started.ID)
		if done.State == api.MigrationFailed || done.State == api.MigrationCancelled || time.Now().After(deadline) {
			t.Fatalf("the migration did not succeed after host-9's attempts: %+v", done)
		}
		time.Sleep(200 * time.Millisecond)
	}
	if !done.Encrypted {
		t.Errorf("the migration was not encrypted: %+v", done)
	}
	// Following the migration (the center on the source's progress stream, the
	// destination asking the source every 2 s) reuses kept-alive connections.
	if n := agentConnections(t, l, "host-1") - connsBefore; n > 10 {
		t.Errorf("host-1 accepted %v connections during one migration; want a handful (pooled)", n)
	} else {
		t.Logf("host-1 accepted %v connections during a migration of %.1f s", n, done.TotalMS/1000)
	}

	// The refusals reached the audit trail through the hosts' heartbeats.
	waitAudit(t, l, func(rs []audit.Record) bool {
		seen := map[string]bool{}
		for _, r := range rs {
			if r.Action == "agent.request" && r.Outcome == audit.Refused {
				for _, s := range []string{"forged or altered", "is for host host-3", "spec differs", "abort"} {
					if strings.Contains(r.Error, s) || strings.Contains(param(r, "path"), s) {
						seen[s] = true
					}
				}
			}
		}
		return len(seen) == 4
	}, "--action", "agent.request", "--limit", "200")

	// Revocation, in both directions. tk-1 comes back to host-1; host-2 is revoked. The
	// center refuses to call host-2, and host-1, told to migrate there with a valid
	// ticket, refuses to connect to it: a revoked host gets no memory, though it is at
	// the right address with a certificate of the right name.
	var back migrationSummary
	l.RunJSON(&back, "vm", "migrate", "tk-1", "--to", "host-1")
	if back.State != api.MigrationSucceeded {
		t.Fatalf("tk-1 back to host-1: %+v", back)
	}
	id2, err := pki.LoadIdentity(filepath.Join(lb.Hosts[1].StateDir, "pki"))
	if err != nil {
		t.Fatal(err)
	}
	l.MustRun("host", "revoke", "host-2", "--reason", "test")
	_, errOut, err = l.Run("vm", "create", "rv-1", "--host", "host-2", "--memory", "64")
	if err == nil || !strings.Contains(errOut, "revoked") {
		t.Errorf("creating a VM on host-2 just revoked: %v\n%s; want a refusal naming the revocation", err, errOut)
	}
	as2to1 := l.HTTPS("client", "host-1", &id2.Cert)
	deadline = time.Now().Add(20 * time.Second)
	for {
		code, body := ticketCall(t, as2to1, http.MethodGet, agent1+"/agent/v1/migrations/x", "", nil)
		if code == http.StatusUnauthorized && strings.Contains(body, "revoked") {
			break // host-1 knows
		}
		if time.Now().After(deadline) {
			t.Fatalf("host-1 did not learn that host-2 is revoked: %d %s", code, body)
		}
		time.Sleep(300 * time.Millisecond)
	}
	var cur api.VM
	l.RunJSON(&cur, "vm", "show", "tk-1")
	key, _ := ticket.NewKey()
	tk, err := ticket.Sign(ticket.Ticket{Migration: "rv-mig", VM: "tk-1", VMUUID: cur.Spec.UUID, Source: "host-1", Destination: "host-2",
		SpecSHA256: ticket.SpecHash(cur.Spec), Encryption: "opportunistic", Key: key, Issued: time.Now(), Expires: time.Now().Add(time.Minute)}, ca.Signer())
	if err != nil {
		t.Fatal(err)
	}
	addr2 := strings.TrimSuffix(strings.TrimPrefix(agent2, "https://"), ":7700")
	asCenter := l.AsCenter("host-1")
	code, body = ticketCall(t, asCenter, http.MethodPost, agent1+"/agent/v1/vms/tk-1/migrate", "", api.AgentMigrateRequest{
		ID: "rv-mig", Destination: "host-2", DestinationURL: agent2, DestinationAddr: addr2, Policy: "balanced",
		Encryption: "opportunistic", Ticket: tk})
	if code != http.StatusAccepted {
		t.Fatalf("asking host-1 to migrate to the revoked host-2: %d %s", code, body)
	}
	var m api.Migration
	deadline = time.Now().Add(30 * time.Second)
	for m.State != api.MigrationFailed {
		code, body = ticketCall(t, asCenter, http.MethodGet, agent1+"/agent/v1/migrations/rv-mig", "", nil)
		_ = json.Unmarshal([]byte(body), &m)
		if m.State == api.MigrationSucceeded || time.Now().After(deadline) {
			t.Fatalf("a migration to the revoked host-2: %d %s; want it failed", code, body)
		}
		time.Sleep(200 * time.Millisecond)
	}
	if !strings.Contains(m.Error, "revoked") || m.Bytes != 0 {
		t.Errorf("the migration to the revoked host-2 failed with %q after %d bytes; want a refusal naming the revocation, nothing sent", m.Error, m.Bytes)
	}
	if procs, _, _ := hostTraces(t, l, "host-2", lb.Hosts[1].StateDir, cur.Spec.UUID); procs != 0 {
		t.Errorf("host-2 runs %d QEMU processes for tk-1", procs)
	}
	waitVM(t, l, "tk-1", func(v api.VM) bool { return v.Host == "host-1" && v.State == api.VMRunning })
	l.WaitHTTP("client", "http://"+vm.IP+"/healthz", 30*time.Second)
}

// agentConnections reads godwit_agent_connections_accepted_total from host's agent.
func agentConnections(t *testing.T, l *labtest.Lab, host string) float64 {
	t.Helper()
	var url string
	for _, h := range l.Lab().Hosts {
		if h.Name == host {
			url = h.AgentURL
		}
	}
	code, body := tlsCall(t, l.HTTPS("client", host, nil), http.MethodGet, url+"/metrics", "")
	if code != http.StatusOK {
		t.Fatalf("metrics of %s: %d", host, code)
	}
	for _, line := range strings.Split(body, "\n") {
		if v, ok := strings.CutPrefix(line, "godwit_agent_connections_accepted_total "); ok {
			var n float64
			if err := json.Unmarshal([]byte(v), &n); err != nil {
				t.Fatalf("metric value %q: %v", v, err)
			}
			return n
		}
	}
	t.Fatalf("%s reports no godwit_agent_connections_accepted_total", host)
	return 0
}
