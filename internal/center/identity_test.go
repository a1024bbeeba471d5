package center

import (
	"context"
	"strings"
	"testing"

	"github.com/godwit/godwit/internal/api"
	"github.com/godwit/godwit/internal/pki"
)

// TestHostIdentity: host names are canonical lower case and never the center's, in any
// case, so that no certificate the CA issues passes for the center's or another host's
// under TLS's case-blind matching; a join under the name of a host that holds a valid
// certificate is refused unless an administrator bound the token to that name.
func TestHostIdentity(t *testing.T) {
	c := newAuthCenter(t, t.TempDir())
	ctx := context.Background()
	joinAs := func(name string, bound string) error {
		t.Helper()
		tok, err := c.createJoinToken(ctx, api.CreateJoinTokenRequest{Host: bound}, "admin")
		if err != nil {
			return err
		}
		key, err := pki.NewKey()
		if err != nil {
			t.Fatal(err)
		}
		csr, err := pki.NewCSR(key, name)
		if err != nil {
			t.Fatal(err)
		}
		_, err = c.join(ctx, api.JoinRequest{Name: name, Token: tok.Secret, CSR: string(csr)})
		return err
	}
	for _, c := range []struct{ name, says string }{
		{"GODWIT-CENTER", "the center's own name"},
		{"Godwit-Center", "the center's own name"},
		{"godwit-center", "the center's own name"},
		{"HOST-1", `use "host-1"`},
		{"Host-1", `use "host-1"`},
	} {
		if err := joinAs(c.name, ""); err == nil || !strings.Contains(err.Error(), c.says) {
			t.Errorf("join as %s: %v; want a refusal saying %q", c.name, err, c.says)
		}
	}
	if _, err := c.createJoinToken(ctx, api.CreateJoinTokenRequest{Host: "GODWIT-CENTER"}, "admin"); err == nil {
		t.Error("a join token bound to GODWIT-CENTER was created")
	}

	if err := joinAs("host-1", ""); err != nil {
		t.Fatalf("the first join of host-1: %v", err)
	}
	first, err := c.validHostCert(ctx, "host-1", c.now())
	if err != nil || first == nil {
		t.Fatalf("host-1's certificate: %v %v", first, err)
	}
	err = joinAs("host-1", "")
	if se, ok := err.(*api.StatusError); !ok || se.Status != 409 || !strings.Contains(se.Msg, "already holds a valid certificate") {
		t.Errorf("a second join as host-1 with a token for any name: %v; want 409", err)
	}
	if still, _ := c.validHostCert(ctx, "host-1", c.now()); still == nil || still.Serial != first.Serial {
		t.Errorf("the refused join changed host-1's certificate: %+v", still)
	}
	// An administrator means it: a token bound to host-1 replaces the certificate.
	if err := joinAs("host-1", "host-1"); err != nil {
		t.Fatalf("a join with a token bound to host-1: %v", err)
	}
	if now, _ := c.validHostCert(ctx, "host-1", c.now()); now == nil || now.Serial == first.Serial {
		t.Errorf("after a bound join host-1 holds %+v; want a new certificate", now)
	}
	if !c.isRevoked(first.Serial) {
		t.Error("the superseded certificate is not refused on the center's own connections")
	}

	// What a host reports of itself: an agent URL that is not https is refused.
	for _, url := range []string{"http://198.18.1.11:7700", "ftp://x", ""} {
		_, err := c.heartbeat(ctx, api.HostFacts{Name: "host-1", AgentURL: url})
		if se, ok := err.(*api.StatusError); !ok || se.Status != 400 || !strings.Contains(se.Msg, "https://") {
			t.Errorf("a heartbeat with agent_url %q: %v; want 400 asking for https://", url, err)
		}
	}
	if _, err := c.heartbeat(ctx, api.HostFacts{Name: "HOST-1", AgentURL: "https://198.18.1.11:7700"}); err == nil {
		t.Error("a heartbeat in the name HOST-1 was accepted")
	}
}
