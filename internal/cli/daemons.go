package cli

import (
	"fmt"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/godwit/godwit/internal/admission"
	"github.com/godwit/godwit/internal/agent"
	"github.com/godwit/godwit/internal/center"
)

func newCenterCmd(e *env) *cobra.Command {
	var cfg center.Config
	var pools []string
	cmd := &cobra.Command{
		Use:   "center",
		Short: "Run the management server (inventory, REST API)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			cfg.Pools = map[string]center.Pool{}
			for _, p := range pools {
				name, spec, ok := strings.Cut(p, "=")
				if !ok || name == "" {
					return fmt.Errorf("--ip-pool %q must look like NETWORK=198.18.1.0/24,198.18.1.100-198.18.1.199", p)
				}
				pool, err := center.ParsePool(spec)
				if err != nil {
					return fmt.Errorf("--ip-pool: %w", err)
				}
				cfg.Pools[name] = pool
			}
			cfg.Log = e.logger()
			c, err := center.New(cmd.Context(), cfg)
			if err != nil {
				return err
			}
			return c.Run(cmd.Context())
		},
	}
	f := cmd.Flags()
	f.StringVar(&cfg.Listen, "listen", "", "TCP address for agents and API clients (TLS), e.g. 198.18.1.2:7443")
	f.StringArrayVar(&cfg.TLSNames, "tls-name", nil, "a further DNS name or address for the center's certificate (repeatable)")
	f.StringVar(&cfg.Socket, "socket", "", "unix socket for local API clients")
	f.StringVar(&cfg.DataDir, "data-dir", "/var/lib/godwit/center", "directory for the database")
	f.StringArrayVar(&pools, "ip-pool", nil, "address pool for a network: NETWORK=SUBNET,FIRST-LAST (repeatable)")
	f.DurationVar(&cfg.HeartbeatTimeout, "heartbeat-timeout", 10*time.Second, "a host without a heartbeat for this long counts as disconnected")
	f.Var(newRetentionFlag(&cfg.AuditRetention), "audit-retention", "how long audit records are kept: 90d, 12w, 720h or forever")
	cfg.MigrationLimits = admission.DefaultLimits()
	f.Var(&limitFlag{cfg.MigrationLimits.Kinds, admission.KindHost}, "max-migrations-per-host", "concurrent migrations per host (vCenter's for 1 GbE); more are queued")
	f.Var(&limitFlag{cfg.MigrationLimits.Kinds, admission.KindNetwork}, "max-migrations-per-network", "concurrent migrations on the migration network")
	f.Var(&limitFlag{cfg.MigrationLimits.Kinds, admission.KindDatastore}, "max-migrations-per-datastore", "concurrent migrations per datastore")
	f.Var(&rateFlag{&cfg.LinkRate}, "migration-network-rate", "speed of the migration network, shared by concurrent migrations by priority (e.g. 1gbit, 10gbit; default 10gbit)")
	f.DurationVar(&cfg.HostCertLifetime, "host-certificate-lifetime", 0, "how long host certificates are valid (default a year); hosts renew when a third is left")
	f.DurationVar(&cfg.BalanceInterval, "balance-interval", time.Minute, "how often the balancer looks at the hosts' loads (it acts after 3 rounds over its target)")
	f.StringVar(&cfg.CPUBaseline, "cpu-baseline", "qemu64", "the cluster's baseline CPU model, given to VMs created without one (like EVC)")
	return cmd
}

// joinTokenEnv is the environment variable that may carry an agent's join token.
const joinTokenEnv = "GODWIT_JOIN_TOKEN"

