package agent

import (
	"bytes"
	"context"
	"net/http"
	"sync"
	"time"

	"github.com/godwit/godwit/internal/api"
)

// Progress pushed to the center (GET /agent/v1/migrations/stream, api.ProgressEvent):
// the center holds one stream per source host instead of asking about each migration
// every 100 ms.
const (
	// progressEvery coalesces changes: after a stream writes, it waits this long before
	// it writes again, then sends each changed migration's latest view once.
	progressEvery = 50 * time.Millisecond
	// recentlyEnded is how long after its end a migration is still in a new stream's
	// first views, so that a center that reconnects learns the outcomes it missed
	// without asking for each (older ones it reads with GET /agent/v1/migrations/{id}).
	recentlyEnded = 5 * time.Minute
	// maxProgressStreams bounds the streams open at once. The center holds one; more are
	// streams of a center that went away and whose connection is not yet known dead, so
	// a new stream ends the oldest rather than being refused.
	maxProgressStreams = 4
)

// progressHub tells the progress streams which migrations changed. Telling never waits
// for a stream: each holds the ids of the migrations changed since it last wrote (at
// most one entry per migration this host knows).
type progressHub struct {
	mu   sync.Mutex
	subs []*progressSub // oldest first
}

type progressSub struct {
	mu      sync.Mutex
	changed map[string]bool
	wake    chan struct{} // capacity 1: something changed
	ended   chan struct{} // closed when a newer stream took its place
}

// subscribe returns a new stream's subscription, ending the oldest one beyond
// maxProgressStreams. The caller unsubscribes it.
func (h *progressHub) subscribe() *progressSub {
	s := &progressSub{changed: map[string]bool{}, wake: make(chan struct{}, 1), ended: make(chan struct{})}
	h.mu.Lock()
	defer h.mu.Unlock()
	if len(h.subs) >= maxProgressStreams {
		close(h.subs[0].ended)
		h.subs = h.subs[1:]
	}
	h.subs = append(h.subs, s)
	return s
}

func (h *progressHub) unsubscribe(s *progressSub) {
	h.mu.Lock()
	defer h.mu.Unlock()
	for i, o := range h.subs {
		if o == s {
			h.subs = append(h.subs[:i], h.subs[i+1:]...)
			return
		}
	}
}

// changed tells every stream that migration id changed.
func (h *progressHub) changed(id string) {
	h.mu.Lock()
	defer h.mu.Unlock()
	for _, s := range h.subs {
		s.mu.Lock()
		s.changed[id] = true
		s.mu.Unlock()
		select {
		case s.wake <- struct{}{}:
		default:
		}
	}
}

// take returns the ids changed since the last take.
func (s *progressSub) take() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	ids := make([]string, 0, len(s.changed))
	for id := range s.changed {
		ids = append(ids, id)
	}
	clear(s.changed)
	return ids
}

// progressViews returns the views of the migrations with the given ids that this host
// knows; with all, of every migration that has not ended or ended within recentlyEnded.
func (a *Agent) progressViews(ids []string, all bool) []api.Migration {
	a.migMu.Lock()
	defer a.migMu.Unlock()
	var out []api.Migration
	if all {
		for _, o := range a.migrations {
			m := o.snapshot()
			if !endedState(m.State) || m.Finished != nil && time.Since(*m.Finished) < recentlyEnded {
				out = append(out, m)
			}
		}
		return out
	}
	for _, id := range ids {
		if o, ok := a.migrations[id]; ok {
			out = append(out, o.snapshot())
		}
	}
	return out
}

func endedState(s string) bool {
	return s == api.MigrationSucceeded || s == api.MigrationFailed || s == api.MigrationCancelled
}

// streamProgress answers GET /agent/v1/migrations/stream: the views of every migration
// this host runs as the source or ended recently, then each change, coalesced to one
// view per migration every progressEvery, and a heartbeat whenever api.ProgressHeartbeat
// passed without a line. It ends when the center goes away or stops reading (each write
// is bounded by the server's write timeout), when a newer stream takes its place, or
// when the agent stops.
func (a *Agent) streamProgress(w http.ResponseWriter, r *http.Request) {
	ctx, cancel := context.WithCancel(r.Context())
	defer cancel()
	if a.runCtx != nil {
		stop := context.AfterFunc(a.runCtx, cancel)
		defer stop()
	}
	// Subscribed before the first views are read, so no change after them is missed.
	sub := a.progress.subscribe()
	defer a.progress.unsubscribe(sub)
	a.metrics.ProgressStreamOpened()
	defer a.metrics.ProgressStreamClosed()

	rc := http.NewResponseController(w)
	h := w.Header()
	h.Set("Content-Type", api.ProgressContentType)
	h.Set("Cache-Control", "no-cache")
	h.Set("X-Accel-Buffering", "no")
	w.WriteHeader(http.StatusOK)
	heartbeat := time.NewTimer(api.ProgressHeartbeat)
	defer heartbeat.Stop()
	var buf bytes.Buffer
	send := func(ms []api.Migration, beat bool) error {
		buf.Reset()
		for _, m := range ms {
			b, err := api.MarshalProgress(api.ProgressEvent{Migration: &m})
			if err != nil {
				a.log.Error("a migration's view cannot go on the progress stream", "migration", m.ID, "err", err)
				continue
			}
			buf.Write(b)
		}
		if beat {
			buf.WriteString("{}\n")
		}
		if _, err := w.Write(buf.Bytes()); err != nil {
			return err
		}
		heartbeat.Reset(api.ProgressHeartbeat)
		a.metrics.ProgressSent(len(ms))
		return rc.Flush()
	}
	if send(a.progressViews(nil, true), false) != nil {
		return
	}
	for {
		select {
		case <-ctx.Done():
			return
		case <-sub.ended:
			return
		case <-heartbeat.C:
			if send(nil, true) != nil {
				return
			}
			continue
		case <-sub.wake:
		}
		if send(a.progressViews(sub.take(), false), false) != nil {
			return
		}
		select {
		case <-ctx.Done():
			return
		case <-sub.ended:
			return
		case <-time.After(progressEvery):
		}
	}
}
