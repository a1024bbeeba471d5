package cli

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"strings"
	"time"

	"github.com/spf13/cobra"
	"golang.org/x/term"

	"github.com/godwit/godwit/internal/api"
)

// newLoginCmd is `godwit login`: it trades a user's password for an API token and keeps
// the token in the CLI's config, in the context of that center.
func newLoginCmd(e *env) *cobra.Command {
	var user, ctxName string
	cmd := &cobra.Command{
		Use:   "login --user NAME",
		Short: "Log in to a center and keep the API token for the CLI",
		Long: `Log in to a center with a user's password and keep the API token it issues
(valid for 12 hours) in the CLI's config file (mode 0600).

For an https:// center the CLI must trust the center's CA: --ca-file, or
--ca-fingerprint, or — the first time, at a terminal — confirm the fingerprint it shows
(trust on first use). The CA is kept with the context; later calls verify against it.

The password is asked for when standard input is a terminal; otherwise the first line
of standard input is the password (echo "$PW" | godwit login --user NAME).

The token is stored in the current context when that context is the center logged in
to (or no --server is given); otherwise in a context named after the server (or
--context), which becomes current.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if user == "" {
				return errors.New("say who logs in: --user NAME")
			}
			path := e.configFile()
			cfg, err := loadConfig(path)
			if err != nil {
				return err
			}
			server := e.server
			if server == "" {
				server = os.Getenv("GODWIT_SERVER")
			}
			name := ctxName
			if server == "" {
				cur, ok := cfg.Contexts[cfg.Current]
				if !ok {
					return errors.New("no center is configured: pass --server URL or run `godwit lab up`")
				}
				server = cur.Server
			}
			if name == "" {
				if cur, ok := cfg.Contexts[cfg.Current]; ok && cur.Server == server {
					name = cfg.Current
				} else {
					name = contextNameFor(server)
				}
			}
			var caPEM string
			var opts []api.ClientOption
			if isHTTPS(server) {
				if caPEM, err = e.knownCA(cmd.Context(), cfg, server, cmd.InOrStdin()); err != nil {
					return err
				}
				tc, err := tlsConfig(caPEM)
				if err != nil {
					return err
				}
				opts = append(opts, api.WithTLS(tc))
			}
			pw, err := readPassword(cmd.InOrStdin(), e.errOut, user)
			if err != nil {
				return err
			}
			c, err := api.NewClient(server, e.timeout, opts...)
			if err != nil {
				return err
			}
			var tok api.Token
			if err := c.Do(cmd.Context(), http.MethodPost, "/api/v1/login", api.LoginRequest{User: user, Password: pw}, &tok); err != nil {
				return fmt.Errorf("log in to %s: %w", server, err)
			}
			cfg.Contexts[name] = contextEntry{Server: server, Token: tok.Secret, CA: caPEM}
			cfg.Current = name
			if err := saveConfig(path, cfg); err != nil {
				return err
			}
			exp := "never"
			if tok.Expires != nil {
				exp = tok.Expires.Local().Format(time.RFC3339)
			}
			fmt.Fprintf(e.out, "Logged in to %s as %s (%s); the token (expires %s) is kept in context %s.\n", server, tok.User, tok.Role, exp, name)
			return nil
		},
	}
	cmd.Flags().StringVar(&user, "user", "", "the user to log in as")
	cmd.Flags().StringVar(&ctxName, "context", "", "the context to keep the token in (default: see above)")
	return cmd
}

// contextNameFor names a context after a server's host and port.
func contextNameFor(server string) string {
	if u, err := url.Parse(server); err == nil && u.Host != "" {
		return u.Host
	}
	return server
}

// readPassword reads a password: from the terminal without echo when in is one, else the
// first line of in.
func readPassword(in io.Reader, prompt io.Writer, user string) (string, error) {
	if f, ok := in.(*os.File); ok && term.IsTerminal(int(f.Fd())) {
		fmt.Fprintf(prompt, "Password for %s: ", user)
		b, err := term.ReadPassword(int(f.Fd()))
		fmt.Fprintln(prompt)
		if err != nil {
			return "", fmt.Errorf("read the password: %w", err)
		}
		return string(b), nil
	}
	line, err := bufio.NewReader(in).ReadString('\n')
	if err != nil && !(errors.Is(err, io.EOF) && line != "") {
		return "", fmt.Errorf("read the password from standard input (its first line): %w", err)
	}
	pw := strings.TrimRight(line, "\r\n")
	if pw == "" {
		return "", errors.New("the password is empty: give it on the first line of standard input, or run from a terminal")
	}
	return pw, nil
}

// newUserCmd is `godwit user list|create|delete`.
func newUserCmd(e *env) *cobra.Command {
	cmd := &cobra.Command{Use: "user", Short: "Manage the center's users (admin)"}
	cmd.AddCommand(&cobra.Command{
		Use: "list", Short: "List the users", Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			c, err := e.client()
			if err != nil {
				return err
			}
			var us []api.User
			if err := c.Do(cmd.Context(), http.MethodGet, "/api/v1/users", nil, &us); err != nil {
				return err
			}
			if e.output == "json" {
				return printJSON(e.out, us)
			}
			t := newTable("NAME", "ROLE", "CREATED")
			for _, u := range us {
				t.row(u.Name, u.Role, u.Created.Local().Format(time.RFC3339))
			}
			return t.print(e.out)
		},
	})
	var role string
	create := &cobra.Command{
		Use:   "create NAME --role admin|operator|viewer",
		Short: "Create a user; the password is read like godwit login reads it",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if role == "" {
				return errors.New("give the user a role: --role admin, operator or viewer")
			}
			c, err := e.client()
			if err != nil {
				return err
			}
			pw, err := readPassword(cmd.InOrStdin(), e.errOut, args[0])
			if err != nil {
				return err
			}
			var u api.User
			if err := c.Do(cmd.Context(), http.MethodPost, "/api/v1/users", api.CreateUserRequest{Name: args[0], Role: role, Password: pw}, &u); err != nil {
				return err
			}
			if e.output == "json" {
				return printJSON(e.out, u)
			}
			fmt.Fprintf(e.out, "Created user %s (%s).\n", u.Name, u.Role)
			return nil
		},
	}
	create.Flags().StringVar(&role, "role", "", "admin, operator or viewer")
	cmd.AddCommand(create)
	cmd.AddCommand(&cobra.Command{
		Use: "delete NAME", Short: "Delete a user and its tokens", Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := e.client()
			if err != nil {
				return err
			}
			if err := c.Do(cmd.Context(), http.MethodDelete, "/api/v1/users/"+url.PathEscape(args[0]), nil, nil); err != nil {
				return err
			}
			fmt.Fprintf(e.out, "Deleted user %s.\n", args[0])
			return nil
		},
	})
	return cmd
}

// newTokenCmd is `godwit token create|revoke`.
func newTokenCmd(e *env) *cobra.Command {
	cmd := &cobra.Command{Use: "token", Short: "Create and revoke API tokens"}
	var user, expires string
	create := &cobra.Command{
		Use:   "create [--user NAME] [--expires 12h|30d]",
		Short: "Create an API token (for yourself, or as admin for another user); it is shown once",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			c, err := e.client()
			if err != nil {
				return err
			}
			var tok api.Token
			if err := c.Do(cmd.Context(), http.MethodPost, "/api/v1/tokens", api.CreateTokenRequest{User: user, Expires: expires}, &tok); err != nil {
				return err
			}
			if e.output == "json" {
				return printJSON(e.out, tok)
			}
			exp := "never"
			if tok.Expires != nil {
				exp = tok.Expires.Local().Format(time.RFC3339)
			}
			fmt.Fprintf(e.out, "Token %s for %s (%s), expires %s. It is shown only now:\n%s\n", tok.ID, tok.User, tok.Role, exp, tok.Secret)
			return nil
		},
	}
	create.Flags().StringVar(&user, "user", "", "the user the token acts as (default: you)")
	create.Flags().StringVar(&expires, "expires", "", "lifetime: 12h (default) or 30d; at most 90d (365d for an admin)")
	cmd.AddCommand(create)
	cmd.AddCommand(&cobra.Command{
		Use: "revoke ID", Short: "Revoke an API token", Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := e.client()
			if err != nil {
				return err
			}
			if err := c.Do(cmd.Context(), http.MethodDelete, "/api/v1/tokens/"+url.PathEscape(args[0]), nil, nil); err != nil {
				return err
			}
			fmt.Fprintf(e.out, "Revoked token %s.\n", args[0])
			return nil
		},
	})
	return cmd
}
