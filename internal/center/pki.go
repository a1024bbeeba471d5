package center

import (
	"context"
	"crypto/rand"
	"crypto/subtle"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"net/http"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"time"

	"github.com/godwit/godwit/internal/api"
	"github.com/godwit/godwit/internal/audit"
	"github.com/godwit/godwit/internal/pki"
	"github.com/godwit/godwit/internal/store"
)

// Transport security.
//
// The center is the cluster's certificate authority (internal/pki; the CA's key stays in
// DATA_DIR/pki, mode 0600). A host joins with a one-time join token that an
// administrator creates (`godwit host join-token create`): the agent generates its own
// key, sends a certificate signing request with the token, and gets a certificate whose
// name is the host's. The token is then spent; a replay is refused and audited.
//
// Every TCP connection is TLS 1.3. The center presents its own certificate (DNS name
// godwit-center plus its addresses); agents present their host certificates to the
// center and to each other, and the center presents its certificate when it calls an
// agent. Certificates are checked in the HTTP layer rather than in the handshake, so
// that a refused certificate — expired, forged (another CA), revoked, or not the host it
// claims to be — is answered with a sentence and written to the audit trail.
// Revocation: the center keeps the revoked serials and sends them to every agent with
// each heartbeat reply; agents refuse those certificates from then on.

const (
	// joinTokenPrefix starts every join token.
	joinTokenPrefix = "gwjoin_"
	// defaultJoinTokenLife is how long a join token stays valid unless asked otherwise.
	defaultJoinTokenLife = time.Hour
	// maxJoinTokenLife bounds a join token's life: it is a credential lying around.
	maxJoinTokenLife = 7 * 24 * time.Hour
	// centerRenewBefore is how long before its expiry the center issues itself a new
	// certificate at start.
	centerRenewBefore = 30 * 24 * time.Hour
	// certKindHost and certKindCenter are the kinds of issued certificates.
	certKindHost, certKindCenter = "host", "center"
)

// setupPKI loads or creates the CA and the center's own certificate.
func (c *Center) setupPKI(ctx context.Context) error {
	dir := filepath.Join(c.cfg.DataDir, "pki")
	ca, err := pki.LoadOrCreateCA(dir, c.now())
	if err != nil {
		return fmt.Errorf("the cluster CA: %w", err)
	}
	c.ca = ca
	id, err := c.centerIdentity(ctx, dir)
	if err != nil {
		return fmt.Errorf("the center's certificate: %w", err)
	}
	c.identity = id
	revoked, err := c.store.RevokedSerials(ctx, c.now())
	if err != nil {
		return fmt.Errorf("the revoked certificates: %w", err)
	}
	for _, s := range revoked {
		c.revoked.Store(s, true)
	}
	return nil
}

// centerIdentity loads the center's certificate from dir, issuing a new one when there
// is none, when it expires within centerRenewBefore, or when the names it should carry
// changed (another --listen or --tls-name).
func (c *Center) centerIdentity(ctx context.Context, dir string) (*pki.Identity, error) {
	iddir := filepath.Join(dir, "center")
	dns, ips := c.centerNames()
	id, err := pki.LoadIdentity(iddir)
	if err == nil && id.CA.Equal(c.ca.Cert) && id.Leaf.NotAfter.Sub(c.now()) > centerRenewBefore &&
		sameNames(id.Leaf, append([]string{pki.CenterName}, dns...), ips) {
		return id, nil
	}
	if err != nil && !errors.Is(err, pki.ErrNoIdentity) {
		c.log.Warn("the center's certificate is unusable; issuing a new one", "err", err)
	}
	key, err := pki.NewKey()
	if err != nil {
		return nil, err
	}
	cert, err := c.ca.Issue(key.Public(), pki.Leaf{Name: pki.CenterName, DNS: dns, IPs: ips}, c.now())
	if err != nil {
		return nil, err
	}
	keyPEM, err := pki.MarshalKeyPEM(key)
	if err != nil {
		return nil, err
	}
	if err := c.store.InsertCert(ctx, store.CertRecord{Serial: pki.SerialString(cert), Name: pki.CenterName, Kind: certKindCenter,
		NotBefore: cert.NotBefore, NotAfter: cert.NotAfter}); err != nil {
		return nil, err
	}
	if err := pki.SaveIdentity(iddir, keyPEM, pki.CertPEM(cert), c.ca.CertPEM); err != nil {
		return nil, err
	}
	return pki.LoadIdentity(iddir)
}

