package cli

import (
	"bytes"
	"fmt"
	"net/http"
	"net/url"
	"regexp"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/godwit/godwit/internal/api"
)

func newVMCmd(e *env) *cobra.Command {
	cmd := &cobra.Command{Use: "vm", Short: "Create, list, start, stop and delete virtual machines"}
	cmd.AddCommand(newVMCreateCmd(e), newVMListCmd(e), newVMShowCmd(e),
		newVMPowerCmd(e, "start"), newVMStopCmd(e), newVMDeleteCmd(e), newVMConsoleCmd(e), newVMMigrateCmd(e))
	return cmd
}

var dsRefRe = regexp.MustCompile(`^\[([A-Za-z0-9_.-]+)\]\s*(.+)$`)

// diskArg turns "[datastore] path" or an absolute path into a disk.
func diskArg(s, format string) (api.Disk, error) {
	d := api.Disk{Format: format}
	if m := dsRefRe.FindStringSubmatch(s); m != nil {
		d.Datastore, d.Path = m[1], m[2]
	} else if strings.HasPrefix(s, "/") {
		d.Path = s
	} else {
		return d, fmt.Errorf("--disk %q must be \"[datastore] path/in/datastore\" or an absolute path inside a datastore", s)
	}
	if d.Format == "" {
		d.Format = "raw"
		if strings.HasSuffix(s, ".qcow2") {
			d.Format = "qcow2"
		}
	}
	return d, nil
}

func newVMCreateCmd(e *env) *cobra.Command {
	var (
		req                     api.CreateVMRequest
		memory, cpus, dataDisk  int
		disk, diskFormat, netwk string
		ip, mac                 string
	)
	cmd := &cobra.Command{
		Use:   "create NAME",
		Short: "Create a VM (by default from the test guest image) and start it",
		Long: `Create a VM on a host you name (--host) or one the center picks.

It boots the test guest image unless you bring your own kernel (--kernel, --initrd,
--cmdline) or disk image (--disk, booted with SeaBIOS). Paths are absolute host paths
or "[datastore] path/in/datastore".`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			req.Name = args[0]
			f := cmd.Flags()
			if f.Changed("memory") {
				req.MemoryMiB = &memory
			}
			if f.Changed("cpus") {
				req.CPUs = &cpus
			}
			if f.Changed("data-disk") {
				req.DataDiskMiB = &dataDisk
			}
			if disk != "" {
				if req.Boot.Kernel != "" {
					return fmt.Errorf("boot from --kernel or from --disk, not both")
				}
				d, err := diskArg(disk, diskFormat)
				if err != nil {
					return err
				}
				req.Disks = []api.Disk{d}
				req.Boot.FromDisk = true
			}
			if req.Boot.Initrd != "" && req.Boot.Kernel == "" {
				return fmt.Errorf("--initrd needs --kernel")
			}
			if netwk != "" || ip != "" || mac != "" {
				req.NICs = []api.NIC{{Network: netwk, IP: ip, MAC: mac}}
				if netwk == "" {
					return fmt.Errorf("--ip and --mac need --network")
				}
			}
			c, err := e.client()
			if err != nil {
				return err
			}
			var vm api.VM
			if err := c.Do(cmd.Context(), http.MethodPost, "/api/v1/vms", req, &vm); err != nil {
				return fmt.Errorf("create VM %s: %w", req.Name, err)
			}
			return e.printVM(vm)
		},
	}
	f := cmd.Flags()
	f.StringVar(&req.Host, "host", "", "host to create the VM on (default: the center picks)")
	f.IntVar(&memory, "memory", 512, "memory in MiB")
	f.IntVar(&cpus, "cpus", 1, "number of vCPUs")
	f.StringVar(&req.CPUModel, "cpu-model", "", "QEMU CPU model (default qemu64)")
	f.StringVar(&req.Machine, "machine", "", "machine: q35-lean (default: q35 without the SATA and SMBus controllers a virtio guest does not use, for shorter migration pauses) or q35")
	f.StringVar(&req.Image, "image", "", "image from a datastore's images/ folder (default: "+api.DefaultImage+")")
	f.StringVar(&req.Boot.Kernel, "kernel", "", "kernel to boot")
	f.StringVar(&req.Boot.Initrd, "initrd", "", "initrd for --kernel")
	f.StringVar(&req.Boot.Cmdline, "cmdline", "", "kernel command line for --kernel")
	f.StringVar(&disk, "disk", "", "disk image to boot from (raw or qcow2)")
	f.StringVar(&diskFormat, "disk-format", "", "format of --disk: raw or qcow2 (default: from the file name)")
	f.IntVar(&dataDisk, "data-disk", 64, "size in MiB of the empty data disk given to the test image (0: none)")
	f.StringVar(&netwk, "network", "", "network of the VM's NIC (default: the host's first network)")
	f.StringVar(&ip, "ip", "", "the NIC's IP address (default: the next free one in the network's pool)")
	f.StringVar(&mac, "mac", "", "the NIC's MAC address (default: a new one)")
	f.BoolVar(&req.Start, "start", true, "start the VM once it is created")
	f.StringVar(&req.MigrationPolicy, "migration-policy", "", "the VM's default migration policy (see `godwit migration policies`)")
	return cmd
}

