package cli

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/spf13/cobra"

	"github.com/godwit/godwit/internal/lab"
)

func labContext(name string) string { return "lab-" + name }

// labName is the --name flag when given, else the lab of the current context, else "lab".
func (e *env) labName(cmd *cobra.Command, flag string) string {
	if cmd.Flags().Changed("name") {
		return flag
	}
	if cfg, err := loadConfig(e.configFile()); err == nil && strings.HasPrefix(cfg.Current, "lab-") {
		return strings.TrimPrefix(cfg.Current, "lab-")
	}
	return flag
}

// defaultGuestDir finds the test guest image: $GODWIT_GUEST_DIR, or build/guest next to
// the binary's bin/ folder or in the working directory.
func defaultGuestDir() string {
	if d := os.Getenv("GODWIT_GUEST_DIR"); d != "" {
		return d
	}
	var cands []string
	if exe, err := os.Executable(); err == nil {
		cands = append(cands, filepath.Join(filepath.Dir(filepath.Dir(exe)), "build", "guest"))
	}
	if wd, err := os.Getwd(); err == nil {
		cands = append(cands, filepath.Join(wd, "build", "guest"))
	}
	for _, c := range cands {
		if _, err := os.Stat(filepath.Join(c, "vmlinuz")); err == nil {
			return c
		}
	}
	return ""
}

