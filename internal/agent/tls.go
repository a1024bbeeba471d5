package agent

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/godwit/godwit/internal/api"
	"github.com/godwit/godwit/internal/migration"
	"github.com/godwit/godwit/internal/pki"
	"github.com/godwit/godwit/internal/ticket"
)

// Mutual TLS.
//
// An agent has an identity (pki.Identity in STATE/pki: its key, its certificate, the
// cluster's CA). It gets one by joining: with a one-time join token and the CA's
// fingerprint (or the CA file), it checks that the center it talks to holds that CA,
// sends a certificate signing request for a key it generated, and keeps the
// certificate it receives. Then every connection is mutual TLS: to the center (whose
// certificate must name godwit-center), from the center, and between hosts during a
// migration (each certificate must name the host it claims to be).
//
// The agent's API answers only the center and, for the few endpoints a migration
// needs, other hosts of the cluster. A refused request is answered with a sentence, and
// reported to the center with the next heartbeat so that it lands in the audit trail.
// GET /metrics stays readable without a client certificate (over TLS), as Prometheus'
// node exporters are.

// trust holds what the agent knows about other certificates: the revoked serials the
// center sent, and the refusals not yet reported.
type trust struct {
	path string // where the revoked serials are kept across restarts

	mu       sync.Mutex
	revoked  map[string]bool
	refusals []api.AgentRefusal
}

func newTrust(dir string) *trust {
	t := &trust{path: filepath.Join(dir, "revoked.json"), revoked: map[string]bool{}}
	if b, err := os.ReadFile(t.path); err == nil {
		var serials []string
		if json.Unmarshal(b, &serials) == nil {
			for _, s := range serials {
				t.revoked[s] = true
			}
		}
	}
	return t
}

// setRevoked replaces the revoked serials with the center's list and says whether it
// changed.
func (t *trust) setRevoked(serials []string) (bool, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	next := make(map[string]bool, len(serials))
	for _, s := range serials {
		next[s] = true
	}
	if len(next) == len(t.revoked) {
		same := true
		for s := range next {
			same = same && t.revoked[s]
		}
		if same {
			return false, nil
		}
	}
	t.revoked = next
	b, _ := json.Marshal(slices.Sorted(func(yield func(string) bool) {
		for s := range next {
			if !yield(s) {
				return
			}
		}
	}))
	return true, pki.WriteFileAtomic(t.path, b, 0o644)
}

func (t *trust) isRevoked(serial string) bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.revoked[serial]
}

// refuse keeps a refused request, bounded (api.AgentRefusal.Bounded), for the next
// heartbeat. Beyond api.MaxAgentRefusals waiting, the oldest are dropped and counted, so
// that a heartbeat always fits the center's body limit.
func (t *trust) refuse(r api.AgentRefusal) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.refusals = keepNewest(append(t.refusals, r.Bounded()))
}

// takeRefusals returns the refusals to report and forgets them; putBack returns them
// when the report failed.
func (t *trust) takeRefusals() []api.AgentRefusal {
	t.mu.Lock()
	defer t.mu.Unlock()
	r := t.refusals
	t.refusals = nil
	return r
}

func (t *trust) putBack(rs []api.AgentRefusal) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.refusals = keepNewest(append(rs, t.refusals...))
}

// keepNewest drops the oldest refusals beyond api.MaxAgentRefusals, adding their number
// (and what they had dropped) to the oldest one kept.
func keepNewest(rs []api.AgentRefusal) []api.AgentRefusal {
	over := len(rs) - api.MaxAgentRefusals
	if over <= 0 {
		return rs
	}
	dropped := over
	for _, r := range rs[:over] {
		dropped += r.Dropped
	}
	kept := slices.Clone(rs[over:])
	kept[0].Dropped += dropped
	return kept
}

// callerKey marks a request's context with who made it (a caller).
type callerKey struct{}

// caller is who sent a request: a name proven by a valid certificate (pki.CenterName or
// a host), or why no one could be.
type caller struct {
	name   string
	status int
	err    error
}

