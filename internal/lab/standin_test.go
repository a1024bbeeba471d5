package lab

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/signal"
	"path/filepath"
	"runtime"
	"sort"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/vishvananda/netns"
)

// The tests run the center and agents as this test binary in stand-in mode: a wrapper
// script sets standInEnv and execs it with the real flags. The stand-ins check what
// the real daemons rely on (their namespace has the right address and bridge, the
// datastore exists) and speak just enough of the API for Up's readiness check: agents
// send heartbeats to the center over the lab network, and the center lists hosts with
// a recent heartbeat as connected.
const (
	standInEnv = "GODWIT_LAB_STANDIN"
	upEnv      = "GODWIT_LAB_TEST_UP"
	visitorEnv = "GODWIT_LAB_TEST_VISITOR"
)

func init() {
	// A visitor moves its main thread into a namespace, so its main goroutine must
	// stay on the main thread.
	if os.Getenv(visitorEnv) != "" {
		runtime.LockOSThread()
	}
}

func TestMain(m *testing.M) {
	switch {
	case os.Getenv(standInEnv) == "1":
		os.Exit(standIn(os.Args[1:]))
	case os.Getenv(upEnv) != "":
		os.Exit(upAndExit(os.Getenv(upEnv)))
	case os.Getenv(visitorEnv) != "":
		os.Exit(visit(os.Getenv(visitorEnv)))
	}
	os.Exit(m.Run())
}

// visit moves this process's main thread, and only it, into the network namespace at
// path, says so, and waits to be killed: a test or tool visiting a lab.
func visit(path string) int {
	ns, err := netns.GetFromPath(path)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	if err := netns.Set(ns); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	fmt.Println("inside")
	time.Sleep(10 * time.Minute)
	return 0
}

// upAndExit brings a lab up from a separate process that then exits, as the CLI does;
// spec is "root,name,binary".
func upAndExit(spec string) int {
	parts := strings.Split(spec, ",")
	_, err := Up(context.Background(), Options{Root: parts[0], Name: parts[1], Binary: parts[2], Hosts: 1})
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	return 0
}

// standInBinary writes the wrapper script that runs this test binary as a stand-in.
func standInBinary(t *testing.T) string {
	t.Helper()
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), "godwit")
	script := fmt.Sprintf("#!/bin/sh\n%s=1 exec '%s' \"$@\"\n", standInEnv, exe)
	if err := os.WriteFile(path, []byte(script), 0o755); err != nil {
		t.Fatal(err)
	}
	return path
}

func standIn(args []string) int {
	if len(args) == 0 {
		fmt.Fprintln(os.Stderr, "stand-in: no subcommand")
		return 2
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, os.Interrupt)
	defer stop()
	fmt.Printf("stand-in %s pid=%d args=%q\n", args[0], os.Getpid(), args[1:])
	var err error
	switch args[0] {
	case "center":
		err = standInCenter(ctx, args[1:])
	case "agent":
		err = standInAgent(ctx, args[1:])
	default:
		err = fmt.Errorf("unknown subcommand %q", args[0])
	}
	if err != nil {
		fmt.Println("stand-in error:", err)
		return 1
	}
	fmt.Println("stand-in stopped")
	return 0
}

