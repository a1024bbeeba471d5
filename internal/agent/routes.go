package agent

import (
	"net/http"
	"strconv"
	"time"

	"github.com/godwit/godwit/internal/api"
)

// routes is the API the center calls. Paths are under /agent/v1.
func (a *Agent) routes() http.Handler {
	mux := http.NewServeMux()
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
	return mux
}
