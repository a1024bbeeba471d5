package agent

import (
	"bufio"
	"context"
	"crypto/sha256"
	"crypto/tls"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	neturl "net/url"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/godwit/godwit/internal/api"
	"github.com/godwit/godwit/internal/pki"
	"github.com/godwit/godwit/internal/ticket"
)

// The encrypted migration stream, carried by the agents.
//
// QEMU can encrypt the stream itself, but its TLS channel sends every 4 KiB page as a
// record and a system call of its own: measured here, it ran at about a third of the
// plain stream's rate. So when a migration is encrypted, neither QEMU touches the
// network: each talks to a Unix socket in a private directory (0700) of its own agent,
// and the agents carry the stream between them over mutual TLS in records of 16 KiB.
// The source agent dials the destination agent's stream route (carryRoute) with the
// center's ticket for the migration; the route's guard admits only the source the
// ticket names, with its certificate (not revoked), and the source checks the
// destination's certificate the same way. The destination answers 101 and splices the
// connection to its waiting QEMU's socket. So only the two hosts the center named can
// read or inject the stream, QEMU listens on no network address, and each connection
// QEMU opens — the stream, and after a post-copy recovery its resumption — is carried
// the same way.

// streamUpgrade is the protocol a connection to the stream route is upgraded to.
const streamUpgrade = "godwit-migration-stream"

// streamSocket is the name of a QEMU-facing socket in its private directory.
const streamSocket = "qemu.sock"

// carryBuffer is the size of each direction's copy buffer: QEMU writes the stream in
// large chunks, and each read becomes a run of full TLS records.
const carryBuffer = 256 << 10

// halfCloseGrace bounds how long one direction of a carried stream may go on after the
// other ended (the stream ends in both directions at once, or soon after).
const halfCloseGrace = 30 * time.Second

// streamDialTimeout bounds dialling the destination and its answer to the upgrade.
const streamDialTimeout = 30 * time.Second

// streamsDir is where this agent keeps its streams' socket directories: "streams" in
// its state directory, unless that path is too long for a socket below it (a socket's
// path holds at most 107 bytes); then in the temporary directory, named after the state
// directory, so that agents of different hosts on one machine (a lab) keep apart. Run
// empties it at start and removes it at the end: what is in it belongs to streams that
// died with the agent's run.
func streamsDir(stateDir string) string {
	abs, err := filepath.Abs(stateDir)
	if err != nil {
		abs = stateDir
	}
	if dir := filepath.Join(abs, "streams"); len(dir)+len("/s0123456789/"+streamSocket) <= 107 {
		return dir
	}
	sum := sha256.Sum256([]byte(abs))
	return filepath.Join(os.TempDir(), "godwit-streams-"+hex.EncodeToString(sum[:6]))
}

// streamDir makes a private directory for one stream's Unix socket.
func (a *Agent) streamDir() (string, error) {
	if err := os.MkdirAll(a.streams, 0o700); err != nil {
		return "", fmt.Errorf("a private directory for migration streams' sockets: %w", err)
	}
	dir, err := os.MkdirTemp(a.streams, "s")
	if err != nil {
		return "", fmt.Errorf("a private directory for the migration stream's socket: %w", err)
	}
	return dir, nil
}

