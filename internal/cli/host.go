package cli

import (
	"fmt"
	"net/http"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/godwit/godwit/internal/api"
)

func newHostCmd(e *env) *cobra.Command {
	cmd := &cobra.Command{Use: "host", Short: "Hypervisor hosts: list, show, join tokens and certificates"}
	cmd.AddCommand(&cobra.Command{
		Use: "list", Short: "List the hosts", Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			c, err := e.client()
			if err != nil {
				return err
			}
			hosts, err := api.GetAll[api.Host](cmd.Context(), c, "/api/v1/hosts")
			if err != nil {
				return err
			}
			if e.output == "json" {
				return printJSON(e.out, hosts)
			}
			t := newTable("NAME", "STATE", "ADDRESS", "VMS", "CPUS", "MEMORY FREE", "LOAD", "ACCEL", "QEMU", "HEALTH", "MAINTENANCE", "CPU BASELINE")
			for _, h := range hosts {
				maint := "-"
				if h.Maintenance != nil {
					maint = maintenanceWords(*h.Maintenance)
				}
				t.row(h.Name, h.State, h.Address, fmt.Sprint(h.VMCount), fmt.Sprint(h.CPU.Threads),
					fmt.Sprintf("%s/%s", mib(h.FreeMemoryMiB), mib(h.MemoryMiB)), fmt.Sprintf("%.2f", h.Load),
					orDash(h.Accel), orDash(h.QEMUVersion), h.Health, maint, orDash(h.Baseline))
			}
			return t.print(e.out)
		},
	})
	cmd.AddCommand(&cobra.Command{
		Use: "show NAME", Short: "Show one host", Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := e.client()
			if err != nil {
				return err
			}
			var h api.Host
			if err := c.Do(cmd.Context(), http.MethodGet, "/api/v1/hosts/"+args[0], nil, &h); err != nil {
				return err
			}
			if e.output == "json" {
				return printJSON(e.out, h)
			}
			var ds, nets []string
			for _, d := range h.Datastores {
				var imgs []string
				for _, i := range d.Images {
					imgs = append(imgs, i.Name)
				}
				ds = append(ds, fmt.Sprintf("%s (%s, %d GiB free, images: %s)", d.Name, d.Path, d.FreeByte>>30, orDash(strings.Join(imgs, " "))))
			}
			for _, n := range h.Networks {
				nets = append(nets, fmt.Sprintf("%s (bridge %s)", n.Name, n.Bridge))
			}
			return kv(e.out,
				"Name", h.Name, "State", h.State,
				"Last heartbeat", fmt.Sprintf("%s (%s ago)", h.LastHeartbeat.UTC().Format(time.RFC3339), time.Since(h.LastHeartbeat).Round(time.Second)),
				"Agent", h.AgentURL, "Address", h.Address, "Agent version", h.Version,
				"CPU", fmt.Sprintf("%s (%s), %d threads, %d flags", h.CPU.Model, h.CPU.Vendor, h.CPU.Threads, len(h.CPU.Flags)),
				"Memory", fmt.Sprintf("%s free of %s", mib(h.FreeMemoryMiB), mib(h.MemoryMiB)),
				"Load", fmt.Sprintf("%.2f", h.Load),
				"QEMU", h.QEMUVersion, "Accelerator", fmt.Sprintf("%s (%s)", orDash(h.Accel), h.AccelReason),
				"Health", strings.TrimSpace(h.Health+" "+h.HealthReason),
				"Datastores", orDash(strings.Join(ds, "; ")), "Networks", orDash(strings.Join(nets, "; ")),
				"VMs", fmt.Sprint(h.VMCount), "Maintenance", maintenanceLine(h))
		},
	})
	addHostPKICmds(e, cmd)
	return cmd
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}
