package center

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"net/http"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"time"

	"golang.org/x/crypto/bcrypt"

	"github.com/godwit/godwit/internal/api"
	"github.com/godwit/godwit/internal/audit"
	"github.com/godwit/godwit/internal/pki"
	"github.com/godwit/godwit/internal/store"
)

// Authentication and authorization.
//
// Passwords are stored as bcrypt hashes (golang.org/x/crypto/bcrypt, cost 10): the hash
// carries its own salt and cost, comparison is constant-time, and the algorithm has no
// parameters to get wrong — argon2id is stronger against GPUs but needs its own encoding
// of salt and parameters, and logins here are rare enough that bcrypt's cost is no
// burden. bcrypt reads at most 72 bytes, so longer passwords are refused, not truncated.
//
// API tokens are "gw_" + ID + "_" + SECRET: ID names the token's row, SECRET is 32
// random bytes (base64url) of which only the SHA-256 is stored. A token is checked by
// hashing the secret presented and comparing in constant time; a revoked or expired
// token, or one whose user is gone, is refused.
//
// Over the unix socket (mode 0600) the kernel names the client's Unix user; root is
// trusted as an administrator, as Docker's socket or Proxmox's root@pam are. Everyone
// else presents a token (Authorization: Bearer) or a user and password (HTTP Basic).
//
// Hosts' agents are known by their certificates (mutual TLS, see pki.go): a request
// over TLS with a valid host certificate acts as that host, with the agent role.

const (
	// tokenPrefix starts every API token, so that a leaked one is recognisable.
	tokenPrefix = "gw_"
	// loginTokenLifetime is how long a token from POST /api/v1/login lasts.
	loginTokenLifetime = 12 * time.Hour
	// defaultTokenLifetime is how long a token from POST /api/v1/tokens lasts unless
	// the request says otherwise.
	defaultTokenLifetime = 12 * time.Hour
	// Every API token expires, so that a leaked one is worth something only for so long:
	// an administrator may create one for at most maxTokenLifetime, anyone else for at
	// most maxUserTokenLifetime.
	maxTokenLifetime     = 365 * 24 * time.Hour
	maxUserTokenLifetime = 90 * 24 * time.Hour
	// bootstrapTokenLifetime is how long the token in admin-credentials lasts: long enough
	// to set the cluster up, after which the password logs in.
	bootstrapTokenLifetime = 24 * time.Hour
	// minPassword and maxPassword bound a password's length in bytes (bcrypt reads 72).
	minPassword, maxPassword = 8, 72
	// passwordCost is bcrypt's work factor.
	passwordCost = bcrypt.DefaultCost
	// adminUser is the user the center creates on first start.
	adminUser = "admin"
	// AdminCredentialsFile is the file, in the data directory, that the first start
	// writes (mode 0600).
	AdminCredentialsFile = "admin-credentials"
)

// userName is what a user's name may look like.
var userName = regexp.MustCompile(`^[a-z][a-z0-9._-]{0,63}$`)

// roleRank orders the human roles; the agent role is apart from them.
var roleRank = map[string]int{api.RoleViewer: 1, api.RoleOperator: 2, api.RoleAdmin: 3}

// principal is who a request was authenticated as. A zero principal made no attempt;
// err says why an attempt failed (tried then names who it claimed to be).
type principal struct {
	name  string // the user; empty for the in-process caller of Handler
	role  string
	kind  string // audit.KindUser or audit.KindToken
	token string // the id of the token used, if any
	// local is the center's local administrator: root on the unix socket, or the
	// in-process caller. No stored user stands behind it.
	local bool
	err   error
	tried string
}

type principalKey struct{}

func principalOf(ctx context.Context) principal {
	p, _ := ctx.Value(principalKey{}).(principal)
	return p
}

// hashPassword returns the bcrypt hash of a password, refusing one too short or too long.
func hashPassword(pw string) (string, error) {
	if len(pw) < minPassword || len(pw) > maxPassword {
		return "", api.BadRequest("a password must be %d to %d bytes long", minPassword, maxPassword)
	}
	h, err := bcrypt.GenerateFromPassword([]byte(pw), passwordCost)
	if err != nil {
		return "", fmt.Errorf("hash the password: %w", err)
	}
	return string(h), nil
}