// centerNames are the names and addresses the center's certificate carries besides
// CenterName: localhost, the address it listens on (every local address when it listens
// on all of them), and --tls-name.
func (c *Center) centerNames() ([]string, []net.IP) {
	dns := []string{"localhost"}
	ips := []net.IP{net.IPv4(127, 0, 0, 1), net.IPv6loopback}
	if host, _, err := net.SplitHostPort(c.cfg.Listen); err == nil {
		if ip := net.ParseIP(host); ip != nil && !ip.IsUnspecified() {
			ips = append(ips, ip)
		} else if ip == nil && host != "" {
			dns = append(dns, host)
		} else if addrs, err := net.InterfaceAddrs(); err == nil {
			for _, a := range addrs {
				if n, ok := a.(*net.IPNet); ok && !n.IP.IsLoopback() && !n.IP.IsLinkLocalUnicast() {
					ips = append(ips, n.IP)
				}
			}
		}
	}
	for _, n := range c.cfg.TLSNames {
		if ip := net.ParseIP(n); ip != nil {
			ips = append(ips, ip)
		} else {
			dns = append(dns, n)
		}
	}
	return dns, ips
}

// sameNames reports whether cert carries exactly these DNS names and addresses.
func sameNames(cert *x509.Certificate, dns []string, ips []net.IP) bool {
	norm := func(ss []string) []string { ss = slices.Clone(ss); sort.Strings(ss); return slices.Compact(ss) }
	ipStrings := func(ips []net.IP) []string {
		var s []string
		for _, ip := range ips {
			s = append(s, ip.String())
		}
		return s
	}
	return slices.Equal(norm(cert.DNSNames), norm(dns)) && slices.Equal(norm(ipStrings(cert.IPAddresses)), norm(ipStrings(ips)))
}

// serverTLS is the TLS configuration of the center's TCP listener.
func (c *Center) serverTLS() *tls.Config { return c.identity.Server() }

// agentTLS is the TLS configuration for calling host's agent: the center's certificate
// as the client's, and the host's name as the one the agent's certificate must carry.
func (c *Center) agentTLS(host string) *tls.Config { return c.identity.Client(host, c.isRevoked) }

// isRevoked reports whether the certificate with serial was revoked.
func (c *Center) isRevoked(serial string) bool {
	_, ok := c.revoked.Load(serial)
	return ok
}

// noteRevoked remembers revoked serials and drops the pooled connections to the host.
func (c *Center) noteRevoked(host string, serials []string) {
	for _, s := range serials {
		c.revoked.Store(s, true)
	}
	c.hostCerts.revokedChanged()
	if len(serials) > 0 {
		c.agents.Forget(host)
		c.restartFeed(host)
	}
}

// verifyHost checks the client certificate of a request from a host's agent: signed by
// the cluster's CA, valid now, issued to a host by this center, and not revoked. It
// returns the host's name.
//
// A certificate verified once is trusted for verifiedFor (hostcerts.go) without its
// chain and record being read again, but never once revoked.
func (c *Center) verifyHost(ctx context.Context, chain []*x509.Certificate) (string, error) {
	now := c.now()
	if len(chain) > 0 {
		if v, ok := c.hostCerts.lookup(chain[0].Raw, now); ok && !c.isRevoked(v.serial) {
			return v.name, nil
		}
	}
	leaf, err := pki.Verify(c.ca.Pool(), chain, now, x509.ExtKeyUsageClientAuth)
	if err != nil {
		return "", err
	}
	serial := pki.SerialString(leaf)
	rec, err := c.store.Cert(ctx, serial)
	switch {
	case errors.Is(err, store.ErrNotFound):
		return "", fmt.Errorf("certificate %q (serial %s) was never issued by this center", leaf.Subject.CommonName, serial)
	case err != nil:
		return "", err
	case !rec.Revoked.IsZero():
		return "", fmt.Errorf("certificate %q (serial %s) was revoked at %s (%s); the host must join again with a new join token",
			rec.Name, serial, rec.Revoked.UTC().Format(time.RFC3339), orDefault(rec.RevokedReason, "no reason given"))
	case rec.Kind != certKindHost || !pki.HasName(leaf, rec.Name):
		return "", fmt.Errorf("certificate %q (serial %s) is not a host's certificate", leaf.Subject.CommonName, serial)
	case c.isRevoked(serial):
		return "", fmt.Errorf("certificate %q (serial %s) was revoked; the host must join again with a new join token", rec.Name, serial)
	}
	c.hostCerts.remember(leaf.Raw, rec.Name, serial, now, leaf.NotAfter)
	return rec.Name, nil
}

