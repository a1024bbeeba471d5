package schedule

import (
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/robfig/cron/v3"
)

// Cron is a parsed cron expression, always evaluated in UTC. The zero Cron never fires.
type Cron struct {
	expr  string
	sched *cron.SpecSchedule
}

// descriptors are the named expressions ParseCron accepts, with the 5 fields each
// stands for. @annually and @midnight are the usual aliases of @yearly and @daily.
var descriptors = map[string]string{
	"@hourly":   "0 * * * *",
	"@daily":    "0 0 * * *",
	"@midnight": "0 0 * * *",
	"@weekly":   "0 0 * * 0",
	"@monthly":  "0 0 1 * *",
	"@yearly":   "0 0 1 1 *",
	"@annually": "0 0 1 1 *",
}

// cronFields names the 5 fields, in order, with the values each takes.
var cronFields = [5]struct{ name, values string }{
	{"minute", "0-59"},
	{"hour", "0-23"},
	{"day of month", "1-31"},
	{"month", "1-12 or JAN-DEC"},
	{"day of week", "0-6 or SUN-SAT, Sunday is 0"},
}

// cronHelp is the sentence that says which expressions ParseCron reads.
const cronHelp = "give 5 fields, minute hour day-of-month month day-of-week (such as \"30 2 * * 6\" for 02:30 UTC every Saturday), " +
	"or one of @hourly, @daily, @weekly, @monthly, @yearly"

// cronParser reads the 5 standard fields; descriptors and zones are handled by ParseCron.
var cronParser = cron.NewParser(cron.Minute | cron.Hour | cron.Dom | cron.Month | cron.Dow)

// cronProbeFrom is where ParseCron looks for a first slot, to refuse expressions that
// never fire ("0 0 31 2 *"). The search covers five years, so a leap day is found.
var cronProbeFrom = time.Date(2000, 1, 1, 0, 0, 0, 0, time.UTC)

// ParseCron reads a recurring schedule: the 5 standard cron fields (minute, hour, day of
// month, month, day of week; with *, lists, ranges, steps and month and day names), or
// one of the descriptors @hourly, @daily (@midnight), @weekly (Sunday 00:00),
// @monthly (the 1st, 00:00) and @yearly (@annually; 1 January, 00:00). As in standard
// cron, when both day fields are restricted a day matching either one fires.
//
// The expression is always read in UTC, whatever the machine's time zone; a TZ= or
// CRON_TZ= prefix is refused. An expression that never fires (the 31st of February) is
// refused too. Errors name the bad field and the values it takes.
func ParseCron(expr string) (Cron, error) {
	expr = strings.Join(strings.Fields(expr), " ")
	switch {
	case expr == "":
		return Cron{}, fmt.Errorf("no cron expression given: %s", cronHelp)
	case strings.HasPrefix(expr, "TZ=") || strings.HasPrefix(expr, "CRON_TZ="):
		return Cron{}, fmt.Errorf("cron expression %q names a time zone: schedules are always in UTC, so drop the %s prefix and give the times in UTC",
			expr, expr[:strings.IndexByte(expr, '=')+1])
	}
	fields := expr
	if strings.HasPrefix(expr, "@") {
		f, ok := descriptors[strings.ToLower(expr)]
		if !ok {
			return Cron{}, fmt.Errorf("unknown cron descriptor %q: %s", expr, cronHelp)
		}
		fields = f
	}
	parts := strings.Fields(fields)
	if len(parts) != 5 {
		return Cron{}, fmt.Errorf("cron expression %q has %d fields: %s", expr, len(parts), cronHelp)
	}
	if err := checkCronFields(parts); err != nil {
		return Cron{}, fmt.Errorf("cron expression %q: %w", expr, err)
	}
	s, err := cronParser.Parse(fields)
	if err != nil {
		return Cron{}, fmt.Errorf("cron expression %q: %v; %s", expr, err, cronHelp)
	}
	spec, ok := s.(*cron.SpecSchedule)
	if !ok {
		return Cron{}, fmt.Errorf("cron expression %q: %s", expr, cronHelp)
	}
	spec.Location = time.UTC
	c := Cron{expr: expr, sched: spec}
	if c.Next(cronProbeFrom).IsZero() {
		return Cron{}, fmt.Errorf("cron expression %q never fires: no date has that day of month in those months", expr)
	}
	return c, nil
}

// checkCronFields parses each field on its own, so that an error can name the field it
// is about; it reports every bad field.
func checkCronFields(parts []string) error {
	var bad []string
	for i, f := range parts {
		probe := []string{"*", "*", "*", "*", "*"}
		probe[i] = f
		s, err := cronParser.Parse(strings.Join(probe, " "))
		why := ""
		switch {
		case err != nil:
			why = cronFieldError(err, f, i >= 3)
		case cronFieldBits(s, i) == 0:
			why = "it selects no value"
		default:
			continue
		}
		bad = append(bad, fmt.Sprintf("field %d, the %s, is %q: %s (it takes %s, *, lists a,b, ranges a-b and steps */n or a-b/n)",
			i+1, cronFields[i].name, f, why, cronFields[i].values))
	}
	if len(bad) == 0 {
		return nil
	}
	return errors.New(strings.Join(bad, "; "))
}

// cronFieldError rewords the parser's error about one field (which takes names when
// named is set): a value that is not a number, or a range error without the repeated
// expression at its end.
func cronFieldError(err error, field string, named bool) string {
	msg := err.Error()
	switch {
	case strings.HasPrefix(msg, "failed to parse int") && named:
		return "a value there is neither a number nor a name"
	case strings.HasPrefix(msg, "failed to parse int"):
		return "a value there is not a number"
	}
	if i := strings.LastIndex(msg, ": "); i > 0 && strings.Contains(field, msg[i+2:]) {
		msg = msg[:i]
	}
	return msg
}

// cronFieldBits returns the values field i of a parsed schedule selects, without the
// parser's flag for '*'.
func cronFieldBits(s cron.Schedule, i int) uint64 {
	spec, ok := s.(*cron.SpecSchedule)
	if !ok {
		return 0
	}
	const star = 1 << 63
	return [5]uint64{spec.Minute, spec.Hour, spec.Dom, spec.Month, spec.Dow}[i] &^ star
}

// String returns the expression as given (with its blanks normalised).
func (c Cron) String() string { return c.expr }

// Next returns the first slot strictly after after, in UTC, or the zero time when the
// expression fires no more (or c is the zero Cron). Slots are whole minutes.
func (c Cron) Next(after time.Time) time.Time {
	if c.sched == nil {
		return time.Time{}
	}
	t := c.sched.Next(after.UTC())
	if t.IsZero() {
		return t
	}
	return t.UTC()
}
