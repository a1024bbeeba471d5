package center

import (
	"context"
	"errors"
	"maps"
	"math"
	"net"
	"net/http"
	"slices"
	"strconv"
	"sync"
	"time"

	"github.com/godwit/godwit/internal/api"
	"github.com/godwit/godwit/internal/audit"
)

// Failed logins — POST /api/v1/login and HTTP Basic on any request — are limited per
// source address and per user name. Each has a budget of loginBurst failures that
// refills by one every loginRefill. Once a source's or a user's budget is spent, its
// login attempts, right or wrong, are refused with 429 and Retry-After until a failure's
// worth has refilled, before the password is checked (bcrypt is the costly part).
// Successful logins cost nothing, so other users and other sources are unaffected.
// API tokens (256 random bits) and root on the unix socket have nothing to guess and
// are not limited.
const (
	loginBurst  = 10
	loginRefill = 6 * time.Second
	// maxLoginKeys bounds the sources and user names the limiter remembers, so that
	// many sources cannot exhaust the center's memory; when full it forgets those that
	// owe least.
	maxLoginKeys = 10000
	// maxLoginName bounds the claimed user name kept in the audit trail and the limiter.
	maxLoginName = 128
)

// loginLimiter holds, per key ("src:ADDR" or "user:NAME"), when its budget is full again
// (the theoretical arrival time of the generic cell rate algorithm). A key whose time
// has passed owes nothing and is forgotten.
type loginLimiter struct {
	mu   sync.Mutex
	full map[string]time.Time
}

func newLoginLimiter() *loginLimiter { return &loginLimiter{full: map[string]time.Time{}} }

// wait is how long until key may try to log in again: 0 while its budget lasts.
func (l *loginLimiter) wait(key string, now time.Time) time.Duration {
	l.mu.Lock()
	defer l.mu.Unlock()
	t, ok := l.full[key]
	if !ok || !t.After(now) {
		return 0
	}
	return max(t.Sub(now)-(loginBurst-1)*loginRefill, 0)
}

// fail spends one failure of key's budget.
func (l *loginLimiter) fail(key string, now time.Time) {
	l.mu.Lock()
	defer l.mu.Unlock()
	t, ok := l.full[key]
	if !ok && len(l.full) >= maxLoginKeys {
		l.evict(now)
	}
	l.full[key] = later(t, now).Add(loginRefill)
}

// evict forgets the keys that owe nothing and, if that frees no room, the tenth of the
// keys that owe least (a tenth, so that the scan is paid once per many failures).
func (l *loginLimiter) evict(now time.Time) {
	for k, t := range l.full {
		if !t.After(now) {
			delete(l.full, k)
		}
	}
	if len(l.full) < maxLoginKeys {
		return
	}
	keys := slices.SortedFunc(maps.Keys(l.full), func(a, b string) int { return l.full[a].Compare(l.full[b]) })
	for _, k := range keys[:len(keys)/10] {
		delete(l.full, k)
	}
}

func later(a, b time.Time) time.Time {
	if a.After(b) {
		return a
	}
	return b
}

// loginSource is the source of a request the limiter counts: the client's IP address,
// or the Unix user of a unix-socket client.
func loginSource(r *http.Request) string {
	if p := audit.Peer(r); p != nil {
		return "uid " + strconv.Itoa(int(p.UID))
	}
	if host, _, err := net.SplitHostPort(r.RemoteAddr); err == nil {
		return host
	}
	return r.RemoteAddr
}

// errWrongPassword is a login with a wrong user name or password; which one is not said.
var errWrongPassword = errors.New("the user or the password is wrong")

// tooManyLogins is a login refused by the limiter.
type tooManyLogins struct {
	who   string
	retry time.Duration
}

func (e *tooManyLogins) Error() string { return e.Unwrap().Error() }

// Unwrap is the 429 the client is answered with.
func (e *tooManyLogins) Unwrap() error {
	return api.Errorf(http.StatusTooManyRequests, "too_many_logins",
		"too many failed logins %s; try again in %s", e.who, e.retryAfter())
}

func (e *tooManyLogins) retryAfter() time.Duration {
	return time.Duration(math.Ceil(e.retry.Seconds())) * time.Second
}

// setRetryAfter puts the Retry-After header of err on w, if err is a limited login.
func setRetryAfter(w http.ResponseWriter, err error) {
	if tm := (*tooManyLogins)(nil); errors.As(err, &tm) {
		w.Header().Set("Retry-After", strconv.Itoa(int(tm.retryAfter().Seconds())))
	}
}

// checkLogin runs check, a password check for user from source, within the limits: it
// refuses at once (*tooManyLogins) when either has failed too often, and counts a wrong
// password (check false) against both, as errWrongPassword. An error of check (the
// store's) is returned as it is and counts nothing.
func (c *Center) checkLogin(source, user string, check func() (bool, error)) error {
	user = api.Truncate(user, maxLoginName)
	now := c.now()
	for _, k := range []struct{ key, who string }{
		{"src:" + source, "from " + source},
		{"user:" + user, "for user " + user},
	} {
		if d := c.logins.wait(k.key, now); d > 0 {
			return &tooManyLogins{who: k.who, retry: d}
		}
	}
	ok, err := check()
	if err != nil || ok {
		return err
	}
	c.logins.fail("src:"+source, now)
	c.logins.fail("user:"+user, now)
	return errWrongPassword
}

// recordFailedLogin writes a refused HTTP Basic login to the audit trail. Basic
// credentials come with any request, reads too, which the trail does not otherwise
// record, so every failed attempt is recorded here, as a login.
func (c *Center) recordFailedLogin(r *http.Request, name string, err error) {
	from := r.RemoteAddr
	if p := audit.Peer(r); p != nil {
		from = audit.Local
	}
	params, _ := audit.EncodeParams(map[string]any{"method": r.Method, "path": api.Truncate(r.URL.Path, maxLoginName), "scheme": "basic"})
	rec := audit.Record{Actor: api.Truncate(name, maxLoginName), ActorKind: audit.KindUser, From: from, Action: "user.login",
		Target: api.Truncate(name, maxLoginName), Params: params, Outcome: audit.Refused, Error: err.Error()}
	ctx, cancel := context.WithTimeout(context.WithoutCancel(r.Context()), 10*time.Second)
	defer cancel()
	if _, aerr := c.trail.Append(ctx, rec); aerr != nil {
		c.log.Error("a failed login could not be recorded in the audit trail", "user", rec.Actor, "err", aerr)
	}
}
