// Package audit is the center's audit trail: an append-only record of every
// state-changing API request (refused ones included) and of every action the center takes
// on its own, kept in the center's SQLite database as a hash chain.
//
// Each record stores the hash of the record before it (prev_hash) and its own hash, the
// SHA-256 of a canonical encoding of its fields and prev_hash (see Record.Canonical). A
// changed record no longer matches its hash, a deleted one leaves a gap in the ids, and a
// rewritten one breaks the link from its successor; Log.Verify names the first such
// record. Trimming old records (retention) keeps the id and hash of the last trimmed
// record as the chain's anchor, so what remains still verifies.
//
// Who acted is recorded as an actor (a user, a token, or the automation that acted) and,
// for automation, on whose behalf. Until the center authenticates users, an API client on
// the center's unix socket is the Unix user the kernel reports for the connection
// (SO_PEERCRED, see PeerListener) and any other client is "anonymous"; an authentication
// layer names the actor with SetActor.
package audit

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"strconv"
	"time"
)

// Kinds of actor.
const (
	KindUser       = "user"       // a person: a Unix user on the center, later a signed-in user
	KindToken      = "token"      // an API token
	KindSchedule   = "schedule"   // a scheduled task
	KindAutomation = "automation" // the center acting on its own to carry a request through
	KindSystem     = "system"     // the center's own housekeeping
	KindHost       = "host"       // a host's agent, known by its certificate
)

// Outcomes.
const (
	Succeeded = "succeeded"
	Failed    = "failed"
	Refused   = "refused" // the request was turned down (4xx) and changed nothing
)

// Anonymous is the actor of a request nobody is known to have made.
const Anonymous = "anonymous"

// Local is the "from" of a request that came over the center's unix socket.
const Local = "local"

// CenterActor is the actor of what the center does on its own.
const CenterActor = "center"

// GenesisHash is the prev_hash of the first record ever written.
const GenesisHash = "0000000000000000000000000000000000000000000000000000000000000000"

// timeLayout is how times are stored and hashed: fixed width, so that stored times sort
// as text, and microseconds, so that they survive JSON and SQLite unchanged.
const timeLayout = "2006-01-02T15:04:05.000000Z"

// Record is one entry of the audit trail.
type Record struct {
	// ID is the record's place in the chain: 1, 2, 3, … with no gaps.
	ID int64 `json:"id"`
	// Time is when the record was written (UTC, microseconds).
	Time time.Time `json:"time"`
	// Actor is who acted: a user name, a token's name, or "center".
	Actor string `json:"actor"`
	// ActorKind is one of the Kind* constants.
	ActorKind string `json:"actor_kind"`
	// OnBehalfOf is, for automation, the actor whose request it carries through.
	OnBehalfOf string `json:"on_behalf_of,omitempty"`
	// From is the client's address (the HTTP request's remote address), "local" for
	// the center's unix socket, or empty for what the center does on its own.
	From string `json:"from"`
	// Action names what was done, as noun.verb: vm.create, vm.migrate, migration.finish, …
	Action string `json:"action"`
	// Target is what it was done to: a VM's name, a migration's id.
	Target string `json:"target"`
	// Params is a JSON object: the request's parameters and what the center resolved
	// (for a migration: vm, source, destination, policy, migration).
	Params json.RawMessage `json:"params"`
	// Outcome is Succeeded, Failed or Refused; Error says why when it is not Succeeded.
	Outcome string `json:"outcome"`
	Error   string `json:"error,omitempty"`
	// For a finished migration: its total time, its downtime and the bytes it sent.
	DurationMS *float64 `json:"duration_ms,omitempty"`
	DowntimeMS *float64 `json:"downtime_ms,omitempty"`
	Bytes      *uint64  `json:"bytes,omitempty"`
	// PrevHash is the previous record's Hash (GenesisHash for the first record).
	PrevHash string `json:"prev_hash"`
	// Hash is the hex SHA-256 of Canonical().
	Hash string `json:"hash"`
}

// canonicalVersion starts every canonical encoding, so the encoding can change later
// without old records becoming ambiguous.
const canonicalVersion = "godwit-audit/1"

// Canonical returns the bytes the record's hash covers: canonicalVersion and then every
// field but Hash, in declaration order, each as a netstring (LENGTH:BYTES,). Times are
// in timeLayout, numbers in decimal (floats in Go's shortest 'g' form), an absent number
// is the empty string, and Params is the stored JSON text as it is. Anyone holding an
// export can recompute the hashes from this description.
func (r *Record) Canonical() []byte {
	var b []byte
	put := func(s string) {
		b = strconv.AppendInt(b, int64(len(s)), 10)
		b = append(b, ':')
		b = append(b, s...)
		b = append(b, ',')
	}
	put(canonicalVersion)
	put(strconv.FormatInt(r.ID, 10))
	put(r.Time.UTC().Format(timeLayout))
	put(r.Actor)
	put(r.ActorKind)
	put(r.OnBehalfOf)
	put(r.From)
	put(r.Action)
	put(r.Target)
	put(string(r.Params))
	put(r.Outcome)
	put(r.Error)
	put(optFloat(r.DurationMS))
	put(optFloat(r.DowntimeMS))
	if r.Bytes != nil {
		put(strconv.FormatUint(*r.Bytes, 10))
	} else {
		put("")
	}
	put(r.PrevHash)
	return b
}

// ComputeHash returns the hex SHA-256 of the record's canonical encoding.
func (r *Record) ComputeHash() string {
	sum := sha256.Sum256(r.Canonical())
	return hex.EncodeToString(sum[:])
}

func optFloat(f *float64) string {
	if f == nil {
		return ""
	}
	return strconv.FormatFloat(*f, 'g', -1, 64)
}

// encodeParams turns parameters into the stored JSON object: keys sorted, empty values
// left out, "{}" when there are none.
// EncodeParams encodes a record's parameters the way the trail stores them.
func EncodeParams(p map[string]any) (json.RawMessage, error) { return encodeParams(p) }

func encodeParams(p map[string]any) (json.RawMessage, error) {
	clean := make(map[string]any, len(p))
	for k, v := range p {
		switch x := v.(type) {
		case nil:
			continue
		case string:
			if x == "" {
				continue
			}
		}
		clean[k] = v
	}
	b, err := json.Marshal(clean)
	if err != nil {
		return nil, err
	}
	return b, nil
}