func orDefault(s, def string) string {
	if s == "" {
		return def
	}
	return s
}

// registerPKI adds the CA, join tokens, joining and certificates to mux:
//
//	GET    /api/v1/pki/ca               the CA certificate and its fingerprint (public)
//	POST   /api/v1/join-tokens          create a one-time join token (admin)
//	GET    /api/v1/join-tokens          list them (admin)
//	DELETE /api/v1/join-tokens/{id}     revoke an unused one (admin)
//	POST   /api/v1/hosts/join           a host joins: token + CSR → certificate
//	GET    /api/v1/certificates         the issued certificates (admin)
//	POST   /api/v1/hosts/{name}/revoke  revoke every certificate of a host (admin)
func (c *Center) registerPKI(mux *api.Mux) {
	mux.HandleFunc("GET /api/v1/pki/ca", func(w http.ResponseWriter, r *http.Request) {
		api.WriteJSON(w, http.StatusOK, api.CAInfo{Certificate: string(c.ca.CertPEM), Fingerprint: c.ca.Fingerprint()})
	})
	mux.HandleFunc("POST /api/v1/join-tokens", func(w http.ResponseWriter, r *http.Request) {
		var req api.CreateJoinTokenRequest
		if err := api.Decode(w, r, &req); err != nil {
			api.WriteError(w, err)
			return
		}
		audit.SetTarget(r.Context(), req.Host)
		t, err := c.createJoinToken(r.Context(), req, audit.ActorOf(r).Name)
		writeResult(w, http.StatusCreated, t, err)
	})
	mux.HandleFunc("GET /api/v1/join-tokens", func(w http.ResponseWriter, r *http.Request) {
		ts, err := c.listJoinTokens(r.Context())
		writeResult(w, http.StatusOK, ts, err)
	})
	mux.HandleFunc("DELETE /api/v1/join-tokens/{id}", func(w http.ResponseWriter, r *http.Request) {
		err := c.store.RevokeJoinToken(r.Context(), r.PathValue("id"), c.now())
		if errors.Is(err, store.ErrNotFound) {
			err = api.NotFound("no join token %s; `godwit host join-token list` shows them", r.PathValue("id"))
		}
		if err != nil {
			api.WriteError(w, err)
			return
		}
		w.WriteHeader(http.StatusNoContent)
	})
	mux.HandleFunc("POST /api/v1/hosts/join", func(w http.ResponseWriter, r *http.Request) {
		var req api.JoinRequest
		if err := api.Decode(w, r, &req); err != nil {
			api.WriteError(w, err)
			return
		}
		audit.SetTarget(r.Context(), req.Name)
		audit.Params(r.Context(), map[string]any{"host": req.Name, "csr": fmt.Sprintf("%d bytes", len(req.CSR))})
		id, _, _ := splitJoinToken(req.Token)
		audit.SetActor(r.Context(), audit.Actor{Name: "join-token " + orDefault(id, "(malformed)"), Kind: audit.KindToken})
		rep, err := c.join(r.Context(), req)
		writeResult(w, http.StatusCreated, rep, err)
	})
	mux.HandleFunc("POST /api/v1/hosts/renew", func(w http.ResponseWriter, r *http.Request) {
		var req api.RenewRequest
		if err := api.Decode(w, r, &req); err != nil {
			api.WriteError(w, err)
			return
		}
		p := principalOf(r.Context())
		audit.SetTarget(r.Context(), p.name)
		audit.Params(r.Context(), map[string]any{"host": p.name, "csr": fmt.Sprintf("%d bytes", len(req.CSR))})
		rep, err := c.renew(r.Context(), p, req)
		writeResult(w, http.StatusCreated, rep, err)
	})
	mux.HandleFunc("GET /api/v1/certificates", func(w http.ResponseWriter, r *http.Request) {
		cs, err := c.listCerts(r.Context())
		writeResult(w, http.StatusOK, cs, err)
	})
	mux.HandleFunc("POST /api/v1/hosts/{name}/revoke", func(w http.ResponseWriter, r *http.Request) {
		audit.Params(r.Context(), map[string]any{"host": r.PathValue("name")})
		var req api.RevokeRequest
		if r.ContentLength != 0 {
			if err := api.Decode(w, r, &req); err != nil {
				api.WriteError(w, err)
				return
			}
		}
		cs, err := c.revokeHost(r.Context(), r.PathValue("name"), req.Reason)
		writeResult(w, http.StatusOK, cs, err)
	})
}

