package audit

import (
	"bytes"
	"context"
	"database/sql"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/godwit/godwit/internal/api"
	"github.com/godwit/godwit/internal/store"
)

// Actor is who makes a request: Name and Kind (KindUser, KindToken, …), and for
// automation, on whose behalf.
type Actor struct {
	Name       string
	Kind       string
	OnBehalfOf string
}

// maxParamBody is how much of a request body becomes the record's params; larger bodies
// are recorded by size only.
const maxParamBody = 64 << 10

// maxErrorBody is how much of a refused request's answer is read for its error.
const maxErrorBody = 8 << 10

// maxPlainError is how much of an answer that is not an API error becomes the error.
const maxPlainError = 500

type noteKey struct{}

// note is what the handler of a request tells the middleware about it, and what the
// request's first change recorded.
type note struct {
	mu     sync.Mutex
	action string
	target string
	params map[string]any
	actor  *Actor
	// recorded is the record written with the request's first change, if any; ended is
	// set once the handler has returned, after which changes are no longer the request's.
	recorded *Record
	ended    bool
}

func noteOf(ctx context.Context) *note {
	n, _ := ctx.Value(noteKey{}).(*note)
	return n
}

// Describe names the action (vm.create, vm.migrate, …) and the target (a VM's name, a
// migration's id) of the API request whose context ctx is. Handlers call it first, so
// that even a request refused at once is recorded as what it asked for. It does nothing
// outside a recorded request.
func Describe(ctx context.Context, action, target string) {
	if n := noteOf(ctx); n != nil {
		n.mu.Lock()
		n.action, n.target = action, target
		n.mu.Unlock()
	}
}

// SetTarget sets the target of the request being recorded, once the handler knows it
// (the name in a create request's body).
func SetTarget(ctx context.Context, target string) {
	if n := noteOf(ctx); n != nil {
		n.mu.Lock()
		n.target = target
		n.mu.Unlock()
	}
}

// Params adds parameters the center resolved (the host it placed a VM on, a migration's
// source, destination and policy) to the record of the request being handled. They join
// the request's own body and query parameters, and win over them. Empty strings are left
// out. It does nothing outside a recorded request.
func Params(ctx context.Context, p map[string]any) {
	if n := noteOf(ctx); n != nil {
		n.mu.Lock()
		if n.params == nil {
			n.params = map[string]any{}
		}
		for k, v := range p {
			n.params[k] = v
		}
		n.mu.Unlock()
	}
}

// SetActor names who makes the request being recorded. The authentication layer calls
// it, inside the audit middleware, once it knows the user or token; without it the actor
// is the Unix user of a unix-socket client (see PeerListener) or "anonymous".
func SetActor(ctx context.Context, a Actor) {
	if n := noteOf(ctx); n != nil {
		n.mu.Lock()
		n.actor = &a
		n.mu.Unlock()
	}
}

// ActorOf returns who makes a request, as the audit trail records it: the actor the
// authentication layer set (SetActor), else the Unix user of a unix-socket client, else
// Anonymous. Other parts of the center (tasks) use it so that they and the trail agree.
func ActorOf(r *http.Request) Actor {
	n := noteOf(r.Context())
	if n == nil {
		return actorOf(r, nil)
	}
	n.mu.Lock()
	defer n.mu.Unlock()
	return actorOf(r, n)
}

// actorOf is ActorOf with n (which may be nil) locked by the caller.
func actorOf(r *http.Request, n *note) Actor {
	if n != nil && n.actor != nil {
		return *n.actor
	}
	a := Actor{Name: Anonymous, Kind: KindUser}
	if isLocal(r) {
		if p := peerOf(r); p != nil && p.User != "" {
			a.Name = p.User
		}
	}
	return a
}

// changesState reports whether a request with this method is recorded.
func changesState(method string) bool {
	switch method {
	case http.MethodPost, http.MethodPut, http.MethodPatch, http.MethodDelete:
		return true
	}
	return false
}

