package integration

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/godwit/godwit/internal/api"
	"github.com/godwit/godwit/internal/labtest"
)

// TestProgressPushed follows migrations of small guests over slow links and checks
// that the center learns their progress from the source's progress stream
// (GET /agent/v1/migrations/stream), not by asking: during a migration of a busy guest,
// joined by a second from the same host, the source accepts only a few connections and
// the center reads a migration's view by itself (GET /agent/v1/migrations/{id}) hardly
// ever — it used to every 100 ms — while the source pushes many views, a watcher of the center's task
// stream sees the progress step by step and `migration watch` prints it; the outcome is
// recorded, and the source's stream closes once nothing is followed there. Then a migration back has every
// connection from the center to its source killed mid-copy: the center opens the
// stream again, the watcher sees progress go on, and the outcome is recorded as it
// happened.
func TestProgressPushed(t *testing.T) {
	l := newLab(t, 2)
	var hosts []api.Host
	l.RunJSON(&hosts, "host", "list")
	addr := map[string]string{}
	for _, h := range hosts {
		addr[h.Name] = h.Address
	}
	var vm, idle api.VM
	l.RunJSON(&vm, "vm", "create", "push-1", "--host", "host-1", "--memory", "128")
	l.RunJSON(&idle, "vm", "create", "push-2", "--host", "host-1", "--memory", "128")
	l.WaitHTTP("client", "http://"+vm.IP+"/healthz", 90*time.Second)
	l.WaitHTTP("client", "http://"+idle.IP+"/healthz", 90*time.Second)
	// Slow links and a guest that rewrites memory make each migration last seconds,
	// long enough that asking every 100 ms would show.
	l.Shape("host-1", "200mbit")
	l.Shape("host-2", "200mbit")
	resp, err := l.HTTP("client").Post("http://"+vm.IP+"/dirty?mib=16&rate=3", "application/json", nil)
	if err != nil {
		t.Fatalf("POST /dirty: %v", err)
	}
	resp.Body.Close()

	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	w := watchMigrationTasks(ctx, t, l, "push-1")

	// A migration followed by its stream, and by `migration watch` from the CLI; once it
	// is under way, a second one from the same host joins the stream.
	before := agentSamples(t, l, "host-1")
	var m, second api.Migration
	l.RunJSON(&m, "vm", "migrate", "push-1", "--to", "host-2", "--detach")
	type watched struct {
		out, errOut string
		err         error
	}
	cli := make(chan watched, 1)
	go func() {
		out, errOut, err := l.Run("migration", "watch", m.ID, "-o", "json")
		cli <- watched{out, errOut, err}
	}()
	steps, final := w.until(t, m.ID, func(tk api.Task) {
		if second.ID == "" && tk.State == api.TaskRunning && tk.Progress.Percent > 5 {
			l.RunJSON(&second, "vm", "migrate", "push-2", "--to", "host-2", "--detach")
		}
	})
	done := migrationShown(t, l, m.ID)
	if final.State != api.TaskSucceeded || done.State != api.MigrationSucceeded {
		t.Fatalf("the migration ended %s (task %s): %s", done.State, final.State, done.Error)
	}
	if second.ID == "" {
		t.Fatalf("the migration ended before a second could join it (progress steps %v)", steps)
	}
	var secondDone api.Migration
	for deadline := time.Now().Add(2 * time.Minute); !faultEnded(secondDone); time.Sleep(200 * time.Millisecond) {
		if secondDone = migrationShown(t, l, second.ID); time.Now().After(deadline) {
			t.Fatalf("the second migration did not end: %+v", secondDone)
		}
	}
	after := agentSamples(t, l, "host-1")
	if secondDone.State != api.MigrationSucceeded {
		t.Fatalf("the second migration ended %s: %s", secondDone.State, secondDone.Error)
	}
	waitVM(t, l, "push-1", func(v api.VM) bool { return v.Host == "host-2" && v.State == api.VMRunning })
	waitVM(t, l, "push-2", func(v api.VM) bool { return v.Host == "host-2" && v.State == api.VMRunning })
	conns := after["godwit_agent_connections_accepted_total"] - before["godwit_agent_connections_accepted_total"]
	reads := after[centerReads] - before[centerReads]
	pushed := after["godwit_agent_progress_updates_total"] - before["godwit_agent_progress_updates_total"]
	t.Logf("migrations of %.1f s and %.1f s: host-1 accepted %v connections, the center read a migration %v times by itself, host-1 pushed %v views, the task stream showed %d progress steps of the first",
		done.TotalMS/1000, secondDone.TotalMS/1000, conns, reads, pushed, len(steps))
	if done.TotalMS < 2000 {
		t.Fatalf("the migration took %.0f ms; this test needs one of seconds to tell pushed progress from asked", done.TotalMS)
	}
	if reads > 2 {
		t.Errorf("the center read the migrations' views %v times from host-1 during %.1f s; want their progress pushed, not asked for", reads, done.TotalMS/1000)
	}
	if conns > 6 {
		t.Errorf("host-1 accepted %v connections during two migrations; want a few (one stream for both, a pooled connection or two)", conns)
	}
	if pushed < 5 || len(steps) < 3 {
		t.Errorf("host-1 pushed %v views and the task stream showed %d progress steps (%v); want progress shown as it happens", pushed, len(steps), steps)
	}
	waitSample(t, l, "host-1", "godwit_agent_progress_streams", 0)
	got := <-cli
	var sum migrationSummary
	if err := json.Unmarshal([]byte(got.out), &sum); got.err != nil || err != nil || sum.State != api.MigrationSucceeded {
		t.Errorf("migration watch %s: %v\n%s%s; want the summary of a success", m.ID, got.err, got.out, got.errOut)
	}
	// Not at a terminal, it prints a progress line a second.
	if n := strings.Count(got.errOut, "host-1 → host-2"); n < 2 {
		t.Errorf("migration watch %s printed %d progress lines during %.1f s:\n%s", m.ID, n, done.TotalMS/1000, got.errOut)
	}

	// A migration back whose connections from the center to the source are killed
	// mid-copy.
	before = agentSamples(t, l, "host-2")
	l.RunJSON(&m, "vm", "migrate", "push-1", "--to", "host-1", "--detach")
	var killedAt float64
	steps, final = w.until(t, m.ID, func(tk api.Task) {
		if killedAt == 0 && tk.State == api.TaskRunning && tk.Progress.Percent > 10 {
			killedAt = tk.Progress.Percent
			out, errOut, err := l.Run("lab", "exec", "--name", l.Name, "center", "--", "ss", "-K", "dst", addr["host-2"], "dport", "=", ":7700")
			if err != nil || !strings.Contains(out, addr["host-2"]+":7700") {
				t.Fatalf("kill the center's connections to host-2's agent: %v\n%s%s", err, out, errOut)
			}
			t.Logf("killed the center's connections to host-2's agent at %.1f%%:\n%s", killedAt, out)
		}
	})
	after = agentSamples(t, l, "host-2")
	done = migrationShown(t, l, m.ID)
	if final.State != api.TaskSucceeded || done.State != api.MigrationSucceeded {
		t.Fatalf("the migration whose stream was killed ended %s (task %s): %s", done.State, final.State, done.Error)
	}
	waitVM(t, l, "push-1", func(v api.VM) bool { return v.Host == "host-1" && v.State == api.VMRunning })
	if killedAt == 0 {
		t.Fatalf("the migration ended before it could be hit (progress steps %v)", steps)
	}
	var later int
	for _, p := range steps {
		if p > killedAt {
			later++
		}
	}
	if later < 2 {
		t.Errorf("after the stream was killed at %.1f%% the task stream showed %d further progress steps (%v); want progress to go on", killedAt, later, steps)
	}
	if reads := after[centerReads] - before[centerReads]; reads > 3 {
		t.Errorf("the center read the migration's view %v times after its stream broke; want the stream opened again", reads)
	}
	if conns := after["godwit_agent_connections_accepted_total"] - before["godwit_agent_connections_accepted_total"]; conns < 2 || conns > 8 {
		t.Errorf("host-2 accepted %v connections during the migration whose connections were killed; want the stream opened again, and a few more at most", conns)
	}
	log, err := os.ReadFile(filepath.Join(l.Dir(), "logs", "center.log"))
	if err != nil || !strings.Contains(string(log), "the progress stream of a source host ended; opening it again") {
		t.Errorf("the center's log does not say it opened host-2's progress stream again (%v)", err)
	}
	waitSample(t, l, "host-2", "godwit_agent_progress_streams", 0)
}