// checkPassword reports whether pw matches the bcrypt hash; an empty hash (a user who
// does not exist, or has no password) matches nothing but takes as long to refuse.
func checkPassword(hash, pw string) bool {
	if hash == "" {
		// A hash of the same cost, so that a wrong user name is not told apart by time.
		_ = bcrypt.CompareHashAndPassword([]byte("$2a$10$abcdefghijklmnopqrstuu5Xd9sKpHZUn4bV6vGb9N.3OKQq3yR5a"), []byte(pw))
		return false
	}
	return bcrypt.CompareHashAndPassword([]byte(hash), []byte(pw)) == nil
}

// newSecret returns n random bytes, base64url-encoded.
func newSecret(n int) (string, error) {
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		return "", fmt.Errorf("read random bytes: %w", err)
	}
	return base64.RawURLEncoding.EncodeToString(b), nil
}

// hashSecret is the stored form of a token's secret.
func hashSecret(secret string) string {
	sum := sha256.Sum256([]byte(secret))
	return hex.EncodeToString(sum[:])
}

// splitToken parses a bearer token into its id and secret.
func splitToken(tok string) (id, secret string, ok bool) { return splitSecret(tok, tokenPrefix) }

// splitSecret parses PREFIX + ID + "_" + SECRET, where ID is 16 hex digits: the form of
// API tokens and join tokens.
func splitSecret(tok, prefix string) (id, secret string, ok bool) {
	rest, ok := strings.CutPrefix(tok, prefix)
	if !ok {
		return "", "", false
	}
	id, secret, ok = strings.Cut(rest, "_")
	if !ok || len(id) != 16 || secret == "" {
		return "", "", false
	}
	if _, err := hex.DecodeString(id); err != nil {
		return "", "", false
	}
	return id, secret, true
}

// issueToken creates a token for user, valid for life, and returns it with its secret,
// which is not stored.
func (c *Center) issueToken(ctx context.Context, u store.UserRecord, life time.Duration) (api.Token, error) {
	idb := make([]byte, 8)
	if _, err := rand.Read(idb); err != nil {
		return api.Token{}, fmt.Errorf("read random bytes: %w", err)
	}
	id := hex.EncodeToString(idb)
	secret, err := newSecret(32)
	if err != nil {
		return api.Token{}, err
	}
	now := c.now().UTC()
	rec := store.TokenRecord{ID: id, User: u.Name, SecretSHA256: hashSecret(secret), Created: now, Expires: now.Add(life)}
	t := api.Token{ID: id, User: u.Name, Role: u.Role, Created: now, Secret: tokenPrefix + id + "_" + secret, Expires: &rec.Expires}
	if err := c.store.InsertToken(ctx, rec); err != nil {
		return api.Token{}, err
	}
	return t, nil
}

// tokenExpiry is when a token expires. Tokens that an older center issued without an
// expiry (its bootstrap token among them) last maxTokenLifetime from their creation.
func tokenExpiry(t store.TokenRecord) time.Time {
	if t.Expires.IsZero() {
		return t.Created.Add(maxTokenLifetime)
	}
	return t.Expires
}

// verifyToken returns the user a bearer token belongs to, or an error saying why it is
// refused.
func (c *Center) verifyToken(ctx context.Context, tok string) (store.UserRecord, store.TokenRecord, error) {
	id, secret, ok := splitToken(tok)
	if !ok {
		return store.UserRecord{}, store.TokenRecord{}, errors.New("the bearer token is not a Godwit API token")
	}
	t, err := c.store.Token(ctx, id)
	if errors.Is(err, store.ErrNotFound) {
		return store.UserRecord{}, t, errors.New("the API token is not known")
	}
	if err != nil {
		return store.UserRecord{}, t, err
	}
	if subtle.ConstantTimeCompare([]byte(hashSecret(secret)), []byte(t.SecretSHA256)) != 1 {
		return store.UserRecord{}, t, errors.New("the API token is not known")
	}
	u, err := c.store.User(ctx, t.User)
	switch {
	case errors.Is(err, store.ErrNotFound):
		return u, t, fmt.Errorf("the user %s of the API token no longer exists", t.User)
	case err != nil:
		return u, t, err
	case !t.Revoked.IsZero():
		return u, t, errors.New("the API token has been revoked")
	case !c.now().Before(tokenExpiry(t)):
		return u, t, errors.New("the API token has expired")
	}
	return u, t, nil
}