func callerOf(ctx context.Context) caller {
	c, ok := ctx.Value(callerKey{}).(caller)
	if !ok {
		return caller{status: http.StatusUnauthorized, err: errors.New("no client certificate was checked")}
	}
	return c
}

// authenticate notes in each request's context who sent it, by its client certificate.
// It refuses nothing itself: the guard of each route does, by the route table.
func (a *Agent) authenticate(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		name, status, err := a.identify(r)
		next.ServeHTTP(w, r.WithContext(context.WithValue(r.Context(), callerKey{}, caller{name: name, status: status, err: err})))
	})
}

// identify checks a request's client certificate and says who sent it, or why no one
// could be (with the HTTP status to answer).
func (a *Agent) identify(r *http.Request) (string, int, error) {
	if r.TLS == nil || len(r.TLS.PeerCertificates) == 0 {
		return "", http.StatusUnauthorized, fmt.Errorf("host %s answers only the center and the cluster's hosts: present the certificate the cluster's CA issued", a.cfg.Name)
	}
	leaf, err := a.id.Load().Verify(r.TLS.PeerCertificates, time.Now(), x509.ExtKeyUsageClientAuth)
	if err != nil {
		return "", http.StatusUnauthorized, err
	}
	if serial := pki.SerialString(leaf); a.trust.isRevoked(serial) {
		return "", http.StatusUnauthorized, fmt.Errorf("certificate %q (serial %s) has been revoked by the center", leaf.Subject.CommonName, serial)
	}
	name := leaf.Subject.CommonName
	if !pki.HasName(leaf, name) {
		return "", http.StatusUnauthorized, fmt.Errorf("certificate %q does not carry its own name as a DNS name; it was not issued by a Godwit center", name)
	}
	if name != strings.ToLower(name) {
		// Names are issued in lower case; TLS would match GODWIT-CENTER as the center.
		return "", http.StatusUnauthorized, fmt.Errorf("certificate %q names no host: names are lower case", name)
	}
	return name, 0, nil
}

// guard wraps the handler of one route of the table: it admits the callers the route's
// access names and refuses everyone else with a sentence (401 without a valid
// certificate, 403 for the wrong caller or ticket), reported to the center with the next
// heartbeat. A migration route also needs the center's ticket for that migration
// (Ticket header), naming the caller and this host; it goes into the request's context.
func (a *Agent) guard(rt api.Route, h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if rt.Access == api.AccessPublic {
			h.ServeHTTP(w, r)
			return
		}
		c := callerOf(r.Context())
		if c.err != nil {
			a.refuse(w, r, c.status, c.err)
			return
		}
		isCenter := c.name == pki.CenterName
		switch rt.Access {
		case api.AccessCenter:
			if !isCenter {
				a.refuse(w, r, http.StatusForbidden, fmt.Errorf("host %s may not call %s %s on host %s; hosts call each other only for the steps of a migration, with the center's ticket", c.name, r.Method, r.URL.Path, a.cfg.Name))
				return
			}
		case api.AccessMigrationSource, api.AccessMigrationDestination:
			if isCenter && rt.CenterToo {
				break
			}
			tk, err := a.admitTicket(r, c.name, rt.Access == api.AccessMigrationSource)
			if err != nil {
				a.refuse(w, r, http.StatusForbidden, fmt.Errorf("%s %s refused: %w", r.Method, r.URL.Path, err))
				return
			}
			r = r.WithContext(context.WithValue(r.Context(), ticketKey{}, tk))
		default:
			a.refuse(w, r, http.StatusForbidden, fmt.Errorf("%s %s is not open to anyone (access %q)", r.Method, r.URL.Path, rt.Access))
			return
		}
		h.ServeHTTP(w, r)
	})
}

// refuse answers a request with err (status 401 or 403) and keeps the refusal for the
// next heartbeat, which puts it in the audit trail.
func (a *Agent) refuse(w http.ResponseWriter, r *http.Request, status int, err error) {
	subject := ""
	if r.TLS != nil && len(r.TLS.PeerCertificates) > 0 {
		subject = r.TLS.PeerCertificates[0].Subject.CommonName
	}
	ref := api.AgentRefusal{Time: time.Now().UTC(), From: r.RemoteAddr, Method: r.Method, Path: r.URL.Path, Subject: subject, Reason: err.Error()}.Bounded()
	a.trust.refuse(ref)
	a.log.Warn("refused a request", "from", ref.From, "method", ref.Method, "path", ref.Path, "subject", ref.Subject, "reason", ref.Reason)
	code := "unauthorized"
	if status == http.StatusForbidden {
		code = "forbidden"
	}
	api.WriteError(w, api.Errorf(status, code, "%v", err))
}