// centerReads is the sample of the center's requests for one migration's view.
const centerReads = `godwit_agent_migration_reads_total{caller="center"}`

// taskWatch follows the center's task stream of one VM's migrations.
type taskWatch struct {
	events chan api.Task
	ctx    context.Context
}

func watchMigrationTasks(ctx context.Context, t *testing.T, l *labtest.Lab, vm string) *taskWatch {
	t.Helper()
	resp, err := l.API().Stream(ctx, "/api/v1/tasks/stream?kind=vm.migrate&target="+vm)
	if err != nil {
		t.Fatal(err)
	}
	w := &taskWatch{events: make(chan api.Task, 10000), ctx: ctx}
	go func() {
		defer resp.Body.Close()
		defer close(w.events)
		_ = api.ReadEvents(resp.Body, func(data []byte) error {
			var tk api.Task
			if err := json.Unmarshal(data, &tk); err != nil {
				return err
			}
			w.events <- tk
			return nil
		})
	}()
	return w
}

// until reads the task of migration id until it ends, calling each (if not nil) with
// every update; it returns the distinct progress percentages seen while it ran, in order.
func (w *taskWatch) until(t *testing.T, id string, each func(api.Task)) ([]float64, api.Task) {
	t.Helper()
	var steps []float64
	for {
		select {
		case tk, ok := <-w.events:
			if !ok {
				t.Fatalf("the task stream ended before migration %s did (steps %v)", id, steps)
			}
			if tk.ID != id {
				continue
			}
			if each != nil {
				each(tk)
			}
			if api.TaskEnded(tk.State) {
				return steps, tk
			}
			if tk.State == api.TaskRunning && tk.Progress.Percent > 0 && (len(steps) == 0 || steps[len(steps)-1] != tk.Progress.Percent) {
				steps = append(steps, tk.Progress.Percent)
			}
		case <-w.ctx.Done():
			t.Fatalf("migration %s did not end (steps %v)", id, steps)
		}
	}
}

