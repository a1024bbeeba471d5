package audit

import (
	"net/http"

	"github.com/godwit/godwit/internal/api"
)

// Register adds the audit trail's API to mux. Every endpoint only reads:
//
//	GET /api/v1/audit?since=&until=&user=&vm=&host=&action=&limit=&order=&after=
//	    records as a JSON array, newest first unless order=oldest
//	GET /api/v1/audit/export?format=jsonl|csv&(the same filters)
//	    every selected record, oldest first, as JSON lines or CSV; limit=0 means all
//	GET /api/v1/audit/verify
//	    a Verification of the whole chain
func (l *Log) Register(mux interface {
	HandleFunc(string, func(http.ResponseWriter, *http.Request))
}) {
	mux.HandleFunc("GET /api/v1/audit", func(w http.ResponseWriter, r *http.Request) {
		f, err := FilterFromQuery(r.URL.Query(), l.now())
		if err != nil {
			api.WriteError(w, api.BadRequest("%v", err))
			return
		}
		recs, err := l.List(r.Context(), f)
		if err != nil {
			api.WriteError(w, err)
			return
		}
		api.WriteJSON(w, http.StatusOK, recs)
	})
	mux.HandleFunc("GET /api/v1/audit/export", func(w http.ResponseWriter, r *http.Request) {
		q := r.URL.Query()
		format := q.Get("format")
		if format == "" {
			format = FormatJSONL
		}
		f, err := FilterFromQuery(q, l.now())
		if err == nil && (format != FormatJSONL && format != FormatCSV) {
			err = api.BadRequest("format %q is not known; use %s or %s", format, FormatJSONL, FormatCSV)
		}
		if err != nil {
			api.WriteError(w, api.BadRequest("%v", err))
			return
		}
		w.Header().Set("Content-Type", ContentType(format))
		w.Header().Set("Content-Disposition", `attachment; filename="godwit-audit.`+format+`"`)
		enc, err := NewEncoder(w, format)
		if err == nil {
			err = l.Each(r.Context(), f, enc.Encode)
		}
		if err == nil {
			err = enc.Flush()
		}
		if err != nil && r.Context().Err() == nil {
			// The answer has begun; all that can be done is to say so in the log.
			l.log.Error("audit export ended early", "format", format, "err", err)
		}
	})
	mux.HandleFunc("GET /api/v1/audit/verify", func(w http.ResponseWriter, r *http.Request) {
		v, err := l.Verify(r.Context())
		if err != nil {
			api.WriteError(w, err)
			return
		}
		api.WriteJSON(w, http.StatusOK, v)
	})
}