// admittedTicket is a ticket the guard checked, with its encoded form.
type admittedTicket struct {
	ticket.Ticket
	raw string
}

type ticketKey struct{}

// ticketOf is the ticket the guard admitted for a request (zero for the in-process
// caller of Handler, who needs none).
func ticketOf(ctx context.Context) admittedTicket {
	t, _ := ctx.Value(ticketKey{}).(admittedTicket)
	return t
}

// admitTicket checks the ticket a host presents for a migration route: signed by the
// cluster CA, naming the caller and this host in the right roles (source true: the
// caller is the source), for the migration and VM of the path; to begin a migration
// (incoming), not expired.
func (a *Agent) admitTicket(r *http.Request, host string, source bool) (admittedTicket, error) {
	raw := r.Header.Get(ticket.Header)
	t, err := ticket.Parse(raw, a.id.Load().CA.PublicKey)
	if err != nil {
		return admittedTicket{}, err
	}
	if err := t.Check(host, a.cfg.Name, source); err != nil {
		return admittedTicket{}, err
	}
	if id := r.PathValue("id"); id != "" && id != t.Migration {
		return admittedTicket{}, fmt.Errorf("the ticket is for migration %s, not %s", t.Migration, id)
	}
	if name := r.PathValue("name"); name != "" && name != t.VM {
		return admittedTicket{}, fmt.Errorf("the ticket of migration %s is for VM %s, not %s", t.Migration, t.VM, name)
	}
	if r.URL.Path == "/agent/v1/incoming" && t.Expired(time.Now()) {
		return admittedTicket{}, fmt.Errorf("the ticket of migration %s expired at %s; a migration must begin within %v of the center's word", t.Migration, t.Expires.UTC().Format(time.RFC3339), ticket.Lifetime)
	}
	return admittedTicket{Ticket: t, raw: raw}, nil
}

// checkIncomingTicket checks that an incoming request is exactly what its ticket allows:
// the migration, the source, the VM (name, UUID and the hash of its whole spec) and at
// least the encryption the center decided. The in-process caller needs no ticket.
func (a *Agent) checkIncomingTicket(ctx context.Context, req api.IncomingRequest) error {
	t := ticketOf(ctx)
	if t.raw == "" {
		return nil
	}
	enc := req.Encryption
	if enc == "" {
		enc = migration.EncryptionOpportunistic
	}
	switch {
	case req.ID != t.Migration:
		return fmt.Errorf("the incoming request is for migration %q, its ticket for %s", req.ID, t.Migration)
	case !strings.EqualFold(req.Source, t.Source):
		return fmt.Errorf("the incoming request names %q as its source, its ticket %s", req.Source, t.Source)
	case req.Spec.Name != t.VM || req.Spec.UUID != t.VMUUID:
		return fmt.Errorf("the incoming request brings VM %q (%s), its ticket allows %s (%s)", req.Spec.Name, req.Spec.UUID, t.VM, t.VMUUID)
	case ticket.SpecHash(req.Spec) != t.SpecSHA256:
		return fmt.Errorf("the incoming VM %s is not the one the center knows: its spec differs from the one the ticket names (kernel, disks, devices…)", t.VM)
	case t.Encryption != "" && enc != t.Encryption:
		return fmt.Errorf("the incoming request asks for encryption %q, the center decided %q", enc, t.Encryption)
	case req.Postcopy != t.Postcopy:
		return fmt.Errorf("the incoming request says post-copy %s, the center said %s", allowed(req.Postcopy), allowed(t.Postcopy))
	}
	return nil
}

