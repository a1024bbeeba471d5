package lab

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"time"

	"github.com/godwit/godwit/internal/pki"
)

const (
	// stopTimeout is how long StopDaemon waits after SIGTERM before it uses SIGKILL.
	stopTimeout = 30 * time.Second
	// startTimeout bounds StartDaemon's wait for the daemon to serve.
	startTimeout = 60 * time.Second
	// logTailLines is how many log lines an error quotes.
	logTailLines = 15
)

// launch starts d detached: in its own session, inside its namespace, with stdout and
// stderr appended to its log, so it survives the process that started it. It records
// the pid in d; the caller saves it.
func launch(d *Daemon) error {
	ip, err := exec.LookPath("ip")
	if err != nil {
		return fmt.Errorf("start the %s daemon: the ip command (iproute2) is missing: install it with scripts/deps.sh", d.Target)
	}
	logf, err := os.OpenFile(d.Log, os.O_APPEND|os.O_CREATE|os.O_WRONLY, 0o644)
	if err != nil {
		return fmt.Errorf("open the %s log: %w", d.Target, err)
	}
	defer logf.Close()
	fmt.Fprintf(logf, "---- godwit lab: %s starting %s in namespace %s: %s\n",
		time.Now().Format(time.RFC3339), d.Target, d.Namespace, strings.Join(d.Argv, " "))
	cmd := exec.Command(ip, append([]string{"netns", "exec", d.Namespace}, d.Argv...)...)
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.Dir = "/"
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("start the %s daemon: %w", d.Target, err)
	}
	d.PID = cmd.Process.Pid
	// Nobody Waits: alive(pid, true) reaps the daemon if it exits while we live, and
	// init adopts it once we exit.
	_ = cmd.Process.Release()
	return nil
}

// start launches daemon i during Up and records its pid.
func (l *Lab) start(i int) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	if err := launch(&l.Daemons[i]); err != nil {
		return err
	}
	l.log.Info("started daemon", "lab", l.Name, "target", l.Daemons[i].Target, "pid", l.Daemons[i].PID)
	return l.saveLocked()
}

// daemonIndex returns the index in l.Daemons of target, or an error naming the valid
// daemon targets.
func (l *Lab) daemonIndex(target string) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	for i, d := range l.Daemons {
		if d.Target == target {
			return i, nil
		}
	}
	var valid []string
	for _, d := range l.Daemons {
		valid = append(valid, d.Target)
	}
	return 0, fmt.Errorf("no daemon %q in lab %s: use one of %s", target, l.Name, strings.Join(valid, ", "))
}

// DaemonRunning reports the pid of target's daemon (center or host-N) and whether it
// is running.
func (l *Lab) DaemonRunning(target string) (pid int, running bool) {
	i, err := l.daemonIndex(target)
	if err != nil {
		return 0, false
	}
	d := l.daemon(i)
	return d.PID, d.running()
}

// DaemonLogTail is the end of target's daemon log, for a test or a user to see why it
// did what it did.
func (l *Lab) DaemonLogTail(target string) string {
	i, err := l.daemonIndex(target)
	if err != nil {
		return err.Error()
	}
	return logTail(l.daemon(i).Log)
}

// StopDaemon stops target's daemon (center or host-N) with SIGTERM and waits for it to
// exit; the QEMU processes an agent started keep running. A daemon that ignores SIGTERM
// for 30 s is killed and reported. Stopping a stopped daemon does nothing.
func (l *Lab) StopDaemon(ctx context.Context, target string) error {
	i, err := l.daemonIndex(target)
	if err != nil {
		return err
	}
	d := l.daemon(i)
	if d.running() {
		l.log.Info("stopping daemon", "lab", l.Name, "target", target, "pid", d.PID)
		if err := syscall.Kill(d.PID, syscall.SIGTERM); err != nil && !errors.Is(err, syscall.ESRCH) {
			return fmt.Errorf("stop the %s daemon (pid %d): %w", target, d.PID, err)
		}
		if err := waitExit(ctx, d.PID, stopTimeout); err != nil {
			if ctx.Err() != nil {
				return fmt.Errorf("stop the %s daemon (pid %d): %w", target, d.PID, err)
			}
			_ = syscall.Kill(d.PID, syscall.SIGKILL)
			_ = waitExit(ctx, d.PID, 5*time.Second)
			return fmt.Errorf("the %s daemon (pid %d) did not exit within %s of SIGTERM and was killed; see %s", target, d.PID, stopTimeout, d.Log)
		}
	}
	return l.modify(func() error {
		if l.Daemons[i].PID == d.PID {
			l.Daemons[i].PID = 0
		}
		return nil
	})
}