func migrationShown(t *testing.T, l *labtest.Lab, id string) api.Migration {
	t.Helper()
	var m api.Migration
	l.RunJSON(&m, "migration", "show", id)
	return m
}

// agentSamples reads host's agent metrics (samples without labels, and those with
// labels by their full name).
func agentSamples(t *testing.T, l *labtest.Lab, host string) map[string]float64 {
	t.Helper()
	var url string
	for _, h := range l.Lab().Hosts {
		if h.Name == host {
			url = h.AgentURL
		}
	}
	resp, err := l.HTTPS("client", host, nil).Get(url + "/metrics")
	if err != nil {
		t.Fatalf("metrics of %s: %v", host, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("metrics of %s: %d %v", host, resp.StatusCode, err)
	}
	out := map[string]float64{}
	for _, line := range strings.Split(string(b), "\n") {
		name, v, ok := strings.Cut(line, " ")
		if !ok || strings.HasPrefix(line, "#") {
			continue
		}
		var n float64
		if _, err := fmt.Sscan(v, &n); err == nil {
			out[name] = n
		}
	}
	for _, want := range []string{"godwit_agent_connections_accepted_total", "godwit_agent_progress_updates_total", "godwit_agent_progress_streams", centerReads} {
		if _, ok := out[want]; !ok {
			t.Fatalf("%s reports no %s", host, want)
		}
	}
	return out
}

// waitSample waits until one of host's agent metrics has the value want.
func waitSample(t *testing.T, l *labtest.Lab, host, sample string, want float64) {
	t.Helper()
	var got float64
	for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(200 * time.Millisecond) {
		if got = agentSamples(t, l, host)[sample]; got == want {
			return
		}
	}
	t.Errorf("%s's %s is %v; want %v", host, sample, got, want)
}
