// Package labtest brings up real labs for tests and benchmarks — network namespaces, a
// center, agents and QEMU guests, driven through the godwit binary — and talks to them
// the way a user would: through the CLI, the REST API and the lab's client namespace.
package labtest

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/vishvananda/netns"

	"github.com/godwit/godwit/internal/api"
	"github.com/godwit/godwit/internal/lab"
)

// Require checks what labs need (root, the binary in GODWIT_BIN, the guest image in
// GODWIT_GUEST_DIR) and returns a GODWIT_HOME for the run. On failure it prints what is
// missing and exits: these tests never skip.
func Require() (home string, cleanup func()) {
	var missing []string
	if os.Geteuid() != 0 {
		missing = append(missing, "root (the lab creates network namespaces)")
	}
	if os.Getenv("GODWIT_BIN") == "" {
		missing = append(missing, "GODWIT_BIN (the godwit binary; `make test` sets it)")
	}
	if d := os.Getenv("GODWIT_GUEST_DIR"); d == "" {
		missing = append(missing, "GODWIT_GUEST_DIR (the test guest image; `make guest` builds it)")
	} else if _, err := os.Stat(filepath.Join(d, "vmlinuz")); err != nil {
		missing = append(missing, fmt.Sprintf("a test guest image in %s (run `make guest`)", d))
	}
	if len(missing) > 0 {
		fmt.Fprintf(os.Stderr, "lab tests need: %s; run them with `make test`\n", strings.Join(missing, "; "))
		os.Exit(2)
	}
	// One home for every lab of this run, as on a real machine, so labs get distinct
	// subnets; short, to keep QEMU's unix socket paths under the kernel's 108-byte limit.
	home, err := os.MkdirTemp("/tmp", "gw-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(2)
	}
	return home, func() { _ = os.RemoveAll(home) }
}

// Lab is one lab brought up for a test, removed when the test ends.
type Lab struct {
	t      testing.TB
	Name   string
	home   string
	config string
}

// RandHex returns n random bytes in hex.
func RandHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

// New brings up a lab with the given number of hosts under home (from Require) and takes
// it down when the test ends.
func New(t testing.TB, home string, hosts int) *Lab {
	t.Helper()
	return NewWith(t, home, hosts)
}

// NewWith is New with further arguments for `godwit lab up`, e.g. "--cpu-limit",
// "host-2=Nehalem".
func NewWith(t testing.TB, home string, hosts int, args ...string) *Lab {
	t.Helper()
	name := "t" + RandHex(3)
	l := &Lab{t: t, Name: name, home: home, config: filepath.Join(t.TempDir(), "cli.json")}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
		defer cancel()
		_, errDir := os.Stat(l.Dir())
		_, errNS := os.Stat("/run/netns/" + l.NS("switch"))
		if os.IsNotExist(errDir) && os.IsNotExist(errNS) {
			return // the test took the lab down itself
		}
		if out, err := l.Cmd(ctx, "lab", "down", "--name", name).CombinedOutput(); err != nil {
			t.Errorf("lab down %s: %v\n%s", name, err, out)
		}
	})
	l.MustRun(append([]string{"lab", "up", "--name", name, "--hosts", fmt.Sprint(hosts)}, args...)...)
	return l
}

// Cmd returns the godwit CLI as a command bound to this lab's home and config.
func (l *Lab) Cmd(ctx context.Context, args ...string) *exec.Cmd {
	c := exec.CommandContext(ctx, os.Getenv("GODWIT_BIN"), args...)
	c.Env = append(os.Environ(), "GODWIT_HOME="+l.home, "GODWIT_CONFIG="+l.config)
	return c
}

// Run runs the godwit CLI and returns stdout, stderr and its error.
func (l *Lab) Run(args ...string) (string, string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	c := l.Cmd(ctx, args...)
	var out, errb bytes.Buffer
	c.Stdout, c.Stderr = &out, &errb
	err := c.Run()
	return out.String(), errb.String(), err
}