func newLabCmd(e *env) *cobra.Command {
	cmd := &cobra.Command{Use: "lab", Short: "A whole cluster on this machine: hosts, a switch, a center and a client in network namespaces"}
	var o lab.Options
	var cpuLimits []string
	up := &cobra.Command{
		Use: "up", Short: "Start a lab and make it the CLI's current context", Args: cobra.NoArgs,
		Example: "  godwit lab up --hosts 3\n  godwit lab up --cpu-limit host-2=Nehalem",
		RunE: func(cmd *cobra.Command, _ []string) error {
			var err error
			if o.CPULimits, err = namedPairs("--cpu-limit", "HOST=MODEL (e.g. host-2=Nehalem)", cpuLimits); err != nil {
				return err
			}
			o.Root = lab.DefaultRoot()
			o.Log = e.logger()
			if o.GuestDir == "" {
				o.GuestDir = defaultGuestDir()
			}
			if o.GuestDir == "" {
				fmt.Fprintln(e.errOut, "warning: no test guest image found (run `make guest`); the lab's datastore will have no images")
			}
			l, err := lab.Up(cmd.Context(), o)
			if err != nil {
				return err
			}
			if err := e.setContext(labContext(l.Name), "unix://"+l.CenterSocket, ""); err != nil {
				return err
			}
			if e.output == "json" {
				return printJSON(e.out, l)
			}
			fmt.Fprintf(e.out, "lab %s is up: %d hosts on %s, datastore %s\n", l.Name, len(l.Hosts), l.Subnet, l.Datastore)
			fmt.Fprintf(e.out, "the CLI now talks to it (context %s); try `godwit host list`\n", labContext(l.Name))
			return nil
		},
	}
	up.Flags().StringVar(&o.Name, "name", "lab", "lab name (up to 8 lowercase letters and digits)")
	up.Flags().IntVar(&o.Hosts, "hosts", 2, "number of hosts (1-8)")
	up.Flags().StringVar(&o.GuestDir, "guest-dir", "", "test guest image directory (default: build/guest)")
	up.Flags().StringArrayVar(&o.CenterArgs, "center-arg", nil, "a further flag for the center, e.g. --center-arg=--max-migrations-per-host=2 (repeatable)")
	up.Flags().StringArrayVar(&cpuLimits, "cpu-limit", nil, "HOST=MODEL: that host advertises only what QEMU CPU model MODEL offers, as an older generation would (repeatable)")

	var downName string
	down := &cobra.Command{
		Use: "down", Short: "Remove a lab and everything it made", Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			downName = e.labName(cmd, downName)
			if err := lab.Down(cmd.Context(), lab.DefaultRoot(), downName); err != nil {
				return err
			}
			if err := e.dropContext(labContext(downName)); err != nil {
				return err
			}
			fmt.Fprintf(e.out, "lab %s removed\n", downName)
			return nil
		},
	}
	down.Flags().StringVar(&downName, "name", "lab", "lab name (default: the current context's lab)")

	var execName string
	execCmd := &cobra.Command{
		Use:   "exec TARGET -- CMD [ARGS...]",
		Short: "Run a command in a lab namespace: client, switch, center or host-N",
		Args:  cobra.MinimumNArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			l, err := lab.Load(lab.DefaultRoot(), e.labName(cmd, execName))
			if err != nil {
				return err
			}
			code, err := l.Exec(cmd.Context(), args[0], args[1:], os.Stdin, e.out, e.errOut)
			if err != nil {
				return err
			}
			if code != 0 {
				return &exitError{code: code, err: fmt.Errorf("%s exited with status %d", strings.Join(args[1:], " "), code)}
			}
			return nil
		},
	}
	execCmd.Flags().StringVar(&execName, "name", "lab", "lab name (default: the current context's lab)")

	list := &cobra.Command{
		Use: "list", Short: "List the labs on this machine", Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			labs, err := lab.List(lab.DefaultRoot())
			if err != nil {
				return err
			}
			if e.output == "json" {
				return printJSON(e.out, labs)
			}
			t := newTable("NAME", "STATE", "HOSTS", "SUBNET", "CENTER", "DIR")
			for _, l := range labs {
				t.row(l.Name, l.State, fmt.Sprint(len(l.Hosts)), l.Subnet, l.CenterURL, l.Dir)
			}
			return t.print(e.out)
		},
	}

	var restartName string
	restart := &cobra.Command{
		Use: "restart TARGET", Short: "Restart a lab daemon (center or host-N) without touching its VMs", Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			l, err := lab.Load(lab.DefaultRoot(), e.labName(cmd, restartName))
			if err != nil {
				return err
			}
			if err := l.RestartDaemon(cmd.Context(), args[0]); err != nil {
				return err
			}
			fmt.Fprintf(e.out, "%s restarted\n", args[0])
			return nil
		},
	}
	restart.Flags().StringVar(&restartName, "name", "lab", "lab name (default: the current context's lab)")

	var linkName, linkRate string
	var linkDown, linkUp bool
	link := &cobra.Command{
		Use:   "link TARGET --down | --up | --rate RATE",
		Short: "Cut, restore or shape the link between a lab target (host-N, center, client) and the switch",
		Long: `Pull the cable of a lab target (--down) or plug it back in (--up): the switch's port
toward it goes down, so its traffic is dropped both ways and open connections stall.

--rate shapes the link in both directions like an Ethernet link of that speed (tc tbf on
the switch's port toward the target and on the target's own interface), e.g. --rate
1gbit or --rate 100mbit; --rate off removes the shaping.`,
		Example: "  godwit lab link host-2 --down\n  godwit lab link host-2 --up\n  godwit lab link host-1 --rate 1gbit\n  godwit lab link host-1 --rate off",
		Args:    cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			l, err := lab.Load(lab.DefaultRoot(), e.labName(cmd, linkName))
			if err != nil {
				return err
			}
			target := args[0]
			switch {
			case linkDown, linkUp:
				if err := l.SetLink(cmd.Context(), target, linkUp); err != nil {
					return err
				}
				if linkUp {
					fmt.Fprintf(e.out, "link of %s restored\n", target)
				} else {
					fmt.Fprintf(e.out, "link of %s cut\n", target)
				}
			default:
				if linkRate == "" {
					return fmt.Errorf("--rate needs a rate such as 1gbit or 100mbit, or off")
				}
				if err := l.ShapeLink(cmd.Context(), target, linkRate); err != nil {
					return err
				}
				if strings.EqualFold(linkRate, "off") {
					fmt.Fprintf(e.out, "link of %s is no longer shaped\n", target)
				} else {
					fmt.Fprintf(e.out, "link of %s shaped to %s both ways\n", target, linkRate)
				}
			}
			return nil
		},
	}
	link.Flags().StringVar(&linkName, "name", "lab", "lab name (default: the current context's lab)")
	link.Flags().BoolVar(&linkDown, "down", false, "cut the link")
	link.Flags().BoolVar(&linkUp, "up", false, "restore the link")
	link.Flags().StringVar(&linkRate, "rate", "", "shape the link to this rate (e.g. 1gbit, 100mbit), or off")
	link.MarkFlagsMutuallyExclusive("down", "up", "rate")
	link.MarkFlagsOneRequired("down", "up", "rate")
	cmd.AddCommand(up, down, execCmd, list, restart, link)
	return cmd
}
