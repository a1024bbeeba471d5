package agent

import (
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/godwit/godwit/internal/api"
)

// progressReader reads one progress stream in the background.
type progressReader struct {
	events chan api.ProgressEvent
	done   chan error
}

func openProgress(t *testing.T, ctx context.Context, url string) *progressReader {
	t.Helper()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url+"/agent/v1/migrations/stream", nil)
	if err != nil {
		t.Fatal(err)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode != http.StatusOK || resp.Header.Get("Content-Type") != api.ProgressContentType {
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		t.Fatalf("GET /agent/v1/migrations/stream: %s %s %s", resp.Status, resp.Header.Get("Content-Type"), b)
	}
	pr := &progressReader{events: make(chan api.ProgressEvent, 1000), done: make(chan error, 1)}
	go func() {
		defer resp.Body.Close()
		pr.done <- api.ReadProgress(resp.Body, func(ev api.ProgressEvent) error {
			pr.events <- ev
			return nil
		})
	}()
	return pr
}

// next returns the next event within d; ok is false if none came or the stream ended.
func (pr *progressReader) next(d time.Duration) (ev api.ProgressEvent, ok bool) {
	select {
	case ev := <-pr.events:
		return ev, true
	case <-time.After(d):
		return ev, false
	}
}

// scrapeMetric returns the value of one sample of the agent's metrics.
func scrapeMetric(t *testing.T, url, sample string) string {
	t.Helper()
	resp, err := http.Get(url + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, sample+" "); ok {
			return v
		}
	}
	t.Fatalf("no sample %s in the agent's metrics", sample)
	return ""
}

// The progress stream sends the migrations under way and those that ended recently,
// then pushes each change — coalesced, the latest view always last — and a heartbeat
// when nothing changes; a stream beyond the bound ends the oldest.
func TestProgressStream(t *testing.T) {
	a, _ := testAgent(t)
	now := time.Now().UTC()
	recent, old := now.Add(-time.Minute), now.Add(-time.Hour)
	run := &outgoing{cancel: func() {}, hub: &a.progress, m: api.Migration{ID: "m-run", VM: "web-1", Source: "host-1",
		State: api.MigrationRunning, Started: now}}
	a.migrations["m-run"] = run
	a.migrations["m-recent"] = &outgoing{cancel: func() {}, m: api.Migration{ID: "m-recent", State: api.MigrationFailed,
		Error: "the destination refused", Started: recent, Finished: &recent}}
	a.migrations["m-old"] = &outgoing{cancel: func() {}, m: api.Migration{ID: "m-old", State: api.MigrationSucceeded,
		Started: old, Finished: &old}}
	srv := httptest.NewServer(a.Handler())
	defer srv.Close()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()

	pr := openProgress(t, ctx, srv.URL)
	first := map[string]string{}
	for {
		ev, ok := pr.next(300 * time.Millisecond)
		if !ok {
			break
		}
		if ev.Migration != nil {
			first[ev.Migration.ID] = ev.Migration.State
		}
	}
	if len(first) != 2 || first["m-run"] != api.MigrationRunning || first["m-recent"] != api.MigrationFailed {
		t.Fatalf("first views %v; want m-run running and m-recent failed, not m-old (ended an hour ago)", first)
	}

	// 100 changes in about half a second: pushed as they come, at most one view every
	// progressEvery, the last change among them.
	start := time.Now()
	for i := 1; i <= 100; i++ {
		run.update(func(m *api.Migration) { m.Progress.PercentSent = float64(i) })
		time.Sleep(5 * time.Millisecond)
	}
	spent := time.Since(start)
	var seen []float64
	for {
		ev, ok := pr.next(2 * time.Second)
		if !ok {
			t.Fatalf("the last change never came; views seen: %v", seen)
		}
		if ev.Migration != nil {
			seen = append(seen, ev.Migration.Progress.PercentSent)
			if ev.Migration.Progress.PercentSent == 100 {
				break
			}
		}
	}
	if most := int(spent/progressEvery) + 3; len(seen) < 3 || len(seen) > most {
		t.Errorf("100 changes in %s pushed as %d views %v; want them pushed as they come, at most %d", spent.Round(time.Millisecond), len(seen), seen, most)
	}

	// A new cap on the stream is a change too.
	if _, err := a.SetMigrationBandwidth("m-run", api.BandwidthRequest{MaxBandwidth: 1 << 20}); err != nil {
		t.Fatal(err)
	}
	if ev, ok := pr.next(time.Second); !ok || ev.Migration == nil || ev.Migration.BandwidthCap != 1<<20 {
		t.Errorf("after a new bandwidth cap: %+v, %v; want the view with the cap", ev, ok)
	}

	// Nothing changes: a heartbeat keeps the stream alive.
	if ev, ok := pr.next(api.ProgressHeartbeat + time.Second); !ok || ev.Migration != nil {
		t.Errorf("with nothing changing: %+v, %v; want a heartbeat within %s", ev, ok, api.ProgressHeartbeat)
	}
	if v := scrapeMetric(t, srv.URL, "godwit_agent_progress_streams"); v != "1" {
		t.Errorf("godwit_agent_progress_streams = %s with one stream open", v)
	}

	// More streams than the bound: the oldest ends.
	for range maxProgressStreams {
		openProgress(t, ctx, srv.URL)
	}
	select {
	case err := <-pr.done:
		if err != nil {
			t.Errorf("the oldest stream ended with %v; want a clean end", err)
		}
	case <-time.After(2 * time.Second):
		t.Errorf("%d streams open and the oldest goes on", maxProgressStreams+1)
	}
	cancel()
	deadline := time.Now().Add(5 * time.Second)
	for scrapeMetric(t, srv.URL, "godwit_agent_progress_streams") != "0" {
		if time.Now().After(deadline) {
			t.Fatal("streams whose client went away are still counted open")
		}
		time.Sleep(50 * time.Millisecond)
	}
	if v := scrapeMetric(t, srv.URL, "godwit_agent_progress_updates_total"); v == "0" {
		t.Error("godwit_agent_progress_updates_total = 0 after views were pushed")
	}
}
