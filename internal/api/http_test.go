package api

import (
	"errors"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
)

func TestDecode(t *testing.T) {
	type body struct {
		Name string `json:"name"`
		N    int    `json:"n"`
	}
	cases := []struct {
		in, ctype string
		status    int
		want      string
	}{
		{`{"name":"a","n":1}`, "application/json", 0, ""},
		{``, "application/json", 400, "empty"},
		{`{"name":`, "application/json", 400, "malformed"},
		{`{"name":"a","x":1}`, "application/json", 400, `"x"`},
		{`{"n":"one"}`, "application/json", 400, "field \"n\""},
		{`{"name":"a"}{"name":"b"}`, "application/json", 400, "more than one"},
		{`{"name":"a"} x`, "application/json", 400, "more than one"},
		{`{"name":"a"}`, "text/plain", 415, "JSON"},
		{`{"name":"` + strings.Repeat("a", MaxBodyBytes) + `"}`, "application/json", 413, "larger"},
	}
	for _, c := range cases {
		r := httptest.NewRequest(http.MethodPost, "/", strings.NewReader(c.in))
		r.Header.Set("Content-Type", c.ctype)
		var b body
		err := Decode(httptest.NewRecorder(), r, &b)
		if c.status == 0 {
			if err != nil || b.Name != "a" {
				t.Errorf("%q: %v", c.in, err)
			}
			continue
		}
		var se *StatusError
		if !errors.As(err, &se) || se.Status != c.status || !strings.Contains(se.Msg, c.want) {
			t.Errorf("%.40q: got %v; want %d mentioning %s", c.in, err, c.status, c.want)
		}
	}
}

func TestWriteError(t *testing.T) {
	w := httptest.NewRecorder()
	WriteError(w, Conflict("VM %s exists", "a"))
	if w.Code != 409 || !strings.Contains(w.Body.String(), `"VM a exists"`) || !strings.Contains(w.Body.String(), `"conflict"`) {
		t.Fatalf("got %d %s", w.Code, w.Body)
	}
	w = httptest.NewRecorder()
	WriteError(w, errors.New("boom"))
	if w.Code != 500 {
		t.Fatalf("plain error: %d", w.Code)
	}
}
