package agent

import (
	"net/http"
	"strconv"
	"time"

	"github.com/godwit/godwit/internal/api"
	"github.com/godwit/godwit/internal/metrics"
	"github.com/godwit/godwit/internal/pki"
)

// buildMux registers every handler of the route table (Routes) behind the guard; a
// route declared but not served is an error. With trusted, every request is the
// center's and needs no ticket (Handler, for in-process callers).
func (a *Agent) buildMux(trusted bool) (*api.Mux, error) {
	guard := a.guard
	if trusted {
		guard = func(_ api.Route, h http.Handler) http.Handler { return h }
	}
	mux := api.NewMux(Routes(), guard)
	mux.HandleFunc("GET /agent/v1/host", func(w http.ResponseWriter, r *http.Request) {
		api.WriteJSON(w, http.StatusOK, a.Facts())
	})
	mux.HandleFunc("GET /agent/v1/vms", func(w http.ResponseWriter, r *http.Request) {
		api.WriteJSON(w, http.StatusOK, a.statuses())
	})
	mux.HandleFunc("PUT /agent/v1/vms/{name}", func(w http.ResponseWriter, r *http.Request) {
		var spec api.VMSpec
		if err := api.Decode(w, r, &spec); err != nil {
			api.WriteError(w, err)
			return
		}
		if spec.Name != r.PathValue("name") {
			api.WriteError(w, api.BadRequest("the spec's name %q differs from the path's %q", spec.Name, r.PathValue("name")))
			return
		}
		st, created, err := a.Define(r.Context(), spec)
		if err != nil {
			api.WriteError(w, err)
			return
		}
		code := http.StatusOK
		if created {
			code = http.StatusCreated
		}
		api.WriteJSON(w, code, st)
	})
	mux.HandleFunc("POST /agent/v1/vms/{name}/start", func(w http.ResponseWriter, r *http.Request) {
		st, err := a.Start(r.Context(), r.PathValue("name"))
		if err != nil {
			api.WriteError(w, err)
			return
		}
		api.WriteJSON(w, http.StatusOK, st)
	})
	mux.HandleFunc("POST /agent/v1/vms/{name}/stop", func(w http.ResponseWriter, r *http.Request) {
		force := r.URL.Query().Get("force") == "true"
		grace := 30 * time.Second
		if g := r.URL.Query().Get("grace"); g != "" {
			d, err := time.ParseDuration(g)
			if err != nil || d < 0 {
				api.WriteError(w, api.BadRequest("grace %q is not a duration such as 30s", g))
				return
			}
			grace = d
		}
		st, err := a.Stop(r.Context(), r.PathValue("name"), force, grace)
		if err != nil {
			api.WriteError(w, err)
			return
		}
		api.WriteJSON(w, http.StatusOK, st)
	})
	mux.HandleFunc("DELETE /agent/v1/vms/{name}", func(w http.ResponseWriter, r *http.Request) {
		if err := a.Delete(r.Context(), r.PathValue("name")); err != nil {
			api.WriteError(w, err)
			return
		}
		w.WriteHeader(http.StatusNoContent)
	})
	mux.HandleFunc("GET /agent/v1/vms/{name}/memory", func(w http.ResponseWriter, r *http.Request) {
		maxAge := MemoryEvery
		if s := r.URL.Query().Get("max_age"); s != "" {
			d, err := time.ParseDuration(s)
			if err != nil || d < 0 {
				api.WriteError(w, api.BadRequest("max_age %q is not a duration such as 10s", s))
				return
			}
			maxAge = d
		}
		m, err := a.MemoryActivity(r.Context(), r.PathValue("name"), maxAge)
		if err != nil {
			api.WriteError(w, err)
			return
		}
		api.WriteJSON(w, http.StatusOK, m)
	})
	mux.HandleFunc("GET /agent/v1/vms/{name}/console", func(w http.ResponseWriter, r *http.Request) {
		max := int64(1 << 20)
		if t := r.URL.Query().Get("tail"); t != "" {
			n, err := strconv.ParseInt(t, 10, 64)
			if err != nil || n < 0 {
				api.WriteError(w, api.BadRequest("tail %q must be a number of bytes", t))
				return
			}
			max = n
		}
		b, err := a.Console(r.PathValue("name"), max)
		if err != nil {
			api.WriteError(w, err)
			return
		}
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		_, _ = w.Write(b)
	})
	mux.HandleFunc("POST /agent/v1/vms/{name}/migrate", func(w http.ResponseWriter, r *http.Request) {
		var req api.AgentMigrateRequest
		if err := api.Decode(w, r, &req); err != nil {
			api.WriteError(w, err)
			return
		}
		m, err := a.StartMigration(r.PathValue("name"), req)
		if err != nil {
			api.WriteError(w, err)
			return
		}
		api.WriteJSON(w, http.StatusAccepted, m)
	})
	mux.HandleFunc("GET /agent/v1/migrations/stream", a.streamProgress)
	mux.HandleFunc("GET /agent/v1/migrations/{id}", func(w http.ResponseWriter, r *http.Request) {
		a.metrics.MigrationRead(callerOf(r.Context()).name == pki.CenterName)
		m, err := a.Migration(r.PathValue("id"))
		if err != nil {
			api.WriteError(w, err)
			return
		}
		api.WriteJSON(w, http.StatusOK, m)
	})
	mux.HandleFunc("POST /agent/v1/migrations/{id}/bandwidth", func(w http.ResponseWriter, r *http.Request) {
		var req api.BandwidthRequest
		if err := api.Decode(w, r, &req); err != nil {
			api.WriteError(w, err)
			return
		}
		m, err := a.SetMigrationBandwidth(r.PathValue("id"), req)
		if err != nil {
			api.WriteError(w, err)
			return
		}
		api.WriteJSON(w, http.StatusOK, m)
	})
	mux.HandleFunc("GET /agent/v1/cpu-models", func(w http.ResponseWriter, r *http.Request) {
		caps, err := a.CPUCaps()
		if err != nil {
			api.WriteError(w, err)
			return
		}
		api.WriteJSON(w, http.StatusOK, caps)
	})
	mux.HandleFunc("POST /agent/v1/migrations/{id}/cancel", func(w http.ResponseWriter, r *http.Request) {
		m, err := a.CancelMigration(r.PathValue("id"))
		if err != nil {
			api.WriteError(w, err)
			return
		}
		api.WriteJSON(w, http.StatusOK, m)
	})
	mux.HandleFunc("POST /agent/v1/preflight", func(w http.ResponseWriter, r *http.Request) {
		var req api.IncomingRequest
		if err := api.Decode(w, r, &req); err != nil {
			api.WriteError(w, err)
			return
		}
		if err := a.preflight(r.Context(), req); err != nil {
			api.WriteError(w, a.preflightRefusal(req.Spec.Name, err))
			return
		}
		w.WriteHeader(http.StatusNoContent)
	})
	mux.HandleFunc("POST /agent/v1/incoming", func(w http.ResponseWriter, r *http.Request) {
		var req api.IncomingRequest
		if err := api.Decode(w, r, &req); err != nil {
			api.WriteError(w, err)
			return
		}
		if err := a.checkIncomingTicket(r.Context(), req); err != nil {
			a.refuse(w, r, http.StatusForbidden, err)
			return
		}
		tk := ticketOf(r.Context())
		key, _ := tk.StreamKey() // none for the in-process caller: a plain stream, or refused if required
		rep, err := a.Incoming(r.Context(), req, tk.raw, key)
		if err != nil {
			a.metrics.IncomingEnded(metrics.IncomingFailed)
			api.WriteError(w, err)
			return
		}
		api.WriteJSON(w, http.StatusOK, rep)
	})
	mux.HandleFunc("POST /agent/v1/vms/{name}/incoming/{id}/finish", func(w http.ResponseWriter, r *http.Request) {
		if err := a.checkCopyTicket(r.Context(), r.PathValue("name"), r.PathValue("id")); err != nil {
			a.refuse(w, r, http.StatusForbidden, err)
			return
		}
		rep, err := a.FinishIncoming(r.Context(), r.PathValue("name"), r.PathValue("id"))
		if err != nil {
			api.WriteError(w, err)
			return
		}
		api.WriteJSON(w, http.StatusOK, rep)
	})
	mux.HandleFunc("POST /agent/v1/vms/{name}/incoming/{id}/abort", func(w http.ResponseWriter, r *http.Request) {
		if err := a.checkCopyTicket(r.Context(), r.PathValue("name"), r.PathValue("id")); err != nil {
			a.refuse(w, r, http.StatusForbidden, err)
			return
		}
		lost := r.URL.Query().Get("postcopy")
		if lost != "" && lost != "lost" {
			api.WriteError(w, api.BadRequest("postcopy=%q: the only value is lost (the migration ended in post-copy without completing)", lost))
			return
		}
		if err := a.AbortIncoming(r.Context(), r.PathValue("name"), r.PathValue("id"), lost == "lost"); err != nil {
			api.WriteError(w, err)
			return
		}
		w.WriteHeader(http.StatusNoContent)
	})
	mux.HandleFunc("POST /agent/v1/vms/{name}/incoming/{id}/stream", a.serveStream)
	mux.HandleFunc("POST /agent/v1/vms/{name}/incoming/{id}/recover", func(w http.ResponseWriter, r *http.Request) {
		if err := a.checkCopyTicket(r.Context(), r.PathValue("name"), r.PathValue("id")); err != nil {
			a.refuse(w, r, http.StatusForbidden, err)
			return
		}
		var req api.RecoverRequest
		if err := api.Decode(w, r, &req); err != nil {
			api.WriteError(w, err)
			return
		}
		rep, err := a.RecoverIncoming(r.Context(), r.PathValue("name"), r.PathValue("id"), req)
		if err != nil {
			api.WriteError(w, err)
			return
		}
		api.WriteJSON(w, http.StatusOK, rep)
	})
	mux.Handle("GET /metrics", a.metrics.Handler())
	mux.HandleFunc("/agent/", func(w http.ResponseWriter, r *http.Request) {
		api.WriteError(w, api.NotFound("no agent endpoint %s %s", r.Method, r.URL.Path))
	})
	return mux, mux.Check()
}