// authenticate finds out who made r. It refuses nothing itself: authorize does, inside
// the audit middleware, so that refusals are recorded.
func (c *Center) authenticate(r *http.Request) principal {
	if r.TLS != nil && len(r.TLS.PeerCertificates) > 0 {
		name, err := c.verifyHost(r.Context(), r.TLS.PeerCertificates)
		if err != nil {
			return principal{err: err, tried: r.TLS.PeerCertificates[0].Subject.CommonName, kind: audit.KindHost}
		}
		return principal{name: name, role: api.RoleAgent, kind: audit.KindHost}
	}
	h := r.Header.Get("Authorization")
	if scheme, cred, ok := strings.Cut(h, " "); ok && strings.EqualFold(scheme, "Bearer") {
		u, t, err := c.verifyToken(r.Context(), strings.TrimSpace(cred))
		if err != nil {
			tried := audit.Anonymous
			if t.User != "" {
				tried = t.User
			}
			return principal{err: err, tried: tried, kind: audit.KindToken}
		}
		return principal{name: u.Name, role: u.Role, kind: audit.KindToken, token: t.ID}
	}
	if name, pw, ok := r.BasicAuth(); ok {
		var u store.UserRecord
		err := c.checkLogin(loginSource(r), name, func() (bool, error) {
			var err error
			u, err = c.store.User(r.Context(), name)
			if err != nil && !errors.Is(err, store.ErrNotFound) {
				return false, err
			}
			return checkPassword(u.PasswordHash, pw), nil
		})
		if err != nil {
			c.recordFailedLogin(r, name, err)
			return principal{err: err, tried: api.Truncate(name, maxLoginName), kind: audit.KindUser}
		}
		return principal{name: u.Name, role: u.Role, kind: audit.KindUser}
	}
	if h != "" {
		return principal{err: errors.New("the Authorization header is neither Bearer nor Basic"), tried: audit.Anonymous, kind: audit.KindUser}
	}
	if p := audit.Peer(r); p != nil && p.UID == 0 {
		return principal{name: p.User, role: api.RoleAdmin, kind: audit.KindUser, local: true}
	}
	return principal{}
}

// withAuthentication puts who made each request in its context (see principalOf); with
// trusted, every request is the in-process administrator (Handler, for tests).
func (c *Center) withAuthentication(next http.Handler, trusted bool) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		p := principal{role: api.RoleAdmin, local: true}
		if !trusted {
			p = c.authenticate(r)
		}
		next.ServeHTTP(w, r.WithContext(context.WithValue(r.Context(), principalKey{}, p)))
	})
}

// nameActor tells the audit trail who made each request — authenticated, or merely
// claimed when the credentials failed. It runs inside the audit middleware.
func (c *Center) nameActor(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		p := principalOf(r.Context())
		switch {
		case p.name != "":
			audit.SetActor(r.Context(), audit.Actor{Name: p.name, Kind: p.kind})
		case p.tried != "":
			audit.SetActor(r.Context(), audit.Actor{Name: p.tried, Kind: p.kind})
		}
		next.ServeHTTP(w, r)
	})
}

// guard wraps the handler of one route of the table: it names the route's audit action
// and target, then refuses a caller the route's access does not admit — 401 without
// valid credentials, 403 without the role — inside the audit middleware, so that
// refusals are recorded.
func (c *Center) guard(rt api.Route, h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if rt.Action != "" {
			target := ""
			if rt.Target != "" {
				target = r.PathValue(rt.Target)
			}
			audit.Describe(r.Context(), rt.Action, target)
		}
		if err := permit(principalOf(r.Context()), r, rt); err != nil {
			if se, ok := err.(*api.StatusError); ok && se.Status == http.StatusUnauthorized {
				w.Header().Set("WWW-Authenticate", `Bearer realm="godwit", Basic realm="godwit"`)
			}
			setRetryAfter(w, err)
			api.WriteError(w, err)
			return
		}
		h.ServeHTTP(w, r)
	})
}