func (e *env) printVM(vm api.VM) error {
	if e.output == "json" {
		return printJSON(e.out, vm)
	}
	var disks, nics []string
	for _, d := range vm.Spec.Disks {
		disks = append(disks, fmt.Sprintf("[%s] %s (%s)", d.Datastore, d.Path, d.Format))
	}
	for _, n := range vm.Spec.NICs {
		nics = append(nics, fmt.Sprintf("%s on %s, %s", n.MAC, n.Network, orDash(n.IP)))
	}
	boot := "disk"
	if vm.Spec.Boot.Kernel != "" {
		boot = fmt.Sprintf("kernel %s, initrd %s, cmdline %q", vm.Spec.Boot.Kernel, orDash(vm.Spec.Boot.Initrd), vm.Spec.Boot.Cmdline)
	}
	state := vm.State
	if vm.Error != "" {
		state += ": " + vm.Error
	}
	return kv(e.out, "Name", vm.Name, "UUID", vm.UUID, "Host", vm.Host, "State", state,
		"IP", orDash(vm.IP), "MAC", orDash(vm.MAC), "CPUs", fmt.Sprintf("%d (%s)", vm.CPUs, vm.Spec.CPUModel), "Machine", orDefault(vm.Spec.Machine, api.MachineQ35),
		"Memory", mib(vm.MemoryMiB), "Boot", boot, "Disks", orDash(strings.Join(disks, "; ")),
		"NICs", orDash(strings.Join(nics, "; ")), "Accelerator", orDash(vm.Accel),
		"Created", vm.Created.UTC().Format(time.RFC3339))
}

func newVMListCmd(e *env) *cobra.Command {
	var host, state string
	cmd := &cobra.Command{
		Use: "list", Short: "List the VMs (all of them, or those on one host or in one state)", Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			c, err := e.client()
			if err != nil {
				return err
			}
			q := url.Values{}
			if host != "" {
				q.Set("host", host)
			}
			if state != "" {
				q.Set("state", state)
			}
			path := "/api/v1/vms"
			if len(q) > 0 {
				path += "?" + q.Encode()
			}
			vms, err := api.GetAll[api.VM](cmd.Context(), c, path)
			if err != nil {
				return err
			}
			if e.output == "json" {
				return printJSON(e.out, vms)
			}
			t := newTable("NAME", "HOST", "STATE", "IP", "MAC", "CPUS", "MEMORY")
			for _, v := range vms {
				t.row(v.Name, v.Host, v.State, orDash(v.IP), orDash(v.MAC), fmt.Sprint(v.CPUs), mib(v.MemoryMiB))
			}
			return t.print(e.out)
		},
	}
	cmd.Flags().StringVar(&host, "host", "", "only the VMs on this host")
	cmd.Flags().StringVar(&state, "state", "", "only the VMs in this state (running, stopped, error, …)")
	return cmd
}