// carry copies between x and y in both directions until both have ended, and returns
// the bytes sent each way. When one direction ends cleanly its end is closed for
// writing and the other direction has halfCloseGrace to end too; when one fails, or ctx
// ends, both connections are closed at once, so that both QEMUs see the stream break.
// Both connections are closed when carry returns.
func carry(ctx context.Context, x, y net.Conn) (xy, yx int64, err error) {
	type result struct {
		n   int64
		err error
		xy  bool
	}
	done := make(chan result, 2)
	pipe := func(dst, src net.Conn, isXY bool) {
		// Hide ReaderFrom and WriterTo, so that every copy goes through the buffer.
		n, err := io.CopyBuffer(struct{ io.Writer }{dst}, struct{ io.Reader }{src}, make([]byte, carryBuffer))
		if err == nil {
			err = closeWrite(dst)
		}
		done <- result{n: n, err: err, xy: isXY}
	}
	go pipe(y, x, true)
	go pipe(x, y, false)
	closeBoth := func() {
		_ = x.Close()
		_ = y.Close()
	}
	defer closeBoth()
	record := func(r result) {
		if r.xy {
			xy = r.n
		} else {
			yx = r.n
		}
		if r.err != nil && err == nil {
			err = r.err
		}
	}
	var grace <-chan time.Time
	for pending := 2; pending > 0; pending-- {
		select {
		case r := <-done:
			record(r)
			if r.err != nil {
				closeBoth()
			} else if grace == nil {
				t := time.NewTimer(halfCloseGrace)
				defer t.Stop()
				grace = t.C
			}
			continue
		case <-grace:
			err = errors.Join(err, fmt.Errorf("one direction of the stream stayed open %s after the other ended", halfCloseGrace))
		case <-ctx.Done():
			err = errors.Join(err, ctx.Err())
		}
		closeBoth()
		record(<-done)
	}
	return xy, yx, err
}

// closeWrite ends c for writing; the other end reads EOF (TLS: a close_notify).
func closeWrite(c net.Conn) error {
	if cw, ok := c.(interface{ CloseWrite() error }); ok {
		return cw.CloseWrite()
	}
	return nil
}

// streamConn is an agent's end of the TLS connection that carries a stream. Writes of
// the source's (out not nil) leave as one system call per write, not one per 16 KiB
// record; reads take every record already received, not just one, so that the
// destination hands its QEMU large pieces. Both matter on hosts where system calls
// are dear.
type streamConn struct {
	*tls.Conn
	// first holds bytes read before the stream began (with the upgrade's answer).
	first *bufio.Reader
	out   *batchConn
}

// maxRecord is the most a TLS record holds.
const maxRecord = 16 << 10

func (c *streamConn) Read(p []byte) (int, error) {
	if c.first != nil {
		if c.first.Buffered() > 0 {
			return c.first.Read(p)
		}
		c.first = nil
	}
	n, err := c.Conn.Read(p)
	if err != nil || n == 0 {
		return n, err
	}
	// Take the records already here: with its deadline past, a read returns at once
	// when none is (without a system call); a timeout leaves TLS's state whole.
	for n+maxRecord <= len(p) {
		_ = c.Conn.SetReadDeadline(time.Unix(1, 0))
		m, err := c.Conn.Read(p[n:])
		n += m
		if err != nil {
			_ = c.Conn.SetReadDeadline(time.Time{})
			if errors.Is(err, os.ErrDeadlineExceeded) {
				return n, nil
			}
			return n, err
		}
	}
	_ = c.Conn.SetReadDeadline(time.Time{})
	return n, nil
}

// Close closes the TCP connection under TLS at once. tls.Conn's own Close would first
// send a close_notify, which waits for a write blocked on a dead link (or is itself
// blocked there): closing the socket is what breaks both.
func (c *streamConn) Close() error { return c.Conn.NetConn().Close() }

func (c *streamConn) Write(p []byte) (int, error) {
	if c.out == nil {
		return c.Conn.Write(p)
	}
	c.out.hold()
	n, err := c.Conn.Write(p)
	if ferr := c.out.flush(); err == nil {
		err = ferr
	}
	return n, err
}

// batchConn collects the writes made while it holds and sends them together at flush.
// TLS writes records to it in order, one at a time, so the order holds.
type batchConn struct {
	net.Conn
	mu      sync.Mutex
	holding bool
	buf     []byte
}

func (c *batchConn) Write(p []byte) (int, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if !c.holding {
		return c.Conn.Write(p)
	}
	c.buf = append(c.buf, p...)
	return len(p), nil
}

func (c *batchConn) hold() {
	c.mu.Lock()
	c.holding = true
	c.mu.Unlock()
}

