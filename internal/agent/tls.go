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
	"github.com/godwit/godwit/internal/pki"
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

// peerPaths are the endpoints another host may call: the destination's side of a
// migration (preflight, incoming, finish, abort) and the source's (its migration's
// state, which a waiting destination asks about).
func peerPath(method, path string) bool {
	seg := strings.Split(strings.TrimPrefix(path, "/agent/v1/"), "/")
	switch {
	case method == http.MethodPost && (path == "/agent/v1/preflight" || path == "/agent/v1/incoming"):
		return true
	case method == http.MethodPost && len(seg) == 5 && seg[0] == "vms" && seg[2] == "incoming" && (seg[4] == "finish" || seg[4] == "abort"):
		return true
	case method == http.MethodGet && len(seg) == 2 && seg[0] == "migrations":
		return true
	}
	return false
}

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

// setRevoked replaces the revoked serials with the center's list.
func (t *trust) setRevoked(serials []string) error {
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
			return nil
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
	return pki.WriteFileAtomic(t.path, b, 0o644)
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

// callerKey marks a request's context with who made it: pki.CenterName or a host name.
type callerKey struct{}

// callerOf is who made an authenticated request.
func callerOf(ctx context.Context) string {
	s, _ := ctx.Value(callerKey{}).(string)
	return s
}

// authenticate refuses every request that does not come from the center or, for the
// migration endpoints, from another host of the cluster.
func (a *Agent) authenticate(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method == http.MethodGet && r.URL.Path == "/metrics" {
			next.ServeHTTP(w, r)
			return
		}
		caller, status, err := a.caller(r)
		if err != nil {
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
			return
		}
		next.ServeHTTP(w, r.WithContext(context.WithValue(r.Context(), callerKey{}, caller)))
	})
}

// caller checks a request's client certificate and says who sent it, or why it is
// refused (with the HTTP status to answer).
func (a *Agent) caller(r *http.Request) (string, int, error) {
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
	if name != pki.CenterName && !peerPath(r.Method, r.URL.Path) {
		return "", http.StatusForbidden, fmt.Errorf("host %s may not call %s %s on host %s; hosts call each other only to migrate", name, r.Method, r.URL.Path, a.cfg.Name)
	}
	return name, 0, nil
}

// peer returns a client for another host's agent, over mutual TLS, that expects the
// host's own certificate.
func (a *Agent) peer(name, url string, timeout time.Duration) (*api.Client, error) {
	if name == "" {
		return nil, errors.New("the other host's name is not known, so its certificate cannot be checked")
	}
	return api.NewClient(url, timeout, api.WithTLS(a.id.Load().Client(name)))
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
		return a.writeQEMUCreds()
	}
	if !errors.Is(err, pki.ErrNoIdentity) {
		return fmt.Errorf("this host's identity in %s: %w", dir, err)
	}
	if a.cfg.JoinToken == "" {
		return fmt.Errorf("host %s has not joined the cluster yet: start the agent with --join-token (from `godwit host join-token create` on the center) and --ca-fingerprint or --ca-file", a.cfg.Name)
	}
	if err := a.join(ctx, dir); err != nil {
		return err
	}
	id, err = pki.LoadIdentity(dir)
	if err != nil {
		return fmt.Errorf("the identity just received: %w", err)
	}
	a.id.Store(id)
	return a.writeQEMUCreds()
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
	if err := a.writeQEMUCreds(); err != nil {
		return err
	}
	a.log.Info("host certificate renewed", "serial", rep.Serial, "expires", rep.Expires)
	return nil
}
