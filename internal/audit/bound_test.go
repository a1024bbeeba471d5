package audit

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"unicode/utf8"
)

// maxRecord is the most text a record's bounded fields hold together.
const maxRecord = 6*MaxField + MaxTarget + MaxError + MaxParams

// recordSize is the text a record stores, besides its fixed-size fields.
func recordSize(r Record) int {
	return len(r.Actor) + len(r.ActorKind) + len(r.OnBehalfOf) + len(r.From) + len(r.Action) + len(r.Outcome) +
		len(r.Target) + len(r.Error) + len(r.Params)
}

// checkBounded fails unless every field of r is within its bound and the record is
// intact.
func checkBounded(t *testing.T, r Record) {
	t.Helper()
	for _, f := range []string{r.Actor, r.ActorKind, r.OnBehalfOf, r.From, r.Action, r.Outcome} {
		if len(f) > MaxField {
			t.Errorf("record %d: a field of %d bytes (bound %d): %.80q", r.ID, len(f), MaxField, f)
		}
	}
	if len(r.Target) > MaxTarget || len(r.Error) > MaxError || len(r.Params) > MaxParams {
		t.Errorf("record %d: target %d, error %d, params %d bytes; bounds %d, %d, %d", r.ID, len(r.Target), len(r.Error),
			len(r.Params), MaxTarget, MaxError, MaxParams)
	}
	var p map[string]json.RawMessage
	if err := json.Unmarshal(r.Params, &p); err != nil {
		t.Errorf("record %d: params are not a JSON object: %v", r.ID, err)
	}
	for k, v := range p {
		if len(k) > MaxParamKey || len(v) > MaxParamValue {
			t.Errorf("record %d: parameter %.40q: name %d bytes, value %d bytes; bounds %d, %d", r.ID, k, len(k), len(v), MaxParamKey, MaxParamValue)
		}
	}
	if recordSize(r) > maxRecord {
		t.Errorf("record %d holds %d bytes; the bound is %d", r.ID, recordSize(r), maxRecord)
	}
	if r.ComputeHash() != r.Hash {
		t.Errorf("record %d does not match its hash: the hash must cover the bounded form", r.ID)
	}
}

// One request with a 600 KiB query, and others with a huge path, body value, error or
// number of parameters: each record stays within its bounds, says how long each cut
// value was, and verifies.
func TestHugeRequestsMakeBoundedRecords(t *testing.T) {
	l, _, _ := openTest(t)
	mux := http.NewServeMux()
	mux.HandleFunc("POST /api/v1/echo", func(w http.ResponseWriter, r *http.Request) {
		Describe(r.Context(), "test.echo", r.URL.Query().Get("target"))
		_, _ = r.Body.Read(make([]byte, 1<<20))
		http.Error(w, strings.Repeat("E", 100<<10), http.StatusBadRequest)
	})
	srv := httptest.NewServer(l.Middleware(mux, nil))
	defer srv.Close()
	hc := srv.Client()

	pad := strings.Repeat("p", 600<<10)
	send(t, hc, srv.URL, http.MethodPost, "/api/v1/vms?pad="+pad, "")
	send(t, hc, srv.URL, http.MethodPost, "/api/v1/"+strings.Repeat("x", 300<<10), "")
	send(t, hc, srv.URL, http.MethodPost, "/api/v1/echo?target="+strings.Repeat("t", 4000), `{"name":"`+strings.Repeat("é", 30<<10)+`"}`)
	var many []string
	for i := range 3000 {
		many = append(many, fmt.Sprintf("k%04d=%s", i, strings.Repeat("v", 20)))
	}
	send(t, hc, srv.URL, http.MethodPost, "/api/v1/echo?"+strings.Join(many, "&"), "")

	recs, err := l.List(context.Background(), Filter{Oldest: true})
	if err != nil || len(recs) != 4 {
		t.Fatalf("records: %d %v; want 4", len(recs), err)
	}
	for _, r := range recs {
		checkBounded(t, r)
		t.Logf("record %d: %s, %d bytes", r.ID, r.Action, recordSize(r))
	}
	var p map[string]string
	if err := json.Unmarshal(recs[0].Params, &p); err != nil || !strings.HasSuffix(p["pad"], "…(614400 bytes)") ||
		!strings.HasPrefix(p["pad"], "ppp") {
		t.Errorf("the 600 KiB query value is recorded as %.60q…; want its start and …(614400 bytes)", p["pad"])
	}
	if tg := recs[1].Target; !strings.HasPrefix(tg, "/api/v1/xxx") || !strings.HasSuffix(tg, fmt.Sprintf("…(%d bytes)", len("/api/v1/")+300<<10)) {
		t.Errorf("the long path is recorded as %q", tg)
	}
	if e := recs[2].Error; !strings.HasSuffix(e, "bytes)") || !utf8.ValidString(string(recs[2].Params)) {
		t.Errorf("the long error is recorded as %.60q…", e)
	}
	if !strings.Contains(string(recs[3].Params), `"…":"(`) {
		t.Errorf("3000 parameters are recorded as %.200s…; want the ones left out counted under …", recs[3].Params)
	}
	if v, err := l.Verify(context.Background()); err != nil || !v.OK {
		t.Fatalf("verify: %+v %v", v, err)
	}
}

