package ticket

import (
	"encoding/base64"
	"strings"
	"testing"
	"time"

	"github.com/godwit/godwit/internal/api"
	"github.com/godwit/godwit/internal/pki"
)

func newCA(t testing.TB) *pki.CA {
	t.Helper()
	ca, err := pki.LoadOrCreateCA(t.TempDir(), time.Now())
	if err != nil {
		t.Fatal(err)
	}
	return ca
}

func sample() Ticket {
	now := time.Now().UTC().Truncate(time.Second)
	spec := api.VMSpec{Name: "web", UUID: "0f8fad5b-d9cb-469f-a165-70867728950e", CPUs: 1, MemoryMiB: 256}
	return Ticket{Migration: "m1", VM: "web", VMUUID: spec.UUID, Source: "host-1", Destination: "host-2",
		SpecSHA256: SpecHash(spec), Encryption: "required", Issued: now, Expires: now.Add(Lifetime)}
}

// TestTicket: a ticket the CA signed parses to what was signed; one signed by another
// key, altered, truncated, oversized or of another form is refused with the reason; the
// hosts and the time are checked.
func TestTicket(t *testing.T) {
	ca, other := newCA(t), newCA(t)
	want := sample()
	s, err := Sign(want, ca.Signer())
	if err != nil {
		t.Fatal(err)
	}
	got, err := Parse(s, ca.Cert.PublicKey)
	if err != nil || got != want {
		t.Fatalf("Parse = %+v, %v; want %+v", got, err, want)
	}

	forged, _ := Sign(want, other.Signer())
	p64, _, _ := strings.Cut(strings.TrimPrefix(s, prefix), ".")
	payload, _ := base64.RawURLEncoding.DecodeString(p64)
	altered := prefix + base64.RawURLEncoding.EncodeToString([]byte(strings.Replace(string(payload), "host-2", "host-3", 1))) + s[len(prefix)+len(p64):]
	for name, tc := range map[string]struct{ s, want string }{
		"empty":     {"", "no migration ticket"},
		"forged":    {forged, "not the cluster CA's"},
		"altered":   {altered, "not the cluster CA's"},
		"truncated": {s[:len(s)-10], "signature"},
		"oversized": {s + strings.Repeat("A", MaxLen), "at most"},
		"form":      {"Bearer x", "not of the form"},
		"base64":    {prefix + "!!.x", "not base64url"},
	} {
		if _, err := Parse(tc.s, ca.Cert.PublicKey); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: Parse error %v; want it to say %q", name, err, tc.want)
		}
	}

	if err := got.Check("host-1", "host-2", true); err != nil {
		t.Errorf("the source at the destination: %v", err)
	}
	if err := got.Check("HOST-1", "Host-2", true); err != nil {
		t.Errorf("names differ only in case: %v", err)
	}
	if err := got.Check("host-2", "host-1", false); err != nil {
		t.Errorf("the destination at the source: %v", err)
	}
	for _, tc := range []struct {
		caller, host string
		source       bool
		want         string
	}{
		{"host-3", "host-2", true, "names host-1 as its source, and host host-3 presented it"},
		{"host-1", "host-3", true, "is for host host-2, not host-3"},
		{"host-1", "host-2", false, "is for host host-1, not host-2"},
		{"host-3", "host-1", false, "names host-2 as its destination"},
	} {
		if err := got.Check(tc.caller, tc.host, tc.source); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("Check(%s, %s, %v) = %v; want %q", tc.caller, tc.host, tc.source, err, tc.want)
		}
	}
	if got.Expired(want.Issued) || !got.Expired(want.Expires) {
		t.Error("Expired is wrong at the edges")
	}
}

// FuzzParse: no input makes Parse panic or accept a ticket the CA did not sign.
func FuzzParse(f *testing.F) {
	ca := newCA(f)
	signed := sample()
	s, _ := Sign(signed, ca.Signer())
	f.Add(s)
	f.Add(prefix + "e30.MEUCIQ")
	f.Add("")
	f.Fuzz(func(t *testing.T, in string) {
		tk, err := Parse(in, ca.Cert.PublicKey)
		// Only the CA can sign, so whatever is accepted must be the ticket it signed.
		if err == nil && tk != signed {
			t.Fatalf("accepted a ticket the CA did not sign: %q → %+v", in, tk)
		}
	})
}
