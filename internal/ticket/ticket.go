// Package ticket is the center's word that one live migration may happen: which VM
// (its name, UUID and the SHA-256 of its exact spec), from which host to which, with
// what encryption, until when — signed with the cluster CA's key, like the per-migration
// key vCenter hands both hosts of an encrypted vMotion. Hosts act only on a ticket: the
// destination starts a QEMU for an incoming VM, finishes or aborts it, and the source
// tells a destination how its migration goes, only for the host a valid ticket names.
// A host's certificate alone (leaked, or of a host turned hostile) buys nothing.
//
// A ticket travels as one string, "gwticket.PAYLOAD.SIGNATURE" (base64url JSON and an
// ECDSA P-256 signature over its SHA-256), in the Header of host-to-host calls. It
// carries the migration's own key (which authenticates the frames the source carries
// across the switch-over; see internal/agent), so it is a secret.
package ticket

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/godwit/godwit/internal/api"
)

// Header is the HTTP header that carries a ticket between hosts.
const Header = "Godwit-Migration-Ticket"

// MaxLen bounds a ticket's encoded size; anything longer is refused unread.
const MaxLen = 4096

// Lifetime is how long after issue a ticket lets a migration begin. It bounds only the
// start: a destination that accepted a migration finishes or aborts it with the same
// ticket however long the copy takes.
const Lifetime = 5 * time.Minute

const prefix = "gwticket."

// Ticket is what the center allows.
type Ticket struct {
	Migration   string `json:"migration"`
	VM          string `json:"vm"`
	VMUUID      string `json:"vm_uuid"`
	Source      string `json:"source"`
	Destination string `json:"destination"`
	// SpecSHA256 is SpecHash of the VM's spec: the destination runs exactly that VM.
	SpecSHA256 string `json:"spec_sha256"`
	// Encryption is the stream's encryption mode the center decided (off,
	// opportunistic, required); neither host may weaken it.
	Encryption string `json:"encryption"`
	// Postcopy: the migration may switch to post-copy, after which the destination
	// runs the VM before all its memory is there; the destination prepares for it
	// only when the center said so.
	Postcopy bool `json:"postcopy,omitempty"`
	// Key is the stream's own key (hex, 32 bytes): QEMU's TLS at both ends is keyed
	// with it, so only these two hosts can take part in the stream. It makes the
	// ticket a secret: it travels only over mutual TLS and is never logged.
	Key     string    `json:"key"`
	Issued  time.Time `json:"issued"`
	Expires time.Time `json:"expires"`
}

// SpecHash is the hex SHA-256 of a VM spec's JSON encoding.
func SpecHash(s api.VMSpec) string {
	b, _ := json.Marshal(s) // a struct of strings, numbers and slices always encodes
	sum := sha256.Sum256(b)
	return hex.EncodeToString(sum[:])
}

// Sign encodes t and signs it with key (the cluster CA's).
func Sign(t Ticket, key crypto.Signer) (string, error) {
	payload, err := json.Marshal(t)
	if err != nil {
		return "", fmt.Errorf("encode the migration ticket: %w", err)
	}
	digest := sha256.Sum256(payload)
	sig, err := key.Sign(rand.Reader, digest[:], crypto.SHA256)
	if err != nil {
		return "", fmt.Errorf("sign the migration ticket: %w", err)
	}
	return prefix + base64.RawURLEncoding.EncodeToString(payload) + "." + base64.RawURLEncoding.EncodeToString(sig), nil
}

// ErrNoTicket is Parse's answer to an empty ticket.
var ErrNoTicket = errors.New("no migration ticket: a host acts on another's request only with a ticket from the center")

// Parse checks a ticket's form and signature against pub (the cluster CA's key) and
// returns what it allows. It does not look at the time or the hosts; Check does.
func Parse(s string, pub crypto.PublicKey) (Ticket, error) {
	if s == "" {
		return Ticket{}, ErrNoTicket
	}
	if len(s) > MaxLen {
		return Ticket{}, fmt.Errorf("the migration ticket is %d bytes long; a ticket is at most %d", len(s), MaxLen)
	}
	rest, ok := strings.CutPrefix(s, prefix)
	p64, s64, ok2 := strings.Cut(rest, ".")
	if !ok || !ok2 {
		return Ticket{}, errors.New("the migration ticket is not of the form gwticket.PAYLOAD.SIGNATURE")
	}
	payload, err := base64.RawURLEncoding.DecodeString(p64)
	if err != nil {
		return Ticket{}, fmt.Errorf("the migration ticket's payload is not base64url: %w", err)
	}
	sig, err := base64.RawURLEncoding.DecodeString(s64)
	if err != nil {
		return Ticket{}, fmt.Errorf("the migration ticket's signature is not base64url: %w", err)
	}
	ec, ok := pub.(*ecdsa.PublicKey)
	if !ok {
		return Ticket{}, fmt.Errorf("the cluster CA has a %T key; tickets are checked with ECDSA", pub)
	}
	digest := sha256.Sum256(payload)
	if !ecdsa.VerifyASN1(ec, digest[:], sig) {
		return Ticket{}, errors.New("the migration ticket's signature is not the cluster CA's: it was forged or altered")
	}
	var t Ticket
	if err := json.Unmarshal(payload, &t); err != nil {
		return Ticket{}, fmt.Errorf("the migration ticket's payload does not decode: %w", err)
	}
	if t.Migration == "" || t.VM == "" || t.Source == "" || t.Destination == "" || t.SpecSHA256 == "" {
		return Ticket{}, errors.New("the migration ticket lacks the migration, the VM, a host or the spec's hash")
	}
	return t, nil
}

// Check says why t does not allow caller to ask host (this host) for a migration step,
// or nil when it does. source is true when the caller must be the ticket's source and
// this host its destination (incoming, finish, abort); false for the reverse (the
// destination asking the source how the migration goes). Host names compare without
// regard to case, as certificate names do.
func (t Ticket) Check(caller, host string, source bool) error {
	wantCaller, wantHost, role := t.Source, t.Destination, "source"
	if !source {
		wantCaller, wantHost, role = t.Destination, t.Source, "destination"
	}
	switch {
	case !strings.EqualFold(wantHost, host):
		return fmt.Errorf("the ticket of migration %s is for host %s, not %s", t.Migration, wantHost, host)
	case !strings.EqualFold(wantCaller, caller):
		return fmt.Errorf("the ticket of migration %s names %s as its %s, and host %s presented it", t.Migration, wantCaller, role, caller)
	}
	return nil
}

// NewKey draws a stream key for a ticket.
func NewKey() (string, error) {
	b := make([]byte, KeyBytes)
	if _, err := rand.Read(b); err != nil {
		return "", fmt.Errorf("draw a migration key: %w", err)
	}
	return hex.EncodeToString(b), nil
}

// KeyBytes is the size of a stream key.
const KeyBytes = 32

// StreamKey is the ticket's stream key as bytes.
func (t Ticket) StreamKey() ([]byte, error) {
	k, err := hex.DecodeString(t.Key)
	if err != nil || len(k) != KeyBytes {
		return nil, fmt.Errorf("the ticket of migration %s carries no valid stream key", t.Migration)
	}
	return k, nil
}

// Expired says whether the ticket no longer lets a migration begin at now.
func (t Ticket) Expired(now time.Time) bool { return !now.Before(t.Expires) }
