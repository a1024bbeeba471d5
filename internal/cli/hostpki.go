package cli

import (
	"fmt"
	"net/http"
	"time"

	"github.com/spf13/cobra"

	"github.com/godwit/godwit/internal/api"
)

// addHostPKICmds adds join tokens and certificates to `godwit host`.
func addHostPKICmds(e *env, host *cobra.Command) {
	jt := &cobra.Command{Use: "join-token", Short: "One-time tokens with which new hosts join the cluster"}
	var forHost, expires string
	create := &cobra.Command{
		Use:   "create",
		Short: "Create a one-time join token and print the agent command that uses it",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			c, err := e.client()
			if err != nil {
				return err
			}
			var t api.JoinToken
			if err := c.Do(cmd.Context(), http.MethodPost, "/api/v1/join-tokens", api.CreateJoinTokenRequest{Host: forHost, Expires: expires}, &t); err != nil {
				return err
			}
			if e.output == "json" {
				return printJSON(e.out, t)
			}
			name := t.Host
			if name == "" {
				name = "NAME"
			}
			fmt.Fprintf(e.out, "Join token %s (works once, until %s):\n  %s\nCA fingerprint:\n  %s\nOn the new host (the token in the environment, not on the command line, where every user sees it):\n  GODWIT_JOIN_TOKEN=%s godwit agent --name %s --center https://CENTER:7443 --ca-fingerprint %s ...\n",
				t.ID, t.Expires.UTC().Format(time.RFC3339), t.Secret, t.CAFingerprint, t.Secret, name, t.CAFingerprint)
			return nil
		},
	}
	create.Flags().StringVar(&forHost, "host", "", "the only host name that may join with it (default: any)")
	create.Flags().StringVar(&expires, "expires", "1h", "how long the token stays valid (at most 7 days)")
	jt.AddCommand(create)
	jt.AddCommand(&cobra.Command{
		Use: "list", Short: "List join tokens", Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return fetchAndPrint(cmd.Context(), e, "/api/v1/join-tokens", func(ts []api.JoinToken) error {
				t := newTable("ID", "HOST", "CREATED BY", "EXPIRES", "STATE")
				now := time.Now()
				for _, j := range ts {
					state := "unused"
					switch {
					case j.Used != nil:
						state = "used by " + j.UsedBy + " at " + j.Used.UTC().Format(time.RFC3339)
					case j.Revoked != nil:
						state = "revoked"
					case !now.Before(j.Expires):
						state = "expired"
					}
					t.row(j.ID, orDash(j.Host), j.CreatedBy, j.Expires.UTC().Format(time.RFC3339), state)
				}
				return t.print(e.out)
			})
		},
	})
	jt.AddCommand(&cobra.Command{
		Use: "revoke ID", Short: "Revoke an unused join token", Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := e.client()
			if err != nil {
				return err
			}
			if err := c.Do(cmd.Context(), http.MethodDelete, "/api/v1/join-tokens/"+args[0], nil, nil); err != nil {
				return err
			}
			fmt.Fprintf(e.out, "Join token %s revoked.\n", args[0])
			return nil
		},
	})
	host.AddCommand(jt)
	host.AddCommand(&cobra.Command{
		Use: "certificates", Short: "List the certificates the cluster's CA issued", Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return fetchAndPrint(cmd.Context(), e, "/api/v1/certificates", func(cs []api.Certificate) error {
				t := newTable("SERIAL", "NAME", "KIND", "NOT AFTER", "REVOKED")
				for _, x := range cs {
					rev := "-"
					if x.Revoked != nil {
						rev = x.Revoked.UTC().Format(time.RFC3339) + " (" + x.RevokedReason + ")"
					}
					t.row(x.Serial, x.Name, x.Kind, x.NotAfter.UTC().Format(time.RFC3339), rev)
				}
				return t.print(e.out)
			})
		},
	})
	var reason string
	revoke := &cobra.Command{
		Use: "revoke NAME", Short: "Revoke a host's certificates: the cluster refuses it until it joins again", Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := e.client()
			if err != nil {
				return err
			}
			var cs []api.Certificate
			if err := c.Do(cmd.Context(), http.MethodPost, "/api/v1/hosts/"+args[0]+"/revoke", api.RevokeRequest{Reason: reason}, &cs); err != nil {
				return err
			}
			if e.output == "json" {
				return printJSON(e.out, cs)
			}
			for _, x := range cs {
				fmt.Fprintf(e.out, "Revoked certificate %s of %s.\n", x.Serial, x.Name)
			}
			return nil
		},
	}
	revoke.Flags().StringVar(&reason, "reason", "", "why, for the audit trail")
	host.AddCommand(revoke)

	host.AddCommand(newMaintenanceCmd(e))
}
