package center

import (
	"context"
	"slices"
	"testing"
	"time"
)

// TestHostCertsCache: a verified certificate is trusted until its time is up (or its
// certificate's end, if sooner); the list of revoked serials is made again after a
// revocation, and after revokedListFor, and not in between.
func TestHostCertsCache(t *testing.T) {
	h := newHostCerts()
	now := time.Date(2026, 12, 6, 10, 0, 0, 0, time.UTC)
	a, b := []byte("certificate a"), []byte("certificate b")
	h.remember(a, "host-1", "01", now, now.Add(time.Hour))
	h.remember(b, "host-2", "02", now, now.Add(time.Minute))
	if v, ok := h.lookup(a, now.Add(time.Minute)); !ok || v.name != "host-1" || v.serial != "01" {
		t.Errorf("lookup of a verified certificate: %+v, %v", v, ok)
	}
	if _, ok := h.lookup(a, now.Add(verifiedFor+time.Second)); ok {
		t.Error("a certificate trusted past verifiedFor")
	}
	if _, ok := h.lookup(b, now.Add(2*time.Minute)); ok {
		t.Error("a certificate trusted past its own end")
	}
	if _, ok := h.lookup([]byte("never seen"), now); ok {
		t.Error("an unknown certificate found")
	}

	calls := 0
	revoked := []string{"01"}
	list := func(context.Context, time.Time) ([]string, error) {
		calls++
		return slices.Clone(revoked), nil
	}
	ctx := context.Background()
	get := func(at time.Time) []string {
		t.Helper()
		l, err := h.revokedList(ctx, at, list)
		if err != nil {
			t.Fatal(err)
		}
		return l
	}
	if l := get(now); !slices.Equal(l, []string{"01"}) || calls != 1 {
		t.Fatalf("first list %v after %d calls", l, calls)
	}
	get(now.Add(time.Second))[0] = "changed by the caller"
	if l := get(now.Add(2 * time.Second)); !slices.Equal(l, []string{"01"}) || calls != 1 {
		t.Errorf("list %v after %d calls; want the kept [01] without a call, unchanged by a caller", l, calls)
	}
	revoked = append(revoked, "02")
	h.revokedChanged()
	if l := get(now.Add(3 * time.Second)); !slices.Equal(l, []string{"01", "02"}) || calls != 2 {
		t.Errorf("list after a revocation %v after %d calls; want [01 02] made again", l, calls)
	}
	if get(now.Add(3*time.Second + revokedListFor)); calls != 3 {
		t.Errorf("the list was not made again after revokedListFor (%d calls)", calls)
	}
	h.revokedChanged()
	var nothing []string
	revoked = nothing
	if l := get(now.Add(4 * time.Minute)); l == nil || len(l) != 0 {
		t.Errorf("no revoked certificate: %#v; want an empty list, not null", l)
	}
}
