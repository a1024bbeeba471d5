package api

import (
	"bytes"
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strings"
	"time"
)

// MaxBodyBytes bounds every request body the servers accept.
const MaxBodyBytes = 1 << 20

// StatusError is an error that carries the HTTP status and code to answer with.
type StatusError struct {
	Status int
	Code   string
	Msg    string
}

func (e *StatusError) Error() string { return e.Msg }

// Errorf returns a *StatusError.
func Errorf(status int, code, format string, args ...any) error {
	return &StatusError{Status: status, Code: code, Msg: fmt.Sprintf(format, args...)}
}

// BadRequest returns a 400 error with code "invalid_request".
func BadRequest(format string, args ...any) error {
	return Errorf(http.StatusBadRequest, "invalid_request", format, args...)
}

// NotFound returns a 404 error with code "not_found".
func NotFound(format string, args ...any) error {
	return Errorf(http.StatusNotFound, "not_found", format, args...)
}

// Conflict returns a 409 error with code "conflict".
func Conflict(format string, args ...any) error {
	return Errorf(http.StatusConflict, "conflict", format, args...)
}

// Decode reads one JSON object from r's body into v, refusing unknown fields, trailing
// data and bodies over MaxBodyBytes, with errors that name the problem.
func Decode(w http.ResponseWriter, r *http.Request, v any) error {
	if ct := r.Header.Get("Content-Type"); ct != "" && !strings.HasPrefix(ct, "application/json") {
		return Errorf(http.StatusUnsupportedMediaType, "unsupported_media_type",
			"the request body must be JSON (Content-Type: application/json), not %q", ct)
	}
	body := http.MaxBytesReader(w, r.Body, MaxBodyBytes)
	return DecodeJSON(body, v)
}

// DecodeJSON strictly decodes one JSON value from r into v.
func DecodeJSON(r io.Reader, v any) error {
	dec := json.NewDecoder(r)
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		var mbe *http.MaxBytesError
		var se *json.SyntaxError
		var te *json.UnmarshalTypeError
		var ne net.Error
		switch {
		case errors.As(err, &ne) && ne.Timeout():
			return Errorf(http.StatusRequestTimeout, "timeout",
				"the request body did not arrive in time (a whole request must arrive within %s); send it at once", ReadTimeout)
		case errors.As(err, &mbe):
			return Errorf(http.StatusRequestEntityTooLarge, "too_large",
				"the request body is larger than %d bytes", mbe.Limit)
		case errors.Is(err, io.EOF):
			return BadRequest("the request body is empty; send a JSON object")
		case errors.As(err, &se):
			return BadRequest("malformed JSON at byte %d: %v", se.Offset, err)
		case errors.As(err, &te):
			return BadRequest("field %q must be of type %s, not a JSON %s", te.Field, te.Type, te.Value)
		case strings.HasPrefix(err.Error(), "json: unknown field"):
			return BadRequest("%s; check the field name against the API reference",
				strings.TrimPrefix(err.Error(), "json: "))
		case errors.Is(err, io.ErrUnexpectedEOF):
			return BadRequest("malformed JSON: the body ends in the middle of a value")
		default:
			return BadRequest("malformed JSON: %v", err)
		}
	}
	if dec.More() {
		return BadRequest("the request body holds more than one JSON value; send exactly one object")
	}
	if _, err := dec.Token(); err != io.EOF {
		return BadRequest("the request body has data after the JSON object")
	}
	return nil
}

// WriteJSON writes v with the given status.
func WriteJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	// Compact: a list of a thousand hosts is a third smaller, and quicker to make, than
	// indented (`jq` shows it indented).
	_ = json.NewEncoder(w).Encode(v)
}

// WriteError answers with err: its own status if it is a *StatusError, else 500.
func WriteError(w http.ResponseWriter, err error) {
	var se *StatusError
	if errors.As(err, &se) {
		WriteJSON(w, se.Status, Error{Error: se.Msg, Code: se.Code})
		return
	}
	WriteJSON(w, http.StatusInternalServerError, Error{Error: err.Error(), Code: "internal"})
}

// Client calls a Godwit REST API. The base URL is http://HOST:PORT or unix:///path/to.sock.
type Client struct {
	base string
	hc   *http.Client
	// header is sent with every request (Authorization); never modified once set.
	header http.Header
}

// WithHeader returns a copy of c that sends the header key: value with every request
// (Authorization: Bearer TOKEN). The copy shares c's connections; c is unchanged.
func (c *Client) WithHeader(key, value string) *Client {
	cp := *c
	cp.header = c.header.Clone()
	if cp.header == nil {
		cp.header = http.Header{}
	}
	cp.header.Set(key, value)
	return &cp
}

