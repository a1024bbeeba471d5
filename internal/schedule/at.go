package schedule

import (
	"fmt"
	"strings"
	"time"
)

// atFormats are the absolute forms ParseAt reads, besides RFC 3339. They carry no zone
// and are read as UTC.
var atFormats = []string{
	"2006-01-02 15:04",
	"2006-01-02T15:04",
	"2006-01-02 15:04:05",
	"2006-01-02T15:04:05",
}

// atHelp is the sentence that says which forms ParseAt reads.
const atHelp = `give RFC 3339 ("2026-11-26T14:00:00Z", or with an offset such as "2026-11-26T15:00:00+01:00"), ` +
	`"2026-11-26 14:00" or "2026-11-26T14:00" (read as UTC), or a delay from now such as "+30m" or "+2h"`

// ParseAt reads the time of a one-shot schedule and returns it in UTC. It accepts
//
//   - RFC 3339, "2026-11-26T14:00:00Z"; a time with an offset is converted to UTC;
//   - "2026-11-26 14:00" and "2026-11-26T14:00" (seconds allowed), read as UTC;
//   - a delay from now, "+30m", "+2h", "+1h30m" (a Go duration after a '+'); the result
//     is truncated to the whole second.
//
// The time must be after now: a time in the past (or now itself) is refused with an
// error that shows the current UTC time.
func ParseAt(s string, now time.Time) (time.Time, error) {
	s = strings.TrimSpace(s)
	now = now.UTC()
	var t time.Time
	switch {
	case s == "":
		return time.Time{}, fmt.Errorf("no time given: %s", atHelp)
	case s[0] == '+':
		d, err := time.ParseDuration(s[1:])
		if err != nil || d < time.Second {
			return time.Time{}, fmt.Errorf("cannot read the delay %q: give a duration of at least a second after '+', such as \"+30m\", \"+2h\" or \"+1h30m\"", s)
		}
		t = now.Add(d).Truncate(time.Second)
	default:
		var err error
		if t, err = time.Parse(time.RFC3339, s); err != nil {
			for _, f := range atFormats {
				if t, err = time.ParseInLocation(f, s, time.UTC); err == nil {
					break
				}
			}
		}
		if err != nil {
			return time.Time{}, fmt.Errorf("cannot read %q as a time: %s", s, atHelp)
		}
		t = t.UTC()
	}
	if !t.After(now) {
		return time.Time{}, fmt.Errorf("%s is in the past: it is now %s; give a later time",
			t.Format("2006-01-02 15:04:05 UTC"), now.Format("2006-01-02 15:04:05 UTC"))
	}
	return t, nil
}
