// Package cli is the godwit command line: the daemons (center, agent), the lab, and the
// client commands that talk to the center's REST API.
package cli

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/spf13/cobra"

	"github.com/godwit/godwit/internal/api"
)

// Version is the build's version, set with -ldflags at build time.
var Version = "dev"

// env carries what every command needs: where to print, the config, the global flags.
type env struct {
	out, errOut io.Writer
	server      string
	output      string
	configPath  string
	timeout     time.Duration
	// caFile and caFingerprint say which CA to trust for an https:// center (trust.go).
	caFile, caFingerprint string
}

// Main runs the CLI with args and returns the exit code.
func Main(args []string) int {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	e := &env{out: os.Stdout, errOut: os.Stderr}
	root := newRoot(e)
	root.SetArgs(args)
	if err := root.ExecuteContext(ctx); err != nil {
		fmt.Fprintln(e.errOut, "error:", explainTLS(err))
		var ee *exitError
		if errors.As(err, &ee) {
			return ee.code
		}
		return 1
	}
	return 0
}

// exitError carries a specific exit code (lab exec passes its command's code through).
type exitError struct {
	code int
	err  error
}

func (e *exitError) Error() string { return e.err.Error() }

func newRoot(e *env) *cobra.Command {
	root := &cobra.Command{
		Use:           "godwit",
		Short:         "Godwit: live migration of running VMs between hosts, and the management around it",
		SilenceUsage:  true,
		SilenceErrors: true,
		Version:       Version,
	}
	root.SetOut(e.out)
	root.SetErr(e.errOut)
	pf := root.PersistentFlags()
	pf.StringVar(&e.server, "server", "", "center URL (http://HOST:PORT or unix:///path.sock); default: $GODWIT_SERVER or the current context")
	pf.StringVarP(&e.output, "output", "o", "table", "output format: table or json")
	pf.StringVar(&e.configPath, "config", "", "CLI config file (default: $GODWIT_CONFIG or ~/.config/godwit/config.json)")
	pf.DurationVar(&e.timeout, "timeout", 5*time.Minute, "how long to wait for the center to answer")
	pf.StringVar(&e.caFile, "ca-file", "", "trust this CA certificate for an https:// center (its DATA_DIR/pki/ca.crt)")
	pf.StringVar(&e.caFingerprint, "ca-fingerprint", "", "trust an https:// center whose CA has this fingerprint (sha256:…)")
	root.PersistentPreRunE = func(cmd *cobra.Command, _ []string) error {
		if e.output != "table" && e.output != "json" {
			return fmt.Errorf("--output must be table or json, not %q", e.output)
		}
		return nil
	}
	root.AddCommand(newCenterCmd(e), newAgentCmd(e), newHostCmd(e), newVMCmd(e), newLabCmd(e), newContextCmd(e), newProbeCmd(e), newMigrationCmd(e), newAuditCmd(e), newTaskCmd(e),
		newLoginCmd(e), newUserCmd(e), newTokenCmd(e), newScheduleCmd(e), newPlanCmd(e), newClusterCmd(e))
	return root
}

// client returns an API client for the center chosen by --server, $GODWIT_SERVER or the
// current context. It sends the token of $GODWIT_TOKEN, else the one `godwit login`
// stored in the current context when that context is the center chosen.
func (e *env) client() (*api.Client, error) {
	server, token, caPEM, err := e.target()
	if err != nil {
		return nil, err
	}
	var opts []api.ClientOption
	if isHTTPS(server) {
		if file, err := e.caFromFile(); err != nil {
			return nil, err
		} else if file != "" {
			caPEM = file
		}
		if caPEM == "" {
			return nil, fmt.Errorf("the CLI does not trust the center at %s yet: run `godwit login --server %s` or `godwit context add NAME %s` once (they ask you to confirm its CA), or pass --ca-file",
				hostOf(server), server, server)
		}
		cfg, err := tlsConfig(caPEM)
		if err != nil {
			return nil, err
		}
		opts = append(opts, api.WithTLS(cfg))
	}
	c, err := api.NewClient(server, e.timeout, opts...)
	if err != nil {
		return nil, err
	}
	if token != "" {
		c = c.WithHeader("Authorization", "Bearer "+token)
	}
	return c, nil
}

// target returns the center's URL, the token to send it (empty: none), and the CA the
// CLI trusts for it (empty: none kept).
func (e *env) target() (server, token, caPEM string, err error) {
	server = e.server
	if server == "" {
		server = os.Getenv("GODWIT_SERVER")
	}
	var cur contextEntry
	var ok bool
	cfg, cerr := loadConfig(e.configFile())
	if cerr == nil {
		cur, ok = cfg.Contexts[cfg.Current]
	} else if server == "" {
		return "", "", "", cerr
	}
	if server == "" {
		if !ok {
			return "", "", "", errors.New("no center is configured: run `godwit lab up`, pass --server, or set GODWIT_SERVER")
		}
		server = cur.Server
	}
	// The CA comes from any context of this server; the token only from the current one.
	for _, c := range cfg.Contexts {
		if c.Server == server && c.CA != "" {
			caPEM = c.CA
		}
	}
	if ok && cur.Server == server && cur.CA != "" {
		caPEM = cur.CA
	}
	if t := os.Getenv("GODWIT_TOKEN"); t != "" {
		return server, t, caPEM, nil
	}
	if ok && cur.Server == server {
		token = cur.Token
	}
	return server, token, caPEM, nil
}

func (e *env) logger() *slog.Logger {
	return slog.New(slog.NewTextHandler(e.errOut, &slog.HandlerOptions{Level: slog.LevelInfo}))
}