// MustRun runs the CLI and fails the test if it fails.
func (l *Lab) MustRun(args ...string) string {
	l.t.Helper()
	out, errOut, err := l.Run(args...)
	if err != nil {
		l.t.Fatalf("godwit %s: %v\nstdout: %s\nstderr: %s", strings.Join(args, " "), err, out, errOut)
	}
	return out
}

// RunJSON runs a CLI command with -o json and decodes its output.
func (l *Lab) RunJSON(v any, args ...string) {
	l.t.Helper()
	out := l.MustRun(append(args, "-o", "json")...)
	if err := json.Unmarshal([]byte(out), v); err != nil {
		l.t.Fatalf("godwit %s: output is not JSON: %v\n%s", strings.Join(args, " "), err, out)
	}
}

// Dir is the lab's directory.
func (l *Lab) Dir() string { return filepath.Join(l.home, "labs", l.Name) }

// API returns a REST client for the lab's center.
func (l *Lab) API() *api.Client {
	c, err := api.NewClient("unix://"+filepath.Join(l.Dir(), "center.sock"), time.Minute)
	if err != nil {
		l.t.Fatal(err)
	}
	return c
}

// RawAPI sends a raw request body to the center and returns the status and body.
func (l *Lab) RawAPI(method, path, body string) (int, string) {
	l.t.Helper()
	hc := &http.Client{Transport: &http.Transport{DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
		var d net.Dialer
		return d.DialContext(ctx, "unix", filepath.Join(l.Dir(), "center.sock"))
	}}, Timeout: time.Minute}
	req, _ := http.NewRequest(method, "http://godwit"+path, strings.NewReader(body))
	req.Header.Set("Content-Type", "application/json")
	resp, err := hc.Do(req)
	if err != nil {
		l.t.Fatalf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

// NS is the network namespace of a lab target.
func (l *Lab) NS(target string) string {
	switch target {
	case "client":
		return "gw-" + l.Name + "-cl"
	case "center":
		return "gw-" + l.Name + "-c"
	case "switch":
		return "gw-" + l.Name + "-sw"
	}
	return "gw-" + l.Name + "-h" + strings.TrimPrefix(target, "host-")
}

// Dial opens a connection from inside a lab namespace: the socket is created while the
// goroutine's thread is in that namespace, and stays there.
func (l *Lab) Dial(ctx context.Context, target, network, addr string) (net.Conn, error) {
	var conn net.Conn
	err := l.inNS(target, func() error {
		var d net.Dialer
		var err error
		conn, err = d.DialContext(ctx, network, addr)
		return err
	})
	return conn, err
}

// TCPRetransmits is the number of TCP segments the target namespace's kernel has
// retransmitted (RetransSegs in its /proc/net/snmp).
func (l *Lab) TCPRetransmits(target string) int64 {
	l.t.Helper()
	var n int64 = -1
	err := l.inNS(target, func() error {
		b, err := os.ReadFile("/proc/thread-self/net/snmp")
		if err != nil {
			return err
		}
		var names []string
		for _, line := range strings.Split(string(b), "\n") {
			f := strings.Fields(line)
			if len(f) == 0 || f[0] != "Tcp:" {
				continue
			}
			if names == nil {
				names = f
				continue
			}
			for i, name := range names {
				if name == "RetransSegs" && i < len(f) {
					n, err = strconv.ParseInt(f[i], 10, 64)
					return err
				}
			}
		}
		return fmt.Errorf("no RetransSegs in /proc/net/snmp")
	})
	if err != nil {
		l.t.Fatalf("TCP retransmissions in %s: %v", target, err)
	}
	return n
}

// inNS runs f on a thread inside the target's network namespace.
func (l *Lab) inNS(target string, f func() error) error {
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	orig, err := netns.Get()
	if err != nil {
		return fmt.Errorf("current namespace: %w", err)
	}
	defer orig.Close()
	h, err := netns.GetFromName(l.NS(target))
	if err != nil {
		return fmt.Errorf("namespace of %s: %w", target, err)
	}
	defer h.Close()
	if err := netns.Set(h); err != nil {
		return fmt.Errorf("enter namespace of %s: %w", target, err)
	}
	ferr := f()
	if err := netns.Set(orig); err != nil {
		panic(fmt.Sprintf("cannot return to the original network namespace: %v", err))
	}
	return ferr
}

// HTTP returns an HTTP client whose connections start in the target namespace.
func (l *Lab) HTTP(target string) *http.Client {
	return &http.Client{
		Timeout: 5 * time.Second,
		Transport: &http.Transport{
			DisableKeepAlives: true,
			DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
				return l.Dial(ctx, target, network, addr)
			},
		},
	}
}