// splitJoinToken parses gwjoin_ID_SECRET.
func splitJoinToken(tok string) (id, secret string, ok bool) {
	return splitSecret(strings.TrimSpace(tok), joinTokenPrefix)
}

func (c *Center) createJoinToken(ctx context.Context, req api.CreateJoinTokenRequest, by string) (api.JoinToken, error) {
	if req.Host != "" {
		if err := hostName(req.Host); err != nil {
			return api.JoinToken{}, err
		}
	}
	life, err := parseLifetime(req.Expires, defaultJoinTokenLife)
	if err != nil {
		return api.JoinToken{}, err
	}
	if life == 0 || life > maxJoinTokenLife {
		return api.JoinToken{}, api.BadRequest("a join token must expire within %s; ask for less (e.g. 1h)", maxJoinTokenLife)
	}
	idb := make([]byte, 8)
	if _, err := rand.Read(idb); err != nil {
		return api.JoinToken{}, fmt.Errorf("read random bytes: %w", err)
	}
	secret, err := newSecret(32)
	if err != nil {
		return api.JoinToken{}, err
	}
	now := c.now().UTC()
	rec := store.JoinTokenRecord{ID: hex.EncodeToString(idb), SecretSHA256: hashSecret(secret), Host: req.Host,
		Created: now, CreatedBy: orDefault(by, adminUser), Expires: now.Add(life)}
	if err := c.store.InsertJoinToken(ctx, rec); err != nil {
		return api.JoinToken{}, err
	}
	t := c.joinTokenView(rec)
	t.Secret = joinTokenPrefix + rec.ID + "_" + secret
	return t, nil
}

func (c *Center) joinTokenView(r store.JoinTokenRecord) api.JoinToken {
	t := api.JoinToken{ID: r.ID, Host: r.Host, Created: r.Created, CreatedBy: r.CreatedBy, Expires: r.Expires,
		UsedBy: r.UsedBy, CAFingerprint: c.ca.Fingerprint()}
	if !r.Used.IsZero() {
		t.Used = &r.Used
	}
	if !r.Revoked.IsZero() {
		t.Revoked = &r.Revoked
	}
	return t
}

func (c *Center) listJoinTokens(ctx context.Context) ([]api.JoinToken, error) {
	recs, err := c.store.JoinTokens(ctx)
	if err != nil {
		return nil, err
	}
	out := []api.JoinToken{}
	for _, r := range recs {
		out = append(out, c.joinTokenView(r))
	}
	return out, nil
}

