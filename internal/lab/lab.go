// Package lab builds and runs a whole Godwit cluster on one Linux machine: a switch, a
// management center, a client and N hypervisor hosts, each in its own network
// namespace, joined by veth pairs across a bridge that plays the physical switch. The
// center and the agents run as detached processes from the godwit binary, so a lab
// outlives the `godwit lab up` command that made it; `godwit lab down` removes it.
//
// Every lab uses addresses from 198.18.0.0/15 only (lab K owns 198.18.K.0/24), has no
// default route and forwards nothing, so no traffic leaves it. Its record, lab.json,
// is written before each resource is created, so Down removes exactly what Up made even
// after a crash.
package lab

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"time"
)

// Lab states recorded in lab.json.
const (
	// StateCreating is the state of a lab whose Up has not finished (or crashed).
	StateCreating = "creating"
	// StateReady is the state of a lab whose Up saw every host connected.
	StateReady = "ready"
	// StateBroken is reported by List for a lab directory without a readable lab.json.
	StateBroken = "broken"
)

const (
	defaultName         = "lab"
	defaultHosts        = 2
	maxHosts            = 8
	maxIndex            = 250
	defaultReadyTimeout = 60 * time.Second
	centerPort          = 7443
	agentPort           = 7700
	datastoreName       = "shared"
	networkName         = "lab"
	hostBridge          = "br0"
	switchBridge        = "sw0"
	guestImageDir       = "images/godwit-test"
	// maxSocketPath is the room in sockaddr_un.sun_path, NUL included.
	maxSocketPath = 108
)

// nameRE is the shape of a lab name: short enough that every namespace and interface
// name derived from it stays valid.
var nameRE = regexp.MustCompile(`^[a-z0-9]{1,8}$`)

// guestFiles are the files of the test guest image copied into the lab's datastore.
var guestFiles = []string{"vmlinuz", "initrd.img", "cmdline"}

// Options says which lab Up builds. The zero value is valid: a lab named "lab" with two
// hosts under the default state root, run by the current executable.
type Options struct {
	// Name names the lab: 1 to 8 characters from [a-z0-9]; "lab" when empty.
	Name string
	// Hosts is the number of hypervisor hosts, 1 to 8; 2 when zero.
	Hosts int
	// Root is the state root; the lab lives in Root/labs/Name. Empty means DefaultRoot().
	Root string
	// Binary is the godwit binary run as center and agents; empty means os.Executable().
	Binary string
	// GuestDir holds the test guest image (vmlinuz, initrd.img, cmdline), copied into
	// the lab's datastore under images/godwit-test. Empty means no image is copied.
	GuestDir string
	// CPULimits maps host names ("host-2") to a QEMU CPU model ("Nehalem"): that host's
	// agent runs with --cpu-limit MODEL, so it advertises and accepts only what the model
	// offers, as a host of an older CPU generation would. Hosts not named are not limited.
	CPULimits map[string]string
	// CenterArgs are further flags for the center (e.g. --max-migrations-per-host=2).
	CenterArgs []string
	// ReadyTimeout bounds the wait for every host to connect to the center; 60 s when zero.
	ReadyTimeout time.Duration
	// Log receives progress messages; nil discards them.
	Log *slog.Logger
}

// Lab is one lab, as recorded in its lab.json. Its methods are safe for concurrent use.
type Lab struct {
	// Name is the lab's name.
	Name string `json:"name"`
	// Index is the lab number K (1..250): the lab owns subnet 198.18.K.0/24.
	Index int `json:"index"`
	// State is StateCreating until Up has seen every host connected, then StateReady.
	State string `json:"state"`
	// Created is when Up started building the lab.
	Created time.Time `json:"created"`
	// Dir is the lab directory, Root/labs/Name.
	Dir string `json:"dir"`
	// Subnet is the lab's network, 198.18.K.0/24.
	Subnet string `json:"subnet"`
	// CenterURL is the center's HTTP address, reachable from the lab's namespaces.
	CenterURL string `json:"center_url"`
	// CenterSocket is the center's unix socket, reachable from the root namespace.
	CenterSocket string `json:"center_socket"`
	// Datastore is the shared datastore directory (datastore "shared" on every host).
	Datastore string `json:"datastore"`
	// Binary is the godwit binary the daemons run.
	Binary string `json:"binary"`
	// Hosts are the hypervisor hosts, host-1 first.
	Hosts []Host `json:"hosts"`
	// Namespaces lists the network namespaces Up created, each recorded just before
	// it was created.
	Namespaces []string `json:"namespaces"`
	// Daemons are the center (first) and the agents.
	Daemons []Daemon `json:"daemons"`

	mu  sync.Mutex
	log *slog.Logger
}

