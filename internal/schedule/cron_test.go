package schedule

import (
	"strings"
	"testing"
	"time"
)

// utc is a shorthand for a time on the minute in UTC.
func utc(y int, mo time.Month, d, h, mi int) time.Time {
	return time.Date(y, mo, d, h, mi, 0, 0, time.UTC)
}

func TestCronNext(t *testing.T) {
	for _, c := range []struct {
		expr  string
		after time.Time
		want  time.Time
	}{
		// Across the end of a month, of a year, and of a short month.
		{"0 0 1 * *", utc(2026, 12, 15, 8, 0), utc(2027, 1, 1, 0, 0)},
		{"59 23 31 * *", utc(2026, 4, 1, 0, 0), utc(2026, 5, 31, 23, 59)},
		{"30 23 * * *", utc(2026, 12, 31, 23, 30), utc(2027, 1, 1, 23, 30)},
		{"*/15 * * * *", utc(2026, 12, 31, 23, 50), utc(2027, 1, 1, 0, 0)},
		{"0 12 29 2 *", utc(2026, 3, 1, 0, 0), utc(2028, 2, 29, 12, 0)},
		{"0 0 30 * *", utc(2027, 1, 30, 0, 0), utc(2027, 3, 30, 0, 0)}, // no 30 February
		// Strictly after: a slot equal to after is not returned, one a second later is.
		{"0 14 * * *", utc(2026, 11, 26, 14, 0), utc(2026, 11, 27, 14, 0)},
		{"0 14 * * *", utc(2026, 11, 26, 14, 0).Add(-time.Nanosecond), utc(2026, 11, 26, 14, 0)},
		// Days of the week, named fields, ranges and lists.
		{"30 2 * * 6", utc(2026, 11, 26, 12, 0), utc(2026, 11, 28, 2, 30)}, // Thursday → Saturday
		{"0 9 * * MON-FRI", utc(2026, 11, 27, 10, 0), utc(2026, 11, 30, 9, 0)},
		{"0 0 1 JAN,JUL *", utc(2026, 2, 1, 0, 0), utc(2026, 7, 1, 0, 0)},
		// Both day fields restricted: either one fires (13 March 2026 is a Friday, so
		// the first match after 1 March is Friday 6 March).
		{"0 0 13 * 5", utc(2026, 3, 1, 0, 0), utc(2026, 3, 6, 0, 0)},
		{"0 0 13 * 5", utc(2026, 3, 7, 0, 0), utc(2026, 3, 13, 0, 0)},
		{"0 0 13 * 5", utc(2026, 3, 13, 0, 0), utc(2026, 3, 20, 0, 0)},
		// Descriptors.
		{"@hourly", utc(2026, 12, 31, 23, 5), utc(2027, 1, 1, 0, 0)},
		{"@daily", utc(2026, 2, 28, 1, 0), utc(2026, 3, 1, 0, 0)},
		{"@midnight", utc(2028, 2, 28, 1, 0), utc(2028, 2, 29, 0, 0)},
		{"@weekly", utc(2026, 11, 26, 0, 0), utc(2026, 11, 29, 0, 0)}, // Sunday
		{"@monthly", utc(2026, 12, 1, 0, 0), utc(2027, 1, 1, 0, 0)},
		{"@yearly", utc(2026, 12, 31, 23, 59), utc(2027, 1, 1, 0, 0)},
		{"@yearly", utc(2027, 1, 1, 0, 0), utc(2028, 1, 1, 0, 0)},
		{"@annually", utc(2027, 6, 1, 0, 0), utc(2028, 1, 1, 0, 0)},
		{"@DAILY", utc(2026, 1, 1, 12, 0), utc(2026, 1, 2, 0, 0)},
	} {
		cr, err := ParseCron(c.expr)
		if err != nil {
			t.Errorf("ParseCron(%q): %v", c.expr, err)
			continue
		}
		got := cr.Next(c.after)
		if !got.Equal(c.want) || got.Location() != time.UTC {
			t.Errorf("%q after %v: %v; want %v in UTC", c.expr, c.after, got, c.want)
		}
		// Spec.Next agrees.
		if sn, ok := (Spec{Cron: c.expr}).Next(c.after); !ok || !sn.Equal(c.want) {
			t.Errorf("Spec{Cron: %q}.Next(%v) = %v, %v; want %v", c.expr, c.after, sn, ok, c.want)
		}
	}
}