// checkCopyTicket checks that a finish or abort comes with the very ticket that brought
// the waiting copy in. The in-process caller needs none.
func (a *Agent) checkCopyTicket(ctx context.Context, name, id string) error {
	t := ticketOf(ctx)
	if t.raw == "" {
		return nil
	}
	a.mu.Lock()
	v, ok := a.vms[name]
	held := ""
	if ok {
		held = v.ticket
	}
	a.mu.Unlock()
	if ok && held != "" && held != t.raw {
		return fmt.Errorf("VM %s here came in with another ticket than the one presented for migration %s", name, id)
	}
	return nil
}

// peer returns a client for another host's agent, over mutual TLS, that expects the
// host's own certificate, not revoked; calls to one host share its keep-alive
// connections (a.peers).
func (a *Agent) peer(name, url string, timeout time.Duration) (*api.Client, error) {
	if name == "" {
		return nil, errors.New("the other host's name is not known, so its certificate cannot be checked")
	}
	return a.peers.Get(name, url, timeout)
}

// ensureIdentity loads the agent's identity, joining the cluster first when it has none.
func (a *Agent) ensureIdentity(ctx context.Context) error {
	dir := a.pkiDir()
	id, err := pki.LoadIdentity(dir)
	if err == nil {
		if id.Name() != a.cfg.Name {
			return fmt.Errorf("the certificate in %s belongs to host %s, not %s: this state directory is another host's; join with a new token after removing %s", dir, id.Name(), a.cfg.Name, dir)
		}
		a.id.Store(id)
		return nil
	}
	if !errors.Is(err, pki.ErrNoIdentity) {
		return fmt.Errorf("this host's identity in %s: %w", dir, err)
	}
	if a.cfg.JoinToken == "" {
		return fmt.Errorf("host %s has not joined the cluster yet: start the agent with its join token (from `godwit host join-token create` on the center) in --join-token-file or $GODWIT_JOIN_TOKEN and --ca-fingerprint or --ca-file", a.cfg.Name)
	}
	if err := a.join(ctx, dir); err != nil {
		return err
	}
	id, err = pki.LoadIdentity(dir)
	if err != nil {
		return fmt.Errorf("the identity just received: %w", err)
	}
	a.id.Store(id)
	return nil
}

// join fetches the center's CA and checks it against the pinned fingerprint or file,
// then trades the join token and a signing request for a certificate.
func (a *Agent) join(ctx context.Context, dir string) error {
	caPEM, err := a.centerCA(ctx)
	if err != nil {
		return err
	}
	ca, err := pki.ParseCertPEM(caPEM)
	if err != nil {
		return fmt.Errorf("the cluster CA: %w", err)
	}
	key, err := pki.NewKey()
	if err != nil {
		return err
	}
	csr, err := pki.NewCSR(key, a.cfg.Name)
	if err != nil {
		return err
	}
	pool := x509.NewCertPool()
	pool.AddCert(ca)
	c, err := api.NewClient(a.cfg.Center, 30*time.Second, api.WithTLS(pki.ClientTLS(pool, pki.CenterName, nil)))
	if err != nil {
		return fmt.Errorf("center: %w", err)
	}
	var rep api.JoinReply
	if err := c.Do(ctx, http.MethodPost, "/api/v1/hosts/join", api.JoinRequest{Name: a.cfg.Name, Token: a.cfg.JoinToken, CSR: string(csr)}, &rep); err != nil {
		return fmt.Errorf("join the cluster at %s: %w", a.cfg.Center, err)
	}
	keyPEM, err := pki.MarshalKeyPEM(key)
	if err != nil {
		return err
	}
	if _, err := pki.NewIdentity(dir, keyPEM, []byte(rep.Certificate), caPEM); err != nil {
		return fmt.Errorf("the center's answer to the join: %w", err)
	}
	if err := pki.SaveIdentity(dir, keyPEM, []byte(rep.Certificate), caPEM); err != nil {
		return err
	}
	a.log.Info("joined the cluster", "center", a.cfg.Center, "serial", rep.Serial, "expires", rep.Expires, "ca", pki.Fingerprint(ca.Raw))
	return nil
}

