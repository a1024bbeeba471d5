package api

import (
	"bytes"
	"errors"
	"strings"
	"testing"
	"time"
)

// A stream of views and heartbeats reads back as written; a line that is not an event
// ends it with a sentence.
func TestProgressStream(t *testing.T) {
	var buf bytes.Buffer
	views := []Migration{
		{ID: "m-1", VM: "web-1", State: MigrationRunning, Progress: MigrationProgress{Phase: "copy", PercentSent: 12.5}},
		{ID: "m-2", VM: "web-2", State: MigrationFailed, Error: "the destination refused"},
	}
	for i := range views {
		b, err := MarshalProgress(ProgressEvent{Migration: &views[i]})
		if err != nil {
			t.Fatal(err)
		}
		buf.Write(b)
		buf.WriteString("{}\n\n") // a heartbeat and an empty line
	}
	var got []ProgressEvent
	if err := ReadProgress(&buf, func(ev ProgressEvent) error { got = append(got, ev); return nil }); err != nil {
		t.Fatal(err)
	}
	if len(got) != 4 || got[0].Migration == nil || got[0].Migration.Progress.PercentSent != 12.5 || got[1].Migration != nil ||
		got[2].Migration == nil || got[2].Migration.Error != "the destination refused" || got[3].Migration != nil {
		t.Fatalf("read back %+v", got)
	}

	stop := errors.New("enough")
	if err := ReadProgress(strings.NewReader("{}\n{}\n"), func(ProgressEvent) error { return stop }); err != stop {
		t.Errorf("a callback's error: %v; want it returned", err)
	}
	for in, want := range map[string]string{
		"[1]\n":             "not a JSON object",
		"data: {}\n":        "not a JSON object",
		"{\"migration\":\n": "not an event",
		`{"migration":{"state":"running"}}` + "\n":                   "without an id",
		`{"migration":{"id":5}}` + "\n":                              "not an event",
		"{\"x\":\"" + strings.Repeat("a", MaxProgressLine) + "\"}\n": "longer than",
	} {
		err := ReadProgress(strings.NewReader(in), func(ProgressEvent) error { return nil })
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("ReadProgress(%.40q): %v; want an error saying %q", in, err, want)
		}
	}
}

// A view whose texts would make its line too long goes out with them cut, within the
// bound the reader keeps.
func TestMarshalProgressBounded(t *testing.T) {
	huge := strings.Repeat("é", MaxProgressLine)
	m := Migration{ID: "m-1", Error: huge, Waiting: huge, Progress: MigrationProgress{Note: huge}, Started: time.Now()}
	b, err := MarshalProgress(ProgressEvent{Migration: &m})
	if err != nil {
		t.Fatal(err)
	}
	if len(b) >= MaxProgressLine || b[len(b)-1] != '\n' {
		t.Fatalf("line of %d bytes; want one line under %d", len(b), MaxProgressLine)
	}
	var got Migration
	if err := ReadProgress(bytes.NewReader(b), func(ev ProgressEvent) error { got = *ev.Migration; return nil }); err != nil {
		t.Fatal(err)
	}
	if !strings.HasSuffix(got.Error, TruncationNote(len(huge))) || m.Error != huge {
		t.Errorf("the error went out as %d bytes ending %q; want it cut with a note, and the view itself untouched", len(got.Error), got.Error[len(got.Error)-20:])
	}
}

// FuzzReadProgress: for any bytes, ReadProgress never panics, hands on only events
// whose migration has an id, and whatever it hands on encodes to a line it reads back
// as the same event.
func FuzzReadProgress(f *testing.F) {
	for _, s := range []string{"", "{}\n", `{"migration":{"id":"m","state":"running","progress":{"percent_sent":5}}}` + "\n",
		"{}\n[]\n", `{"migration":null}`, `{"migration":{"id":""}}`, "{\"migration\":{\"id\":\"\xff\"}}\n", "\n\n\n{}", "{\"a\":1}{\"b\":2}\n"} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, in []byte) {
		_ = ReadProgress(bytes.NewReader(in), func(ev ProgressEvent) error {
			if ev.Migration != nil && ev.Migration.ID == "" {
				t.Fatalf("handed on a migration without an id: %+v", ev)
			}
			b, err := MarshalProgress(ev)
			if err != nil {
				return nil // a view the agent would not send (too long even when cut)
			}
			n := 0
			if err := ReadProgress(bytes.NewReader(b), func(again ProgressEvent) error {
				n++
				if (again.Migration == nil) != (ev.Migration == nil) || again.Migration != nil && again.Migration.ID != ev.Migration.ID {
					t.Fatalf("%+v read back as %+v", ev, again)
				}
				return nil
			}); err != nil || n != 1 {
				t.Fatalf("%q, encoded from an event it read, reads back as %d events, %v", b, n, err)
			}
			return nil
		})
	})
}