// join checks a host's join token and signs its certificate signing request. The token
// is spent in the same transaction that records the certificate, so two joins with one
// token — a replay, or a race — issue one certificate at most. A host that joins again
// (reinstalled) gets a new certificate and its old ones are revoked.
func (c *Center) join(ctx context.Context, req api.JoinRequest) (api.JoinReply, error) {
	unauthorized := func(format string, args ...any) error {
		return api.Errorf(http.StatusUnauthorized, "unauthorized", format, args...)
	}
	if err := hostName(req.Name); err != nil {
		return api.JoinReply{}, err
	}
	id, secret, ok := splitJoinToken(req.Token)
	if !ok {
		return api.JoinReply{}, unauthorized("the join token is not a Godwit join token (gwjoin_…); create one with `godwit host join-token create`")
	}
	t, err := c.store.JoinToken(ctx, id)
	if errors.Is(err, store.ErrNotFound) || (err == nil && subtle.ConstantTimeCompare([]byte(hashSecret(secret)), []byte(t.SecretSHA256)) != 1) {
		return api.JoinReply{}, unauthorized("the join token is not known to this center; create one with `godwit host join-token create`")
	}
	if err != nil {
		return api.JoinReply{}, err
	}
	now := c.now()
	switch {
	case !t.Used.IsZero():
		return api.JoinReply{}, unauthorized("the join token %s was already used at %s by host %s; a join token works once: create a new one with `godwit host join-token create`",
			id, t.Used.UTC().Format(time.RFC3339), t.UsedBy)
	case !t.Revoked.IsZero():
		return api.JoinReply{}, unauthorized("the join token %s was revoked at %s", id, t.Revoked.UTC().Format(time.RFC3339))
	case !now.Before(t.Expires):
		return api.JoinReply{}, unauthorized("the join token %s expired at %s; create a new one with `godwit host join-token create`", id, t.Expires.UTC().Format(time.RFC3339))
	case t.Host != "" && t.Host != req.Name:
		return api.JoinReply{}, api.Errorf(http.StatusForbidden, "forbidden", "the join token %s is for host %s, not %s", id, t.Host, req.Name)
	}
	if t.Host == "" {
		// A token for any name must not take the name of a host that holds a valid
		// certificate: that would silently revoke the real host.
		if held, err := c.validHostCert(ctx, req.Name, now); err != nil {
			return api.JoinReply{}, err
		} else if held != nil {
			return api.JoinReply{}, api.Errorf(http.StatusConflict, "host_exists",
				"host %s already holds a valid certificate (serial %s, until %s); to give the name to a new machine, create a join token for that name (`godwit host join-token create --host %s`) or revoke the old one first (`godwit host revoke %s`)",
				req.Name, held.Serial, held.NotAfter.UTC().Format(time.RFC3339), req.Name, req.Name)
		}
	}
	cert, err := c.ca.SignCSR([]byte(req.CSR), pki.Leaf{Name: req.Name, Lifetime: c.cfg.HostCertLifetime}, now)
	if err != nil {
		return api.JoinReply{}, api.BadRequest("%v; the agent generates the request itself when it joins", err)
	}
	// Earlier certificates of this name are superseded.
	superseded, err := c.store.RevokeCerts(ctx, req.Name, "superseded: the host joined again", now)
	if err != nil {
		return api.JoinReply{}, err
	}
	c.noteRevoked(req.Name, superseded)
	rec := store.CertRecord{Serial: pki.SerialString(cert), Name: req.Name, Kind: certKindHost, NotBefore: cert.NotBefore, NotAfter: cert.NotAfter, JoinToken: id}
	if err := c.store.ConsumeJoinToken(ctx, id, req.Name, now, rec); err != nil {
		if errors.Is(err, store.ErrTokenUsed) {
			return api.JoinReply{}, unauthorized("the join token %s was already used; a join token works once: create a new one with `godwit host join-token create`", id)
		}
		return api.JoinReply{}, err
	}
	c.log.Info("host joined", "host", req.Name, "serial", rec.Serial, "expires", cert.NotAfter)
	return api.JoinReply{Certificate: string(pki.CertPEM(cert)), CA: string(c.ca.CertPEM), Serial: rec.Serial, Expires: cert.NotAfter}, nil
}

// validHostCert is a certificate of host that is neither revoked nor expired, if any.
func (c *Center) validHostCert(ctx context.Context, host string, now time.Time) (*store.CertRecord, error) {
	certs, err := c.store.Certs(ctx)
	if err != nil {
		return nil, err
	}
	for i := range certs {
		r := &certs[i]
		if r.Kind == certKindHost && r.Name == host && r.Revoked.IsZero() && now.Before(r.NotAfter) {
			return r, nil
		}
	}
	return nil, nil
}

