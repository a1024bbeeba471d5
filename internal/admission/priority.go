package admission

import (
	"fmt"
	"strings"
)

// Priority is a migration's priority: High, Normal or Low.
type Priority string

// The priorities.
const (
	// High is never queued: admitted at once, ahead of waiting requests, or refused.
	High Priority = "high"
	// Normal waits in the queue ahead of every Low request.
	Normal Priority = "normal"
	// Low waits in the queue behind every Normal request.
	Low Priority = "low"
)

// ParsePriority parses "high", "normal" or "low" (in any case, surrounding spaces
// ignored).
func ParsePriority(s string) (Priority, error) {
	p := Priority(strings.ToLower(strings.TrimSpace(s)))
	if !p.Valid() {
		return "", fmt.Errorf("priority %q is not one of high, normal, low", s)
	}
	return p, nil
}

// Valid reports whether p is High, Normal or Low.
func (p Priority) Valid() bool {
	return p == High || p == Normal || p == Low
}

// String returns the priority's name.
func (p Priority) String() string { return string(p) }

// Weight is p's weight when migrations share a resource: 4 for High, 2 for Normal, 1 for
// Low, 0 for an invalid priority. See Limiter.Shares.
func (p Priority) Weight() float64 {
	switch p {
	case High:
		return 4
	case Normal:
		return 2
	case Low:
		return 1
	}
	return 0
}

// rank orders waiting requests: lower ranks first.
func (p Priority) rank() int {
	if p == Low {
		return 1
	}
	return 0
}
