package lab

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os/exec"
	"regexp"
	"strconv"
	"strings"
)

// Link faults: a lab target's cable to the switch can be pulled (SetLink) or made as
// slow as a real link of a given rate (ShapeLink), so that tests can see what live
// migration and the daemons do when the network fails or is slow.

// shapeBurstMin is the smallest token-bucket burst ShapeLink gives tbf: 256 KiB, which
// lets a TCP flow reach the rate on a Gigabit link without letting a slow link burst
// for long.
const shapeBurstMin = 256 << 10

// shapeLatency bounds how long a packet may wait in the shaper's queue; beyond it the
// shaper drops, as a real switch port with a small buffer does.
const shapeLatency = "50ms"

// rateRE is the shape of a rate ShapeLink accepts: a positive number and a tc unit.
var rateRE = regexp.MustCompile(`^([0-9]+(?:\.[0-9]+)?)(bit|kbit|mbit|gbit|tbit|bps|kbps|mbps|gbps|tbps)$`)

// rateUnits gives each unit in bits per second.
var rateUnits = map[string]float64{
	"bit": 1, "kbit": 1e3, "mbit": 1e6, "gbit": 1e9, "tbit": 1e12,
	"bps": 8, "kbps": 8e3, "mbps": 8e6, "gbps": 8e9, "tbps": 8e12,
}

// linkEnds returns the two ends of target's cable: the veth port on the switch and the
// target's own interface (uplink0 on a host, whose bridge carries the address; eth0 on
// the center and the client).
func (l *Lab) linkEnds(target string) (switchPort, targetDev string, err error) {
	switch target {
	case "center":
		return "c", "eth0", nil
	case "client":
		return "cl", "eth0", nil
	}
	for i, h := range l.Hosts {
		if h.Name == target {
			return fmt.Sprintf("h%d", i+1), "uplink0", nil
		}
	}
	valid := []string{"center", "client"}
	for _, h := range l.Hosts {
		valid = append(valid, h.Name)
	}
	return "", "", fmt.Errorf("%q has no link of its own in lab %s: use one of %s", target, l.Name, strings.Join(valid, ", "))
}

// SetLink cuts (up false) or restores (up true) the link between target (host-N, center
// or client) and the switch, by setting the switch's port toward it down or up. As
// with a pulled cable, the target's side loses its carrier, frames are dropped both
// ways and open TCP connections are not told: they stall until the link is back or
// they time out. Setting a link to the state it is in does nothing.
func (l *Lab) SetLink(ctx context.Context, target string, up bool) error {
	port, _, err := l.linkEnds(target)
	if err != nil {
		return err
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	sw, err := openNS(nsName(l.Name, "sw"))
	if err != nil {
		return fmt.Errorf("%w; is lab %s down?", err, l.Name)
	}
	defer sw.close()
	link, err := sw.link(port)
	if err != nil {
		return err
	}
	verb := "cut"
	if up {
		verb = "restore"
		err = sw.h.LinkSetUp(link)
	} else {
		err = sw.h.LinkSetDown(link)
	}
	if err != nil {
		return fmt.Errorf("%s the link of %s (switch port %s in %s): %w", verb, target, port, sw.name, err)
	}
	if up {
		l.log.Info("link restored", "lab", l.Name, "target", target, "port", port)
	} else {
		l.log.Info("link cut", "lab", l.Name, "target", target, "port", port)
	}
	return nil
}

// ParseRate checks a link rate as ShapeLink takes it — a positive number followed by
// one of tc's units bit, kbit, mbit, gbit, tbit (bits per second) or bps, kbps, mbps,
// gbps, tbps (bytes per second), e.g. "100mbit" or "1gbit" — and returns it in bits
// per second.
func ParseRate(rate string) (float64, error) {
	m := rateRE.FindStringSubmatch(strings.ToLower(rate))
	if m == nil {
		return 0, fmt.Errorf("invalid link rate %q: give a number and a unit, such as 100mbit or 1gbit (units: bit, kbit, mbit, gbit, tbit per second, or bps, kbps, mbps, gbps, tbps for bytes)", rate)
	}
	n, err := strconv.ParseFloat(m[1], 64)
	if err != nil || n <= 0 {
		return 0, fmt.Errorf("invalid link rate %q: the rate must be above zero (use \"off\" to remove the shaping)", rate)
	}
	bps := n * rateUnits[m[2]]
	if bps < 8000 {
		return 0, fmt.Errorf("invalid link rate %q: the lowest rate is 8kbit", rate)
	}
	return bps, nil
}

// ShapeLink makes target's link (host-N, center or client) behave like an Ethernet link
// of the given rate in both directions: a token-bucket filter (tc tbf) on the switch's
// port toward the target shapes the traffic going to it, and another on the target's
// own interface shapes the traffic it sends. rate is as ParseRate takes it; "" or
// "off" removes the shaping (a link that is not shaped is fine).
func (l *Lab) ShapeLink(ctx context.Context, target string, rate string) error {
	port, dev, err := l.linkEnds(target)
	if err != nil {
		return err
	}
	off := rate == "" || strings.EqualFold(rate, "off")
	var args []string
	if !off {
		bps, err := ParseRate(rate)
		if err != nil {
			return err
		}
		// The bucket must hold at least what the rate brings in a couple of timer
		// ticks, or tbf cannot reach the rate.
		burst := max(shapeBurstMin, int(bps/8/500))
		args = []string{"rate", strings.ToLower(rate), "burst", strconv.Itoa(burst), "latency", shapeLatency}
	}
	if _, err := exec.LookPath("tc"); err != nil {
		return fmt.Errorf("the tc command (iproute2) is missing: install it with scripts/deps.sh")
	}
	for _, end := range []struct{ target, dev string }{{"switch", port}, {target, dev}} {
		if off {
			err = l.unshape(ctx, end.target, end.dev)
		} else {
			_, err = l.tc(ctx, end.target, append([]string{"qdisc", "replace", "dev", end.dev, "root", "tbf"}, args...)...)
		}
		if err != nil {
			return fmt.Errorf("shape the link of %s: %w", target, err)
		}
	}
	if off {
		l.log.Info("link shaping removed", "lab", l.Name, "target", target)
	} else {
		l.log.Info("link shaped", "lab", l.Name, "target", target, "rate", rate)
	}
	return nil
}

// unshape removes the root qdisc of dev in target's namespace, if it is a shaper.
func (l *Lab) unshape(ctx context.Context, target, dev string) error {
	_, delErr := l.tc(ctx, target, "qdisc", "del", "dev", dev, "root")
	if delErr == nil {
		return nil
	}
	// tc refuses to delete the default qdisc ("handle of zero"): nothing to remove then.
	out, err := l.tc(ctx, target, "qdisc", "show", "dev", dev, "root")
	if err != nil {
		return errors.Join(delErr, err)
	}
	if strings.Contains(out, "qdisc tbf") {
		return delErr
	}
	return nil
}

// tc runs tc in target's namespace and returns its output; a failure quotes tc's words.
func (l *Lab) tc(ctx context.Context, target string, args ...string) (string, error) {
	cmd, err := l.Command(ctx, target, append([]string{"tc"}, args...)...)
	if err != nil {
		return "", err
	}
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	if err := cmd.Run(); err != nil {
		return out.String(), fmt.Errorf("tc %s in %s: %w: %s", strings.Join(args, " "), target, err, strings.TrimSpace(errb.String()))
	}
	return out.String(), nil
}
