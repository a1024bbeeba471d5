package api

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"
)

// Stream opens a GET request whose answer is read as it arrives, such as a stream of
// Server-Sent Events: no overall timeout applies, ctx alone ends it. The caller closes
// the answer's body. A non-2xx answer becomes a *StatusError.
func (c *Client) Stream(ctx context.Context, path string) (*http.Response, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, c.base+path, nil)
	if err != nil {
		return nil, fmt.Errorf("build request: %w", err)
	}
	req.Header.Set("Accept", "text/event-stream")
	c.addHeaders(req)
	hc := *c.hc
	hc.Timeout = 0
	resp, err := hc.Do(req)
	if err != nil {
		return nil, fmt.Errorf("GET %s: %w", path, err)
	}
	if resp.StatusCode/100 != 2 {
		defer resp.Body.Close()
		data, _ := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
		var e Error
		if json.Unmarshal(data, &e) == nil && e.Error != "" {
			return nil, &StatusError{Status: resp.StatusCode, Code: e.Code, Msg: e.Error}
		}
		return nil, &StatusError{Status: resp.StatusCode, Code: "http",
			Msg: fmt.Sprintf("GET %s: %s: %s", path, resp.Status, strings.TrimSpace(string(data)))}
	}
	return resp, nil
}

// ReadEvents reads Server-Sent Events from r and calls fn with the data of each event
// (its data lines joined by newlines), until r ends, fn returns an error (which
// ReadEvents returns) or a line is longer than 1 MiB. Comments (keep-alives) and other
// fields are skipped.
func ReadEvents(r io.Reader, fn func(data []byte) error) error {
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	var data bytes.Buffer
	for sc.Scan() {
		line := sc.Bytes()
		switch {
		case len(line) == 0:
			if data.Len() > 0 {
				if err := fn(bytes.Clone(data.Bytes())); err != nil {
					return err
				}
				data.Reset()
			}
		case bytes.HasPrefix(line, []byte("data:")):
			if data.Len() > 0 {
				data.WriteByte('\n')
			}
			data.Write(bytes.TrimPrefix(bytes.TrimPrefix(line, []byte("data:")), []byte(" ")))
		}
	}
	if err := sc.Err(); err != nil {
		return fmt.Errorf("read the event stream: %w", err)
	}
	return nil
}
