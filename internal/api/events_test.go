package api

import (
	"strings"
	"testing"
)

func TestReadEvents(t *testing.T) {
	in := ": task updates\n\ndata: {\"id\":\"a\"}\n\n: keep-alive\n\nevent: task\ndata: line1\ndata:line2\n\ndata: unterminated"
	var got []string
	if err := ReadEvents(strings.NewReader(in), func(d []byte) error {
		got = append(got, string(d))
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	if len(got) != 2 || got[0] != `{"id":"a"}` || got[1] != "line1\nline2" {
		t.Fatalf("events %q; want the two complete events, comments skipped", got)
	}
}
