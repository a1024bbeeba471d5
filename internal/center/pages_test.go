package center

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/godwit/godwit/internal/api"
	"github.com/godwit/godwit/internal/store"
)

// TestListsComeInPages drives GET /api/v1/vms and /hosts through the served handler: a
// page of ?limit items with a Link to the next and the total, the filters, and 400s.
func TestListsComeInPages(t *testing.T) {
	dir := t.TempDir()
	c := newAuthCenter(t, dir)
	h := c.routes(false)
	admin := "Bearer " + credentials(t, dir)["token"]
	ctx := context.Background()
	now := time.Now()
	for i := range 5 {
		host := fmt.Sprintf("host-%d", i%2+1)
		if err := c.store.InsertVM(ctx, store.VMRecord{Spec: api.VMSpec{Name: fmt.Sprintf("vm-%d", i), UUID: fmt.Sprintf("u-%d", i), MemoryMiB: 64},
			Host: host, Desired: api.VMRunning, State: api.VMRunning, Created: now, Updated: now}); err != nil {
			t.Fatal(err)
		}
	}
	for _, host := range []string{"host-1", "host-2", "host-3"} {
		if _, err := c.store.SaveHeartbeat(ctx, api.HostFacts{Name: host, AgentURL: "https://198.18.1.1:7700"}, now); err != nil {
			t.Fatal(err)
		}
	}
	names := func(body string) []string {
		var l []struct{ Name string }
		if err := json.Unmarshal([]byte(body), &l); err != nil {
			t.Fatalf("%v: %s", err, body)
		}
		var out []string
		for _, x := range l {
			out = append(out, x.Name)
		}
		return out
	}
	w := serveAs(h, "", "GET", "/api/v1/vms?limit=2", admin, "")
	if got := names(w.Body.String()); w.Code != 200 || strings.Join(got, ",") != "vm-0,vm-1" {
		t.Fatalf("first page: %d %v", w.Code, got)
	}
	link := w.Header().Get("Link")
	if w.Header().Get("X-Total-Count") != "5" || !strings.Contains(link, "after=vm-1") || !strings.Contains(link, `rel="next"`) {
		t.Errorf("first page's headers: total %q, link %q", w.Header().Get("X-Total-Count"), link)
	}
	next := strings.TrimPrefix(link[:strings.Index(link, ">")], "<")
	w = serveAs(h, "", "GET", next, admin, "")
	if got := names(w.Body.String()); strings.Join(got, ",") != "vm-2,vm-3" {
		t.Errorf("second page (%s): %v", next, got)
	}
	w = serveAs(h, "", "GET", "/api/v1/vms?host=host-2&state=running", admin, "")
	if got := names(w.Body.String()); strings.Join(got, ",") != "vm-1,vm-3" || w.Header().Get("Link") != "" || w.Header().Get("X-Total-Count") != "2" {
		t.Errorf("running VMs on host-2: %v, link %q, total %q", got, w.Header().Get("Link"), w.Header().Get("X-Total-Count"))
	}
	w = serveAs(h, "", "GET", "/api/v1/hosts?limit=2&after=host-1", admin, "")
	if got := names(w.Body.String()); strings.Join(got, ",") != "host-2,host-3" || w.Header().Get("X-Total-Count") != "3" {
		t.Errorf("hosts after host-1: %v, total %q", got, w.Header().Get("X-Total-Count"))
	}
	for _, q := range []string{"/api/v1/vms?limit=0", "/api/v1/hosts?limit=9999", "/api/v1/vms?host=" + strings.Repeat("h", 200)} {
		if w := serveAs(h, "", "GET", q, admin, ""); w.Code != 400 {
			t.Errorf("GET %.40s…: %d %s; want 400", q, w.Code, w.Body)
		}
	}
}