// CAPool is the pool of the lab's cluster CA (the center's DATA_DIR/pki/ca.crt).
func (l *Lab) CAPool() *x509.CertPool {
	l.t.Helper()
	b, err := os.ReadFile(filepath.Join(l.Dir(), "center", "pki", "ca.crt"))
	if err != nil {
		l.t.Fatalf("the lab's CA: %v", err)
	}
	p := x509.NewCertPool()
	if !p.AppendCertsFromPEM(b) {
		l.t.Fatal("the lab's CA certificate does not parse")
	}
	return p
}

// CenterCert is the center's own certificate and key (DATA_DIR/pki/center), for tests
// that call an agent as the center does.
func (l *Lab) CenterCert() tls.Certificate {
	l.t.Helper()
	dir := filepath.Join(l.Dir(), "center", "pki", "center")
	c, err := tls.LoadX509KeyPair(filepath.Join(dir, "host.pem"), filepath.Join(dir, "host.pem"))
	if err != nil {
		l.t.Fatalf("the center's certificate: %v", err)
	}
	return c
}

// HTTPS returns an HTTPS client whose connections start in the target namespace, that
// trusts the lab's CA, expects the server to be serverName (a host's name, or
// pki.CenterName) and presents cert when it is not nil.
func (l *Lab) HTTPS(target, serverName string, cert *tls.Certificate) *http.Client {
	cfg := &tls.Config{RootCAs: l.CAPool(), ServerName: serverName, MinVersion: tls.VersionTLS13}
	if cert != nil {
		cfg.Certificates = []tls.Certificate{*cert}
	}
	return &http.Client{
		Timeout: 5 * time.Second,
		Transport: &http.Transport{
			DisableKeepAlives: true,
			TLSClientConfig:   cfg,
			DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
				return l.Dial(ctx, target, network, addr)
			},
		},
	}
}

// AsCenter returns a client that calls host's agent from the center's namespace with
// the center's certificate, as the center does.
func (l *Lab) AsCenter(host string) *http.Client {
	cert := l.CenterCert()
	return l.HTTPS("center", host, &cert)
}

// WaitHTTP polls url from the target namespace until it answers 200 or the timeout ends.
func (l *Lab) WaitHTTP(target, url string, timeout time.Duration) time.Duration {
	l.t.Helper()
	start := time.Now()
	hc := l.HTTP(target)
	hc.Timeout = time.Second
	var lastErr error
	for time.Since(start) < timeout {
		resp, err := hc.Get(url)
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return time.Since(start)
			}
			err = fmt.Errorf("status %s", resp.Status)
		}
		lastErr = err
		time.Sleep(100 * time.Millisecond)
	}
	l.t.Fatalf("%s did not answer from %s within %s: %v", url, target, timeout, lastErr)
	return 0
}

