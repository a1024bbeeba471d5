package audit

import (
	"context"
	"encoding/json"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os/user"
	"path/filepath"
	"strings"
	"testing"

	"github.com/godwit/godwit/internal/api"
)

// testAPI is a small API shaped like the center's: handlers describe their requests.
func testAPI(l *Log) http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("POST /api/v1/vms", func(w http.ResponseWriter, r *http.Request) {
		Describe(r.Context(), "vm.create", "")
		var req struct {
			Name      string `json:"name"`
			MemoryMiB *int   `json:"memory_mib,omitempty"`
		}
		if err := api.Decode(w, r, &req); err != nil {
			api.WriteError(w, err)
			return
		}
		SetTarget(r.Context(), req.Name)
		if req.MemoryMiB != nil && *req.MemoryMiB == 0 {
			api.WriteError(w, api.Errorf(http.StatusUnprocessableEntity, "invalid_spec", "memory must be between 16 and 4194304 MiB, not 0"))
			return
		}
		Params(r.Context(), map[string]any{"host": "host-1", "empty": ""})
		api.WriteJSON(w, http.StatusCreated, map[string]string{"name": req.Name})
	})
	mux.HandleFunc("POST /api/v1/vms/{name}/stop", func(w http.ResponseWriter, r *http.Request) {
		Describe(r.Context(), "vm.stop", r.PathValue("name"))
		api.WriteJSON(w, http.StatusOK, map[string]string{})
	})
	mux.HandleFunc("POST /api/v1/vms/{name}/start", func(w http.ResponseWriter, r *http.Request) {
		Describe(r.Context(), "vm.start", r.PathValue("name"))
		api.WriteError(w, api.Errorf(http.StatusBadGateway, "host_unreachable", "host host-1 could not be reached"))
	})
	mux.HandleFunc("POST /api/v1/vms/{name}/token", func(w http.ResponseWriter, r *http.Request) {
		SetActor(r.Context(), Actor{Name: "ci-token", Kind: KindToken})
		Describe(r.Context(), "vm.token", r.PathValue("name"))
		w.WriteHeader(http.StatusNoContent)
	})
	mux.HandleFunc("POST /api/v1/hosts/heartbeat", func(w http.ResponseWriter, r *http.Request) {
		w.WriteHeader(http.StatusNoContent)
	})
	mux.HandleFunc("GET /api/v1/vms", func(w http.ResponseWriter, r *http.Request) {
		api.WriteJSON(w, http.StatusOK, []string{})
	})
	l.Register(mux)
	return l.Middleware(mux, func(r *http.Request) bool { return r.URL.Path == "/api/v1/hosts/heartbeat" })
}

func send(t *testing.T, hc *http.Client, base, method, path, body string) int {
	t.Helper()
	req, _ := http.NewRequest(method, base+path, strings.NewReader(body))
	if body != "" {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := hc.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, path, err)
	}
	_, _ = io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	return resp.StatusCode
}

func TestMiddlewareRecordsStateChangingRequests(t *testing.T) {
	l, _, _ := openTest(t)
	srv := httptest.NewServer(testAPI(l))
	defer srv.Close()
	hc := srv.Client()

	send(t, hc, srv.URL, http.MethodPost, "/api/v1/vms", `{"name": "web-1", "memory_mib": 512}`)
	send(t, hc, srv.URL, http.MethodPost, "/api/v1/vms", `{"name": "web-2", "memory_mib": 0}`)
	send(t, hc, srv.URL, http.MethodPost, "/api/v1/vms", `{"name": "x", "memroy": 1}`)
	send(t, hc, srv.URL, http.MethodPost, "/api/v1/vms/web-1/stop?force=true&grace=5s", "")
	send(t, hc, srv.URL, http.MethodPost, "/api/v1/vms/web-1/start", "")
	send(t, hc, srv.URL, http.MethodPost, "/api/v1/vms/web-1/token", "")
	send(t, hc, srv.URL, http.MethodDelete, "/api/v1/nosuch", "")
	// Not recorded: reads and heartbeats.
	send(t, hc, srv.URL, http.MethodGet, "/api/v1/vms", "")
	send(t, hc, srv.URL, http.MethodPost, "/api/v1/hosts/heartbeat", `{}`)

	recs, err := l.List(context.Background(), Filter{Oldest: true})
	if err != nil {
		t.Fatal(err)
	}
	if len(recs) != 7 {
		for _, r := range recs {
			t.Logf("%+v %s", r, r.Params)
		}
		t.Fatalf("%d records, want 7", len(recs))
	}
	for _, r := range recs {
		if r.Action != "vm.token" && (r.Actor != Anonymous || r.ActorKind != KindUser) || !strings.HasPrefix(r.From, "127.0.0.1:") {
			t.Errorf("record %d: actor %s (%s) from %q; want anonymous from 127.0.0.1", r.ID, r.Actor, r.ActorKind, r.From)
		}
	}
	check := func(i int, action, target, outcome, errWant, paramsWant string) {
		t.Helper()
		r := recs[i]
		if r.Action != action || r.Target != target || r.Outcome != outcome || !strings.Contains(r.Error, errWant) ||
			string(r.Params) != paramsWant {
			t.Errorf("record %d: %s %s %s error %q params %s; want %s %s %s error %q params %s",
				r.ID, r.Action, r.Target, r.Outcome, r.Error, r.Params, action, target, outcome, errWant, paramsWant)
		}
	}
	check(0, "vm.create", "web-1", Succeeded, "", `{"host":"host-1","memory_mib":512,"name":"web-1"}`)
	check(1, "vm.create", "web-2", Refused, "memory must be between 16", `{"memory_mib":0,"name":"web-2"}`)
	check(2, "vm.create", "", Refused, "unknown field", `{"memroy":1,"name":"x"}`)
	check(3, "vm.stop", "web-1", Succeeded, "", `{"force":"true","grace":"5s"}`)
	check(4, "vm.start", "web-1", Failed, "could not be reached", `{}`)
	check(5, "vm.token", "web-1", Succeeded, "", `{}`)
	check(6, "http.delete", "/api/v1/nosuch", Refused, "404 page not found", `{}`)
	if recs[5].Actor != "ci-token" || recs[5].ActorKind != KindToken {
		t.Errorf("an actor named by the handler: %s (%s)", recs[5].Actor, recs[5].ActorKind)
	}
	if recs[1].Error != "memory must be between 16 and 4194304 MiB, not 0" {
		t.Errorf("the refusal's error is %q; want the API's message as the client saw it", recs[1].Error)
	}
}

