package lab

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"strings"
	"testing"
	"time"
)

func TestParseRate(t *testing.T) {
	for _, c := range []struct {
		in   string
		want float64
	}{
		{"1gbit", 1e9}, {"100mbit", 100e6}, {"10Mbit", 10e6}, {"1.5gbit", 1.5e9}, {"8kbit", 8e3},
		{"125mbps", 1e9}, {"64000bit", 64e3},
	} {
		got, err := ParseRate(c.in)
		if err != nil || got != c.want {
			t.Errorf("ParseRate(%q) = %v, %v; want %v", c.in, got, err, c.want)
		}
	}
	for _, bad := range []string{"", "fast", "1", "gbit", "1 gbit", "-1gbit", "0mbit", "1gb", "1e3mbit", "100bit", "1gbit;reboot"} {
		if _, err := ParseRate(bad); err == nil || !strings.Contains(err.Error(), "invalid link rate") {
			t.Errorf("ParseRate(%q): err = %v, want an invalid link rate", bad, err)
		}
	}
}

// TestLink cuts and restores a host's link and shapes it, in a real lab with stand-in
// daemons, and checks the effect on TCP between the namespaces.
func TestLink(t *testing.T) {
	needLab(t)
	l := upLab(t, Options{Root: t.TempDir(), Binary: standInBinary(t), Hosts: 2})
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	h1, h2 := l.Hosts[0], l.Hosts[1]
	agent2 := strings.TrimPrefix(h2.AgentURL, "https://")

	t.Run("refused", func(t *testing.T) {
		for _, target := range []string{"switch", "host-9", ""} {
			if err := l.SetLink(ctx, target, false); err == nil || !strings.Contains(err.Error(), "center, client, host-1, host-2") {
				t.Errorf("SetLink(%q): err = %v; want a refusal naming the valid targets", target, err)
			}
			if err := l.ShapeLink(ctx, target, "1gbit"); err == nil || !strings.Contains(err.Error(), "center, client, host-1, host-2") {
				t.Errorf("ShapeLink(%q): err = %v", target, err)
			}
		}
		if err := l.ShapeLink(ctx, "host-1", "fast"); err == nil || !strings.Contains(err.Error(), "invalid link rate") || !strings.Contains(err.Error(), "1gbit") {
			t.Errorf("ShapeLink with a bad rate: err = %v", err)
		}
		if out := run(t, l, "host-1", "tc", "qdisc", "show", "dev", "uplink0"); strings.Contains(out, "tbf") {
			t.Errorf("a refused ShapeLink shaped uplink0: %s", out)
		}
	})

	t.Run("cut and restore", func(t *testing.T) {
		if err := dialFrom(ctx, "client", l, agent2, 2*time.Second); err != nil {
			t.Fatalf("client cannot reach host-2's agent before the cut: %v", err)
		}
		t.Cleanup(func() {
			if err := l.SetLink(context.Background(), "host-2", true); err != nil {
				t.Errorf("cleanup: restore host-2's link: %v", err)
			}
		})
		if err := l.SetLink(ctx, "host-2", false); err != nil {
			t.Fatal(err)
		}
		if err := l.SetLink(ctx, "host-2", false); err != nil {
			t.Errorf("cutting a cut link again: %v", err)
		}
		if out := run(t, l, "switch", "ip", "-o", "link", "show", "h2"); !strings.Contains(out, "state DOWN") {
			t.Errorf("switch port h2 is not down after the cut: %s", out)
		}
		if out := run(t, l, "host-2", "ip", "-o", "link", "show", "uplink0"); !strings.Contains(out, "NO-CARRIER") {
			t.Errorf("host-2's uplink0 still has a carrier after the cut: %s", out)
		}
		for _, from := range []string{"client", "host-1"} {
			if err := dialFrom(ctx, from, l, agent2, 2*time.Second); err == nil {
				t.Errorf("%s reached host-2's agent through a cut link", from)
			} else {
				t.Logf("%s → host-2 with the link cut: %v", from, err)
			}
		}
		// The others are not affected.
		if err := dialFrom(ctx, "client", l, strings.TrimPrefix(h1.AgentURL, "https://"), 2*time.Second); err != nil {
			t.Errorf("cutting host-2's link cut host-1 off too: %v", err)
		}

		if err := l.SetLink(ctx, "host-2", true); err != nil {
			t.Fatal(err)
		}
		var err error
		for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(100 * time.Millisecond) {
			if err = dialFrom(ctx, "client", l, agent2, time.Second); err == nil {
				break
			}
		}
		if err != nil {
			t.Fatalf("client cannot reach host-2's agent after the link was restored: %v", err)
		}
	})

	t.Run("shape", func(t *testing.T) {
		const size = 2 << 20
		fast := transfer(t, l, h1, h2, size)
		t.Logf("2 MiB host-1 → host-2 unshaped: %s", fast.Round(time.Millisecond))

		t.Cleanup(func() {
			if err := l.ShapeLink(context.Background(), "host-2", "off"); err != nil {
				t.Errorf("cleanup: unshape host-2: %v", err)
			}
		})
		if err := l.ShapeLink(ctx, "host-2", "100mbit"); err != nil {
			t.Fatal(err)
		}
		// replace: shaping a shaped link changes its rate.
		if err := l.ShapeLink(ctx, "host-2", "10mbit"); err != nil {
			t.Fatal(err)
		}
		for _, end := range []struct{ target, dev string }{{"switch", "h2"}, {"host-2", "uplink0"}} {
			if out := run(t, l, end.target, "tc", "qdisc", "show", "dev", end.dev, "root"); !strings.Contains(out, "tbf") || !strings.Contains(out, "10Mbit") {
				t.Errorf("%s in %s is not shaped to 10 Mbit/s: %s", end.dev, end.target, out)
			}
		}
		// 2 MiB is 16.8 Mbit: at 10 Mbit/s about 1.7 s, minus the 256 KiB burst.
		to := transfer(t, l, h1, h2, size)
		from := transfer(t, l, h2, h1, size)
		t.Logf("2 MiB at 10mbit: host-1 → host-2 %s, host-2 → host-1 %s", to.Round(time.Millisecond), from.Round(time.Millisecond))
		if to < 1300*time.Millisecond {
			t.Errorf("2 MiB to host-2 over a 10 Mbit/s link took only %s: traffic to it is not shaped", to)
		}
		if from < 1300*time.Millisecond {
			t.Errorf("2 MiB from host-2 over a 10 Mbit/s link took only %s: traffic from it is not shaped", from)
		}
		client := Host{Name: "client", Namespace: nsName(l.Name, "cl"), Address: fmt.Sprintf("198.18.%d.3", l.Index)}
		if other := transfer(t, l, h1, client, size); other > time.Second {
			t.Errorf("shaping host-2 slowed traffic between host-1 and the client: %s", other)
		}

		if err := l.ShapeLink(ctx, "host-2", "off"); err != nil {
			t.Fatal(err)
		}
		if err := l.ShapeLink(ctx, "host-2", ""); err != nil {
			t.Errorf("removing the shaping of an unshaped link: %v", err)
		}
		for _, end := range []struct{ target, dev string }{{"switch", "h2"}, {"host-2", "uplink0"}} {
			if out := run(t, l, end.target, "tc", "qdisc", "show", "dev", end.dev, "root"); strings.Contains(out, "tbf") {
				t.Errorf("%s in %s is still shaped: %s", end.dev, end.target, out)
			}
		}
		to = transfer(t, l, h1, h2, size)
		from = transfer(t, l, h2, h1, size)
		t.Logf("2 MiB after the shaping was removed: host-1 → host-2 %s, host-2 → host-1 %s", to.Round(time.Millisecond), from.Round(time.Millisecond))
		if to > time.Second || from > time.Second {
			t.Errorf("2 MiB still takes %s / %s after the shaping was removed", to, from)
		}
	})
}

