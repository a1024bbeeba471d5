package center

import (
	"log/slog"
	"net/http"
	"runtime/debug"
	"time"

	"github.com/godwit/godwit/internal/api"
	"github.com/godwit/godwit/internal/audit"
	"github.com/godwit/godwit/internal/migration"
	"github.com/godwit/godwit/internal/store"
)

// routes returns the API behind its middleware: metrics outermost, then authentication
// (who made the request), the audit trail, the request log, and authorization (guard,
// per route, from the route table), which refuses what the requester may not do inside
// the trail so that refusals are recorded. With trusted, every request counts as the
// administrator's (Handler, for in-process use).
func (c *Center) routes(trusted bool) http.Handler {
	// Heartbeats are recorded only when refused or failed.
	heartbeat := func(r *http.Request) bool { return r.URL.Path == "/api/v1/hosts/heartbeat" }
	audited := c.trail.Middleware(c.logRequests(c.nameActor(c.mux)), heartbeat)
	return c.metrics.InstrumentAPI(c.mux, c.withAuthentication(audited, trusted))
}

// buildMux registers every handler of the route table (Routes); a route declared but not
// served is an error.
func (c *Center) buildMux() (*api.Mux, error) {
	mux := api.NewMux(Routes(), c.guard)
	mux.HandleFunc("POST /api/v1/hosts/heartbeat", func(w http.ResponseWriter, r *http.Request) {
		var f api.HostFacts
		if err := api.Decode(w, r, &f); err != nil {
			api.WriteError(w, err)
			return
		}
		if p := principalOf(r.Context()); p.kind == audit.KindHost && p.name != f.Name {
			api.WriteError(w, api.Errorf(http.StatusForbidden, "forbidden",
				"host %s sent a heartbeat in the name of host %s; a host reports only itself", p.name, f.Name))
			return
		}
		rep, err := c.heartbeat(r.Context(), f)
		writeResult(w, http.StatusOK, rep, err)
	})
	mux.HandleFunc("GET /api/v1/hosts", func(w http.ResponseWriter, r *http.Request) {
		p, err := api.ParsePage(r.URL.Query(), api.HostPageLimit)
		if err != nil {
			api.WriteError(w, err)
			return
		}
		hosts, total, err := c.listHosts(r.Context(), p)
		if err == nil && len(hosts) > 0 {
			api.WritePageHeaders(w, r, p, len(hosts), total, hosts[len(hosts)-1].Name)
		}
		writeResult(w, http.StatusOK, hosts, err)
	})
	mux.HandleFunc("GET /api/v1/hosts/{name}", func(w http.ResponseWriter, r *http.Request) {
		h, err := c.getHost(r.Context(), r.PathValue("name"))
		writeResult(w, http.StatusOK, h, err)
	})
	mux.HandleFunc("GET /api/v1/datastores", func(w http.ResponseWriter, r *http.Request) {
		ds, err := c.datastores(r.Context())
		writeResult(w, http.StatusOK, ds, err)
	})
	mux.HandleFunc("GET /api/v1/networks", func(w http.ResponseWriter, r *http.Request) {
		ns, err := c.networks(r.Context())
		writeResult(w, http.StatusOK, ns, err)
	})
	mux.HandleFunc("GET /api/v1/vms", func(w http.ResponseWriter, r *http.Request) {
		q := r.URL.Query()
		p, err := api.ParsePage(q, api.DefaultPageLimit)
		if err != nil {
			api.WriteError(w, err)
			return
		}
		f := store.VMFilter{Host: q.Get("host"), State: q.Get("state")}
		if len(f.Host) > api.MaxShortName || len(f.State) > api.MaxShortName {
			api.WriteError(w, api.BadRequest("host and state are names of at most %d bytes", api.MaxShortName))
			return
		}
		vms, total, err := c.listVMs(r.Context(), f, p)
		if err == nil && len(vms) > 0 {
			api.WritePageHeaders(w, r, p, len(vms), total, vms[len(vms)-1].Name)
		}
		writeResult(w, http.StatusOK, vms, err)
	})
	mux.HandleFunc("POST /api/v1/vms", func(w http.ResponseWriter, r *http.Request) {
		var req api.CreateVMRequest
		if err := api.Decode(w, r, &req); err != nil {
			api.WriteError(w, err)
			return
		}
		audit.SetTarget(r.Context(), req.Name)
		t, err := c.beginTask(w, r, "vm.create", req.Name)
		if err != nil {
			api.WriteError(w, err)
			return
		}
		vm, err := c.createVM(r.Context(), req)
		c.endTask(r.Context(), t, vmResult(vm), err)
		writeResult(w, http.StatusCreated, vm, err)
	})
	mux.HandleFunc("GET /api/v1/vms/{name}", func(w http.ResponseWriter, r *http.Request) {
		vm, err := c.getVM(r.Context(), r.PathValue("name"))
		writeResult(w, http.StatusOK, vm, err)
	})
	mux.HandleFunc("POST /api/v1/vms/{name}/start", func(w http.ResponseWriter, r *http.Request) {
		t, err := c.beginTask(w, r, "vm.start", r.PathValue("name"))
		if err != nil {
			api.WriteError(w, err)
			return
		}
		vm, err := c.startVM(r.Context(), r.PathValue("name"))
		c.endTask(r.Context(), t, vmResult(vm), err)
		writeResult(w, http.StatusOK, vm, err)
	})
	mux.HandleFunc("POST /api/v1/vms/{name}/stop", func(w http.ResponseWriter, r *http.Request) {
		q := r.URL.Query()
		t, err := c.beginTask(w, r, "vm.stop", r.PathValue("name"))
		if err != nil {
			api.WriteError(w, err)
			return
		}
		vm, err := c.stopVM(r.Context(), r.PathValue("name"), q.Get("force") == "true", q.Get("grace"))
		c.endTask(r.Context(), t, vmResult(vm), err)
		writeResult(w, http.StatusOK, vm, err)
	})
	mux.HandleFunc("DELETE /api/v1/vms/{name}", func(w http.ResponseWriter, r *http.Request) {
		t, err := c.beginTask(w, r, "vm.delete", r.PathValue("name"))
		if err != nil {
			api.WriteError(w, err)
			return
		}
		err = c.deleteVM(r.Context(), r.PathValue("name"))
		c.endTask(r.Context(), t, map[string]any{"vm": r.PathValue("name")}, err)
		if err != nil {
			api.WriteError(w, err)
			return
		}
		w.WriteHeader(http.StatusNoContent)
	})
	mux.HandleFunc("GET /api/v1/vms/{name}/console", func(w http.ResponseWriter, r *http.Request) {
		b, err := c.console(r.Context(), r.PathValue("name"), r.URL.Query().Get("tail"))
		if err != nil {
			api.WriteError(w, err)
			return
		}
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		_, _ = w.Write(b)
	})
	mux.HandleFunc("POST /api/v1/vms/{name}/migrate", func(w http.ResponseWriter, r *http.Request) {
		var req api.MigrateRequest
		if err := api.Decode(w, r, &req); err != nil {
			api.WriteError(w, err)
			return
		}
		m, err := c.migrateVM(r.Context(), r.PathValue("name"), req, audit.ActorOf(r).Name)
		if err == nil {
			w.Header().Set(api.TaskHeader, m.ID)
		}
		writeResult(w, http.StatusAccepted, m, err)
	})
	mux.HandleFunc("GET /api/v1/vms/{name}/migrate/check", func(w http.ResponseWriter, r *http.Request) {
		chk, err := c.checkWithPredictions(r.Context(), r.PathValue("name"), r.URL.Query().Get("to"), r.URL.Query().Get("policy"))
		writeResult(w, http.StatusOK, chk, err)
	})
	mux.HandleFunc("GET /api/v1/vms/{name}/migrate/recommend", func(w http.ResponseWriter, r *http.Request) {
		rec, err := c.recommendWithPredictions(r.Context(), r.PathValue("name"), r.URL.Query().Get("policy"))
		writeResult(w, http.StatusOK, rec, err)
	})
	mux.HandleFunc("POST /api/v1/migrations", func(w http.ResponseWriter, r *http.Request) {
		var req api.BulkMigrateRequest
		if err := api.Decode(w, r, &req); err != nil {
			api.WriteError(w, err)
			return
		}
		a := audit.ActorOf(r)
		from := r.RemoteAddr
		if r.RemoteAddr == "" || r.RemoteAddr == "@" {
			from = audit.Local
		}
		rep, err := c.bulkMigrate(r.Context(), req, requester{actor: a, from: from, initiator: a.Name})
		writeResult(w, http.StatusAccepted, rep, err)
	})
	mux.HandleFunc("GET /api/v1/migration-slots", func(w http.ResponseWriter, r *http.Request) {
		api.WriteJSON(w, http.StatusOK, c.slots())
	})
	mux.HandleFunc("POST /api/v1/hosts/{name}/maintenance", func(w http.ResponseWriter, r *http.Request) {
		audit.Params(r.Context(), map[string]any{"host": r.PathValue("name")})
		var req api.MaintenanceRequest
		if err := api.Decode(w, r, &req); err != nil {
			api.WriteError(w, err)
			return
		}
		var h api.Host
		var err error
		if req.Enter {
			h, err = c.enterMaintenance(r.Context(), r.PathValue("name"), req, audit.ActorOf(r).Name)
		} else {
			h, err = c.exitMaintenance(r.Context(), r.PathValue("name"), req.Return, audit.ActorOf(r).Name)
		}
		writeResult(w, http.StatusOK, h, err)
	})
	mux.HandleFunc("GET /api/v1/hosts/{name}/maintenance/plan", func(w http.ResponseWriter, r *http.Request) {
		p, err := c.proposeEvacuation(r.Context(), r.PathValue("name"), r.URL.Query().Get("reason"), audit.ActorOf(r).Name)
		writeResult(w, http.StatusOK, p, err)
	})
	mux.HandleFunc("GET /api/v1/plans", func(w http.ResponseWriter, r *http.Request) {
		q := r.URL.Query()
		ps, err := c.store.Plans(r.Context(), q.Get("host"), q.Get("state") == "open", 200)
		writeResult(w, http.StatusOK, ps, err)
	})
	mux.HandleFunc("GET /api/v1/plans/{id}", func(w http.ResponseWriter, r *http.Request) {
		p, err := c.getPlan(r.Context(), r.PathValue("id"))
		writeResult(w, http.StatusOK, p, err)
	})
	mux.HandleFunc("POST /api/v1/plans/{id}/apply", func(w http.ResponseWriter, r *http.Request) {
		p, err := c.applyPlan(r.Context(), r.PathValue("id"), audit.ActorOf(r).Name)
		writeResult(w, http.StatusOK, p, err)
	})
	mux.HandleFunc("GET /api/v1/cluster/balancer", func(w http.ResponseWriter, r *http.Request) {
		st, err := c.balancerStatus(r.Context())
		writeResult(w, http.StatusOK, st, err)
	})
	mux.HandleFunc("PUT /api/v1/cluster/balancer", func(w http.ResponseWriter, r *http.Request) {
		var req api.BalancerSettings
		if err := api.Decode(w, r, &req); err != nil {
			api.WriteError(w, err)
			return
		}
		st, err := c.setBalancer(r.Context(), req)
		writeResult(w, http.StatusOK, st, err)
	})
	mux.HandleFunc("GET /api/v1/cluster/recommendations", func(w http.ResponseWriter, r *http.Request) {
		ps, err := c.store.Plans(r.Context(), "", false, 200)
		out := []api.Plan{}
		for _, p := range ps {
			if p.State == api.PlanRecommended {
				out = append(out, p)
			}
		}
		writeResult(w, http.StatusOK, out, err)
	})
	mux.HandleFunc("GET /api/v1/tasks", func(w http.ResponseWriter, r *http.Request) {
		f, err := taskFilter(r)
		if err != nil {
			api.WriteError(w, err)
			return
		}
		ts, err := c.listTasks(r.Context(), f)
		writeResult(w, http.StatusOK, ts, err)
	})
	mux.HandleFunc("GET /api/v1/tasks/stream", c.streamTasks)
	mux.HandleFunc("GET /api/v1/tasks/{id}", func(w http.ResponseWriter, r *http.Request) {
		t, err := c.getTask(r.Context(), r.PathValue("id"))
		writeResult(w, http.StatusOK, t, err)
	})
	mux.HandleFunc("POST /api/v1/tasks/{id}/cancel", func(w http.ResponseWriter, r *http.Request) {
		t, err := c.cancelTask(r.Context(), r.PathValue("id"))
		writeResult(w, http.StatusOK, t, err)
	})
	mux.HandleFunc("GET /api/v1/migration-policies", func(w http.ResponseWriter, r *http.Request) {
		api.WriteJSON(w, http.StatusOK, migration.DefaultPolicies())
	})
	mux.HandleFunc("GET /api/v1/migrations", func(w http.ResponseWriter, r *http.Request) {
		ms, err := c.listMigrations(r.Context(), r.URL.Query().Get("vm"))
		writeResult(w, http.StatusOK, ms, err)
	})
	mux.HandleFunc("GET /api/v1/migrations/{id}", func(w http.ResponseWriter, r *http.Request) {
		m, err := c.getMigration(r.Context(), r.PathValue("id"))
		writeResult(w, http.StatusOK, m, err)
	})
	mux.HandleFunc("POST /api/v1/migrations/{id}/cancel", func(w http.ResponseWriter, r *http.Request) {
		m, err := c.cancelMigration(r.Context(), r.PathValue("id"))
		writeResult(w, http.StatusOK, m, err)
	})
	mux.Handle("GET /metrics", c.metrics.Handler())
	mux.HandleFunc("/api/", func(w http.ResponseWriter, r *http.Request) {
		api.WriteError(w, api.NotFound("no API endpoint %s %s; the API is under /api/v1", r.Method, r.URL.Path))
	})
	mux.HandleFunc("GET /api/v1/openapi.json", c.serveOpenAPI)
	c.trail.Register(mux)
	c.registerUsers(mux)
	c.registerPKI(mux)
	c.registerSchedules(mux)
	return mux, mux.Check()
}