func TestPeerListenerNamesTheUnixUser(t *testing.T) {
	l, _, _ := openTest(t)
	sock := filepath.Join(t.TempDir(), "c.sock")
	ln, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: testAPI(l)}
	done := make(chan struct{})
	go func() { defer close(done); _ = srv.Serve(PeerListener(ln)) }()
	defer func() { _ = srv.Close(); <-done }()

	hc := &http.Client{Transport: &http.Transport{DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
		var d net.Dialer
		return d.DialContext(ctx, "unix", sock)
	}}}
	send(t, hc, "http://center", http.MethodPost, "/api/v1/vms/web-1/stop", "")
	recs, err := l.List(context.Background(), Filter{})
	if err != nil || len(recs) != 1 {
		t.Fatalf("records %+v %v", recs, err)
	}
	me, err := user.Current()
	if err != nil {
		t.Fatal(err)
	}
	if r := recs[0]; r.Actor != me.Username || r.ActorKind != KindUser || r.From != Local {
		t.Fatalf("record over the unix socket: actor %q (%s) from %q; want %q (user) from local", r.Actor, r.ActorKind, r.From, me.Username)
	}
}

func TestAuditAPI(t *testing.T) {
	l, db, _ := openTest(t)
	srv := httptest.NewServer(testAPI(l))
	defer srv.Close()
	hc := srv.Client()
	send(t, hc, srv.URL, http.MethodPost, "/api/v1/vms", `{"name": "web-1"}`)
	send(t, hc, srv.URL, http.MethodPost, "/api/v1/vms", `{"name": "web-2", "memory_mib": 0}`)
	send(t, hc, srv.URL, http.MethodPost, "/api/v1/vms/web-1/stop", "")

	get := func(path string, out any) int {
		t.Helper()
		resp, err := hc.Get(srv.URL + path)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		if out != nil {
			if s, ok := out.(*string); ok {
				*s = string(b)
			} else if err := json.Unmarshal(b, out); err != nil && resp.StatusCode == 200 {
				t.Fatalf("GET %s: %v\n%s", path, err, b)
			}
		}
		return resp.StatusCode
	}
	var recs []Record
	if get("/api/v1/audit?vm=web-1&action=vm.*", &recs); len(recs) != 2 || recs[0].Action != "vm.stop" {
		t.Fatalf("GET /api/v1/audit?vm=web-1: %+v", recs)
	}
	if st := get("/api/v1/audit?since=whenever", nil); st != http.StatusBadRequest {
		t.Fatalf("a bad since gave %d, want 400", st)
	}
	var csvOut string
	if get("/api/v1/audit/export?format=csv", &csvOut); strings.Count(csvOut, "\n") != 4 || !strings.HasPrefix(csvOut, "id,time,actor") {
		t.Fatalf("CSV export:\n%s", csvOut)
	}
	var jl string
	if get("/api/v1/audit/export?format=jsonl&limit=2", &jl); strings.Count(jl, "\n") != 2 {
		t.Fatalf("JSONL export with limit=2:\n%s", jl)
	}
	if st := get("/api/v1/audit/export?format=xml", nil); st != http.StatusBadRequest {
		t.Fatalf("an unknown format gave %d, want 400", st)
	}
	var v Verification
	if get("/api/v1/audit/verify", &v); !v.OK || v.Checked != 3 {
		t.Fatalf("verify: %+v", v)
	}
	tamper(t, db, `UPDATE audit_log SET outcome = 'succeeded', error = '' WHERE id = 2`)
	if get("/api/v1/audit/verify", &v); v.OK || v.Broken == nil || v.Broken.ID != 2 || v.Broken.Problem != ProblemHashMismatch {
		t.Fatalf("verify after tampering: %+v", v)
	}
}