// StartDaemon starts target's daemon (center or host-N) again with the flags Up gave
// it, and waits until it serves: the center answers on its socket, an agent accepts
// connections on its address. It fails if the daemon is already running.
func (l *Lab) StartDaemon(ctx context.Context, target string) error {
	i, err := l.daemonIndex(target)
	if err != nil {
		return err
	}
	var d Daemon
	err = l.modify(func() error {
		cur := &l.Daemons[i]
		if cur.running() {
			return fmt.Errorf("the %s daemon of lab %s is already running (pid %d): stop it first, or restart it", target, l.Name, cur.PID)
		}
		if _, err := os.Stat(filepath.Join(netnsDir, cur.Namespace)); err != nil {
			return fmt.Errorf("network namespace %s is missing, so lab %s is broken: run `godwit lab down --name %s` and bring it up again", cur.Namespace, l.Name, l.Name)
		}
		if err := launch(cur); err != nil {
			return err
		}
		d = *cur
		return nil
	})
	if err != nil {
		return err
	}
	l.log.Info("started daemon", "lab", l.Name, "target", target, "pid", d.PID)
	return l.waitServing(ctx, d)
}

// RestartDaemon stops and starts target's daemon (center or host-N).
func (l *Lab) RestartDaemon(ctx context.Context, target string) error {
	if err := l.StopDaemon(ctx, target); err != nil {
		return err
	}
	return l.StartDaemon(ctx, target)
}

