package audit

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/godwit/godwit/internal/api"
	"github.com/godwit/godwit/internal/store"
)

// openStoreTest opens the center's real store in a fresh file and the trail in its
// database, as the center does.
func openStoreTest(t *testing.T) (*store.Store, *Log) {
	t.Helper()
	st, err := store.Open(context.Background(), filepath.Join(t.TempDir(), "godwit.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	l, err := Open(context.Background(), st.DB(), Options{Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		t.Fatal(err)
	}
	return st, l
}

// storeAPI changes the store the way the center's handlers do.
func storeAPI(st *store.Store, l *Log) http.Handler {
	mux := http.NewServeMux()
	// Creates a user; with ?then=refuse it removes the user again and refuses, as a VM
	// create does when the host refuses the VM.
	mux.HandleFunc("POST /api/v1/users", func(w http.ResponseWriter, r *http.Request) {
		Describe(r.Context(), "user.create", "")
		var req struct {
			Name string `json:"name"`
		}
		if err := api.Decode(w, r, &req); err != nil {
			api.WriteError(w, err)
			return
		}
		SetTarget(r.Context(), req.Name)
		if err := st.InsertUser(r.Context(), store.UserRecord{Name: req.Name, Role: api.RoleViewer, Created: time.Now()}); err != nil {
			api.WriteError(w, err)
			return
		}
		if r.URL.Query().Get("then") == "refuse" {
			if err := st.DeleteUser(r.Context(), req.Name); err != nil {
				api.WriteError(w, err)
				return
			}
			api.WriteError(w, api.Conflict("host host-1 refused it"))
			return
		}
		api.WriteJSON(w, http.StatusCreated, map[string]string{"name": req.Name})
	})
	// Changes nothing: deleting a user who is not there.
	mux.HandleFunc("DELETE /api/v1/users/{name}", func(w http.ResponseWriter, r *http.Request) {
		Describe(r.Context(), "user.delete", r.PathValue("name"))
		err := st.DeleteUser(r.Context(), r.PathValue("name"))
		if errors.Is(err, store.ErrNotFound) {
			err = api.NotFound("no user %s", r.PathValue("name"))
		}
		if err != nil {
			api.WriteError(w, err)
			return
		}
		w.WriteHeader(http.StatusNoContent)
	})
	return l.Middleware(mux, nil)
}

func TestRequestRecordedWithItsFirstChange(t *testing.T) {
	st, l := openStoreTest(t)
	srv := httptest.NewServer(storeAPI(st, l))
	defer srv.Close()
	hc := srv.Client()
	ctx := context.Background()

	if s := send(t, hc, srv.URL, http.MethodPost, "/api/v1/users", `{"name":"bob"}`); s != http.StatusCreated {
		t.Fatalf("create: %d", s)
	}
	if s := send(t, hc, srv.URL, http.MethodPost, "/api/v1/users?then=refuse", `{"name":"carol"}`); s != http.StatusConflict {
		t.Fatalf("create then refuse: %d", s)
	}
	if s := send(t, hc, srv.URL, http.MethodDelete, "/api/v1/users/nobody", ""); s != http.StatusNotFound {
		t.Fatalf("delete nobody: %d", s)
	}
	recs, err := l.List(ctx, Filter{Oldest: true})
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range recs {
		t.Logf("record %d: %s %s %s %q %s", r.ID, r.Action, r.Target, r.Outcome, r.Error, r.Params)
	}
	// bob: one record. carol: the record of the change, then the refusal naming it.
	// nobody: one refusal.
	if len(recs) != 4 {
		t.Fatalf("%d records; want 4", len(recs))
	}
	if r := recs[0]; r.Target != "bob" || r.Outcome != Succeeded || string(r.Params) != `{"name":"bob"}` {
		t.Errorf("bob's record: %+v %s", r, r.Params)
	}
	if r := recs[1]; r.Target != "carol" || r.Outcome != Succeeded {
		t.Errorf("carol's first record: %+v", r)
	}
	if r := recs[2]; r.Target != "carol" || r.Outcome != Refused || r.Error != "host host-1 refused it" ||
		string(r.Params) != fmt.Sprintf(`{"first_record":%d,"name":"carol","then":"refuse"}`, recs[1].ID) {
		t.Errorf("carol's end: %+v %s; want refused, naming record %d", r, r.Params, recs[1].ID)
	}
	if r := recs[3]; r.Action != "user.delete" || r.Outcome != Refused {
		t.Errorf("the refused delete: %+v", r)
	}
	if v, err := l.Verify(ctx); err != nil || !v.OK {
		t.Fatalf("verify: %+v %v", v, err)
	}
}

// With the trail failing, a request's change is rolled back and the request fails; a
// request that changes nothing is answered as ever (its record is only logged).
func TestChangeFailsWhenItsRecordCannot(t *testing.T) {
	st, l := openStoreTest(t)
	srv := httptest.NewServer(storeAPI(st, l))
	defer srv.Close()
	hc := srv.Client()
	ctx := context.Background()
	if _, err := st.DB().ExecContext(ctx, `CREATE TRIGGER audit_fails BEFORE INSERT ON audit_log
		BEGIN SELECT RAISE(ABORT, 'disk full'); END`); err != nil {
		t.Fatal(err)
	}
	if s := send(t, hc, srv.URL, http.MethodPost, "/api/v1/users", `{"name":"bob"}`); s != http.StatusInternalServerError {
		t.Fatalf("create with the trail failing: %d; want 500", s)
	}
	if _, err := st.User(ctx, "bob"); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("bob was created though his record was not: %v", err)
	}
	if s := send(t, hc, srv.URL, http.MethodDelete, "/api/v1/users/nobody", ""); s != http.StatusNotFound {
		t.Fatalf("delete nobody with the trail failing: %d; want 404", s)
	}
}

