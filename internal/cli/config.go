package cli

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"

	"github.com/spf13/cobra"

	"github.com/godwit/godwit/internal/pki"
)

// config is the CLI's file: named contexts (center addresses) and the current one.
type config struct {
	Current  string                  `json:"current"`
	Contexts map[string]contextEntry `json:"contexts"`
}

// contextEntry is one center: its URL and, after `godwit login`, the API token the CLI
// sends it (the file is mode 0600).
type contextEntry struct {
	Server string `json:"server"`
	Token  string `json:"token,omitempty"`
	// CA is the center's CA certificate (PEM), trusted for an https:// server.
	CA string `json:"ca,omitempty"`
}

func (e *env) configFile() string {
	if e.configPath != "" {
		return e.configPath
	}
	if p := os.Getenv("GODWIT_CONFIG"); p != "" {
		return p
	}
	dir, err := os.UserConfigDir()
	if err != nil {
		dir = "/root/.config"
	}
	return filepath.Join(dir, "godwit", "config.json")
}

func loadConfig(path string) (config, error) {
	cfg := config{Contexts: map[string]contextEntry{}}
	b, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		return cfg, nil
	}
	if err != nil {
		return cfg, fmt.Errorf("read CLI config: %w", err)
	}
	if err := json.Unmarshal(b, &cfg); err != nil {
		return cfg, fmt.Errorf("CLI config %s is not valid JSON (%v); fix or delete it", path, err)
	}
	if cfg.Contexts == nil {
		cfg.Contexts = map[string]contextEntry{}
	}
	return cfg, nil
}

func saveConfig(path string, cfg config) error {
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return fmt.Errorf("save CLI config: %w", err)
	}
	b, _ := json.MarshalIndent(cfg, "", "  ")
	if err := pki.WriteFileAtomic(path, b, 0o600); err != nil {
		return fmt.Errorf("save CLI config: %w", err)
	}
	return nil
}

// setContext records a context and makes it current; caPEM is the CA trusted for an
// https:// server.
func (e *env) setContext(name, server, caPEM string) error {
	path := e.configFile()
	cfg, err := loadConfig(path)
	if err != nil {
		return err
	}
	cfg.Contexts[name] = contextEntry{Server: server, CA: caPEM}
	cfg.Current = name
	return saveConfig(path, cfg)
}

// dropContext removes a context; if it was current, none is.
func (e *env) dropContext(name string) error {
	path := e.configFile()
	cfg, err := loadConfig(path)
	if err != nil {
		return err
	}
	if _, ok := cfg.Contexts[name]; !ok {
		return nil
	}
	delete(cfg.Contexts, name)
	if cfg.Current == name {
		cfg.Current = ""
	}
	return saveConfig(path, cfg)
}

func newContextCmd(e *env) *cobra.Command {
	cmd := &cobra.Command{Use: "context", Short: "Choose which center the CLI talks to"}
	cmd.AddCommand(&cobra.Command{
		Use: "list", Short: "List the contexts", Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			cfg, err := loadConfig(e.configFile())
			if err != nil {
				return err
			}
			if e.output == "json" {
				shown := config{Current: cfg.Current, Contexts: map[string]contextEntry{}}
				for n, c := range cfg.Contexts {
					if c.Token != "" {
						c.Token = "[hidden]"
					}
					if ca, err := pki.ParseCertPEM([]byte(c.CA)); err == nil {
						c.CA = pki.Fingerprint(ca.Raw) // the fingerprint says more than the PEM
					}
					shown.Contexts[n] = c
				}
				return printJSON(e.out, shown)
			}
			var names []string
			for n := range cfg.Contexts {
				names = append(names, n)
			}
			sort.Strings(names)
			t := newTable("CURRENT", "NAME", "SERVER")
			for _, n := range names {
				cur := ""
				if n == cfg.Current {
					cur = "*"
				}
				t.row(cur, n, cfg.Contexts[n].Server)
			}
			return t.print(e.out)
		},
	})
	cmd.AddCommand(&cobra.Command{
		Use: "use NAME", Short: "Make a context current", Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			cfg, err := loadConfig(e.configFile())
			if err != nil {
				return err
			}
			if _, ok := cfg.Contexts[args[0]]; !ok {
				return fmt.Errorf("no context named %s; `godwit context list` shows them", args[0])
			}
			cfg.Current = args[0]
			return saveConfig(e.configFile(), cfg)
		},
	})
	add := &cobra.Command{
		Use:   "add NAME SERVER",
		Short: "Add a context (a center's URL) and make it current",
		Long: `Add a context (a center's URL) and make it current. For an https:// center, the CLI
must trust the center's CA: pass --ca-file or --ca-fingerprint, or confirm the
fingerprint at the terminal (trust on first use).`,
		Args: cobra.ExactArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			var caPEM string
			if isHTTPS(args[1]) {
				var err error
				if caPEM, err = e.trustCenter(cmd.Context(), args[1], cmd.InOrStdin()); err != nil {
					return err
				}
			}
			return e.setContext(args[0], args[1], caPEM)
		},
	}
	cmd.AddCommand(add)
	return cmd
}
