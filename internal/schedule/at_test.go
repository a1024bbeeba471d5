package schedule

import (
	"strings"
	"testing"
	"time"
)

func TestParseAtAccepts(t *testing.T) {
	now := time.Date(2026, 11, 26, 10, 0, 0, 700_000_000, time.UTC)
	want := time.Date(2026, 11, 26, 14, 0, 0, 0, time.UTC)
	for _, c := range []struct {
		in   string
		want time.Time
	}{
		{"2026-11-26T14:00:00Z", want},
		{"  2026-11-26T14:00:00Z ", want},
		{"2026-11-26T15:00:00+01:00", want},
		{"2026-11-26T09:00:00-05:00", want},
		{"2026-11-26T14:00:00.25Z", want.Add(250 * time.Millisecond)},
		{"2026-11-26 14:00", want},
		{"2026-11-26T14:00", want},
		{"2026-11-26 14:00:30", want.Add(30 * time.Second)},
		{"+30m", time.Date(2026, 11, 26, 10, 30, 0, 0, time.UTC)},
		{"+2h", time.Date(2026, 11, 26, 12, 0, 0, 0, time.UTC)},
		{"+1h30m", time.Date(2026, 11, 26, 11, 30, 0, 0, time.UTC)},
		{"+1s", time.Date(2026, 11, 26, 10, 0, 1, 0, time.UTC)},
	} {
		got, err := ParseAt(c.in, now)
		if err != nil {
			t.Errorf("ParseAt(%q): %v", c.in, err)
			continue
		}
		if !got.Equal(c.want) || got.Location() != time.UTC {
			t.Errorf("ParseAt(%q) = %v; want %v in UTC", c.in, got, c.want)
		}
	}
}

func TestParseAtNowInAnotherZone(t *testing.T) {
	// The current time may come in any zone; a zone-less time is still read as UTC.
	now := time.Date(2026, 11, 26, 12, 0, 0, 0, time.FixedZone("UTC+5", 5*3600)) // 07:00 UTC
	got, err := ParseAt("2026-11-26 08:00", now)
	if err != nil {
		t.Fatal(err)
	}
	if want := time.Date(2026, 11, 26, 8, 0, 0, 0, time.UTC); !got.Equal(want) || got.Location() != time.UTC {
		t.Fatalf("got %v; want %v", got, want)
	}
	got, err = ParseAt("+1h", now)
	if err != nil || got.Location() != time.UTC || got.Hour() != 8 {
		t.Fatalf("+1h from 07:00 UTC: %v, %v; want 08:00 UTC", got, err)
	}
}

func TestParseAtRefuses(t *testing.T) {
	now := time.Date(2026, 11, 26, 10, 0, 0, 0, time.UTC)
	for _, c := range []struct {
		in   string
		want []string // substrings of the error
	}{
		{"", []string{"no time given", "RFC 3339"}},
		{"tomorrow", []string{`cannot read "tomorrow"`, "RFC 3339", "2026-11-26 14:00", "+30m"}},
		{"2026-11-26", []string{"cannot read", "RFC 3339"}},
		{"26/11/2026 14:00", []string{"cannot read", "RFC 3339"}},
		{"2026-13-01 14:00", []string{"cannot read"}},
		{"2026-11-26 14:00 CET", []string{"cannot read"}},
		{"+30", []string{`delay "+30"`, "+30m"}},
		{"+-5m", []string{"delay", "at least a second"}},
		{"+0s", []string{"delay", "at least a second"}},
		{"+500ms", []string{"delay", "at least a second"}},
		{"-5m", []string{"cannot read"}},
		{"2026-11-26 09:59", []string{"2026-11-26 09:59:00 UTC is in the past", "it is now 2026-11-26 10:00:00 UTC"}},
		{"2026-11-26T10:00:00Z", []string{"in the past", "it is now 2026-11-26 10:00:00 UTC"}},
		{"2026-11-26T10:30:00+01:00", []string{"2026-11-26 09:30:00 UTC is in the past"}},
		{"2020-01-01T00:00:00Z", []string{"in the past"}},
	} {
		got, err := ParseAt(c.in, now)
		if err == nil {
			t.Errorf("ParseAt(%q) = %v; want an error", c.in, got)
			continue
		}
		for _, w := range c.want {
			if !strings.Contains(err.Error(), w) {
				t.Errorf("ParseAt(%q): error %q does not say %q", c.in, err, w)
			}
		}
	}
}
