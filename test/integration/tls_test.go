package integration

import (
	"crypto/tls"
	"encoding/json"
	"io"
	"net/http"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/godwit/godwit/internal/api"
	"github.com/godwit/godwit/internal/audit"
	"github.com/godwit/godwit/internal/labtest"
	"github.com/godwit/godwit/internal/pki"
)

// tlsCall sends one request with hc and returns the status and body.
func tlsCall(t *testing.T, hc *http.Client, method, url, body string) (int, string) {
	t.Helper()
	req, err := http.NewRequest(method, url, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	if body != "" {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := hc.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, url, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

// keyPair issues a certificate for name from ca (valid from now-age for life) and
// returns it with its key as a TLS certificate.
func keyPair(t *testing.T, ca *pki.CA, name string, age, life time.Duration) tls.Certificate {
	t.Helper()
	key, err := pki.NewKey()
	if err != nil {
		t.Fatal(err)
	}
	cert, err := ca.Issue(key.Public(), pki.Leaf{Name: name, Lifetime: life}, time.Now().Add(-age))
	if err != nil {
		t.Fatal(err)
	}
	return tls.Certificate{Certificate: [][]byte{cert.Raw}, PrivateKey: key, Leaf: cert}
}

// join sends a join request for name with token and a fresh key, and returns the
// status, the body and the key.
func join(t *testing.T, hc *http.Client, center, name, token string) (int, string, tls.Certificate) {
	t.Helper()
	key, err := pki.NewKey()
	if err != nil {
		t.Fatal(err)
	}
	csr, err := pki.NewCSR(key, name)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := json.Marshal(api.JoinRequest{Name: name, Token: token, CSR: string(csr)})
	code, out := tlsCall(t, hc, http.MethodPost, center+"/api/v1/hosts/join", string(body))
	var rep api.JoinReply
	if code != http.StatusCreated || json.Unmarshal([]byte(out), &rep) != nil {
		return code, out, tls.Certificate{}
	}
	cert, err := pki.ParseCertPEM([]byte(rep.Certificate))
	if err != nil {
		t.Fatal(err)
	}
	return code, out, tls.Certificate{Certificate: [][]byte{cert.Raw}, PrivateKey: key, Leaf: cert}
}

func expectRefusal(t *testing.T, what string, code int, body string, wantCode int, wantText string) {
	t.Helper()
	if code != wantCode || !strings.Contains(body, wantText) {
		t.Errorf("%s: %d %s; want %d saying %q", what, code, body, wantCode, wantText)
	}
}

// TestTransportSecurity checks mutual TLS between the lab's center and hosts: join
// tokens work once, within their time and for their host; forged, expired and revoked
// certificates and the wrong peer are refused by the center and by the agents, with a
// sentence, and every refusal lands in the audit trail. The memory stream of a
// migration is encrypted by default, on request, or refused when it must be and cannot.
func TestTransportSecurity(t *testing.T) {
	l := newLab(t, 2)
	lb := l.Lab()
	center := lb.CenterURL
	agent1 := lb.Hosts[0].AgentURL
	ca, err := pki.LoadOrCreateCA(filepath.Join(l.Dir(), "center", "pki"), time.Now())
	if err != nil || ca.Fingerprint() == "" {
		t.Fatalf("the lab's CA: %v", err)
	}
	anon := l.HTTPS("client", "", nil) // trusts the CA, presents no certificate

	// Join tokens: once, before they expire, for their host only.
	var tok api.JoinToken
	l.RunJSON(&tok, "host", "join-token", "create", "--host", "host-9")
	if tok.CAFingerprint != ca.Fingerprint() || !strings.HasPrefix(tok.Secret, "gwjoin_") {
		t.Fatalf("join token %+v; want a secret and the CA's fingerprint %s", tok, ca.Fingerprint())
	}
	code, body, cert9 := join(t, anon, center, "host-9", tok.Secret)
	if code != http.StatusCreated || !pki.HasName(cert9.Leaf, "host-9") {
		t.Fatalf("join host-9: %d %s", code, body)
	}
	code, body, _ = join(t, anon, center, "host-9", tok.Secret)
	expectRefusal(t, "replayed join token", code, body, 401, "already used")
	var other api.JoinToken
	l.RunJSON(&other, "host", "join-token", "create", "--host", "host-8")
	code, body, _ = join(t, anon, center, "host-7", other.Secret)
	expectRefusal(t, "join token of another host", code, body, 403, "is for host host-8")
	var short api.JoinToken
	l.RunJSON(&short, "host", "join-token", "create", "--expires", "1s")
	time.Sleep(1500 * time.Millisecond)
	code, body, _ = join(t, anon, center, "host-7", short.Secret)
	expectRefusal(t, "expired join token", code, body, 401, "expired")
	code, body, _ = join(t, anon, center, "host-7", "gwjoin_0123456789abcdef_forged")
	expectRefusal(t, "forged join token", code, body, 401, "not known")

	// A host's certificate: only its own heartbeats, and from other hosts only what a
	// migration needs.
	as9 := l.HTTPS("client", "", &cert9)
	facts, _ := json.Marshal(api.HostFacts{Name: "host-1", AgentURL: "https://198.18.0.1:1"})
	code, body = tlsCall(t, as9, http.MethodPost, center+"/api/v1/hosts/heartbeat", string(facts))
	expectRefusal(t, "heartbeat in another host's name", code, body, 403, "in the name of host host-1")
	code, body = tlsCall(t, as9, http.MethodGet, center+"/api/v1/vms", "")
	expectRefusal(t, "a host certificate reading VMs", code, body, 403, "role")
	as9to1 := l.HTTPS("client", "host-1", &cert9)
	code, body = tlsCall(t, as9to1, http.MethodGet, agent1+"/agent/v1/vms", "")
	expectRefusal(t, "host-9 listing host-1's VMs", code, body, 403, "only for the steps of a migration")
	code, body = tlsCall(t, as9to1, http.MethodPost, agent1+"/agent/v1/preflight", "{")
	expectRefusal(t, "host-9 asking host-1 for a preflight", code, body, 403, "only for the steps of a migration")
	code, body = tlsCall(t, as9to1, http.MethodPost, agent1+"/agent/v1/incoming", "{")
	expectRefusal(t, "host-9 sending host-1 a VM without a ticket", code, body, 403, "no migration ticket")
	code, body = tlsCall(t, l.HTTPS("client", "host-1", nil), http.MethodGet, agent1+"/agent/v1/vms", "")
	expectRefusal(t, "no certificate to an agent", code, body, 401, "present the certificate")

	// Forged (another CA) and expired certificates.
	evil, err := pki.LoadOrCreateCA(t.TempDir(), time.Now())
	if err != nil {
		t.Fatal(err)
	}
	forgedCenter := keyPair(t, evil, pki.CenterName, 0, 0)
	code, body = tlsCall(t, l.HTTPS("client", "host-1", &forgedCenter), http.MethodGet, agent1+"/agent/v1/vms", "")
	expectRefusal(t, "forged center certificate at an agent", code, body, 401, "not signed by this cluster's CA")
	forgedHost := keyPair(t, evil, "host-1", 0, 0)
	code, body = tlsCall(t, l.HTTPS("client", "", &forgedHost), http.MethodPost, center+"/api/v1/hosts/heartbeat", string(facts))
	expectRefusal(t, "forged host certificate at the center", code, body, 401, "not signed by this cluster's CA")
	expired := keyPair(t, ca, pki.CenterName, 48*time.Hour, time.Hour)
	code, body = tlsCall(t, l.HTTPS("client", "host-1", &expired), http.MethodGet, agent1+"/agent/v1/vms", "")
	expectRefusal(t, "expired center certificate at an agent", code, body, 401, "expired")

	// Revocation: the center refuses at once, the agents after their next heartbeat.
	var revoked []api.Certificate
	l.RunJSON(&revoked, "host", "revoke", "host-9", "--reason", "test")
	if len(revoked) != 1 || revoked[0].Serial != pki.SerialString(cert9.Leaf) || revoked[0].Revoked == nil {
		t.Fatalf("host revoke host-9: %+v", revoked)
	}
	facts9, _ := json.Marshal(api.HostFacts{Name: "host-9", AgentURL: "https://198.18.0.1:1"})
	code, body = tlsCall(t, as9, http.MethodPost, center+"/api/v1/hosts/heartbeat", string(facts9))
	expectRefusal(t, "revoked certificate at the center", code, body, 401, "revoked")
	deadline := time.Now().Add(20 * time.Second)
	for {
		code, body = tlsCall(t, as9to1, http.MethodPost, agent1+"/agent/v1/preflight", "{")
		if code == 401 || time.Now().After(deadline) {
			break
		}
		time.Sleep(500 * time.Millisecond)
	}
	expectRefusal(t, "revoked certificate at an agent", code, body, 401, "revoked by the center")

	// Every refusal is in the audit trail: the center's own, and the agents' (reported
	// with their heartbeats).
	want := map[string]string{
		"host.join already used":         "already used",
		"host.join expired":              "expired",
		"agent forged":                   "not signed by this cluster's CA",
		"agent expired":                  "expired",
		"agent revoked":                  "revoked by the center",
		"agent wrong peer":               "only for the steps of a migration",
		"agent no ticket":                "no migration ticket",
		"agent no certificate":           "present the certificate",
		"center forged host certificate": "not signed by this cluster's CA",
		"center revoked":                 "was revoked",
		"center heartbeat impostor":      "in the name of host host-1",
	}
	recs := waitAudit(t, l, func(rs []audit.Record) bool {
		n := 0
		for _, r := range rs {
			if r.Action == "agent.request" && strings.Contains(r.Error, "revoked by the center") {
				n++
			}
		}
		return n > 0
	}, "--limit", "500")
	for key, text := range want {
		found := false
		for _, r := range recs {
			agentRec := r.Action == "agent.request" && r.ActorKind == audit.KindHost
			if r.Outcome == audit.Refused && strings.Contains(r.Error, text) && (strings.HasPrefix(key, "agent") == agentRec) {
				found = true
			}
		}
		if !found {
			t.Errorf("no refused audit record for %s (error containing %q)", key, text)
		}
	}

	// The migration stream: encrypted by default (with the migration's own key), plain
	// on request, and encrypted when required. (Refusing a required encryption that a
	// destination cannot provide is TestDestinationTLS's, in the agent package.)
	l.MustRun("vm", "create", "sec-1", "--host", "host-1")
	vm := waitVM(t, l, "sec-1", func(v api.VM) bool { return v.State == api.VMRunning })
	l.WaitHTTP("client", "http://"+vm.IP+"/healthz", 90*time.Second)
	var sum migrationSummary
	l.RunJSON(&sum, "vm", "migrate", "sec-1", "--to", "host-2")
	if sum.State != api.MigrationSucceeded || !sum.Encrypted {
		t.Errorf("default migration: %+v; want succeeded and encrypted", sum)
	}
	l.RunJSON(&sum, "vm", "migrate", "sec-1", "--to", "host-1", "--encryption", "off")
	if sum.State != api.MigrationSucceeded || sum.Encrypted {
		t.Errorf("migration with --encryption off: %+v; want succeeded, not encrypted", sum)
	}
	l.RunJSON(&sum, "vm", "migrate", "sec-1", "--to", "host-2", "--encryption", "required")
	if sum.State != api.MigrationSucceeded || !sum.Encrypted {
		t.Errorf("required encryption: %+v; want succeeded and encrypted", sum)
	}
	var fin []audit.Record
	l.RunJSON(&fin, "audit", "list", "--action", "vm.migrate", "--limit", "10")
	if len(fin) == 0 || param(fin[0], "encryption") != "required" {
		t.Errorf("the audit record of the last migration does not name its encryption: %+v", fin)
	}
}

// TestCertificateRenewal gives hosts two-minute certificates: each agent renews its own
// over mutual TLS before it expires and serves the new one at once; the hosts stay
// connected, and a migration afterwards is encrypted with the renewed certificates.
func TestCertificateRenewal(t *testing.T) {
	l := labtest.NewWith(t, home, 2, "--center-arg=--host-certificate-lifetime=2m")
	deadline := time.Now().Add(90 * time.Second)
	var certs []api.Certificate
	for {
		l.RunJSON(&certs, "host", "certificates")
		renewed := map[string]int{}
		for _, c := range certs {
			if c.Kind == "host" && c.Revoked == nil {
				renewed[c.Name]++
			}
		}
		if renewed["host-1"] >= 2 && renewed["host-2"] >= 2 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the hosts did not renew their certificates within 90 s: %+v", certs)
		}
		time.Sleep(time.Second)
	}
	var hosts []api.Host
	l.RunJSON(&hosts, "host", "list")
	for _, h := range hosts {
		if h.State != api.HostConnected {
			t.Errorf("host %s is %s after renewing its certificate", h.Name, h.State)
		}
	}
	var recs []audit.Record
	l.RunJSON(&recs, "audit", "list", "--action", "host.renew", "--limit", "10")
	if len(recs) < 2 || recs[0].ActorKind != audit.KindHost || recs[0].Outcome != audit.Succeeded {
		t.Errorf("audit records of the renewals: %+v; want them, by the hosts", recs)
	}
	var vm api.VM
	l.RunJSON(&vm, "vm", "create", "ren-1", "--host", "host-1", "--memory", "256")
	l.WaitHTTP("client", "http://"+vm.IP+"/healthz", 90*time.Second)
	var sum migrationSummary
	l.RunJSON(&sum, "vm", "migrate", "ren-1", "--to", "host-2", "--encryption", "required")
	if sum.State != api.MigrationSucceeded || !sum.Encrypted {
		t.Errorf("migration after renewal: %+v; want succeeded and encrypted", sum)
	}
}
