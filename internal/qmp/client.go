// Package qmp is a typed client for the QEMU Machine Protocol (QMP).
//
// A Monitor owns one connection to a QEMU process's QMP socket. Commands are
// sent with Execute (or one of the typed methods built on it, one Go method
// per QEMU command); every command carries an "id" so that replies are
// matched to their callers and concurrent calls are safe. Asynchronous QEMU
// events are delivered on the channel returned by Events.
//
// Every call that waits takes a context.Context: Dial honours it for the
// whole handshake and Execute returns promptly when it is cancelled or its
// deadline passes. When the connection to QEMU ends (QEMU exited, the socket
// was closed, or Close was called) Done is closed and all pending and future
// calls fail with an error wrapping ErrClosed.
//
// QEMU serves one client per QMP socket at a time: while a Monitor is
// connected, a second Dial to the same socket completes the connect but
// receives no greeting until the first client disconnects, so it fails when
// its context expires. Share one Monitor per QEMU process.
package qmp

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"time"
)

// ErrClosed is wrapped by the errors returned for calls that could not
// complete because the monitor connection to QEMU is closed.
var ErrClosed = errors.New("qmp: monitor connection to QEMU closed")

// Error is a QMP error reply: QEMU received and rejected a command.
type Error struct {
	// Command is the QMP command that failed.
	Command string
	// Class is QEMU's error class, e.g. "GenericError" or "CommandNotFound".
	Class string
	// Desc is QEMU's human-readable description, verbatim.
	Desc string
}

// Error returns the command, QEMU's description verbatim and the class.
func (e *Error) Error() string {
	return fmt.Sprintf("qmp %s: %s (%s)", e.Command, e.Desc, e.Class)
}

// Error classes QEMU uses in replies.
const (
	ClassGenericError    = "GenericError"
	ClassCommandNotFound = "CommandNotFound"
	ClassDeviceNotActive = "DeviceNotActive"
	ClassDeviceNotFound  = "DeviceNotFound"
	ClassKVMMissingCap   = "KVMMissingCap"
)

// IsClass reports whether err is (or wraps) a QMP *Error of the given class.
func IsClass(err error, class string) bool {
	var qe *Error
	return errors.As(err, &qe) && qe.Class == class
}

// Version is QEMU's version as announced in the QMP greeting or returned by
// query-version.
type Version struct {
	QEMU struct {
		Major int `json:"major"`
		Minor int `json:"minor"`
		Micro int `json:"micro"`
	} `json:"qemu"`
	// Package is the distribution's package version, e.g. "Debian 1:10.0.2+ds-2".
	Package string `json:"package"`
}

// String returns "major.minor.micro".
func (v Version) String() string {
	return fmt.Sprintf("%d.%d.%d", v.QEMU.Major, v.QEMU.Minor, v.QEMU.Micro)
}

// AtLeast reports whether the version is major.minor or newer.
func (v Version) AtLeast(major, minor int) bool {
	if v.QEMU.Major != major {
		return v.QEMU.Major > major
	}
	return v.QEMU.Minor >= minor
}

// eventBufferSize is how many events Monitor keeps for a slow reader
// before it starts dropping the oldest.
const eventBufferSize = 256

// Monitor is a connection to one QEMU process's QMP socket. It is safe for
// concurrent use.
type Monitor struct {
	conn    net.Conn
	version Version
	caps    []string
	// oob: out-of-band execution is enabled (see ExecuteOOB).
	oob bool

	writeMu sync.Mutex // serialises writes of whole messages
	nextID  atomic.Uint64

	mu      sync.Mutex
	pending map[string]chan reply
	err     error // why the connection ended; set once, before done is closed

	events  chan Event
	dropped atomic.Uint64

	done       chan struct{} // closed when the connection has ended
	readerDone chan struct{} // closed when the reader goroutine has returned
	closeOnce  sync.Once
}

// reply is one command's outcome as delivered by the reader goroutine.
type reply struct {
	ret json.RawMessage
	err *Error
}

// message is any message QEMU sends: greeting, reply or event.
type message struct {
	QMP *struct {
		Version      Version  `json:"version"`
		Capabilities []string `json:"capabilities"`
	} `json:"QMP"`
	Return    json.RawMessage `json:"return"`
	Error     *wireError      `json:"error"`
	ID        json.RawMessage `json:"id"`
	Event     string          `json:"event"`
	Data      json.RawMessage `json:"data"`
	Timestamp *struct {
		Seconds      int64 `json:"seconds"`
		Microseconds int64 `json:"microseconds"`
	} `json:"timestamp"`
}

type wireError struct {
	Class string `json:"class"`
	Desc  string `json:"desc"`
}

type request struct {
	Execute   string `json:"execute,omitempty"`
	ExecOOB   string `json:"exec-oob,omitempty"`
	Arguments any    `json:"arguments,omitempty"`
	ID        string `json:"id"`
}