// Appends inside store writes (which hold the database's only connection) and plain
// Appends (which take the trail's lock, then wait for that connection) run side by side
// without deadlock, and the chain they make verifies.
func TestInTransactionAppendsDoNotDeadlock(t *testing.T) {
	st, l := openStoreTest(t)
	srv := httptest.NewServer(storeAPI(st, l))
	defer srv.Close()
	hc := srv.Client()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()

	const n = 40
	var wg sync.WaitGroup
	errs := make(chan error, 3*n)
	for i := range n {
		wg.Add(3)
		go func() {
			defer wg.Done()
			body := strings.NewReader(fmt.Sprintf(`{"name":"u%d"}`, i))
			req, _ := http.NewRequestWithContext(ctx, http.MethodPost, srv.URL+"/api/v1/users", body)
			resp, err := hc.Do(req)
			if err != nil {
				errs <- err
				return
			}
			resp.Body.Close()
			if resp.StatusCode != http.StatusCreated {
				errs <- fmt.Errorf("create u%d: %d", i, resp.StatusCode)
			}
		}()
		go func() {
			defer wg.Done()
			if _, err := l.Append(ctx, Record{Actor: CenterActor, ActorKind: KindSystem, Action: "test.tick", Outcome: Succeeded}); err != nil {
				errs <- err
			}
		}()
		go func() {
			defer wg.Done()
			hooked := store.WithTxHook(ctx, l.AppendHook(Record{Actor: CenterActor, ActorKind: KindAutomation,
				Action: "test.move", Target: fmt.Sprintf("m%d", i), Outcome: Succeeded}))
			if err := st.InsertMigration(hooked, api.Migration{ID: fmt.Sprintf("m%d", i), VM: "web-1", State: api.MigrationSucceeded}); err != nil {
				errs <- err
			}
		}()
	}
	done := make(chan struct{})
	go func() { wg.Wait(); close(done) }()
	select {
	case <-done:
	case <-ctx.Done():
		t.Fatal("appends inside and outside store writes deadlocked")
	}
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	v, err := l.Verify(ctx)
	if err != nil || !v.OK || v.Checked != 3*n {
		t.Fatalf("verify: %+v %v; want %d records intact", v, err, 3*n)
	}
	recs, err := l.List(ctx, Filter{Oldest: true, Limit: MaxLimit})
	if err != nil {
		t.Fatal(err)
	}
	for i := 1; i < len(recs); i++ {
		if recs[i].Time.Before(recs[i-1].Time) {
			t.Fatalf("record %d is older than record %d: times must rise with ids", recs[i].ID, recs[i-1].ID)
		}
	}
}

// AppendOnceHook: work that writes several times with one context (a migration stored,
// then updated) gets its record once, in the first write that commits; a write that
// rolls back leaves the record for the next.
func TestAppendOnceHook(t *testing.T) {
	st, l := openStoreTest(t)
	ctx := store.WithTxHook(context.Background(), l.AppendOnceHook(Record{Actor: CenterActor, ActorKind: KindAutomation,
		Action: "test.once", Target: "m1", Outcome: Succeeded}))
	m := api.Migration{ID: "m1", VM: "web-1", State: api.MigrationQueued}
	// An update of a migration not yet stored fails and rolls back: no record.
	if err := st.UpdateMigration(ctx, m); err == nil {
		t.Fatal("updating a migration that does not exist succeeded")
	}
	if err := st.InsertMigration(ctx, m); err != nil {
		t.Fatal(err)
	}
	m.State = api.MigrationRunning
	if err := st.UpdateMigration(ctx, m); err != nil {
		t.Fatal(err)
	}
	recs, err := l.List(context.Background(), Filter{Action: "test.once"})
	if err != nil || len(recs) != 1 {
		t.Fatalf("records: %+v, %v; want exactly one", recs, err)
	}
}
