package cli

import (
	"fmt"
	"strings"
	"time"

	"github.com/spf13/cobra"

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
	return cmd
}

func newAgentCmd(e *env) *cobra.Command {
	var cfg agent.Config
	var datastores, networks []string
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
	f.StringVar(&cfg.JoinToken, "join-token", "", "one-time token to join the cluster (first start only; `godwit host join-token create`)")
	f.StringVar(&cfg.CAFingerprint, "ca-fingerprint", "", "the cluster CA's fingerprint, sha256:… (first start only; printed with the join token)")
	f.StringVar(&cfg.CAFile, "ca-file", "", "the cluster CA's certificate (first start only; instead of --ca-fingerprint)")
	f.StringVar(&cfg.StateDir, "state-dir", "/var/lib/godwit/agent", "directory for VM state")
	f.StringArrayVar(&datastores, "datastore", nil, "a datastore: NAME=PATH (repeatable)")
	f.StringArrayVar(&networks, "network", nil, "a VM network: NAME=BRIDGE (repeatable)")
	f.StringVar(&cfg.QEMU, "qemu", "qemu-system-x86_64", "QEMU binary")
	f.StringVar(&cfg.Accel, "accel", "auto", "accelerator: auto (probe KVM, else TCG), kvm or tcg")
	f.StringVar(&cfg.AccelCache, "accel-cache", "/var/cache/godwit/accel.json", "where the accelerator probe's answer is kept")
	f.StringVar(&cfg.ProbeKernel, "probe-kernel", "", "standard Linux kernel used to probe KVM (default: an image's vmlinuz on a datastore)")
	f.DurationVar(&cfg.Heartbeat, "heartbeat", 2*time.Second, "interval between heartbeats")
	return cmd
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
