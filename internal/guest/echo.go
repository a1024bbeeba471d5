package guest

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"sync"
)

// DefaultEchoAddr is where the TCP and UDP echo servers listen (the echo port, 7).
const DefaultEchoAddr = ":7"

// ServeTCPEcho accepts connections on ln and sends every byte received on a connection
// back on it, for any number of connections at once. It closes ln and every connection
// when ctx is done, waits for its connection goroutines, and returns nil then; it
// returns an error if accepting fails otherwise.
func ServeTCPEcho(ctx context.Context, ln net.Listener, log *slog.Logger) error {
	var (
		wg    sync.WaitGroup
		mu    sync.Mutex
		conns = map[net.Conn]struct{}{}
	)
	stop := context.AfterFunc(ctx, func() {
		ln.Close()
		mu.Lock()
		for c := range conns {
			c.Close()
		}
		mu.Unlock()
	})
	defer func() {
		stop()
		ln.Close()
		mu.Lock()
		for c := range conns {
			c.Close()
		}
		mu.Unlock()
		wg.Wait()
	}()
	for {
		c, err := ln.Accept()
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			return fmt.Errorf("tcp echo: accept on %s: %w", ln.Addr(), err)
		}
		mu.Lock()
		if ctx.Err() != nil {
			mu.Unlock()
			c.Close()
			return nil
		}
		conns[c] = struct{}{}
		mu.Unlock()
		wg.Add(1)
		go func() {
			defer wg.Done()
			_, err := io.Copy(c, c)
			if err != nil && ctx.Err() == nil && !errors.Is(err, net.ErrClosed) {
				log.Debug("tcp echo: connection ended", "peer", c.RemoteAddr(), "err", err)
			}
			c.Close()
			mu.Lock()
			delete(conns, c)
			mu.Unlock()
		}()
	}
}

// ServeUDPEcho sends every datagram received on pc back to its sender, verbatim. It
// closes pc and returns nil when ctx is done, or returns an error if reading fails
// otherwise.
func ServeUDPEcho(ctx context.Context, pc net.PacketConn, log *slog.Logger) error {
	stop := context.AfterFunc(ctx, func() { pc.Close() })
	defer func() {
		stop()
		pc.Close()
	}()
	buf := make([]byte, 65536)
	for {
		n, from, err := pc.ReadFrom(buf)
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			return fmt.Errorf("udp echo: read on %s: %w", pc.LocalAddr(), err)
		}
		if _, err := pc.WriteTo(buf[:n], from); err != nil {
			log.Debug("udp echo: reply failed", "peer", from, "err", err)
		}
	}
}