// permit says why p may not call rt, or nil when it may.
func permit(p principal, r *http.Request, rt api.Route) error {
	if rt.Access == api.AccessPublic {
		return nil
	}
	if tm := (*tooManyLogins)(nil); errors.As(p.err, &tm) {
		return tm // 429, before anything else: the password was not even checked
	}
	if p.err != nil || p.role == "" {
		why := "this request needs credentials"
		if p.err != nil {
			why = "authentication failed: " + p.err.Error()
		}
		return api.Errorf(http.StatusUnauthorized, "unauthorized",
			"%s; log in with `godwit login` (or send an API token as Authorization: Bearer)", why)
	}
	if !allows(p.role, rt.Access) {
		who := "the in-process caller"
		switch {
		case p.kind == audit.KindHost:
			who = "host " + p.name
		case p.name != "":
			who = "user " + p.name
		}
		if rt.Access == api.RoleAgent {
			return api.Errorf(http.StatusForbidden, "forbidden",
				"%s %s is for hosts' agents, with their certificates; %s is not one", r.Method, r.URL.Path, who)
		}
		return api.Errorf(http.StatusForbidden, "forbidden",
			"%s %s needs the %s role, and %s has the %s role; ask an administrator", r.Method, r.URL.Path, rt.Access, who, p.role)
	}
	return nil
}

// allows reports whether role may make a request that needs the role need.
func allows(role, need string) bool {
	if need == api.RoleAgent {
		return role == api.RoleAgent || role == api.RoleAdmin
	}
	if role == api.RoleAgent {
		return false
	}
	return roleRank[role] > 0 && roleRank[role] >= roleRank[need]
}

// bootstrap creates the first administrator when there are no users: admin, with a
// random password and an API token that lasts bootstrapTokenLifetime, written to
// DATA_DIR/admin-credentials (mode 0600).
// If the file cannot be written it removes the user again, so that the next start tries
// anew rather than leave an administrator whose password nobody knows. It does nothing
// once any user exists, so the file is never rewritten. (Hosts need no credential from
// here: they join with one-time join tokens and then use their certificates.)
func (c *Center) bootstrap(ctx context.Context) error {
	users, err := c.store.Users(ctx)
	if err != nil {
		return err
	}
	if len(users) > 0 {
		return nil
	}
	pw, err := newSecret(18)
	if err != nil {
		return err
	}
	hash, err := hashPassword(pw)
	if err != nil {
		return err
	}
	admin := store.UserRecord{Name: adminUser, Role: api.RoleAdmin, PasswordHash: hash, Created: c.now().UTC()}
	if err := c.store.InsertUser(ctx, admin); err != nil {
		return fmt.Errorf("create the first administrator: %w", err)
	}
	adminTok, err := c.issueToken(ctx, admin, bootstrapTokenLifetime)
	if err == nil {
		creds := fmt.Sprintf("# Godwit center: the first administrator, written once on first start.\n"+
			"# Keep this file secret. The token expires %s; from then on log in with\n"+
			"# `godwit login --user admin` and the password.\n"+
			"user: %s\npassword: %s\ntoken: %s\n", adminTok.Expires.Format(time.RFC3339), admin.Name, pw, adminTok.Secret)
		err = writeSecretFile(filepath.Join(c.cfg.DataDir, AdminCredentialsFile), creds)
	}
	if err != nil {
		// Without the file nobody knows the password: start again from no users.
		_ = c.store.DeleteUser(context.WithoutCancel(ctx), admin.Name)
		return fmt.Errorf("create the first administrator: %w", err)
	}
	c.log.Info("created the first administrator; the credentials are in a file only root can read",
		"file", filepath.Join(c.cfg.DataDir, AdminCredentialsFile))
	return nil
}

// writeSecretFile writes data to path with mode 0600, replacing it atomically.
func writeSecretFile(path, data string) error {
	return pki.WriteFileAtomic(path, []byte(data), 0o600)
}

// parseLifetime parses a token's lifetime: a Go duration, or a number of days ("30d");
// "" is def, "0" and "never" mean no expiry, which the callers refuse with their limits.
func parseLifetime(s string, def time.Duration) (time.Duration, error) {
	switch s {
	case "":
		return def, nil
	case "0", "never":
		return 0, nil
	}
	if d, ok := strings.CutSuffix(s, "d"); ok {
		n, err := strconv.Atoi(d)
		if err == nil && n > 0 && n <= 100000 { // beyond, the duration would overflow
			return time.Duration(n) * 24 * time.Hour, nil
		}
	}
	d, err := time.ParseDuration(s)
	if err != nil || d <= 0 {
		return 0, api.BadRequest("expires %q is not a duration such as 12h or 30d (at most 100000d)", s)
	}
	return d, nil
}