// Middleware records every state-changing request (POST, PUT, PATCH, DELETE) that skip
// does not exempt: who made it and from where, the action and target its handler
// described (Describe), its parameters, and its outcome — succeeded (2xx, 3xx), refused
// (4xx) or failed (5xx) — with the error the client was given.
//
// A request that changes the center's state is recorded in the same transaction as its
// first change (a store.TxHook), with what is known by then and the outcome succeeded;
// if that record cannot be written, the change is rolled back and fails, so the state
// never changes without a record. When such a request then ends otherwise (a VM row
// inserted, then the host refused the VM and the row was removed), or with other
// parameters, a second record tells the end and names the first (param first_record).
// A request that changed nothing (a refusal) is recorded once it is answered. Either
// way the record is written before the server sends the end of the answer, so a client
// that has its answer finds the request in the trail. A record of a request that changed
// nothing and cannot be written is logged.
//
// Requests for which quiet returns true (routine traffic such as heartbeats) are
// recorded only when they are refused or fail, after the answer.
func (l *Log) Middleware(next http.Handler, quiet func(*http.Request) bool) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if !changesState(r.Method) {
			next.ServeHTTP(w, r)
			return
		}
		hush := quiet != nil && quiet(r)
		n := &note{}
		tap := &bodyTap{rc: r.Body}
		ctx := context.WithValue(r.Context(), noteKey{}, n)
		var r2 *http.Request
		if !hush {
			ctx = store.WithTxHook(ctx, func(ctx context.Context, tx *sql.Tx) (func(), error) {
				return l.recordChange(ctx, tx, r2, n, tap)
			})
		}
		r2 = r.WithContext(ctx)
		r2.Body = tap
		cw := &captureWriter{ResponseWriter: w}
		next.ServeHTTP(cw, r2)
		n.mu.Lock()
		n.ended = true
		first := n.recorded
		n.mu.Unlock()
		if hush && cw.status < 400 {
			return
		}

		rec := requestRecord(r2, n, tap)
		rec.Outcome, rec.Error = outcomeOf(cw)
		if first != nil {
			if p, err := prepare(rec); err == nil && sameRequestRecord(p, *first) {
				return
			}
			rec.Params = withParam(rec.Params, "first_record", first.ID)
		}
		// Not canceled with the request: the client hanging up does not unwrite it.
		ctx, cancel := context.WithTimeout(context.WithoutCancel(r.Context()), 10*time.Second)
		defer cancel()
		if _, err := l.Append(ctx, rec); err != nil {
			l.log.Error("a request could not be recorded in the audit trail", "method", r.Method, "path", api.Truncate(r.URL.Path, MaxTarget),
				"action", rec.Action, "target", api.Truncate(rec.Target, MaxTarget), "outcome", rec.Outcome, "err", err)
		}
	})
}

// recordChange is the store.TxHook of a request: the first time the request changes the
// center's state, it appends the request's record, as known so far, in the transaction
// of that change. It runs while the transaction holds the database's only connection, so
// it takes only n's lock, which the middleware never holds while it waits for the
// database.
func (l *Log) recordChange(ctx context.Context, tx *sql.Tx, r *http.Request, n *note, tap *bodyTap) (func(), error) {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.recorded != nil || n.ended {
		return nil, nil
	}
	rec := requestRecordLocked(r, n, tap)
	rec.Outcome = Succeeded
	stored, err := prepare(rec)
	if err == nil {
		stored, err = l.appendTx(ctx, tx, stored)
	}
	if err != nil {
		return nil, fmt.Errorf("record %s in the audit trail: %w", api.Truncate(rec.Action, MaxField), err)
	}
	return func() {
		n.mu.Lock()
		n.recorded = &stored
		n.mu.Unlock()
	}, nil
}

// sameRequestRecord reports whether a request's final record says nothing that the
// record written with its first change did not.
func sameRequestRecord(a, b Record) bool {
	return a.Actor == b.Actor && a.ActorKind == b.ActorKind && a.OnBehalfOf == b.OnBehalfOf && a.From == b.From &&
		a.Action == b.Action && a.Target == b.Target && bytes.Equal(a.Params, b.Params) && a.Outcome == b.Outcome && a.Error == b.Error
}

// withParam adds one parameter to encoded params.
func withParam(p json.RawMessage, key string, v any) json.RawMessage {
	var obj map[string]any
	dec := json.NewDecoder(bytes.NewReader(p))
	dec.UseNumber()
	if dec.Decode(&obj) != nil || obj == nil {
		obj = map[string]any{}
	}
	obj[key] = v
	out, err := encodeParams(obj)
	if err != nil {
		return p
	}
	return out
}

// requestRecord builds the record of a request from what its handler said, without an
// outcome.
func requestRecord(r *http.Request, n *note, tap *bodyTap) Record {
	n.mu.Lock()
	defer n.mu.Unlock()
	return requestRecordLocked(r, n, tap)
}