func TestBoundParams(t *testing.T) {
	cases := map[string]map[string]any{
		"escapes":  {"ctl": strings.Repeat("\x01", 3000)},
		"nested":   {"disks": []any{map[string]any{"path": strings.Repeat("d", 5000)}}, "n": 1},
		"large":    {"a": strings.Repeat("a", 900), "b": strings.Repeat("b", 900), "c": strings.Repeat("c", 900), "d": strings.Repeat("d", 900), "e": strings.Repeat("e", 900), "f": strings.Repeat("f", 900), "g": strings.Repeat("g", 900), "h": strings.Repeat("h", 900), "i": strings.Repeat("i", 900), "j": strings.Repeat("j", 900)},
		"longkey":  {strings.Repeat("k", 5000): "v"},
		"small":    {"host": "host-1", "n": 3},
		"nonascii": {"name": strings.Repeat("日本", 1000)},
	}
	for name, p := range cases {
		raw, err := encodeParams(p)
		if err != nil {
			t.Fatal(err)
		}
		r, err := prepare(Record{Actor: "a", ActorKind: KindUser, Action: "x.y", Outcome: Succeeded, Params: raw})
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		r.Hash = r.ComputeHash()
		checkBounded(t, r)
		if name == "small" && string(r.Params) != `{"host":"host-1","n":3}` {
			t.Errorf("small params changed: %s", r.Params)
		}
		if name == "large" && strings.Count(string(r.Params), "…(900 bytes)") != 1 {
			t.Errorf("ten 900-byte params: %s; want only one cut to its marker", r.Params)
		}
	}
}

// FuzzBound feeds prepare (what every Append does first) arbitrary params and text: a
// record is either refused with a sentence (params that are not a JSON object) or comes
// out within every bound, with params a JSON object, whose hash is then stable.
func FuzzBound(f *testing.F) {
	f.Add(`{"host":"host-1","n":3}`, "web-1", "no", 1)
	f.Add(`{"pad":"`+strings.Repeat("p", 5000)+`"}`, strings.Repeat("/x", 400), strings.Repeat("e", 3000), 0)
	f.Add(`{"a":[1,2,{"b":"\u0001\u0002"}],"`+strings.Repeat("k", 200)+`":null}`, "日本語", "", 2)
	f.Add(`[1,2]`, "", "", 0)
	f.Add(`{"a":1,"a":2}`, "", "", 0)
	f.Add(`{"\ud800":"\udfff"}`, "\xff\xfe", "\xc3", 3)
	f.Fuzz(func(t *testing.T, params, target, errText string, copies int) {
		// Repeat the input to reach sizes the fuzzer would not try on its own.
		copies = max(1, min(copies%8+1, 8))
		target, errText = strings.Repeat(target, copies*copies), strings.Repeat(errText, copies*copies)
		r, err := prepare(Record{Actor: "a" + target, ActorKind: KindUser, Action: "fuzz." + target, Target: target,
			Outcome: Refused, Error: errText, Params: json.RawMessage(params)})
		if err != nil {
			if !strings.Contains(err.Error(), "params must be a JSON object") {
				t.Fatalf("prepare refused %q with %v; want a sentence about the params", params, err)
			}
			return
		}
		r.Hash = r.ComputeHash()
		checkBounded(t, r)
		again, err := prepare(r)
		if err != nil || again.ComputeHash() != r.Hash {
			t.Fatalf("a prepared record changes when prepared again: %v\n%s\n%s", err, r.Params, again.Params)
		}
	})
}