func (c *batchConn) flush() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.holding = false
	if len(c.buf) == 0 {
		return nil
	}
	_, err := c.Conn.Write(c.buf)
	c.buf = c.buf[:0]
	return err
}

// outStream is the source's end of a carried stream: the source QEMU migrates to uri,
// and each connection it opens there is carried to the destination's stream route.
type outStream struct {
	dir    string
	ln     net.Listener
	cancel context.CancelFunc
	wg     sync.WaitGroup

	mu      sync.Mutex
	lastErr error
	sent    int64
}

// uri is where the source QEMU sends the stream.
func (s *outStream) uri() string { return "unix:" + filepath.Join(s.dir, streamSocket) }

// err is why the stream could last not be carried, or broke, if it did.
func (s *outStream) err() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.lastErr
}

// close stops carrying (breaking a stream still under way) and removes the socket.
func (s *outStream) close() {
	_ = s.ln.Close()
	s.cancel()
	s.wg.Wait()
	_ = os.RemoveAll(s.dir)
}

// carryOut starts the source's end of a carried stream to host dest (its agent at
// destURL) for migration id of VM name, with the center's ticket tk. The stream lives
// until close, or until the agent stops: a migration cancelled on request is ended by
// QEMU, never by breaking its stream, which in post-copy would pause it.
func (a *Agent) carryOut(dest, destURL, name, id, tk string, log *slog.Logger) (*outStream, error) {
	dir, err := a.streamDir()
	if err != nil {
		return nil, err
	}
	ln, err := net.Listen("unix", filepath.Join(dir, streamSocket))
	if err != nil {
		_ = os.RemoveAll(dir)
		return nil, fmt.Errorf("listen for the source QEMU's stream: %w", err)
	}
	ctx, cancel := context.WithCancel(a.runCtx)
	s := &outStream{dir: dir, ln: ln, cancel: cancel}
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		for {
			q, err := ln.Accept()
			if err != nil {
				return
			}
			s.wg.Add(1)
			go func() {
				defer s.wg.Done()
				peer, err := a.dialStream(ctx, dest, destURL, name, id, tk)
				if err != nil {
					_ = q.Close() // QEMU sees the stream break
					log.Warn("cannot carry the migration stream", "to", dest, "err", err)
					s.mu.Lock()
					s.lastErr = err
					s.mu.Unlock()
					return
				}
				sent, got, err := carry(ctx, q, peer)
				s.mu.Lock()
				s.sent += sent
				if err != nil && ctx.Err() == nil {
					s.lastErr = fmt.Errorf("the connection that carried it broke after %d bytes: %w", sent, err)
				}
				s.mu.Unlock()
				log.Info("carried the migration stream", "to", dest, "sent", sent, "received", got, "err", err)
			}()
		}
	}()
	return s, nil
}

// carryRoute is the path of the stream route of migration id bringing VM name in.
func carryRoute(name, id string) string {
	return "/agent/v1/vms/" + neturl.PathEscape(name) + "/incoming/" + neturl.PathEscape(id) + "/stream"
}

