package admission

import (
	"fmt"
	"slices"
	"strings"
)

// Wait is what a queued request waits for, as handed to Acquire's waiting function.
type Wait struct {
	// ID is the waiting request's ID.
	ID string
	// Position is the request's place in the queue's admission order, from 1. Requests
	// ahead of it that need none of its resources do not delay it.
	Position int
	// Blocked lists the resources that lack room for the request, by resource name.
	Blocked []Blocker
}

// Blocker is a resource that lacks room for a waiting request.
type Blocker struct {
	// Resource is the resource, e.g. "host:host-1".
	Resource string
	// Limit is its limit.
	Limit int
	// InUse is how many of its slots admitted migrations hold (more than Limit if the
	// limit was lowered under them).
	InUse int
	// Holders are the IDs of the admitted migrations that hold it, sorted.
	Holders []string
	// Need is what the waiting request costs on it.
	Need int
	// Ahead are the IDs of the requests ahead in the queue that claim it, in admission
	// order.
	Ahead []string
}

// maxNames is how many IDs a message lists before it only counts the rest.
const maxNames = 8

// String describes the blocker: "host:host-1: 4 of 4 slots in use (m1, m2, m3, m4)",
// followed by what the request needs if more than 1 and by the earlier waiting requests
// that come first.
func (b Blocker) String() string {
	var s strings.Builder
	fmt.Fprintf(&s, "%s: %d of %d slots in use", b.Resource, b.InUse, b.Limit)
	if len(b.Holders) > 0 {
		fmt.Fprintf(&s, " (%s)", names(b.Holders))
	}
	if b.Need > 1 {
		fmt.Fprintf(&s, ", %d needed", b.Need)
	}
	if len(b.Ahead) > 0 {
		fmt.Fprintf(&s, ", earlier waiting requests first (%s)", names(b.Ahead))
	}
	return s.String()
}

// String describes the wait: "position 2 in the queue, waiting for host:host-1: 4 of 4
// slots in use (m1, m2, m3, m4)", with further blockers after semicolons.
func (w Wait) String() string {
	bs := make([]string, len(w.Blocked))
	for i, b := range w.Blocked {
		bs[i] = b.String()
	}
	return fmt.Sprintf("position %d in the queue, waiting for %s", w.Position, strings.Join(bs, "; "))
}

// equal reports whether w and o describe the same wait.
func (w Wait) equal(o Wait) bool {
	return w.ID == o.ID && w.Position == o.Position &&
		slices.EqualFunc(w.Blocked, o.Blocked, func(a, b Blocker) bool {
			return a.Resource == b.Resource && a.Limit == b.Limit && a.InUse == b.InUse && a.Need == b.Need &&
				slices.Equal(a.Holders, b.Holders) && slices.Equal(a.Ahead, b.Ahead)
		})
}

// clone returns a copy of w that shares no slice with it.
func (w Wait) clone() Wait {
	c := w
	c.Blocked = slices.Clone(w.Blocked)
	for i := range c.Blocked {
		c.Blocked[i].Holders = slices.Clone(c.Blocked[i].Holders)
		c.Blocked[i].Ahead = slices.Clone(c.Blocked[i].Ahead)
	}
	return c
}

// BusyError is the refusal of a high-priority request whose resources lack room: high
// priority is never queued.
type BusyError struct {
	// ID is the refused request's ID.
	ID string
	// Blocked lists the resources that lack room, by resource name.
	Blocked []Blocker
}

// Error names the full resources and who holds them.
func (e *BusyError) Error() string {
	bs := make([]string, len(e.Blocked))
	for i, b := range e.Blocked {
		bs[i] = b.String()
	}
	return fmt.Sprintf("high-priority migration %s refused, since high priority is never queued and it does not fit now: %s",
		e.ID, strings.Join(bs, "; "))
}

// names joins ids with commas, listing at most maxNames of them.
func names(ids []string) string {
	if len(ids) <= maxNames {
		return strings.Join(ids, ", ")
	}
	return fmt.Sprintf("%s and %d more", strings.Join(ids[:maxNames], ", "), len(ids)-maxNames)
}
