package cli

import (
	"crypto/tls"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/godwit/godwit/internal/pki"
)

// TestCLIChecksTheCentersName: at the center's address the CLI accepts only the
// center's own certificate, not another certificate of the same CA (a host's, valid for
// that address too).
func TestCLIChecksTheCentersName(t *testing.T) {
	ca, err := pki.LoadOrCreateCA(t.TempDir(), time.Now())
	if err != nil {
		t.Fatal(err)
	}
	serve := func(name string) *httptest.Server {
		key, err := pki.NewKey()
		if err != nil {
			t.Fatal(err)
		}
		cert, err := ca.Issue(key.Public(), pki.Leaf{Name: name, IPs: []net.IP{net.IPv4(127, 0, 0, 1)}}, time.Now())
		if err != nil {
			t.Fatal(err)
		}
		srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {}))
		srv.TLS = &tls.Config{Certificates: []tls.Certificate{{Certificate: [][]byte{cert.Raw}, PrivateKey: key}}}
		srv.StartTLS()
		t.Cleanup(srv.Close)
		return srv
	}
	cfg, err := tlsConfig(string(ca.CertPEM))
	if err != nil {
		t.Fatal(err)
	}
	hc := &http.Client{Transport: &http.Transport{TLSClientConfig: cfg}, Timeout: 5 * time.Second}
	if _, err := hc.Get(serve(pki.CenterName).URL); err != nil {
		t.Errorf("the center's own certificate was refused: %v", err)
	}
	_, err = hc.Get(serve("host-1").URL)
	if err == nil || !strings.Contains(err.Error(), "not godwit-center's") {
		t.Errorf("a host's certificate at the center's address: %v; want it refused as not the center's", err)
	}
}