// GuestStats is part of what the guest program's /stats reports.
type GuestStats struct {
	MemoryErrors   int64   `json:"memory_errors"`
	MaxPauseMS     float64 `json:"max_pause_ms"`
	UptimeMS       int64   `json:"uptime_ms"`
	BootID         string  `json:"boot_id"`
	CheckedBytes   int64   `json:"checked_bytes"`
	ClockBackwards int64   `json:"clock_backwards"`
	Hostname       string  `json:"hostname"`
	IP             string  `json:"ip"`
}

// Stats reads the guest program's /stats from the client namespace.
func (l *Lab) Stats(ip string) GuestStats {
	l.t.Helper()
	resp, err := l.HTTP("client").Get("http://" + ip + "/stats")
	if err != nil {
		l.t.Fatalf("GET /stats of %s: %v", ip, err)
	}
	defer resp.Body.Close()
	var s GuestStats
	if err := json.NewDecoder(resp.Body).Decode(&s); err != nil {
		l.t.Fatalf("decode /stats of %s: %v", ip, err)
	}
	return s
}

// Lab loads the lab's own record (namespaces, daemons and their pids).
func (l *Lab) Lab() *lab.Lab {
	l.t.Helper()
	rec, err := lab.Load(l.home, l.Name)
	if err != nil {
		l.t.Fatalf("load lab %s: %v", l.Name, err)
	}
	return rec
}

// Crash kills a lab daemon (center or host-N) with SIGKILL, as a crash would, and waits
// for it to die. Its VMs are not touched.
func (l *Lab) Crash(target string) {
	l.t.Helper()
	pid, running := l.Lab().DaemonRunning(target)
	if !running {
		l.t.Fatalf("%s of lab %s is not running", target, l.Name)
	}
	if err := syscall.Kill(pid, syscall.SIGKILL); err != nil {
		l.t.Fatalf("kill %s (pid %d): %v", target, pid, err)
	}
	for i := 0; i < 100; i++ {
		if _, running := l.Lab().DaemonRunning(target); !running {
			return
		}
		time.Sleep(50 * time.Millisecond)
	}
	l.t.Fatalf("%s (pid %d) did not die after SIGKILL", target, pid)
}

// Stop stops a lab daemon gracefully; Start starts it again.
func (l *Lab) Stop(target string) {
	l.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if err := l.Lab().StopDaemon(ctx, target); err != nil {
		l.t.Fatalf("stop %s: %v", target, err)
	}
}

// Start starts a stopped lab daemon and waits until it serves.
func (l *Lab) Start(target string) {
	l.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if err := l.Lab().StartDaemon(ctx, target); err != nil {
		l.t.Fatalf("start %s: %v", target, err)
	}
}

// LinkDown cuts the link between a lab target (host-N, center or client) and the
// switch; LinkUp restores it. See lab.Lab.SetLink.
func (l *Lab) LinkDown(target string) {
	l.t.Helper()
	l.setLink(target, false)
}

// LinkUp restores a link LinkDown cut.
func (l *Lab) LinkUp(target string) {
	l.t.Helper()
	l.setLink(target, true)
}

func (l *Lab) setLink(target string, up bool) {
	l.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := l.Lab().SetLink(ctx, target, up); err != nil {
		l.t.Fatalf("set the link of %s up=%v: %v", target, up, err)
	}
}

// Shape makes a lab target's link behave like an Ethernet link of rate (e.g. "1gbit",
// "50mbit") in both directions; "off" removes the shaping. See lab.Lab.ShapeLink.
func (l *Lab) Shape(target, rate string) {
	l.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := l.Lab().ShapeLink(ctx, target, rate); err != nil {
		l.t.Fatalf("shape the link of %s to %s: %v", target, rate, err)
	}
}

// Main is a TestMain for packages whose tests bring up labs: it checks the
// prerequisites (see Require), sets *home to the run's GODWIT_HOME, runs the tests,
// removes the home and exits with the tests' status.
func Main(m *testing.M, home *string) {
	h, cleanup := Require()
	*home = h
	code := m.Run()
	cleanup()
	os.Exit(code)
}