// centerCA returns the cluster's CA certificate: the --ca-file, or the one the center
// serves, accepted only if its fingerprint is the pinned one.
func (a *Agent) centerCA(ctx context.Context) ([]byte, error) {
	if a.cfg.CAFile != "" {
		b, err := os.ReadFile(a.cfg.CAFile)
		if err != nil {
			return nil, fmt.Errorf("--ca-file: %w", err)
		}
		if _, err := pki.ParseCertPEM(b); err != nil {
			return nil, fmt.Errorf("--ca-file %s: %w", a.cfg.CAFile, err)
		}
		return b, nil
	}
	if a.cfg.CAFingerprint == "" {
		return nil, errors.New("to join, the agent needs the cluster's CA: --ca-fingerprint (printed with the join token) or --ca-file")
	}
	want, err := pki.NormalizeFingerprint(a.cfg.CAFingerprint)
	if err != nil {
		return nil, err
	}
	// Nothing is trusted yet: fetch the CA over an unverified connection, then accept
	// it only if it is the one the administrator pinned.
	c, err := api.NewClient(a.cfg.Center, 30*time.Second, api.WithTLS(&tls.Config{InsecureSkipVerify: true, MinVersion: tls.VersionTLS13}))
	if err != nil {
		return nil, fmt.Errorf("center: %w", err)
	}
	var info api.CAInfo
	if err := c.Do(ctx, http.MethodGet, "/api/v1/pki/ca", nil, &info); err != nil {
		return nil, fmt.Errorf("fetch the cluster CA from %s: %w", a.cfg.Center, err)
	}
	ca, err := pki.ParseCertPEM([]byte(info.Certificate))
	if err != nil {
		return nil, fmt.Errorf("the CA the center at %s sent: %w", a.cfg.Center, err)
	}
	if got := pki.Fingerprint(ca.Raw); got != want {
		return nil, fmt.Errorf("the center at %s holds CA %s, not the pinned %s: wrong center, or someone in between; check --center and --ca-fingerprint", a.cfg.Center, got, want)
	}
	return []byte(info.Certificate), nil
}

func (a *Agent) pkiDir() string { return filepath.Join(a.cfg.StateDir, "pki") }

// renewLoop renews the host's certificate before it expires (pki.RenewDue: 30 days, or a
// third of its life, before), over mutual TLS with the current one, and serves the new
// one at once. A failed renewal is retried at the next check.
func (a *Agent) renewLoop(ctx context.Context) {
	for {
		id := a.id.Load()
		if pki.RenewDue(id.Leaf, time.Now(), a.cfg.RenewBefore) {
			if err := a.renew(ctx); err != nil && ctx.Err() == nil {
				a.log.Warn("could not renew the host certificate; will try again", "expires", id.Leaf.NotAfter, "err", err)
			}
		}
		life := id.Leaf.NotAfter.Sub(id.Leaf.NotBefore)
		select {
		case <-ctx.Done():
			return
		case <-time.After(min(max(life/12, 5*time.Second), time.Hour)):
		}
	}
}

// renew trades a signing request for a new key for a new certificate, and keeps it.
func (a *Agent) renew(ctx context.Context) error {
	key, err := pki.NewKey()
	if err != nil {
		return err
	}
	csr, err := pki.NewCSR(key, a.cfg.Name)
	if err != nil {
		return err
	}
	var rep api.JoinReply
	if err := a.center.Do(ctx, http.MethodPost, "/api/v1/hosts/renew", api.RenewRequest{CSR: string(csr)}, &rep); err != nil {
		return fmt.Errorf("renew at %s: %w", a.cfg.Center, err)
	}
	keyPEM, err := pki.MarshalKeyPEM(key)
	if err != nil {
		return err
	}
	dir := a.pkiDir()
	id, err := pki.NewIdentity(dir, keyPEM, []byte(rep.Certificate), a.id.Load().CAPEM)
	if err != nil {
		return fmt.Errorf("the renewed certificate: %w", err)
	}
	if err := pki.SaveIdentity(dir, keyPEM, []byte(rep.Certificate), id.CAPEM); err != nil {
		return err
	}
	a.id.Store(id)
	a.log.Info("host certificate renewed", "serial", rep.Serial, "expires", rep.Expires)
	return nil
}