func standInCenter(ctx context.Context, args []string) error {
	fs := flag.NewFlagSet("center", flag.ContinueOnError)
	listen := fs.String("listen", "", "")
	socket := fs.String("socket", "", "")
	dataDir := fs.String("data-dir", "", "")
	fs.String("ip-pool", "", "")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if st, err := os.Stat(*dataDir); err != nil || !st.IsDir() {
		return fmt.Errorf("data dir %s: %v", *dataDir, err)
	}
	var mu sync.Mutex
	seen := map[string]time.Time{}
	mux := http.NewServeMux()
	mux.HandleFunc("POST /api/v1/heartbeat", func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		seen[r.URL.Query().Get("name")] = time.Now()
		mu.Unlock()
	})
	mux.HandleFunc("POST /api/v1/join-tokens", func(w http.ResponseWriter, r *http.Request) {
		var req struct {
			Host string `json:"host"`
		}
		if json.NewDecoder(r.Body).Decode(&req) != nil || req.Host == "" {
			http.Error(w, "want a host", http.StatusBadRequest)
			return
		}
		w.WriteHeader(http.StatusCreated)
		_ = json.NewEncoder(w).Encode(map[string]string{"secret": "gwjoin_standin_" + req.Host, "ca_fingerprint": "sha256:standin"})
	})
	mux.HandleFunc("GET /api/v1/hosts", func(w http.ResponseWriter, r *http.Request) {
		type host struct {
			Name  string `json:"name"`
			State string `json:"state"`
		}
		hosts := []host{}
		mu.Lock()
		for name, at := range seen {
			state := "connected"
			if time.Since(at) > 1500*time.Millisecond {
				state = "disconnected"
			}
			hosts = append(hosts, host{name, state})
		}
		mu.Unlock()
		sort.Slice(hosts, func(i, j int) bool { return hosts[i].Name < hosts[j].Name })
		_ = json.NewEncoder(w).Encode(hosts)
	})
	tcp, err := net.Listen("tcp", *listen)
	if err != nil {
		return err
	}
	_ = os.Remove(*socket)
	unixL, err := net.Listen("unix", *socket)
	if err != nil {
		return err
	}
	srv := &http.Server{Handler: mux}
	errs := make(chan error, 2)
	go func() { errs <- srv.Serve(tcp) }()
	go func() { errs <- srv.Serve(unixL) }()
	select {
	case <-ctx.Done():
	case err := <-errs:
		return err
	}
	sctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	return srv.Shutdown(sctx)
}

func standInAgent(ctx context.Context, args []string) error {
	fs := flag.NewFlagSet("agent", flag.ContinueOnError)
	name := fs.String("name", "", "")
	listen := fs.String("listen", "", "")
	center := fs.String("center", "", "")
	stateDir := fs.String("state-dir", "", "")
	datastore := fs.String("datastore", "", "")
	network := fs.String("network", "", "")
	joinTokenFile := fs.String("join-token-file", "", "")
	caFingerprint := fs.String("ca-fingerprint", "", "")
	if err := fs.Parse(args); err != nil {
		return err
	}
	// The secret is in a file only root can read, never on the command line.
	for _, a := range args {
		if strings.Contains(a, "gwjoin_") {
			return fmt.Errorf("the lab put a join token on the agent's command line: %q", a)
		}
	}
	tok, err := os.ReadFile(*joinTokenFile)
	if err != nil {
		return fmt.Errorf("the lab did not pass this host's join token in a file: %w", err)
	}
	if st, err := os.Stat(*joinTokenFile); err != nil {
		return err
	} else if st.Mode().Perm() != 0o600 {
		return fmt.Errorf("join token file %s has mode %v; want 0600", *joinTokenFile, st.Mode().Perm())
	}
	if strings.TrimSpace(string(tok)) != "gwjoin_standin_"+*name || *caFingerprint != "sha256:standin" {
		return fmt.Errorf("the lab did not pass this host's join token and the CA fingerprint: %q %q", tok, *caFingerprint)
	}
	// The stand-in center serves plain HTTP on its TCP address too.
	*center = strings.Replace(*center, "https://", "http://", 1)
	for _, d := range []string{*stateDir, strings.TrimPrefix(*datastore, "shared=")} {
		if st, err := os.Stat(d); err != nil || !st.IsDir() {
			return fmt.Errorf("directory %s: %v", d, err)
		}
	}
	if _, err := net.InterfaceByName(strings.TrimPrefix(*network, "lab=")); err != nil {
		return fmt.Errorf("network bridge: %w", err)
	}
	l, err := net.Listen("tcp", *listen)
	if err != nil {
		return err
	}
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintln(w, *name)
	})}
	errs := make(chan error, 1)
	go func() { errs <- srv.Serve(l) }()
	defer srv.Close()

	client := &http.Client{Timeout: time.Second}
	failures := 0
	for {
		resp, err := client.Post(*center+"/api/v1/heartbeat?name="+*name, "text/plain", nil)
		if err == nil {
			resp.Body.Close()
		} else if failures++; failures%10 == 1 {
			fmt.Println("heartbeat:", err)
		}
		select {
		case <-ctx.Done():
			return nil
		case err := <-errs:
			if errors.Is(err, http.ErrServerClosed) {
				return nil
			}
			return err
		case <-time.After(200 * time.Millisecond):
		}
	}
}