// logRequests logs each request and turns a panic into a 500 instead of a dropped
// connection.
func (c *Center) logRequests(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		start := time.Now()
		rw := &statusWriter{ResponseWriter: w, status: http.StatusOK}
		defer func() {
			if p := recover(); p != nil {
				c.log.Error("handler panic", "path", r.URL.Path, "panic", p, "stack", string(debug.Stack()))
				api.WriteJSON(rw, http.StatusInternalServerError, api.Error{Error: "internal error; see the center's log", Code: "internal"})
			}
			lvl := slog.LevelDebug
			if r.Method != http.MethodGet && r.URL.Path != "/api/v1/hosts/heartbeat" || rw.status >= 400 {
				lvl = slog.LevelInfo
			}
			c.log.Log(r.Context(), lvl, "request", "method", r.Method, "path", r.URL.Path, "status", rw.status, "ms", time.Since(start).Milliseconds())
		}()
		next.ServeHTTP(rw, r)
	})
}

type statusWriter struct {
	http.ResponseWriter
	status int
}

func (s *statusWriter) WriteHeader(code int) {
	s.status = code
	s.ResponseWriter.WriteHeader(code)
}

// Unwrap lets http.ResponseController reach the underlying writer (to flush a stream).
func (s *statusWriter) Unwrap() http.ResponseWriter { return s.ResponseWriter }
