// Package schedule holds the rules of scheduled migrations, like vCenter's scheduled
// tasks: when a schedule fires (once at a given time, or on a cron expression), what
// happens to the runs that fell due while the center was down, and which names a
// schedule may have. It is pure: no clock, no I/O. The caller passes the current time,
// persists what ran, and asks again on every tick.
//
// Every time here is UTC. A cron expression is read in UTC whatever the machine's zone
// is, so "0 2 * * *" means 02:00 UTC on every center, in summer and in winter.
package schedule

import (
	"errors"
	"fmt"
	"regexp"
	"time"
)

// Kinds of schedule, as stored.
const (
	// KindAt is a one-shot schedule: it fires once, at Spec.At.
	KindAt = "at"
	// KindCron is a recurring schedule: it fires on every slot of Spec.Cron.
	KindCron = "cron"
)

// Spec says when a schedule fires. Exactly one of At and Cron is set.
type Spec struct {
	// At is the time of a one-shot schedule, in UTC.
	At time.Time
	// Cron is the expression of a recurring schedule (see ParseCron).
	Cron string
}

// Kind returns KindAt or KindCron, or "" when the spec sets neither or both.
func (s Spec) Kind() string {
	switch {
	case !s.At.IsZero() && s.Cron == "":
		return KindAt
	case s.At.IsZero() && s.Cron != "":
		return KindCron
	}
	return ""
}

// Validate checks that exactly one of At and Cron is set and that Cron parses. It does
// not check that At is in the future: a stored one-shot schedule stays valid after it ran.
func (s Spec) Validate() error {
	_, err := s.compile()
	return err
}

// Next returns the first slot of the schedule strictly after after, and false when there
// is none: a one-shot schedule whose time is not after after (it has run, or was
// skipped), a cron expression that fires no more, or an invalid spec. Called with the
// slot that last ran, it gives the slot to run next, so no slot is ever run twice.
func (s Spec) Next(after time.Time) (time.Time, bool) {
	n, err := s.compile()
	if err != nil {
		return time.Time{}, false
	}
	t := n(after)
	return t, !t.IsZero()
}

// nextFunc returns the first slot strictly after its argument, or the zero time.
type nextFunc func(after time.Time) time.Time

// compile validates the spec and returns its slot function, parsing the cron
// expression once so that callers walking many slots do not parse it for each.
func (s Spec) compile() (nextFunc, error) {
	switch s.Kind() {
	case KindAt:
		at := s.At.UTC()
		return func(after time.Time) time.Time {
			if at.After(after) {
				return at
			}
			return time.Time{}
		}, nil
	case KindCron:
		c, err := ParseCron(s.Cron)
		if err != nil {
			return nil, err
		}
		return c.Next, nil
	}
	if s.At.IsZero() {
		return nil, errors.New("the schedule says neither when to run once (a time) nor when to recur (a cron expression): give one of them")
	}
	return nil, errors.New("the schedule gives both a time to run once and a cron expression: give only one of them")
}

// nameRE is the shape of schedule names, the same as VM names.
var nameRE = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$`)

// ValidateName checks a schedule name: 1 to 63 letters, digits, '.', '_' or '-',
// starting with a letter or a digit, like the other names in Godwit.
func ValidateName(name string) error {
	if !nameRE.MatchString(name) {
		return fmt.Errorf("schedule name %q: use 1-63 letters, digits, '.', '_' or '-', starting with a letter or digit", name)
	}
	return nil
}