// dialFrom opens (and closes) a TCP connection to addr from inside target's namespace.
func dialFrom(ctx context.Context, target string, l *Lab, addr string, timeout time.Duration) error {
	ns, err := l.Namespace(target)
	if err != nil {
		return err
	}
	return inNamespace(ns, func() error {
		dctx, cancel := context.WithTimeout(ctx, timeout)
		defer cancel()
		var d net.Dialer
		c, err := d.DialContext(dctx, "tcp", addr)
		if err != nil {
			return err
		}
		return c.Close()
	})
}

// transfer sends size bytes over TCP from host from to host to (each socket made in its
// host's namespace) and returns the time until the receiver confirmed it got them all.
func transfer(t *testing.T, l *Lab, from, to Host, size int) time.Duration {
	t.Helper()
	var ln net.Listener
	if err := inNamespace(to.Namespace, func() (err error) {
		ln, err = net.Listen("tcp", net.JoinHostPort(to.Address, "0"))
		return err
	}); err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	got := make(chan error, 1)
	go func() {
		c, err := ln.Accept()
		if err != nil {
			got <- err
			return
		}
		defer c.Close()
		_ = c.SetDeadline(time.Now().Add(60 * time.Second))
		n, err := io.Copy(io.Discard, io.LimitReader(c, int64(size)))
		if err == nil && n != int64(size) {
			err = errors.New("short transfer")
		}
		if err == nil {
			_, err = c.Write([]byte{1})
		}
		got <- err
	}()
	var c net.Conn
	if err := inNamespace(from.Namespace, func() (err error) {
		c, err = net.DialTimeout("tcp", ln.Addr().String(), 5*time.Second)
		return err
	}); err != nil {
		t.Fatalf("connect %s → %s: %v", from.Name, to.Name, err)
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(60 * time.Second))
	start := time.Now()
	if _, err := c.Write(make([]byte, size)); err != nil {
		t.Fatalf("send %s → %s: %v", from.Name, to.Name, err)
	}
	if _, err := io.ReadFull(c, make([]byte, 1)); err != nil {
		t.Fatalf("confirmation %s → %s: %v", from.Name, to.Name, err)
	}
	elapsed := time.Since(start)
	if err := <-got; err != nil {
		t.Fatalf("receive %s → %s: %v", from.Name, to.Name, err)
	}
	return elapsed
}
