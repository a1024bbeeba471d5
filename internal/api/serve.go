package api

import (
	"context"
	"crypto/tls"
	"errors"
	"net"
	"net/http"
	"sync"
	"time"

	"golang.org/x/sys/unix"
)

// Limits of the HTTP servers (the center's and the agents'): how long one client may take
// over each part of a request, and how large its header may be, so that no client — slow
// or hostile — holds a connection or a goroutine for long.
const (
	// ReadHeaderTimeout bounds reading a request's header.
	ReadHeaderTimeout = 10 * time.Second
	// ReadTimeout bounds reading a whole request, header and body (at most MaxBodyBytes):
	// a body trickled a byte at a time is cut off then, and its handler's read fails.
	ReadTimeout = 30 * time.Second
	// WriteTimeout bounds each write of an answer: a client that stops reading is cut
	// off WriteTimeout after the write that blocks. It bounds each write, not the whole
	// answer as http.Server.WriteTimeout would, so that long-lived streams (the task
	// stream) and requests that take long by design (a VM stop with a grace period) go
	// on for as long as their client reads. A client that vanished (its host gone, its
	// link cut) is let go once data sent to it stays unacknowledged for WriteTimeout,
	// even while the writes still fit the socket's buffer (TCP_USER_TIMEOUT).
	WriteTimeout = 30 * time.Second
	// IdleTimeout bounds how long a kept-alive connection waits for its next request.
	IdleTimeout = 2 * time.Minute
	// MaxHeaderBytes bounds a request's header, request line included; a larger one is
	// answered 431 (Request Header Fields Too Large).
	MaxHeaderBytes = 64 << 10
)

// ServerLimits are the limits Serve applies. A zero field takes the default above; tests
// shorten them.
type ServerLimits struct {
	ReadHeader, Read, Write, Idle time.Duration
	MaxHeaderBytes                int
}

func (l ServerLimits) withDefaults() ServerLimits {
	def := func(d *time.Duration, v time.Duration) {
		if *d <= 0 {
			*d = v
		}
	}
	def(&l.ReadHeader, ReadHeaderTimeout)
	def(&l.Read, ReadTimeout)
	def(&l.Write, WriteTimeout)
	def(&l.Idle, IdleTimeout)
	if l.MaxHeaderBytes <= 0 {
		l.MaxHeaderBytes = MaxHeaderBytes
	}
	return l
}

// Serve serves h on every listener with the default limits until ctx ends or one of the
// listeners fails, then shuts the server down, giving requests under way up to five
// seconds to finish.
func Serve(ctx context.Context, h http.Handler, lns ...net.Listener) error {
	return ServerLimits{}.Serve(ctx, h, lns...)
}

// Serve is api.Serve with these limits.
func (l ServerLimits) Serve(ctx context.Context, h http.Handler, lns ...net.Listener) error {
	l = l.withDefaults()
	srv := &http.Server{
		Handler:           writeDeadlines(h, l.Write),
		ReadHeaderTimeout: l.ReadHeader,
		ReadTimeout:       l.Read,
		IdleTimeout:       l.Idle,
		MaxHeaderBytes:    l.MaxHeaderBytes,
		ConnState: func(c net.Conn, s http.ConnState) {
			if s == http.StateNew {
				letGoUnacknowledged(c, l.Write)
			}
		},
	}
	errc := make(chan error, len(lns))
	var wg sync.WaitGroup
	for _, ln := range lns {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
				errc <- err
			}
		}()
	}
	var runErr error
	select {
	case <-ctx.Done():
	case runErr = <-errc:
	}
	shutCtx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
	defer cancel()
	_ = srv.Shutdown(shutCtx)
	wg.Wait()
	return runErr
}

// writeDeadlines gives every write of an answer its own deadline, d from the moment it
// starts (see WriteTimeout). The deadline is also renewed when the handler returns,
// because the server then sends what the handler left buffered.
func writeDeadlines(next http.Handler, d time.Duration) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		dw := &deadlineWriter{ResponseWriter: w, rc: http.NewResponseController(w), d: d}
		dw.renew()
		defer dw.renew()
		next.ServeHTTP(dw, r)
	})
}

type deadlineWriter struct {
	http.ResponseWriter
	rc *http.ResponseController
	d  time.Duration
}

func (w *deadlineWriter) renew() { _ = w.rc.SetWriteDeadline(time.Now().Add(w.d)) }

func (w *deadlineWriter) WriteHeader(code int) {
	w.renew()
	w.ResponseWriter.WriteHeader(code)
}

func (w *deadlineWriter) Write(p []byte) (int, error) {
	w.renew()
	return w.ResponseWriter.Write(p)
}

// FlushError renews the deadline before a flush (http.ResponseController.Flush uses it).
func (w *deadlineWriter) FlushError() error {
	w.renew()
	return w.rc.Flush()
}

// Unwrap lets http.ResponseController reach the underlying writer.
func (w *deadlineWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }

// letGoUnacknowledged makes the kernel close a TCP connection (under TLS or not) whose
// data stays unacknowledged for d (TCP_USER_TIMEOUT). It is best effort: where the
// option cannot be set, the connection is only bounded by the write deadlines.
func letGoUnacknowledged(c net.Conn, d time.Duration) {
	if tc, ok := c.(*tls.Conn); ok {
		c = tc.NetConn()
	}
	tcp, ok := c.(*net.TCPConn)
	if !ok {
		return
	}
	raw, err := tcp.SyscallConn()
	if err != nil {
		return
	}
	_ = raw.Control(func(fd uintptr) {
		_ = unix.SetsockoptInt(int(fd), unix.IPPROTO_TCP, unix.TCP_USER_TIMEOUT, int(d.Milliseconds()))
	})
}