// requestRecordLocked is requestRecord with n locked by the caller.
func requestRecordLocked(r *http.Request, n *note, tap *bodyTap) Record {
	a := actorOf(r, n)
	rec := Record{Actor: a.Name, ActorKind: a.Kind, OnBehalfOf: a.OnBehalfOf, From: r.RemoteAddr, Action: n.action, Target: n.target}
	if rec.Actor == "" {
		// e.g. a failed login naming no user: still recorded, as anonymous.
		rec.Actor = Anonymous
	}
	if isLocal(r) {
		rec.From = Local
	}
	if rec.Action == "" {
		// A request no handler described: an unknown endpoint or method, or one
		// refused before its handler ran.
		rec.Action, rec.Target = "http."+strings.ToLower(r.Method), r.URL.Path
	}

	params := map[string]any{}
	if tap.n > maxParamBody {
		params["body_bytes"] = tap.n
	} else if tap.n > 0 {
		dec := json.NewDecoder(bytes.NewReader(tap.buf.Bytes()))
		dec.UseNumber()
		var body map[string]any
		if dec.Decode(&body) == nil {
			for k, v := range body {
				params[k] = v
			}
		}
	}
	for k, vs := range r.URL.Query() {
		if len(vs) == 1 {
			params[k] = vs[0]
		} else {
			params[k] = vs
		}
	}
	for k, v := range n.params {
		params[k] = v
	}
	for k := range params {
		if secretParam(k) {
			params[k] = Redacted
		}
	}
	p, err := encodeParams(params)
	if err != nil {
		p, _ = encodeParams(map[string]any{"params_error": err.Error()})
	}
	rec.Params = p
	return rec
}

// outcomeOf is the outcome of an answered request and the error its client was given.
func outcomeOf(cw *captureWriter) (outcome, errText string) {
	status := cw.status
	if status == 0 {
		status = http.StatusOK
	}
	switch {
	case status >= 500:
		return Failed, errorText(status, cw.body.Bytes(), cw.n)
	case status >= 400:
		return Refused, errorText(status, cw.body.Bytes(), cw.n)
	}
	return Succeeded, ""
}

// errorText is the error a client was given: the API's error message, or the start of
// whatever else the answer held (body, of the total bytes it had).
func errorText(status int, body []byte, total int) string {
	var e api.Error
	if json.Unmarshal(body, &e) == nil && e.Error != "" {
		return e.Error
	}
	s := strings.TrimSpace(string(body))
	if s == "" {
		return http.StatusText(status)
	}
	if len(s) > maxPlainError || total > len(body) {
		return api.TruncateNoting(s, maxPlainError, max(total, len(body)))
	}
	return s
}

func isLocal(r *http.Request) bool {
	a, ok := r.Context().Value(http.LocalAddrContextKey).(net.Addr)
	return ok && a.Network() == "unix" || r.RemoteAddr == "@"
}

// bodyTap keeps the start of a request body as the handler reads it.
type bodyTap struct {
	rc  io.ReadCloser
	buf bytes.Buffer
	n   int
}

func (t *bodyTap) Read(p []byte) (int, error) {
	k, err := t.rc.Read(p)
	if k > 0 {
		if room := maxParamBody + 1 - t.buf.Len(); room > 0 {
			t.buf.Write(p[:min(k, room)])
		}
		t.n += k
	}
	return k, err
}

func (t *bodyTap) Close() error { return t.rc.Close() }

// captureWriter notes the status of an answer and keeps the start of an error answer
// (body) and its length (n).
type captureWriter struct {
	http.ResponseWriter
	status int
	body   bytes.Buffer
	n      int
}

func (c *captureWriter) WriteHeader(code int) {
	if c.status == 0 {
		c.status = code
	}
	c.ResponseWriter.WriteHeader(code)
}

func (c *captureWriter) Write(p []byte) (int, error) {
	if c.status == 0 {
		c.status = http.StatusOK
	}
	if c.status >= 400 {
		c.body.Write(p[:min(len(p), maxErrorBody-c.body.Len())])
		c.n += len(p)
	}
	return c.ResponseWriter.Write(p)
}

// Unwrap lets http.ResponseController reach the underlying writer.
func (c *captureWriter) Unwrap() http.ResponseWriter { return c.ResponseWriter }

// Redacted stands in the trail for a parameter that holds a secret.
const Redacted = "[redacted]"

// secretParam reports whether a request parameter named k holds a secret (a password or
// a token) that must not be written to the trail.
func secretParam(k string) bool {
	k = strings.ToLower(k)
	return strings.Contains(k, "password") || strings.Contains(k, "secret") || strings.Contains(k, "token")
}