// waitServing waits until daemon d serves requests, failing early if it exits.
func (l *Lab) waitServing(ctx context.Context, d Daemon) error {
	ctx, cancel := context.WithTimeout(ctx, startTimeout)
	defer cancel()
	client := unixClient(l.CenterSocket)
	defer client.CloseIdleConnections()
	var lastErr error
	for {
		if !d.running() {
			return fmt.Errorf("the %s daemon exited right after it started.\n%s", d.Target, logTail(d.Log))
		}
		if d.Target == "center" {
			_, lastErr = centerHosts(ctx, client)
		} else {
			lastErr = l.dialAgent(ctx, d.Target)
		}
		if lastErr == nil {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("the %s daemon does not serve after %s (%v): %w\n%s", d.Target, startTimeout, lastErr, ctx.Err(), logTail(d.Log))
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// dialAgent opens a TCP connection to the agent of host target from inside the host's
// namespace, where its address is reachable.
func (l *Lab) dialAgent(ctx context.Context, target string) error {
	var h Host
	for _, x := range l.Hosts {
		if x.Name == target {
			h = x
		}
	}
	u, err := url.Parse(h.AgentURL)
	if err != nil {
		return fmt.Errorf("agent URL %q: %w", h.AgentURL, err)
	}
	return inNamespace(h.Namespace, func() error {
		dctx, cancel := context.WithTimeout(ctx, time.Second)
		defer cancel()
		var dialer net.Dialer
		conn, err := dialer.DialContext(dctx, "tcp", u.Host)
		if err != nil {
			return err
		}
		return conn.Close()
	})
}

// waitReady waits until the center lists every host as connected, failing early if a
// daemon exits, and quoting the logs when the time runs out.
func (l *Lab) waitReady(ctx context.Context, timeout time.Duration) error {
	wctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	client := unixClient(l.CenterSocket)
	defer client.CloseIdleConnections()
	want := make([]string, 0, len(l.Hosts))
	for _, h := range l.Hosts {
		want = append(want, h.Name)
	}
	missing := want
	var lastErr error
	for {
		for _, d := range l.daemons() {
			if !d.running() {
				return fmt.Errorf("the %s daemon of lab %s exited during start-up.\n%s", d.Target, l.Name, logTail(d.Log))
			}
		}
		hosts, err := centerHosts(wctx, client)
		lastErr = err
		if err == nil {
			missing = missing[:0:0]
			for _, name := range want {
				if hosts[name] != "connected" {
					missing = append(missing, name)
				}
			}
			if len(missing) == 0 {
				return nil
			}
		}
		select {
		case <-wctx.Done():
			if ctx.Err() != nil {
				return fmt.Errorf("interrupted while waiting for lab %s to become ready: %w", l.Name, ctx.Err())
			}
			return l.notReady(timeout, missing, lastErr)
		case <-time.After(200 * time.Millisecond):
		}
	}
}

// notReady builds the timeout error of waitReady: what was missing and the end of the
// logs that explain it.
func (l *Lab) notReady(timeout time.Duration, missing []string, lastErr error) error {
	var b strings.Builder
	fmt.Fprintf(&b, "lab %s is not ready after %s: ", l.Name, timeout)
	if lastErr != nil {
		fmt.Fprintf(&b, "the center does not answer on %s (%v)", l.CenterSocket, lastErr)
	} else {
		fmt.Fprintf(&b, "the center does not list %s as connected", strings.Join(missing, ", "))
	}
	b.WriteString("; see the logs.")
	for _, d := range l.daemons() {
		if d.Target == "center" || slices.Contains(missing, d.Target) {
			b.WriteString("\n")
			b.WriteString(logTail(d.Log))
		}
	}
	return errors.New(b.String())
}

// daemons returns a copy of the daemon records.
func (l *Lab) daemons() []Daemon {
	l.mu.Lock()
	defer l.mu.Unlock()
	return slices.Clone(l.Daemons)
}

// unixClient returns an HTTP client that reaches the center through its unix socket.
func unixClient(socket string) *http.Client {
	return &http.Client{
		Timeout: 2 * time.Second,
		Transport: &http.Transport{
			DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
				var d net.Dialer
				return d.DialContext(ctx, "unix", socket)
			},
		},
	}
}

// centerHosts asks the center for its hosts and returns each host's state by name.
func centerHosts(ctx context.Context, client *http.Client) (map[string]string, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://center/api/v1/hosts", nil)
	if err != nil {
		return nil, err
	}
	resp, err := client.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if err != nil {
		return nil, err
	}
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("GET /api/v1/hosts: %s: %.200s", resp.Status, body)
	}
	var hosts []struct {
		Name  string `json:"name"`
		State string `json:"state"`
	}
	if err := json.Unmarshal(body, &hosts); err != nil {
		return nil, fmt.Errorf("GET /api/v1/hosts: want a JSON array of hosts: %w", err)
	}
	states := make(map[string]string, len(hosts))
	for _, h := range hosts {
		states[h.Name] = h.State
	}
	return states, nil
}

// issueJoinTokens asks the center for a one-time join token for each host that has not
// joined yet, writes it to a file only root can read, and adds that file and the CA's
// fingerprint to the host agent's command line: the secret itself never appears in a
// command line (which every local user can read) or in lab.json. A host that has joined
// keeps its certificate in its state directory and ignores them.
func (l *Lab) issueJoinTokens(ctx context.Context) error {
	client := unixClient(l.CenterSocket)
	defer client.CloseIdleConnections()
	return l.modify(func() error {
		for i := range l.Daemons {
			d := &l.Daemons[i]
			if d.Target == "center" || slices.Contains(d.Argv, "--join-token-file") {
				continue
			}
			body := fmt.Sprintf(`{"host":%q,"expires":"1h"}`, d.Target)
			req, err := http.NewRequestWithContext(ctx, http.MethodPost, "http://center/api/v1/join-tokens", strings.NewReader(body))
			if err != nil {
				return err
			}
			req.Header.Set("Content-Type", "application/json")
			resp, err := client.Do(req)
			if err != nil {
				return fmt.Errorf("ask the center for a join token for %s: %w", d.Target, err)
			}
			b, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
			resp.Body.Close()
			if err != nil {
				return fmt.Errorf("ask the center for a join token for %s: %w", d.Target, err)
			}
			var tok struct {
				Secret        string `json:"secret"`
				CAFingerprint string `json:"ca_fingerprint"`
			}
			if resp.StatusCode != http.StatusCreated || json.Unmarshal(b, &tok) != nil || tok.Secret == "" {
				return fmt.Errorf("ask the center for a join token for %s: %s: %.300s", d.Target, resp.Status, b)
			}
			file := filepath.Join(l.Dir, d.Target+".join-token")
			if err := pki.WriteFileAtomic(file, []byte(tok.Secret+"\n"), 0o600); err != nil {
				return fmt.Errorf("keep the join token of %s: %w", d.Target, err)
			}
			d.Argv = append(d.Argv, "--join-token-file", file, "--ca-fingerprint", tok.CAFingerprint)
		}
		return nil
	})
}

// logTail returns the last lines of the log at path, headed by its name, for errors.
func logTail(path string) string {
	f, err := os.Open(path)
	if err != nil {
		return fmt.Sprintf("(no log %s: %v)", path, err)
	}
	defer f.Close()
	const window = 64 << 10
	if st, err := f.Stat(); err == nil && st.Size() > window {
		_, _ = f.Seek(st.Size()-window, io.SeekStart)
	}
	b, _ := io.ReadAll(f)
	lines := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	if len(lines) > logTailLines {
		lines = lines[len(lines)-logTailLines:]
	}
	return fmt.Sprintf("last lines of %s:\n    %s", path, strings.Join(lines, "\n    "))
}