func newVMShowCmd(e *env) *cobra.Command {
	return &cobra.Command{
		Use: "show NAME", Short: "Show one VM", Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := e.client()
			if err != nil {
				return err
			}
			var vm api.VM
			if err := c.Do(cmd.Context(), http.MethodGet, "/api/v1/vms/"+args[0], nil, &vm); err != nil {
				return err
			}
			return e.printVM(vm)
		},
	}
}

func newVMPowerCmd(e *env, verb string) *cobra.Command {
	return &cobra.Command{
		Use: verb + " NAME", Short: strings.ToUpper(verb[:1]) + verb[1:] + " a VM", Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := e.client()
			if err != nil {
				return err
			}
			var vm api.VM
			if err := c.Do(cmd.Context(), http.MethodPost, "/api/v1/vms/"+args[0]+"/"+verb, nil, &vm); err != nil {
				return fmt.Errorf("%s VM %s: %w", verb, args[0], err)
			}
			return e.printVM(vm)
		},
	}
}

func newVMStopCmd(e *env) *cobra.Command {
	var force bool
	var grace time.Duration
	cmd := &cobra.Command{
		Use: "stop NAME", Short: "Stop a VM: ACPI shutdown, then power off after --grace", Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := e.client()
			if err != nil {
				return err
			}
			var vm api.VM
			q := fmt.Sprintf("?force=%t&grace=%s", force, grace)
			if err := c.Do(cmd.Context(), http.MethodPost, "/api/v1/vms/"+args[0]+"/stop"+q, nil, &vm); err != nil {
				return fmt.Errorf("stop VM %s: %w", args[0], err)
			}
			return e.printVM(vm)
		},
	}
	cmd.Flags().BoolVar(&force, "force", false, "power off at once, without asking the guest")
	cmd.Flags().DurationVar(&grace, "grace", 30*time.Second, "how long the guest may take to shut down before it is powered off")
	return cmd
}

func newVMDeleteCmd(e *env) *cobra.Command {
	return &cobra.Command{
		Use: "delete NAME", Short: "Delete a stopped VM and the disks Godwit created for it", Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := e.client()
			if err != nil {
				return err
			}
			if err := c.Do(cmd.Context(), http.MethodDelete, "/api/v1/vms/"+args[0], nil, nil); err != nil {
				return fmt.Errorf("delete VM %s: %w", args[0], err)
			}
			if e.output == "json" {
				return printJSON(e.out, map[string]string{"deleted": args[0]})
			}
			fmt.Fprintf(e.out, "VM %s deleted\n", args[0])
			return nil
		},
	}
}

func newVMConsoleCmd(e *env) *cobra.Command {
	var follow bool
	var tail int
	cmd := &cobra.Command{
		Use: "console NAME", Aliases: []string{"log"}, Short: "Print a VM's serial console log", Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := e.client()
			if err != nil {
				return err
			}
			var last []byte
			for {
				var b []byte
				if err := c.Do(cmd.Context(), http.MethodGet, fmt.Sprintf("/api/v1/vms/%s/console?tail=%d", args[0], tail), nil, &b); err != nil {
					return fmt.Errorf("console of VM %s: %w", args[0], err)
				}
				_, _ = e.out.Write(newPart(last, b))
				last = b
				if !follow {
					return nil
				}
				select {
				case <-cmd.Context().Done():
					return nil
				case <-time.After(500 * time.Millisecond):
				}
			}
		},
	}
	cmd.Flags().BoolVarP(&follow, "follow", "f", false, "keep printing new output")
	cmd.Flags().IntVar(&tail, "tail", 64<<10, "print at most this many bytes from the end")
	return cmd
}

// newPart returns what cur adds after prev, assuming both are tails of the same log.
func newPart(prev, cur []byte) []byte {
	if len(prev) == 0 {
		return cur
	}
	// Find the longest suffix of prev that is a prefix of cur.
	for k := min(len(prev), len(cur)); k > 0; k-- {
		if bytes.Equal(prev[len(prev)-k:], cur[:k]) {
			return cur[k:]
		}
	}
	return cur
}
