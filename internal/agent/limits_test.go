package agent

import (
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/godwit/godwit/internal/api"
)

// However many refused requests, and however large, come in between two heartbeats, the
// agent keeps at most api.MaxAgentRefusals, bounded, counts the ones it dropped, and its
// heartbeat fits the center's body limit — also when a failed heartbeat puts them back.
func TestRefusalsKeptBounded(t *testing.T) {
	tr := newTrust(t.TempDir())
	path := "/" + strings.Repeat("p", 600<<10)
	const sent = 1000
	for i := range sent {
		tr.refuse(api.AgentRefusal{Time: time.Now(), From: "198.18.1.3:4000", Method: "GET", Path: path,
			Reason: "no certificate: " + path + strings.Repeat("!", i%3)})
	}
	rs := tr.takeRefusals()
	if len(rs) != api.MaxAgentRefusals {
		t.Fatalf("%d refusals kept; want %d", len(rs), api.MaxAgentRefusals)
	}
	if rs[0].Dropped != sent-api.MaxAgentRefusals {
		t.Fatalf("the oldest kept refusal counts %d dropped; want %d", rs[0].Dropped, sent-api.MaxAgentRefusals)
	}
	for _, r := range rs {
		if len(r.Path) > api.MaxRefusalField || len(r.Reason) > api.MaxRefusalField {
			t.Fatalf("a kept refusal has a %d-byte path and a %d-byte reason", len(r.Path), len(r.Reason))
		}
	}
	// The heartbeat failed: they go back, with the ones refused meanwhile, still bounded
	// and still counted.
	for range 10 {
		tr.refuse(api.AgentRefusal{Path: path})
	}
	tr.putBack(rs)
	again := tr.takeRefusals()
	dropped := 0
	for _, r := range again {
		dropped += r.Dropped
	}
	if len(again) != api.MaxAgentRefusals || dropped != sent+10-api.MaxAgentRefusals {
		t.Fatalf("after a failed heartbeat: %d kept, %d counted as dropped; want %d and %d", len(again), dropped, api.MaxAgentRefusals, sent+10-api.MaxAgentRefusals)
	}
	b, _ := json.Marshal(api.HostFacts{Name: "host-1", Refusals: again})
	if len(b) > api.MaxBodyBytes/4 {
		t.Fatalf("the heartbeat is %d bytes", len(b))
	}
}