// dialStream opens a connection to host's stream route (its agent at url) for
// migration id of VM name, over mutual TLS that accepts only host's certificate, not
// revoked, and upgrades it to the stream.
func (a *Agent) dialStream(ctx context.Context, host, url, name, id, tk string) (net.Conn, error) {
	u, err := neturl.Parse(url)
	if err != nil || u.Host == "" {
		return nil, fmt.Errorf("host %s's agent URL %q: %v", host, url, err)
	}
	cfg := pki.ClientTLSFrom(a.id.Load, host, a.trust.isRevoked)
	cfg.NextProtos = []string{"http/1.1"}
	cfg.DynamicRecordSizingDisabled = true // full 16 KiB records from the first byte
	ctx, cancel := context.WithTimeout(ctx, streamDialTimeout)
	defer cancel()
	raw, err := (&net.Dialer{KeepAlive: 15 * time.Second}).DialContext(ctx, "tcp", u.Host)
	if err != nil {
		return nil, fmt.Errorf("connect to host %s for the stream: %w", host, err)
	}
	out := &batchConn{Conn: raw}
	c := tls.Client(out, cfg)
	stop := context.AfterFunc(ctx, func() { _ = c.Close() })
	if err := c.HandshakeContext(ctx); err != nil {
		stop()
		_ = c.Close()
		return nil, fmt.Errorf("TLS with host %s for the stream: %w", host, err)
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, strings.TrimSuffix(url, "/")+carryRoute(name, id), nil)
	if err == nil {
		req.Header.Set(ticket.Header, tk)
		req.Header.Set("Connection", "Upgrade")
		req.Header.Set("Upgrade", streamUpgrade)
		err = req.Write(c)
	}
	var resp *http.Response
	br := bufio.NewReaderSize(c, carryBuffer)
	if err == nil {
		resp, err = http.ReadResponse(br, req)
	}
	if !stop() || err != nil {
		_ = c.Close()
		return nil, fmt.Errorf("ask host %s to take the stream: %w", host, errors.Join(err, ctx.Err()))
	}
	if resp.StatusCode != http.StatusSwitchingProtocols {
		err := api.ErrorOf(resp, "POST "+carryRoute(name, id))
		_ = c.Close()
		return nil, fmt.Errorf("host %s refused the stream: %w", host, err)
	}
	return &streamConn{Conn: c, first: br, out: out}, nil
}

// serveStream is the stream route on the destination: the source named in the ticket
// (the guard checked it) brings the stream of migration id; it is carried to the
// waiting QEMU's socket until the stream ends.
func (a *Agent) serveStream(w http.ResponseWriter, r *http.Request) {
	name, id := r.PathValue("name"), r.PathValue("id")
	if err := a.checkCopyTicket(r.Context(), name, id); err != nil {
		a.refuse(w, r, http.StatusForbidden, err)
		return
	}
	if !strings.EqualFold(r.Header.Get("Upgrade"), streamUpgrade) {
		api.WriteError(w, api.BadRequest("the stream route takes only a connection upgraded to %s (Connection: Upgrade, Upgrade: %s)", streamUpgrade, streamUpgrade))
		return
	}
	v, err := a.get(name)
	if err != nil {
		api.WriteError(w, err)
		return
	}
	a.mu.Lock()
	inc, dir := v.incoming, v.stream
	a.mu.Unlock()
	if inc != id || dir == "" {
		api.WriteError(w, api.Conflict("VM %s on host %s does not wait for the carried stream of migration %s", name, a.cfg.Name, id))
		return
	}
	q, err := (&net.Dialer{}).DialContext(r.Context(), "unix", filepath.Join(dir, streamSocket))
	if err != nil {
		api.WriteError(w, api.Conflict("the copy of VM %s does not take the stream of migration %s now: %v", name, id, err))
		return
	}
	c, brw, err := http.NewResponseController(w).Hijack()
	if err != nil {
		_ = q.Close()
		api.WriteError(w, fmt.Errorf("take over the connection for the stream: %w", err))
		return
	}
	_ = c.SetDeadline(time.Time{}) // the server's deadlines were for the request
	_, err = brw.WriteString("HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: " + streamUpgrade + "\r\n\r\n")
	if err == nil {
		err = brw.Flush()
	}
	if err != nil {
		_ = c.Close()
		_ = q.Close()
		a.log.Warn("cannot answer the stream's upgrade", "vm", name, "migration", id, "err", err)
		return
	}
	tc, ok := c.(*tls.Conn)
	if !ok {
		_ = c.Close()
		_ = q.Close()
		a.log.Warn("a stream came without TLS", "vm", name, "migration", id)
		return
	}
	peer := &streamConn{Conn: tc, first: brw.Reader}
	a.log.Info("carrying an incoming migration stream", "vm", name, "migration", id, "from", callerOf(r.Context()).name)
	got, sent, err := carry(a.runCtx, peer, q)
	a.log.Info("carried an incoming migration stream", "vm", name, "migration", id, "received", got, "sent", sent, "err", err)
}