// WithTimeout returns a copy of c whose calls time out after d (0: never). The copy
// shares c's connections.
func (c *Client) WithTimeout(d time.Duration) *Client {
	cp := *c
	cp.hc = &http.Client{Transport: c.hc.Transport, Timeout: d}
	return &cp
}

// CloseIdle closes the client's idle keep-alive connections, so that the next call
// opens (and verifies) a new one.
func (c *Client) CloseIdle() { c.hc.CloseIdleConnections() }

// addHeaders puts the client's own headers on req.
func (c *Client) addHeaders(req *http.Request) {
	for k, vs := range c.header {
		req.Header[k] = vs
	}
}

// ClientOption adjusts a Client as NewClient makes it.
type ClientOption func(*http.Transport)

// WithTLS makes the client use cfg for https servers (the cluster's CA, the name the
// server must have, the client's own certificate).
func WithTLS(cfg *tls.Config) ClientOption {
	return func(tr *http.Transport) { tr.TLSClientConfig = cfg }
}

// NewClient returns a client for the server at base.
func NewClient(base string, timeout time.Duration, opts ...ClientOption) (*Client, error) {
	u, err := url.Parse(base)
	if err != nil {
		return nil, fmt.Errorf("server address %q is not a URL: %w", base, err)
	}
	tr := &http.Transport{MaxIdleConnsPerHost: 4, IdleConnTimeout: 30 * time.Second, ForceAttemptHTTP2: true}
	for _, o := range opts {
		o(tr)
	}
	switch u.Scheme {
	case "http", "https":
		return &Client{base: strings.TrimRight(base, "/"), hc: &http.Client{Transport: tr, Timeout: timeout}}, nil
	case "unix":
		sock := u.Path
		tr.DialContext = func(ctx context.Context, _, _ string) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, "unix", sock)
		}
		return &Client{base: "http://godwit", hc: &http.Client{Transport: tr, Timeout: timeout}}, nil
	default:
		return nil, fmt.Errorf("server address %q: scheme must be http, https or unix", base)
	}
}

// ErrorOf is the error an unsuccessful answer carries: the server's own error (a
// StatusError with its code and sentence) or, when its body holds none, the status and
// the start of the body, after what (the request, or what it asked for). It reads at
// most 64 KiB of the body.
func ErrorOf(resp *http.Response, what string) error {
	data, err := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
	if err != nil {
		return fmt.Errorf("%s: %s, and its answer could not be read: %w", what, resp.Status, err)
	}
	return errorOf(resp, data, what)
}

func errorOf(resp *http.Response, data []byte, what string) error {
	var e Error
	if json.Unmarshal(data, &e) == nil && e.Error != "" {
		return &StatusError{Status: resp.StatusCode, Code: e.Code, Msg: e.Error}
	}
	return &StatusError{Status: resp.StatusCode, Code: "http",
		Msg: fmt.Sprintf("%s: %s: %s", what, resp.Status, strings.TrimSpace(string(data)))}
}

// Do sends a request with in (if non-nil) as its JSON body and decodes the JSON answer
// into out (if non-nil). A non-2xx answer becomes a *StatusError with the server's message.
func (c *Client) Do(ctx context.Context, method, path string, in, out any) error {
	_, err := c.do(ctx, method, path, in, out)
	return err
}

// do is Do, and returns the answer's header too.
func (c *Client) do(ctx context.Context, method, path string, in, out any) (http.Header, error) {
	var body io.Reader
	if in != nil {
		b, err := json.Marshal(in)
		if err != nil {
			return nil, fmt.Errorf("encode request: %w", err)
		}
		body = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, method, c.base+path, body)
	if err != nil {
		return nil, fmt.Errorf("build request: %w", err)
	}
	if in != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	c.addHeaders(req)
	resp, err := c.hc.Do(req)
	if err != nil {
		return nil, fmt.Errorf("%s %s: %w", method, path, err)
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(io.LimitReader(resp.Body, 64<<20))
	if err != nil {
		return nil, fmt.Errorf("%s %s: read answer: %w", method, path, err)
	}
	if resp.StatusCode/100 != 2 {
		return nil, errorOf(resp, data, method+" "+path)
	}
	if out == nil {
		return resp.Header, nil
	}
	if s, ok := out.(*[]byte); ok {
		*s = data
		return resp.Header, nil
	}
	if err := json.Unmarshal(data, out); err != nil {
		return nil, fmt.Errorf("%s %s: decode answer: %w", method, path, err)
	}
	return resp.Header, nil
}