// capabilitiesArgs are qmp_capabilities' arguments.
type capabilitiesArgs struct {
	Enable []string `json:"enable"`
}

// Dial connects to the QMP unix socket at socketPath, reads QEMU's greeting
// and negotiates capabilities. ctx bounds the whole handshake.
func Dial(ctx context.Context, socketPath string) (*Monitor, error) {
	var d net.Dialer
	conn, err := d.DialContext(ctx, "unix", socketPath)
	if err != nil {
		return nil, fmt.Errorf("qmp: dial %s: %w", socketPath, err)
	}
	m, err := handshake(ctx, conn)
	if err != nil {
		conn.Close()
		return nil, fmt.Errorf("qmp: handshake on %s: %w", socketPath, err)
	}
	return m, nil
}

// handshake reads the greeting and sends qmp_capabilities synchronously,
// enabling out-of-band execution when QEMU offers it, then starts the reader
// goroutine.
func handshake(ctx context.Context, conn net.Conn) (*Monitor, error) {
	// Make blocking reads and writes return when ctx ends. (Not via
	// conn.SetDeadline(ctx deadline): that can fire before ctx reports
	// its error, hiding the reason behind an I/O timeout.)
	stop := context.AfterFunc(ctx, func() { conn.SetDeadline(time.Unix(1, 0)) })
	defer stop()

	dec := json.NewDecoder(conn)
	var greet message
	if err := dec.Decode(&greet); err != nil {
		return nil, ctxErr(ctx, fmt.Errorf("read greeting: %w", err))
	}
	if greet.QMP == nil {
		return nil, errors.New("first message from QEMU is not a QMP greeting")
	}
	const capsID = "capabilities"
	oob := slices.Contains(greet.QMP.Capabilities, "oob")
	caps := request{Execute: "qmp_capabilities", ID: capsID}
	if oob {
		caps.Arguments = capabilitiesArgs{Enable: []string{"oob"}}
	}
	if err := json.NewEncoder(conn).Encode(caps); err != nil {
		return nil, ctxErr(ctx, fmt.Errorf("send qmp_capabilities: %w", err))
	}
	for {
		var msg message
		if err := dec.Decode(&msg); err != nil {
			return nil, ctxErr(ctx, fmt.Errorf("read qmp_capabilities reply: %w", err))
		}
		if msg.Event != "" {
			continue // not expected before negotiation; ignore
		}
		if msg.Error != nil {
			return nil, &Error{Command: "qmp_capabilities", Class: msg.Error.Class, Desc: msg.Error.Desc}
		}
		break
	}
	if !stop() {
		return nil, ctx.Err()
	}
	conn.SetDeadline(time.Time{})

	m := &Monitor{
		conn:       conn,
		version:    greet.QMP.Version,
		caps:       greet.QMP.Capabilities,
		oob:        oob,
		pending:    make(map[string]chan reply),
		events:     make(chan Event, eventBufferSize),
		done:       make(chan struct{}),
		readerDone: make(chan struct{}),
	}
	go m.readLoop(dec)
	return m, nil
}

// ctxErr prefers the context's error when the context has ended, because a
// deadline forced on the connection shows up as an opaque I/O timeout.
func ctxErr(ctx context.Context, err error) error {
	if cerr := ctx.Err(); cerr != nil {
		return fmt.Errorf("%w (%v)", cerr, err)
	}
	return err
}

// Version returns QEMU's version as announced in the greeting.
func (m *Monitor) Version() Version { return m.version }

// Capabilities returns the QMP capabilities QEMU offered in its greeting
// (e.g. "oob", which the client enables when offered: see ExecuteOOB).
func (m *Monitor) Capabilities() []string { return append([]string(nil), m.caps...) }

// Done returns a channel that is closed when the connection to QEMU ends.
func (m *Monitor) Done() <-chan struct{} { return m.done }

// Err returns why the connection ended (wrapping ErrClosed), or nil while it
// is open.
func (m *Monitor) Err() error {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.err
}

// Close closes the connection and waits for the reader goroutine to stop.
// Pending calls fail with an error wrapping ErrClosed. QEMU keeps running.
func (m *Monitor) Close() error {
	m.shutdown(errors.New("closed by client"))
	<-m.readerDone
	return nil
}

// shutdown records the reason, closes the connection, fails pending calls
// and closes done. Only the first call has an effect.
func (m *Monitor) shutdown(cause error) {
	m.closeOnce.Do(func() {
		m.conn.Close()
		m.mu.Lock()
		m.err = fmt.Errorf("%w: %v", ErrClosed, cause)
		pending := m.pending
		m.pending = nil
		m.mu.Unlock()
		for _, ch := range pending {
			close(ch) // a closed channel means "connection ended"
		}
		close(m.done)
	})
}

