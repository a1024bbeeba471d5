package audit

import (
	"fmt"
	"net"
	"net/http"
	"os/user"
	"strconv"

	"golang.org/x/sys/unix"
)

// PeerAddr is the local address of a connection accepted by a PeerListener, carrying
// the credentials of the process at the other end as the kernel reports them
// (SO_PEERCRED). net/http hands it to handlers under http.LocalAddrContextKey.
type PeerAddr struct {
	net.Addr
	// Known is false when the kernel did not say who the peer is.
	Known bool
	UID   uint32
	PID   int32
	// User is the peer's Unix user name ("uid:N" when the user has no name).
	User string
}

// PeerListener returns ln such that each connection it accepts knows the Unix user of
// the process that opened it (see PeerAddr). Only unix socket listeners are wrapped;
// any other listener is returned as it is.
func PeerListener(ln net.Listener) net.Listener {
	if ul, ok := ln.(*net.UnixListener); ok {
		return &peerListener{UnixListener: ul}
	}
	return ln
}

type peerListener struct{ *net.UnixListener }

func (l *peerListener) Accept() (net.Conn, error) {
	c, err := l.AcceptUnix()
	if err != nil {
		return nil, err
	}
	pa := &PeerAddr{Addr: c.LocalAddr()}
	if uid, pid, err := peerCred(c); err == nil {
		pa.Known, pa.UID, pa.PID, pa.User = true, uid, pid, userName(uid)
	}
	return &peerConn{UnixConn: c, local: pa}, nil
}

// peerConn is a unix connection whose LocalAddr carries its peer's credentials.
type peerConn struct {
	*net.UnixConn
	local *PeerAddr
}

func (c *peerConn) LocalAddr() net.Addr { return c.local }

func peerCred(c *net.UnixConn) (uid uint32, pid int32, err error) {
	raw, err := c.SyscallConn()
	if err != nil {
		return 0, 0, err
	}
	var cred *unix.Ucred
	var credErr error
	if err := raw.Control(func(fd uintptr) {
		cred, credErr = unix.GetsockoptUcred(int(fd), unix.SOL_SOCKET, unix.SO_PEERCRED)
	}); err != nil {
		return 0, 0, err
	}
	if credErr != nil {
		return 0, 0, fmt.Errorf("read the peer's credentials: %w", credErr)
	}
	return cred.Uid, cred.Pid, nil
}

func userName(uid uint32) string {
	id := strconv.FormatUint(uint64(uid), 10)
	if u, err := user.LookupId(id); err == nil && u.Username != "" {
		return u.Username
	}
	return "uid:" + id
}

// peerOf returns the credentials of a request's unix-socket peer, or nil.
func peerOf(r *http.Request) *PeerAddr {
	p, _ := r.Context().Value(http.LocalAddrContextKey).(*PeerAddr)
	if p == nil || !p.Known {
		return nil
	}
	return p
}

// Peer returns the credentials of the unix-socket client that made r, as a PeerListener
// learned them from the kernel, or nil for a TCP client or an unknown peer.
func Peer(r *http.Request) *PeerAddr { return peerOf(r) }