// Host is one hypervisor host of a lab.
type Host struct {
	// Name is the host's name and its target name, "host-1" to "host-8".
	Name string `json:"name"`
	// Namespace is the host's network namespace, gw-LAB-hI.
	Namespace string `json:"namespace"`
	// Address is the host's address on bridge br0, 198.18.K.(10+I).
	Address string `json:"address"`
	// AgentURL is the agent's HTTP address.
	AgentURL string `json:"agent_url"`
	// StateDir is the agent's state directory.
	StateDir string `json:"state_dir"`
}

// Daemon is a center or agent process of a lab.
type Daemon struct {
	// Target is "center" or a host name.
	Target string `json:"target"`
	// Namespace is the network namespace the daemon runs in.
	Namespace string `json:"namespace"`
	// Argv is the daemon's command line, binary first.
	Argv []string `json:"argv"`
	// Log is the file the daemon's stdout and stderr are appended to.
	Log string `json:"log"`
	// PID is the daemon's process id, or 0 when it was stopped or never started.
	PID int `json:"pid"`
}

// DefaultRoot returns the state root used when none is given: $GODWIT_HOME, or
// /var/lib/godwit.
func DefaultRoot() string {
	if r := os.Getenv("GODWIT_HOME"); r != "" {
		return r
	}
	return "/var/lib/godwit"
}

// Targets returns the names Exec, Command and the daemon methods accept: client,
// switch, center and the host names.
func (l *Lab) Targets() []string {
	t := []string{"client", "switch", "center"}
	for _, h := range l.Hosts {
		t = append(t, h.Name)
	}
	return t
}

// Namespace returns the network namespace of target.
func (l *Lab) Namespace(target string) (string, error) {
	switch target {
	case "client":
		return nsName(l.Name, "cl"), nil
	case "switch":
		return nsName(l.Name, "sw"), nil
	case "center":
		return nsName(l.Name, "c"), nil
	}
	for _, h := range l.Hosts {
		if h.Name == target {
			return h.Namespace, nil
		}
	}
	return "", fmt.Errorf("unknown target %q in lab %s: use one of %s", target, l.Name, strings.Join(l.Targets(), ", "))
}

// nsName returns the name of a lab's namespace with the given role suffix.
func nsName(lab, suffix string) string {
	return "gw-" + lab + "-" + suffix
}

// labDir returns the directory of lab name under root.
func labDir(root, name string) string {
	return filepath.Join(root, "labs", name)
}

// checkName rejects lab names that are not [a-z0-9]{1,8}.
func checkName(name string) error {
	if !nameRE.MatchString(name) {
		return fmt.Errorf("invalid lab name %q: use 1 to 8 lowercase letters or digits", name)
	}
	return nil
}

// resolveRoot returns root, or the default root when it is empty, as an absolute path.
func resolveRoot(root string) (string, error) {
	if root == "" {
		root = DefaultRoot()
	}
	abs, err := filepath.Abs(root)
	if err != nil {
		return "", fmt.Errorf("resolve state root %s: %w", root, err)
	}
	return abs, nil
}

// withDefaults fills in the defaults and validates o.
func (o Options) withDefaults() (Options, error) {
	if o.Name == "" {
		o.Name = defaultName
	}
	if err := checkName(o.Name); err != nil {
		return o, err
	}
	if o.Hosts == 0 {
		o.Hosts = defaultHosts
	}
	if o.Hosts < 1 || o.Hosts > maxHosts {
		return o, fmt.Errorf("a lab has 1 to %d hosts, not %d", maxHosts, o.Hosts)
	}
	root, err := resolveRoot(o.Root)
	if err != nil {
		return o, err
	}
	o.Root = root
	if o.Binary == "" {
		if o.Binary, err = os.Executable(); err != nil {
			return o, fmt.Errorf("find the godwit binary to run as center and agents: %w; pass it explicitly", err)
		}
	}
	if o.Binary, err = filepath.Abs(o.Binary); err != nil {
		return o, fmt.Errorf("resolve binary %s: %w", o.Binary, err)
	}
	if err := checkCPULimits(o.CPULimits, o.Hosts); err != nil {
		return o, err
	}
	if o.ReadyTimeout <= 0 {
		o.ReadyTimeout = defaultReadyTimeout
	}
	if o.Log == nil {
		o.Log = slog.New(slog.DiscardHandler)
	}
	return o, nil
}

