package cli

import (
	"bufio"
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"strings"
	"time"

	"golang.org/x/term"

	"github.com/godwit/godwit/internal/api"
	"github.com/godwit/godwit/internal/pki"
)

// Trusting the center.
//
// The center serves TLS with a certificate from its own CA. The CLI trusts that CA in one
// of three ways, and keeps it in the context (the config file is mode 0600), so that
// every later call verifies the center against it:
//   - --ca-file PATH: the CA certificate, copied from the center's DATA_DIR/pki/ca.crt;
//   - --ca-fingerprint sha256:…: the center's CA is fetched and accepted only if it has
//     this fingerprint (what `godwit host join-token create` prints, or the center's log);
//   - neither, at a terminal: trust on first use — the fingerprint is shown and the user
//     confirms it, as ssh does for a new host key.
//
// A center whose certificate no longer verifies against the CA kept is refused, with a
// sentence that says what may have happened.

// isHTTPS reports whether server is an https:// URL.
func isHTTPS(server string) bool { return strings.HasPrefix(server, "https://") }

// tlsConfig is the TLS configuration for calling server, trusting the CA in caPEM.
func tlsConfig(caPEM string) (*tls.Config, error) {
	ca, err := pki.ParseCertPEM([]byte(caPEM))
	if err != nil {
		return nil, fmt.Errorf("the CA kept for this center: %w", err)
	}
	pool := x509.NewCertPool()
	pool.AddCert(ca)
	c := pki.ClientTLS(pool, "", nil)
	// Whatever address the CLI dials, the certificate must be the center's own: a host's
	// certificate from the same CA is not the center.
	c.VerifyConnection = pki.RequirePeer(pki.CenterName, nil)
	return c, nil
}

// caFromFlags returns the CA the --ca-file flag names, or "".
func (e *env) caFromFile() (string, error) {
	if e.caFile == "" {
		return "", nil
	}
	b, err := os.ReadFile(e.caFile)
	if err != nil {
		return "", fmt.Errorf("--ca-file: %w", err)
	}
	if _, err := pki.ParseCertPEM(b); err != nil {
		return "", fmt.Errorf("--ca-file %s: %w", e.caFile, err)
	}
	return string(b), nil
}

// trustCenter decides which CA to trust for server when no context holds one yet:
// --ca-file, --ca-fingerprint, or the user's confirmation of the fingerprint at a
// terminal (in). It returns the CA's PEM.
func (e *env) trustCenter(ctx context.Context, server string, in io.Reader) (string, error) {
	if pemText, err := e.caFromFile(); err != nil || pemText != "" {
		return pemText, err
	}
	info, err := fetchCA(ctx, server, e.timeout)
	if err != nil {
		return "", err
	}
	if e.caFingerprint != "" {
		want, err := pki.NormalizeFingerprint(e.caFingerprint)
		if err != nil {
			return "", err
		}
		if info.Fingerprint != want {
			return "", fmt.Errorf("the center at %s holds CA %s, not %s as --ca-fingerprint says: wrong server, or someone in between", server, info.Fingerprint, want)
		}
		return info.Certificate, nil
	}
	f, ok := in.(*os.File)
	if !ok || !term.IsTerminal(int(f.Fd())) {
		return "", fmt.Errorf("the center at %s is not trusted yet; its CA's fingerprint is %s. Check it (the center logs it at start; `godwit host join-token create` prints it) and pass --ca-fingerprint %s, or --ca-file with the center's DATA_DIR/pki/ca.crt",
			server, info.Fingerprint, info.Fingerprint)
	}
	fmt.Fprintf(e.errOut, "The center at %s is not known yet.\nIts CA's fingerprint is %s.\nTrust it from now on? [y/N] ", server, info.Fingerprint)
	line, _ := bufio.NewReader(f).ReadString('\n')
	if a := strings.ToLower(strings.TrimSpace(line)); a != "y" && a != "yes" {
		return "", errors.New("the center's CA was not trusted; nothing was changed")
	}
	return info.Certificate, nil
}

// knownCA is the CA to trust for server at login: --ca-file or --ca-fingerprint when
// given (a center reinstalled, trusted anew), else the one a context of server keeps,
// else the outcome of trustCenter.
func (e *env) knownCA(ctx context.Context, cfg config, server string, in io.Reader) (string, error) {
	if e.caFile == "" && e.caFingerprint == "" {
		for _, c := range cfg.Contexts {
			if c.Server == server && c.CA != "" {
				return c.CA, nil
			}
		}
	}
	return e.trustCenter(ctx, server, in)
}

// fetchCA reads the center's CA over a connection that trusts nothing yet; the answer
// is only used once its fingerprint is confirmed.
func fetchCA(ctx context.Context, server string, timeout time.Duration) (api.CAInfo, error) {
	var info api.CAInfo
	c, err := api.NewClient(server, timeout, api.WithTLS(&tls.Config{InsecureSkipVerify: true, MinVersion: tls.VersionTLS13}))
	if err != nil {
		return info, err
	}
	if err := c.Do(ctx, http.MethodGet, "/api/v1/pki/ca", nil, &info); err != nil {
		return info, fmt.Errorf("fetch the center's CA from %s: %w", server, err)
	}
	ca, err := pki.ParseCertPEM([]byte(info.Certificate))
	if err != nil {
		return info, fmt.Errorf("the CA the center at %s sent: %w", server, err)
	}
	info.Fingerprint = pki.Fingerprint(ca.Raw) // computed here, never taken from the answer
	return info, nil
}

// explainTLS adds what to do to an error caused by a center certificate that does not
// verify.
func explainTLS(err error) error {
	var cv *tls.CertificateVerificationError
	if errors.As(err, &cv) {
		return fmt.Errorf("%w\nThe center's certificate is not signed by the CA this CLI trusts for it. If the center was reinstalled, trust its new CA with `godwit login --ca-fingerprint …` (or --ca-file); otherwise someone may be intercepting the connection", err)
	}
	return err
}

// hostOf is the host:port of a URL, for messages.
func hostOf(server string) string {
	if u, err := url.Parse(server); err == nil && u.Host != "" {
		return u.Host
	}
	return server
}
