package api

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"time"
)

// The progress stream (GET /agent/v1/migrations/stream) carries, over one long-lived
// connection from a source agent to the center, every migration the agent runs as the
// source: first the current view of each (and of those that ended recently), then each
// change as it happens. It is newline-delimited JSON, one ProgressEvent per line.
const (
	// ProgressContentType is the stream's media type.
	ProgressContentType = "application/x-ndjson"
	// ProgressHeartbeat is how long the agent lets the stream go without a line: it
	// sends a heartbeat (an event without a migration) when nothing else was sent.
	ProgressHeartbeat = 2 * time.Second
	// ProgressSilence is how long the center waits for a line before it takes the
	// connection for dead (a host gone, a link cut) and opens another.
	ProgressSilence = 3 * ProgressHeartbeat
	// MaxProgressLine bounds one line, newline included; a longer one ends the stream.
	MaxProgressLine = 256 << 10
)

// ProgressEvent is one line of the progress stream: a migration's latest view, or a
// heartbeat when Migration is nil.
type ProgressEvent struct {
	Migration *Migration `json:"migration,omitempty"`
}

// MarshalProgress encodes ev as one line of the progress stream, within
// MaxProgressLine: a migration whose texts (error, note, waiting) would make the line
// longer has them cut (see Truncate).
func MarshalProgress(ev ProgressEvent) ([]byte, error) {
	b, err := json.Marshal(ev)
	if err == nil && len(b) >= MaxProgressLine && ev.Migration != nil {
		m := *ev.Migration
		const cut = 4 << 10
		m.Error, m.Waiting, m.Progress.Note = Truncate(m.Error, cut), Truncate(m.Waiting, cut), Truncate(m.Progress.Note, cut)
		b, err = json.Marshal(ProgressEvent{Migration: &m})
	}
	if err != nil {
		return nil, fmt.Errorf("encode a progress event: %w", err)
	}
	if len(b) >= MaxProgressLine {
		return nil, fmt.Errorf("a progress event takes %d bytes, more than the stream's %d", len(b), MaxProgressLine-1)
	}
	return append(b, '\n'), nil
}

// ReadProgress reads the progress stream from r and calls fn with each event, until r
// ends (nil), fn returns an error (which it returns), or a line is not an event: not a
// JSON object, a migration without an id, or longer than MaxProgressLine. Empty lines
// are skipped.
func ReadProgress(r io.Reader, fn func(ProgressEvent) error) error {
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 0, 16<<10), MaxProgressLine)
	for sc.Scan() {
		line := bytes.TrimSpace(sc.Bytes())
		if len(line) == 0 {
			continue
		}
		if line[0] != '{' {
			return fmt.Errorf("the progress stream sent %q, not a JSON object", Truncate(string(line), 64))
		}
		var ev ProgressEvent
		if err := json.Unmarshal(line, &ev); err != nil {
			return fmt.Errorf("the progress stream sent a line that is not an event: %w", err)
		}
		if ev.Migration != nil && ev.Migration.ID == "" {
			return errors.New("the progress stream sent a migration without an id")
		}
		if err := fn(ev); err != nil {
			return err
		}
	}
	if err := sc.Err(); err != nil {
		if errors.Is(err, bufio.ErrTooLong) {
			return fmt.Errorf("the progress stream sent a line longer than %d bytes", MaxProgressLine)
		}
		return fmt.Errorf("read the progress stream: %w", err)
	}
	return nil
}