// checkCPULimits refuses CPU limits for hosts a lab of the given size does not have, and
// limits that name no model or not a plain model name.
func checkCPULimits(limits map[string]string, hosts int) error {
	for host, model := range limits {
		var i int
		if n, err := fmt.Sscanf(host, "host-%d", &i); n != 1 || err != nil || host != fmt.Sprintf("host-%d", i) || i < 1 || i > hosts {
			return fmt.Errorf("CPU limit %s=%s: the lab has no host %q; its hosts are host-1 to host-%d", host, model, host, hosts)
		}
		if model == "" || strings.ContainsAny(model, " \t\n=") || strings.HasPrefix(model, "-") {
			return fmt.Errorf("CPU limit for %s: %q is not a QEMU CPU model name such as Nehalem", host, model)
		}
	}
	return nil
}

// preflight checks everything Up needs before it creates anything, so that a missing
// prerequisite fails fast with a sentence saying how to get it.
func preflight(o Options) error {
	if os.Geteuid() != 0 {
		return fmt.Errorf("godwit lab creates network namespaces and needs root: run it as root or with sudo")
	}
	if _, err := exec.LookPath("ip"); err != nil {
		return fmt.Errorf("the ip command (iproute2) is missing: install it with scripts/deps.sh")
	}
	st, err := os.Stat(o.Binary)
	if err != nil {
		return fmt.Errorf("the godwit binary %s cannot be used: %w", o.Binary, err)
	}
	if st.IsDir() || st.Mode().Perm()&0o111 == 0 {
		return fmt.Errorf("the godwit binary %s is not an executable file", o.Binary)
	}
	if o.GuestDir != "" {
		for _, f := range guestFiles {
			if _, err := os.Stat(filepath.Join(o.GuestDir, f)); err != nil {
				return fmt.Errorf("test guest image incomplete: %w; build the guest image first", err)
			}
		}
	}
	if sock := filepath.Join(labDir(o.Root, o.Name), "center.sock"); len(sock) >= maxSocketPath {
		return fmt.Errorf("the center socket path %s is longer than a unix socket allows (%d bytes): use a shorter state root", sock, maxSocketPath-1)
	}
	return nil
}

// plan returns the lab o describes with index k, before anything exists.
func plan(o Options, k int) *Lab {
	dir := labDir(o.Root, o.Name)
	l := &Lab{
		Name:         o.Name,
		Index:        k,
		State:        StateCreating,
		Created:      time.Now().UTC(),
		Dir:          dir,
		Subnet:       fmt.Sprintf("198.18.%d.0/24", k),
		CenterURL:    fmt.Sprintf("https://%s", addr(k, 2, centerPort)),
		CenterSocket: filepath.Join(dir, "center.sock"),
		Datastore:    filepath.Join(dir, "datastore"),
		Binary:       o.Binary,
		Namespaces:   []string{},
		log:          o.Log,
	}
	l.Daemons = append(l.Daemons, Daemon{
		Target:    "center",
		Namespace: nsName(o.Name, "c"),
		Argv: []string{o.Binary, "center",
			"--listen", addr(k, 2, centerPort),
			"--socket", l.CenterSocket,
			"--data-dir", filepath.Join(dir, "center"),
			"--ip-pool", fmt.Sprintf("%s=198.18.%d.0/24,198.18.%d.100-198.18.%d.199", networkName, k, k, k),
		},
		Log: filepath.Join(dir, "logs", "center.log"),
	})
	l.Daemons[0].Argv = append(l.Daemons[0].Argv, o.CenterArgs...)
	for i := 1; i <= o.Hosts; i++ {
		h := Host{
			Name:      fmt.Sprintf("host-%d", i),
			Namespace: nsName(o.Name, fmt.Sprintf("h%d", i)),
			Address:   fmt.Sprintf("198.18.%d.%d", k, 10+i),
			AgentURL:  "https://" + addr(k, 10+i, agentPort),
			StateDir:  filepath.Join(dir, fmt.Sprintf("host-%d", i)),
		}
		l.Hosts = append(l.Hosts, h)
		l.Daemons = append(l.Daemons, Daemon{
			Target:    h.Name,
			Namespace: h.Namespace,
			Argv: []string{o.Binary, "agent",
				"--name", h.Name,
				"--listen", addr(k, 10+i, agentPort),
				"--center", l.CenterURL,
				"--state-dir", h.StateDir,
				"--datastore", datastoreName + "=" + l.Datastore,
				"--network", networkName + "=" + hostBridge,
			},
			Log: filepath.Join(dir, "logs", h.Name+".log"),
		})
		if model := o.CPULimits[h.Name]; model != "" {
			d := &l.Daemons[len(l.Daemons)-1]
			d.Argv = append(d.Argv, "--cpu-limit", model)
		}
	}
	return l
}