func TestCronIsUTCWhateverTheZoneOfTheTimeGiven(t *testing.T) {
	cr, err := ParseCron("0 2 * * *")
	if err != nil {
		t.Fatal(err)
	}
	// 00:00 at UTC+5 is 19:00 UTC the day before. Read in the zone of the time given,
	// the next 02:00 would be 21:00 UTC; read in UTC it is 02:00 UTC the next day.
	after := time.Date(2026, 6, 1, 0, 0, 0, 0, time.FixedZone("UTC+5", 5*3600))
	got := cr.Next(after)
	if want := utc(2026, 6, 1, 2, 0); !got.Equal(want) || got.Location() != time.UTC {
		t.Fatalf("next 02:00 after %v: %v; want %v", after, got, want)
	}
	ny, err := time.LoadLocation("America/New_York")
	if err != nil {
		t.Fatal(err)
	}
	// Across New York's change of clocks (8 March 2026), still 02:00 UTC every day.
	prev := time.Date(2026, 3, 6, 12, 0, 0, 0, ny)
	for range 5 {
		n := cr.Next(prev)
		if n.Hour() != 2 || n.Minute() != 0 || n.Location() != time.UTC || !n.After(prev) {
			t.Fatalf("slot %v after %v is not 02:00 UTC", n, prev)
		}
		prev = n.In(ny)
	}
	if cr.String() != "0 2 * * *" {
		t.Fatalf("String() = %q", cr.String())
	}
}

func TestParseCronRefuses(t *testing.T) {
	for _, c := range []struct {
		expr string
		want []string
	}{
		{"", []string{"no cron expression", "5 fields"}},
		{"* * * *", []string{"has 4 fields", "minute hour day-of-month month day-of-week", "@daily"}},
		{"0 0 * * * *", []string{"has 6 fields"}},
		{"61 * * * *", []string{"field 1, the minute", `"61"`, "0-59"}},
		{"0 24 * * *", []string{"field 2, the hour", "0-23"}},
		{"0 0 0 * *", []string{"field 3, the day of month", "1-31"}},
		{"0 0 32 * *", []string{"field 3, the day of month"}},
		{"0 0 * 13 *", []string{"field 4, the month", "JAN-DEC"}},
		{"0 0 * FOO *", []string{"field 4, the month"}},
		{"0 0 * * 7", []string{"field 5, the day of week", "Sunday is 0"}},
		{"*/0 * * * *", []string{"field 1, the minute"}},
		{"5-1 * * * *", []string{"field 1, the minute"}},
		{", * * * *", []string{"field 1, the minute", "selects no value"}},
		{"0 x * * y", []string{"field 2, the hour", "field 5, the day of week"}},
		{"@every 1h", []string{`unknown cron descriptor "@every 1h"`, "@hourly"}},
		{"@reboot", []string{"unknown cron descriptor"}},
		{"TZ=Europe/Paris 0 2 * * *", []string{"UTC", "TZ="}},
		{"CRON_TZ=UTC 0 2 * * *", []string{"UTC", "CRON_TZ="}},
		{"0 0 31 2 *", []string{"never fires"}},
		{"0 0 30,31 2 *", []string{"never fires"}},
	} {
		_, err := ParseCron(c.expr)
		if err == nil {
			t.Errorf("ParseCron(%q) accepted it", c.expr)
			continue
		}
		for _, w := range c.want {
			if !strings.Contains(err.Error(), w) {
				t.Errorf("ParseCron(%q): error %q does not say %q", c.expr, err, w)
			}
		}
	}
	// A field that is fine is not blamed.
	_, err := ParseCron("0 25 * * *")
	if err == nil || strings.Contains(err.Error(), "field 1") || !strings.Contains(err.Error(), "field 2") {
		t.Fatalf("error %v should name field 2 only", err)
	}
}

func TestZeroCronNeverFires(t *testing.T) {
	if n := (Cron{}).Next(utc(2026, 1, 1, 0, 0)); !n.IsZero() {
		t.Fatalf("zero Cron fires at %v", n)
	}
}
