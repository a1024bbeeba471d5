package integration

import (
	"encoding/json"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/godwit/godwit/internal/api"
	"github.com/godwit/godwit/internal/audit"
	"github.com/godwit/godwit/internal/pki"
)

// A stranger floods an agent with refused requests whose paths are as large as a header
// may be: the agent reports them bounded and capped, so its heartbeats stay within the
// center's body limit and the host stays connected; the refusals are in the audit trail,
// each bounded, with the ones not kept counted. A path beyond the header limit is
// answered 431 before anything else.
func TestAgentRefusalFloodKeepsHostConnected(t *testing.T) {
	l := newLab(t, 1)
	var host api.Host
	l.RunJSON(&host, "host", "show", "host-1")
	stranger := l.HTTPS("client", "host-1", nil) // trusts the CA, presents no certificate
	stranger.Timeout = 30 * time.Second

	// 120 requests of ~60 KiB paths: unbounded, they would make ~14 MB of heartbeat.
	const sent = 120
	pad := strings.Repeat("p", 60<<10)
	var wg sync.WaitGroup
	var mu sync.Mutex
	codes := map[int]int{}
	for i := range sent {
		wg.Add(1)
		go func() {
			defer wg.Done()
			resp, err := stranger.Get(host.AgentURL + "/agent/v1/vms/" + pad + "?n=" + strconv.Itoa(i))
			if err != nil {
				t.Errorf("request %d: %v", i, err)
				return
			}
			resp.Body.Close()
			mu.Lock()
			codes[resp.StatusCode]++
			mu.Unlock()
		}()
		if i%8 == 7 {
			wg.Wait()
		}
	}
	wg.Wait()
	if codes[http.StatusUnauthorized] != sent {
		t.Fatalf("answers to the stranger: %v; want %d × 401", codes, sent)
	}
	resp, err := stranger.Get(host.AgentURL + "/agent/v1/" + strings.Repeat("q", 600<<10))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusRequestHeaderFieldsTooLarge {
		t.Errorf("a 600 KiB path: %s; want 431", resp.Status)
	}

	// Every refusal is accounted for in the trail: recorded, or counted as dropped.
	var recs []audit.Record
	recs = waitAudit(t, l, func(rs []audit.Record) bool {
		n := 0
		for _, r := range rs {
			if r.Action == "agent.request" {
				n += 1 + intParam(r, "dropped")
			}
		}
		return n >= sent
	}, "--action", "agent.request", "--limit", "1000")
	for _, r := range recs {
		if p := param(r, "path"); len(p) > api.MaxRefusalField || len(r.Error) > api.MaxRefusalField || !strings.HasPrefix(p, "/agent/v1/vms/ppp") {
			t.Fatalf("refusal record %d: a %d-byte path %q…, a %d-byte error; want the start of the path and the error, each within %d bytes",
				r.ID, len(p), p[:min(len(p), 40)], len(r.Error), api.MaxRefusalField)
		}
		if r.Outcome != audit.Refused || !strings.Contains(r.Error, "present the certificate") {
			t.Fatalf("refusal record %d: %s %q", r.ID, r.Outcome, r.Error)
		}
	}
	if len(recs) >= sent {
		t.Errorf("%d refusal records for %d refused requests; want at most %d per heartbeat, the rest counted", len(recs), sent, api.MaxAgentRefusals)
	}

	// The host's heartbeats keep arriving, past the center's heartbeat timeout.
	time.Sleep(12 * time.Second)
	l.RunJSON(&host, "host", "show", "host-1")
	if host.State != api.HostConnected || time.Since(host.LastHeartbeat) > 5*time.Second {
		t.Fatalf("host-1 after the flood: %s, last heartbeat %s ago; want connected", host.State, time.Since(host.LastHeartbeat))
	}
}

// intParam returns a record's numeric parameter (0 if absent).
func intParam(r audit.Record, key string) int {
	n, _ := strconv.Atoi(param(r, key))
	return n
}

// Task streams whose client vanished — its link cut, so nothing is acknowledged and
// nothing is closed — end within about a minute, and give back their places: a user who
// held the most streams may open one again.
func TestDeadTaskStreamClientsLetGo(t *testing.T) {
	l := newLab(t, 1)
	if code, body := l.RawAPI("POST", "/api/v1/users", `{"name":"watcher","role":"viewer","password":"watcher-pw"}`); code != http.StatusCreated {
		t.Fatalf("create user: %d %s", code, body)
	}
	code, body := l.RawAPI("POST", "/api/v1/tokens", `{"user":"watcher","expires":"1h"}`)
	var tok api.Token
	if code != http.StatusCreated || json.Unmarshal([]byte(body), &tok) != nil {
		t.Fatalf("create token: %d %s", code, body)
	}
	center := l.Lab().CenterURL
	stream := func(from string) (*http.Response, error) {
		hc := l.HTTPS(from, pki.CenterName, nil)
		hc.Timeout = 0
		req, _ := http.NewRequest(http.MethodGet, center+"/api/v1/tasks/stream", nil)
		req.Header.Set("Authorization", "Bearer "+tok.Secret)
		return hc.Do(req)
	}
	// The client opens as many streams as one user may.
	var open []*http.Response
	defer func() {
		for _, r := range open {
			r.Body.Close()
		}
	}()
	for i := 0; ; i++ {
		resp, err := stream("client")
		if err != nil {
			t.Fatal(err)
		}
		if resp.StatusCode == http.StatusTooManyRequests {
			resp.Body.Close()
			break
		}
		if resp.StatusCode != http.StatusOK || i > 100 {
			t.Fatalf("stream %d: %s", i+1, resp.Status)
		}
		open = append(open, resp)
	}
	t.Logf("watcher holds %d streams", len(open))

	// The client's link is cut: its streams can neither be read nor closed.
	l.LinkDown("client")
	defer l.LinkUp("client")
	start := time.Now()
	for {
		resp, err := stream("center")
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode == http.StatusOK {
			break
		}
		if resp.StatusCode != http.StatusTooManyRequests || time.Since(start) > 2*time.Minute {
			t.Fatalf("a stream %s after the client's link was cut: %s; want its dead streams let go", time.Since(start), resp.Status)
		}
		time.Sleep(5 * time.Second)
	}
	t.Logf("the dead client's streams were let go within %s", time.Since(start).Round(time.Second))
}