// renew issues a host a new certificate for a new key, on the strength of its current,
// valid certificate (the request came over mutual TLS as that host). The old
// certificate stays valid until it expires, so connections in flight are not cut.
func (c *Center) renew(ctx context.Context, p principal, req api.RenewRequest) (api.JoinReply, error) {
	if p.kind != audit.KindHost || p.name == "" {
		return api.JoinReply{}, api.Errorf(http.StatusForbidden, "forbidden",
			"only a host renews its certificate, over mutual TLS with its current one; a host without a valid certificate joins again with a join token")
	}
	now := c.now()
	cert, err := c.ca.SignCSR([]byte(req.CSR), pki.Leaf{Name: p.name, Lifetime: c.cfg.HostCertLifetime}, now)
	if err != nil {
		return api.JoinReply{}, api.BadRequest("%v", err)
	}
	rec := store.CertRecord{Serial: pki.SerialString(cert), Name: p.name, Kind: certKindHost, NotBefore: cert.NotBefore, NotAfter: cert.NotAfter, JoinToken: "renewal"}
	if err := c.store.InsertCert(ctx, rec); err != nil {
		return api.JoinReply{}, err
	}
	c.log.Info("host certificate renewed", "host", p.name, "serial", rec.Serial, "expires", cert.NotAfter)
	return api.JoinReply{Certificate: string(pki.CertPEM(cert)), CA: string(c.ca.CertPEM), Serial: rec.Serial, Expires: cert.NotAfter}, nil
}

func (c *Center) listCerts(ctx context.Context) ([]api.Certificate, error) {
	recs, err := c.store.Certs(ctx)
	if err != nil {
		return nil, err
	}
	out := []api.Certificate{}
	for _, r := range recs {
		out = append(out, certView(r))
	}
	return out, nil
}

func certView(r store.CertRecord) api.Certificate {
	v := api.Certificate{Serial: r.Serial, Name: r.Name, Kind: r.Kind, NotBefore: r.NotBefore, NotAfter: r.NotAfter, RevokedReason: r.RevokedReason}
	if !r.Revoked.IsZero() {
		v.Revoked = &r.Revoked
	}
	return v
}

// revokeHost revokes every certificate of a host; its agent is refused from then on by
// the center at once, and by other agents after their next heartbeat.
func (c *Center) revokeHost(ctx context.Context, name, reason string) ([]api.Certificate, error) {
	if err := hostName(name); err != nil {
		return nil, err
	}
	if err := api.CheckReason(reason); err != nil {
		return nil, err
	}
	serials, err := c.store.RevokeCerts(ctx, name, orDefault(reason, "revoked by an administrator"), c.now())
	if err != nil {
		return nil, err
	}
	c.noteRevoked(name, serials)
	if len(serials) == 0 {
		return nil, api.NotFound("host %s has no valid certificate to revoke; `godwit host certificates` lists them", name)
	}
	out := []api.Certificate{}
	for _, s := range serials {
		r, err := c.store.Cert(ctx, s)
		if err != nil {
			return nil, err
		}
		out = append(out, certView(r))
	}
	return out, nil
}

// recordRefusals writes the requests an agent refused to the audit trail. The agent is
// not trusted to have bounded them: at most api.MaxAgentRefusals are recorded per
// heartbeat, each bounded (api.AgentRefusal.Bounded), and the rest are counted in the
// last one's "dropped" parameter.
func (c *Center) recordRefusals(ctx context.Context, host string, rs []api.AgentRefusal) {
	if over := len(rs) - api.MaxAgentRefusals; over > 0 {
		rs = slices.Clone(rs[:api.MaxAgentRefusals])
		rs[len(rs)-1].Dropped += over
	}
	for _, r := range rs {
		r = r.Bounded()
		actor := r.Subject
		if actor == "" {
			actor = audit.Anonymous
		}
		p := map[string]any{"host": host, "method": r.Method, "path": r.Path, "at": r.Time.UTC().Format(time.RFC3339Nano)}
		if r.Dropped > 0 {
			p["dropped"] = r.Dropped // refusals the agent could not keep for lack of room
		}
		params, _ := audit.EncodeParams(p)
		rec := audit.Record{Actor: actor, ActorKind: audit.KindHost, From: r.From, Action: "agent.request",
			Target: host, Params: params, Outcome: audit.Refused, Error: r.Reason}
		if _, err := c.trail.Append(ctx, rec); err != nil {
			c.log.Error("a refusal reported by an agent could not be recorded in the audit trail", "host", host, "err", err)
		}
	}
}