// addr returns 198.18.k.host:port.
func addr(k, host, port int) string {
	return fmt.Sprintf("198.18.%d.%d:%d", k, host, port)
}

// Up builds the lab o describes and starts its center and agents. It returns when the
// center reports every host connected. If anything fails, or ctx ends, it removes what
// it made and returns the original error.
func Up(ctx context.Context, o Options) (*Lab, error) {
	o, err := o.withDefaults()
	if err != nil {
		return nil, err
	}
	if err := preflight(o); err != nil {
		return nil, err
	}
	l, err := reserve(o)
	if err != nil {
		return nil, err
	}
	o.Log.Info("building lab", "lab", l.Name, "subnet", l.Subnet, "hosts", len(l.Hosts), "dir", l.Dir)
	if err := l.build(ctx, o); err != nil {
		o.Log.Warn("lab failed; removing what was made", "lab", l.Name, "err", err)
		cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 2*time.Minute)
		defer cancel()
		if derr := teardown(cctx, o.Root, o.Name, false); derr != nil {
			return nil, fmt.Errorf("%w\n(removing the half-built lab failed too: %v; run `godwit lab down --name %s`)", err, derr, o.Name)
		}
		return nil, err
	}
	o.Log.Info("lab ready", "lab", l.Name, "center", l.CenterURL)
	return l, nil
}

// build creates the directories, namespaces, links and daemons of a reserved lab and
// waits until it is ready.
func (l *Lab) build(ctx context.Context, o Options) error {
	dirs := []string{filepath.Join(l.Dir, "logs"), filepath.Join(l.Datastore, "images"), filepath.Join(l.Dir, "center")}
	for _, h := range l.Hosts {
		dirs = append(dirs, h.StateDir)
	}
	for _, d := range dirs {
		if err := os.MkdirAll(d, 0o755); err != nil {
			return fmt.Errorf("create lab directory: %w", err)
		}
	}
	if o.GuestDir != "" {
		if err := copyGuest(o.GuestDir, filepath.Join(l.Datastore, guestImageDir)); err != nil {
			return err
		}
	}
	if err := l.createNetwork(ctx); err != nil {
		return err
	}
	for i := range l.Daemons {
		if err := l.start(i); err != nil {
			return err
		}
		// The center serves before the agents start, and gives each host a
		// one-time join token and the CA's fingerprint to join with. A center that
		// does not serve within the ready timeout is left to waitReady to report,
		// with the logs.
		if d := l.daemon(i); d.Target == "center" {
			wctx, cancel := context.WithTimeout(ctx, o.ReadyTimeout)
			err := l.waitServing(wctx, d)
			if err == nil {
				err = l.issueJoinTokens(wctx)
			} else if ctx.Err() == nil {
				err = nil
			}
			cancel()
			if err != nil {
				return err
			}
		}
	}
	if err := l.waitReady(ctx, o.ReadyTimeout); err != nil {
		return err
	}
	l.mu.Lock()
	l.State = StateReady
	err := l.saveLocked()
	l.mu.Unlock()
	return err
}
