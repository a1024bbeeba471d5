package center

import (
	"context"
	"crypto/sha256"
	"slices"
	"sync"
	"time"
)

// A host sends a request every 2 s on one connection. Verifying its certificate from
// scratch each time (the chain's signature, then the certificate's record in the
// store) and listing the revoked certificates for each answer cost more than the rest
// of a heartbeat at a thousand hosts; both are kept here, and revocation, which is in
// memory too (Center.revoked), is checked on every request all the same.

const (
	// verifiedFor is how long a verified certificate is trusted without verifying it
	// again (revocation is checked on every request regardless).
	verifiedFor = 5 * time.Minute
	// maxVerified bounds the cache: past it, it starts again empty.
	maxVerified = 20000
	// revokedListFor is how long the list of revoked serials sent to hosts is reused
	// when no certificate was revoked meanwhile (it only drops expired ones).
	revokedListFor = time.Minute
)

type verifiedCert struct {
	name, serial string
	until        time.Time
}

// hostCerts caches verified host certificates by the SHA-256 of the leaf's DER bytes, and
// the list of revoked serials by the revocations' generation.
type hostCerts struct {
	mu       sync.Mutex
	verified map[[32]byte]verifiedCert

	// gen counts revocations (noteRevoked); list was made at generation listGen at made.
	gen     uint64
	listGen uint64
	made    time.Time
	list    []string
}

func newHostCerts() *hostCerts { return &hostCerts{verified: map[[32]byte]verifiedCert{}} }

// lookup returns the host name of a certificate verified before and still trusted.
func (h *hostCerts) lookup(raw []byte, now time.Time) (verifiedCert, bool) {
	k := sha256.Sum256(raw)
	h.mu.Lock()
	defer h.mu.Unlock()
	v, ok := h.verified[k]
	if ok && now.After(v.until) {
		delete(h.verified, k)
		ok = false
	}
	return v, ok
}

// remember records a certificate just verified, until min(now+verifiedFor, notAfter).
func (h *hostCerts) remember(raw []byte, name, serial string, now, notAfter time.Time) {
	k := sha256.Sum256(raw)
	until := now.Add(verifiedFor)
	if notAfter.Before(until) {
		until = notAfter
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	if len(h.verified) >= maxVerified {
		clear(h.verified)
	}
	h.verified[k] = verifiedCert{name: name, serial: serial, until: until}
}

// revokedChanged marks the list of revoked serials stale.
func (h *hostCerts) revokedChanged() {
	h.mu.Lock()
	h.gen++
	h.mu.Unlock()
}

// revokedList returns the revoked serials (a copy the caller may keep), made by list
// when a revocation happened since the last one or it is older than revokedListFor.
func (h *hostCerts) revokedList(ctx context.Context, now time.Time, list func(context.Context, time.Time) ([]string, error)) ([]string, error) {
	h.mu.Lock()
	if h.list != nil && h.listGen == h.gen && now.Sub(h.made) < revokedListFor {
		out := slices.Clone(h.list)
		h.mu.Unlock()
		return out, nil
	}
	gen := h.gen
	h.mu.Unlock()
	l, err := list(ctx, now)
	if err != nil {
		return nil, err
	}
	if l == nil {
		l = []string{}
	}
	h.mu.Lock()
	if h.gen == gen { // no revocation while it was being made
		h.list, h.listGen, h.made = l, gen, now
	}
	h.mu.Unlock()
	return slices.Clone(l), nil
}
