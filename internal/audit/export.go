package audit

import (
	"bufio"
	"bytes"
	"encoding/csv"
	"encoding/json"
	"fmt"
	"io"
	"strconv"
)

// Export formats.
const (
	FormatJSONL = "jsonl" // one JSON record per line
	FormatCSV   = "csv"   // a header line, then one record per line; params as JSON text
)

// CSVHeader returns the first line of a CSV export: the record's fields, in order.
func CSVHeader() []string {
	return []string{"id", "time", "actor", "actor_kind", "on_behalf_of", "from", "action", "target", "params",
		"outcome", "error", "duration_ms", "downtime_ms", "bytes", "prev_hash", "hash"}
}

// Encoder writes records in an export format. Both formats carry every field with the
// exact text the hash covers (times in the canonical layout in CSV), so an export of the
// whole trail can be verified away from the center.
type Encoder interface {
	// Encode writes one record.
	Encode(Record) error
	// Flush writes out what is buffered.
	Flush() error
}

// NewEncoder returns an encoder for format (FormatJSONL or FormatCSV) writing to w. A
// CSV encoder writes its header at once, so an empty export is still a valid file.
func NewEncoder(w io.Writer, format string) (Encoder, error) {
	switch format {
	case FormatJSONL:
		bw := bufio.NewWriter(w)
		return &jsonlEncoder{w: bw, enc: json.NewEncoder(bw)}, nil
	case FormatCSV:
		cw := csv.NewWriter(w)
		if err := cw.Write(CSVHeader()); err != nil {
			return nil, fmt.Errorf("write the CSV header: %w", err)
		}
		return &csvEncoder{w: cw}, nil
	}
	return nil, fmt.Errorf("export format %q is not known; use %s or %s", format, FormatJSONL, FormatCSV)
}

// ContentType is the media type of an export format.
func ContentType(format string) string {
	if format == FormatCSV {
		return "text/csv; charset=utf-8"
	}
	return "application/x-ndjson"
}

type jsonlEncoder struct {
	w   *bufio.Writer
	enc *json.Encoder
}

func (e *jsonlEncoder) Encode(r Record) error { return e.enc.Encode(r) }
func (e *jsonlEncoder) Flush() error          { return e.w.Flush() }

type csvEncoder struct{ w *csv.Writer }

func (e *csvEncoder) Encode(r Record) error {
	var sent string
	if r.Bytes != nil {
		sent = strconv.FormatUint(*r.Bytes, 10)
	}
	// Params as stored are compact; records that came through an indented API answer
	// are made compact again, which gives back the stored text exactly.
	var params bytes.Buffer
	if err := json.Compact(&params, r.Params); err != nil {
		return fmt.Errorf("record %d: params are not JSON: %w", r.ID, err)
	}
	return e.w.Write([]string{strconv.FormatInt(r.ID, 10), r.Time.UTC().Format(timeLayout), r.Actor, r.ActorKind,
		r.OnBehalfOf, r.From, r.Action, r.Target, params.String(), r.Outcome, r.Error,
		optFloat(r.DurationMS), optFloat(r.DowntimeMS), sent, r.PrevHash, r.Hash})
}

func (e *csvEncoder) Flush() error {
	e.w.Flush()
	return e.w.Error()
}
