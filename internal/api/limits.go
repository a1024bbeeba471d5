package api

import (
	"fmt"
	"unicode/utf8"
)

// Refused requests that agents report in heartbeats are bounded, so that a heartbeat
// fits the center's MaxBodyBytes however many requests, and however large, strangers
// send: at most MaxAgentRefusals per heartbeat (older ones are dropped and counted in
// the next one's Dropped) and every text field cut at MaxRefusalField bytes. Even if
// JSON escapes every byte (6 bytes each), they take under 300 KiB of a heartbeat.
const (
	MaxAgentRefusals = 32
	MaxRefusalField  = 256
)

// Bounded returns r with every text field cut to MaxRefusalField bytes (see Truncate).
func (r AgentRefusal) Bounded() AgentRefusal {
	r.From = Truncate(r.From, MaxRefusalField)
	r.Method = Truncate(r.Method, MaxRefusalField)
	r.Path = Truncate(r.Path, MaxRefusalField)
	r.Subject = Truncate(r.Subject, MaxRefusalField)
	r.Reason = Truncate(r.Reason, MaxRefusalField)
	r.Dropped = max(r.Dropped, 0)
	return r
}

// Truncate returns s if it is at most n bytes long; otherwise its start, cut at a
// character boundary, followed by a note of how long s was ("…[614400 bytes]"), all
// within n bytes (the note is left out when n is too small for it).
func Truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	note := fmt.Sprintf("…[%d bytes]", len(s))
	if len(note) > n/2 {
		note = ""
	}
	cut := max(n-len(note), 0)
	for cut > 0 && !utf8.RuneStart(s[cut]) {
		cut--
	}
	return s[:cut] + note
}