// readLoop is the only reader of the connection. It runs until the
// connection ends and is owned by the Monitor (Close waits for it).
func (m *Monitor) readLoop(dec *json.Decoder) {
	defer close(m.readerDone)
	defer close(m.events)
	for {
		var msg message
		if err := dec.Decode(&msg); err != nil {
			m.shutdown(err)
			return
		}
		switch {
		case msg.Event != "":
			m.deliverEvent(msg)
		case len(msg.ID) > 0:
			var id string
			if err := json.Unmarshal(msg.ID, &id); err != nil {
				continue // not one of ours
			}
			var r reply
			if msg.Error != nil {
				r.err = &Error{Class: msg.Error.Class, Desc: msg.Error.Desc}
			} else {
				r.ret = msg.Return
			}
			m.mu.Lock()
			ch, ok := m.pending[id]
			delete(m.pending, id)
			m.mu.Unlock()
			if ok {
				ch <- r // buffered (1): never blocks
			}
		}
		// Replies without an id cannot be matched; this client always sends one.
	}
}

// Execute sends command with args (marshalled as the "arguments" object;
// nil sends none) and, when result is not nil, unmarshals QEMU's "return"
// value into it. A QMP error reply is returned as *Error. When ctx ends
// first Execute returns ctx's error at once; the command may still run in
// QEMU and its late reply is discarded.
func (m *Monitor) Execute(ctx context.Context, command string, args any, result any) error {
	return m.execute(ctx, request{Execute: command, Arguments: args}, result)
}

// ExecuteOOB is Execute out of band (exec-oob): QEMU runs the command at once
// in the monitor's I/O thread, even while its main loop is blocked — as a
// destination's is in post-copy when it touches a page still on the source.
// Only commands QEMU allows out of band qualify (migrate-pause,
// migrate-recover); without out-of-band support it runs the command in band.
func (m *Monitor) ExecuteOOB(ctx context.Context, command string, args any, result any) error {
	if !m.oob {
		return m.Execute(ctx, command, args, result)
	}
	return m.execute(ctx, request{ExecOOB: command, Arguments: args}, result)
}

func (m *Monitor) execute(ctx context.Context, req request, result any) error {
	command := req.Execute + req.ExecOOB
	id := strconv.FormatUint(m.nextID.Add(1), 10)
	req.ID = id
	ch := make(chan reply, 1)

	m.mu.Lock()
	if m.pending == nil {
		err := m.err
		m.mu.Unlock()
		return fmt.Errorf("qmp %s: %w", command, err)
	}
	m.pending[id] = ch
	m.mu.Unlock()

	if err := m.send(ctx, req); err != nil {
		m.forget(id)
		return fmt.Errorf("qmp %s: %w", command, err)
	}

	select {
	case r, ok := <-ch:
		if !ok {
			return fmt.Errorf("qmp %s: %w", command, m.Err())
		}
		if r.err != nil {
			r.err.Command = command
			return r.err
		}
		if result != nil && len(r.ret) > 0 {
			if err := json.Unmarshal(r.ret, result); err != nil {
				return fmt.Errorf("qmp %s: decode reply %s: %w", command, r.ret, err)
			}
		}
		return nil
	case <-ctx.Done():
		m.forget(id)
		return fmt.Errorf("qmp %s: %w", command, ctx.Err())
	}
}

// forget removes a pending call whose caller has given up.
func (m *Monitor) forget(id string) {
	m.mu.Lock()
	if m.pending != nil {
		delete(m.pending, id)
	}
	m.mu.Unlock()
}

// send writes one request. A write that fails or is interrupted part-way
// leaves the stream unusable, so it ends the connection.
func (m *Monitor) send(ctx context.Context, req request) error {
	b, err := json.Marshal(req)
	if err != nil {
		return fmt.Errorf("encode arguments: %w", err)
	}
	b = append(b, '\n')

	m.writeMu.Lock()
	defer m.writeMu.Unlock()
	if err := ctx.Err(); err != nil {
		return err
	}
	select {
	case <-m.done:
		return m.Err()
	default:
	}
	fired := make(chan struct{})
	stop := context.AfterFunc(ctx, func() {
		m.conn.SetWriteDeadline(time.Unix(1, 0))
		close(fired)
	})
	_, werr := m.conn.Write(b)
	if !stop() {
		// ctx ended during the write and forced a deadline. If the write
		// was cut short the connection is closed below; otherwise clear
		// the deadline for the next writer.
		<-fired
		m.conn.SetWriteDeadline(time.Time{})
	}
	if werr != nil {
		m.shutdown(fmt.Errorf("write: %w", werr))
		if cerr := ctx.Err(); cerr != nil {
			return cerr
		}
		return m.Err()
	}
	return nil
}
