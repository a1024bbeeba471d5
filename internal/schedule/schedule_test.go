package schedule

import (
	"strings"
	"testing"
	"time"
)

func TestSpecKindValidateNext(t *testing.T) {
	at := utc(2026, 11, 26, 14, 0)
	if k := (Spec{At: at}).Kind(); k != KindAt {
		t.Errorf("one-shot kind %q", k)
	}
	if k := (Spec{Cron: "@daily"}).Kind(); k != KindCron {
		t.Errorf("cron kind %q", k)
	}
	for _, c := range []struct {
		spec Spec
		kind string
		want string
	}{
		{Spec{}, "", "neither"},
		{Spec{At: at, Cron: "@daily"}, "", "both"},
		{Spec{Cron: "@fortnightly"}, KindCron, "unknown cron descriptor"},
	} {
		if k := c.spec.Kind(); k != c.kind {
			t.Errorf("%+v has kind %q; want %q", c.spec, k, c.kind)
		}
		err := c.spec.Validate()
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("Validate(%+v) = %v; want it to say %q", c.spec, err, c.want)
		}
		if n, ok := c.spec.Next(at.Add(-time.Hour)); ok || !n.IsZero() {
			t.Errorf("invalid %+v has a next slot %v", c.spec, n)
		}
	}
	if err := (Spec{At: at}).Validate(); err != nil {
		t.Errorf("one-shot: %v", err)
	}

	// A one-shot has its time as next slot until that time, then none.
	inZone := at.In(time.FixedZone("UTC-3", -3*3600))
	one := Spec{At: inZone}
	if n, ok := one.Next(at.Add(-time.Nanosecond)); !ok || !n.Equal(at) || n.Location() != time.UTC {
		t.Errorf("one-shot before its time: %v, %v", n, ok)
	}
	if n, ok := one.Next(time.Time{}); !ok || !n.Equal(at) {
		t.Errorf("one-shot that never ran: %v, %v", n, ok)
	}
	for _, after := range []time.Time{at, at.Add(time.Second), at.AddDate(1, 0, 0)} {
		if n, ok := one.Next(after); ok || !n.IsZero() {
			t.Errorf("one-shot after %v: %v, %v; want none", after, n, ok)
		}
	}
}

func TestValidateName(t *testing.T) {
	for _, n := range []string{"a", "0", "nightly-web", "drain_host.2", "A" + strings.Repeat("b", 62)} {
		if err := ValidateName(n); err != nil {
			t.Errorf("ValidateName(%q): %v", n, err)
		}
	}
	for _, n := range []string{"", "-a", ".a", "_a", "a b", "a/b", "é", "a\n", strings.Repeat("b", 64)} {
		err := ValidateName(n)
		if err == nil || !strings.Contains(err.Error(), "1-63 letters") {
			t.Errorf("ValidateName(%q) = %v; want a refusal that says what names look like", n, err)
		}
	}
}

func TestParsePolicy(t *testing.T) {
	for in, want := range map[string]string{"": MissedRunOnce, "run-once": MissedRunOnce, "skip": MissedSkip} {
		if got, err := ParsePolicy(in); err != nil || got != want {
			t.Errorf("ParsePolicy(%q) = %q, %v; want %q", in, got, err, want)
		}
	}
	if DefaultMissedPolicy != MissedRunOnce {
		t.Errorf("default policy %q", DefaultMissedPolicy)
	}
	for _, in := range []string{"Skip", "run_once", "all"} {
		if _, err := ParsePolicy(in); err == nil || !strings.Contains(err.Error(), "run-once") || !strings.Contains(err.Error(), "skip") {
			t.Errorf("ParsePolicy(%q) = %v; want a refusal naming both policies", in, err)
		}
	}
}