func newAgentCmd(e *env) *cobra.Command {
	var cfg agent.Config
	var datastores, networks []string
	var joinTokenFile string
	cmd := &cobra.Command{
		Use:   "agent",
		Short: "Run the daemon of a hypervisor host (VMs as QEMU processes, bridges, TAPs, datastores)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			var err error
			if cfg.Datastores, err = namedPairs("--datastore", "NAME=PATH", datastores); err != nil {
				return err
			}
			if cfg.Networks, err = namedPairs("--network", "NAME=BRIDGE", networks); err != nil {
				return err
			}
			if cfg.JoinToken, err = joinToken(cfg.JoinToken, joinTokenFile, os.Getenv(joinTokenEnv)); err != nil {
				return err
			}
			cfg.Log = e.logger()
			a, err := agent.New(cfg, Version)
			if err != nil {
				return err
			}
			return a.Run(cmd.Context())
		},
	}
	f := cmd.Flags()
	f.StringVar(&cfg.Name, "name", "", "this host's name in the cluster")
	f.StringVar(&cfg.Listen, "listen", "", "address of the agent's API, e.g. 198.18.1.11:7700")
	f.StringVar(&cfg.Advertise, "advertise", "", "URL the center uses to reach this agent (default https://LISTEN)")
	f.StringVar(&cfg.Center, "center", "", "the center's URL, e.g. https://198.18.1.2:7443")
	f.StringVar(&joinTokenFile, "join-token-file", "", "file holding the one-time token to join the cluster (first start only; `godwit host join-token create`); or set $"+joinTokenEnv)
	f.StringVar(&cfg.JoinToken, "join-token", "", "the join token itself; every user of the host can read it in the process list, so prefer --join-token-file or $"+joinTokenEnv)
	f.StringVar(&cfg.CAFingerprint, "ca-fingerprint", "", "the cluster CA's fingerprint, sha256:… (first start only; printed with the join token)")
	f.StringVar(&cfg.CAFile, "ca-file", "", "the cluster CA's certificate (first start only; instead of --ca-fingerprint)")
	f.StringVar(&cfg.StateDir, "state-dir", "/var/lib/godwit/agent", "directory for VM state")
	f.StringArrayVar(&datastores, "datastore", nil, "a datastore: NAME=PATH (repeatable)")
	f.StringArrayVar(&networks, "network", nil, "a VM network: NAME=BRIDGE (repeatable)")
	f.StringVar(&cfg.QEMU, "qemu", "qemu-system-x86_64", "QEMU binary")
	f.StringVar(&cfg.Accel, "accel", "auto", "accelerator: auto (probe KVM, else TCG), kvm or tcg")
	f.StringVar(&cfg.AccelCache, "accel-cache", "/var/cache/godwit/accel.json", "where the accelerator probe's answer is kept")
	f.StringVar(&cfg.ProbeKernel, "probe-kernel", "", "standard Linux kernel used to probe KVM (default: an image's vmlinuz on a datastore)")
	f.StringVar(&cfg.CPULimit, "cpu-limit", "", "advertise only what this QEMU CPU model offers (e.g. Nehalem), as an older generation would, and refuse VMs whose CPU model needs more")
	f.DurationVar(&cfg.Heartbeat, "heartbeat", 2*time.Second, "interval between heartbeats")
	return cmd
}

// joinToken is the agent's join token from the one place it was given: a file, the
// environment, or (readable by every local user in the process list) the command line.
func joinToken(flag, file, env string) (string, error) {
	given := 0
	for _, s := range []string{flag, file, env} {
		if s != "" {
			given++
		}
	}
	if given > 1 {
		return "", fmt.Errorf("the join token is given more than once (--join-token-file, $%s, --join-token): give it one way only", joinTokenEnv)
	}
	if file == "" {
		return strings.TrimSpace(flag + env), nil
	}
	b, err := os.ReadFile(file)
	if err != nil {
		return "", fmt.Errorf("--join-token-file: %w", err)
	}
	tok := strings.TrimSpace(string(b))
	if tok == "" {
		return "", fmt.Errorf("--join-token-file %s is empty: put the token from `godwit host join-token create` in it", file)
	}
	return tok, nil
}

// limitFlag sets one kind's limit in a map of migration limits.
type limitFlag struct {
	kinds map[string]int
	kind  string
}

func (f *limitFlag) String() string {
	if f.kinds == nil {
		return ""
	}
	return strconv.Itoa(f.kinds[f.kind])
}
func (f *limitFlag) Type() string { return "N" }
func (f *limitFlag) Set(s string) error {
	n, err := strconv.Atoi(s)
	if err != nil || n < 1 || n > 1024 {
		return fmt.Errorf("%q is not a number of migrations between 1 and 1024", s)
	}
	f.kinds[f.kind] = n
	return nil
}

// rateFlag reads a link speed such as 1gbit, 10gbit or 500mbit into bytes per second.
type rateFlag struct{ bytes *int64 }

func (f *rateFlag) String() string {
	if f.bytes == nil || *f.bytes == 0 {
		return ""
	}
	return fmt.Sprintf("%dmbit", *f.bytes*8/1_000_000)
}
func (f *rateFlag) Type() string { return "RATE" }
func (f *rateFlag) Set(s string) error {
	units := map[string]int64{"kbit": 1e3, "mbit": 1e6, "gbit": 1e9}
	for u, mult := range units {
		if num, ok := strings.CutSuffix(strings.ToLower(s), u); ok {
			n, err := strconv.ParseFloat(num, 64)
			if err == nil && n > 0 {
				*f.bytes = int64(n * float64(mult) / 8)
				return nil
			}
		}
	}
	return fmt.Errorf("%q is not a link speed: use e.g. 1gbit, 10gbit or 500mbit", s)
}

func namedPairs(flag, form string, vals []string) (map[string]string, error) {
	m := map[string]string{}
	for _, v := range vals {
		k, val, ok := strings.Cut(v, "=")
		if !ok || k == "" || val == "" {
			return nil, fmt.Errorf("%s %q must look like %s", flag, v, form)
		}
		if _, dup := m[k]; dup {
			return nil, fmt.Errorf("%s: %s is given twice", flag, k)
		}
		m[k] = val
	}
	return m, nil
}
