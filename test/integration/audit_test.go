package integration

import (
	"bufio"
	"context"
	"database/sql"
	"encoding/csv"
	"encoding/json"
	"errors"
	"net/http"
	"os/exec"
	"os/user"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/godwit/godwit/internal/api"
	"github.com/godwit/godwit/internal/audit"
	"github.com/godwit/godwit/internal/labtest"

	_ "modernc.org/sqlite"
)

// TestAuditTrail drives a VM through create, a refused create, a live migration, stop and
// delete on a 2-host lab, and checks that the audit trail tells it all — who, from where,
// with what, and how it ended — that it verifies, that its exports have the right shape
// and verify offline, and that changing a record in the database is caught and named.
func TestAuditTrail(t *testing.T) {
	l := newLab(t, 2)
	me, err := user.Current()
	if err != nil {
		t.Fatal(err)
	}

	var vm api.VM
	l.RunJSON(&vm, "vm", "create", "aud-1", "--host", "host-1")
	_, errOut, err := l.Run("vm", "create", "aud-1", "--memory", "0")
	if err == nil || !strings.Contains(errOut, "memory must be between") {
		t.Fatalf("vm create with zero memory: err=%v stderr=%q; want a refusal", err, errOut)
	}
	l.WaitHTTP("client", "http://"+vm.IP+"/healthz", 90*time.Second)
	var sum migrationSummary
	l.RunJSON(&sum, "vm", "migrate", "aud-1", "--to", "host-2")
	if sum.State != api.MigrationSucceeded {
		t.Fatalf("migration: %+v", sum)
	}

	// The center records the outcome as it settles the migration, just after the CLI
	// has seen it end.
	recs := waitAudit(t, l, func(rs []audit.Record) bool { return find(rs, "migration.finish") != nil }, "--vm", "aud-1")
	for _, r := range recs {
		t.Logf("record %d: %s %s by %s (%s) for %q from %s: %s %s params %s", r.ID, r.Action, r.Target, r.Actor, r.ActorKind,
			r.OnBehalfOf, r.From, r.Outcome, r.Error, r.Params)
	}
	if len(recs) != 4 {
		t.Fatalf("audit list --vm aud-1 shows %d records, want 4 (create, refused create, migrate, finish)", len(recs))
	}
	// Newest first: finish, migrate, refusal, create.
	fin, mig, refused, created := recs[0], recs[1], recs[2], recs[3]
	for _, r := range recs[1:] {
		if r.Actor != me.Username || r.ActorKind != audit.KindUser || r.From != audit.Local {
			t.Errorf("record %d (%s): actor %q (%s) from %q; want %s (user) from local, the CLI's Unix user on the socket",
				r.ID, r.Action, r.Actor, r.ActorKind, r.From, me.Username)
		}
	}
	if created.Action != "vm.create" || created.Target != "aud-1" || created.Outcome != audit.Succeeded ||
		param(created, "host") != "host-1" || param(created, "uuid") != vm.UUID {
		t.Errorf("create record: %+v params %s", created, created.Params)
	}
	if refused.Action != "vm.create" || refused.Target != "aud-1" || refused.Outcome != audit.Refused ||
		!strings.Contains(refused.Error, "memory must be between 16") || param(refused, "memory_mib") != "0" {
		t.Errorf("refused create record: %+v params %s", refused, refused.Params)
	}
	if mig.Action != "vm.migrate" || mig.Target != "aud-1" || mig.Outcome != audit.Succeeded || param(mig, "source") != "host-1" ||
		param(mig, "destination") != "host-2" || param(mig, "policy") == "" || param(mig, "migration") != sum.ID {
		t.Errorf("migrate record: %+v params %s; want source host-1, destination host-2, a policy and migration %s", mig, mig.Params, sum.ID)
	}
	if fin.Action != "migration.finish" || fin.Target != sum.ID || fin.Actor != audit.CenterActor || fin.ActorKind != audit.KindAutomation ||
		fin.OnBehalfOf != me.Username || fin.Outcome != audit.Succeeded || param(fin, "vm") != "aud-1" ||
		fin.DurationMS == nil || *fin.DurationMS <= 0 || fin.DowntimeMS == nil || fin.Bytes == nil || *fin.Bytes == 0 {
		t.Fatalf("migration outcome record: %+v params %s; want the center acting for %s with duration, downtime and bytes", fin, fin.Params, me.Username)
	}
	if *fin.DurationMS != sum.TotalMS || *fin.DowntimeMS != sum.DowntimeMS || *fin.Bytes != sum.Bytes {
		t.Errorf("the outcome record says %.1f ms, %.1f ms downtime, %d bytes; the migration said %.1f, %.1f, %d",
			*fin.DurationMS, *fin.DowntimeMS, *fin.Bytes, sum.TotalMS, sum.DowntimeMS, sum.Bytes)
	}
	finJSON, _ := json.MarshalIndent(fin, "", "  ")
	t.Logf("the migration's audit record:\n%s", finJSON)

	// Filters and the table.
	var byHost []audit.Record
	l.RunJSON(&byHost, "audit", "list", "--host", "host-2")
	// Newest first: the migration's outcome and request, then how host-2 joined.
	if len(byHost) != 4 || byHost[0].ID != fin.ID || byHost[1].ID != mig.ID ||
		byHost[2].Action != "host.join" || byHost[3].Action != "host.join-token.create" {
		t.Errorf("audit list --host host-2: %d records %+v; want the migrate request and its outcome, the join and its token", len(byHost), byHost)
	}
	var refusals []audit.Record
	l.RunJSON(&refusals, "audit", "list", "--user", me.Username, "--action", "vm.create", "--limit", "1")
	if len(refusals) != 1 || refusals[0].ID != refused.ID {
		t.Errorf("audit list --user --action vm.create --limit 1: %+v", refusals)
	}
	table := l.MustRun("audit", "list", "--vm", "aud-1")
	for _, want := range []string{"migration.finish", "center for " + me.Username, "memory must be between", "downtime"} {
		if !strings.Contains(table, want) {
			t.Errorf("audit list --vm aud-1 does not show %q:\n%s", want, table)
		}
	}
	t.Logf("godwit audit list --vm aud-1:\n%s", table)

	l.MustRun("vm", "stop", "aud-1", "--force")
	l.MustRun("vm", "delete", "aud-1")
	var all []audit.Record
	l.RunJSON(&all, "audit", "list", "--limit", "1000")
	for _, r := range all {
		if strings.Contains(r.Target, "heartbeat") || r.Action == "http.get" {
			t.Errorf("record %d (%s %s) should not be in the trail: heartbeats and reads are not recorded", r.ID, r.Action, r.Target)
		}
	}
	if find(all, "vm.stop") == nil || find(all, "vm.delete") == nil || param(*find(all, "vm.stop"), "force") != "true" {
		t.Errorf("the stop and delete are not in the trail as expected: %+v", all[:min(3, len(all))])
	}

	out := l.MustRun("audit", "verify")
	if !strings.Contains(out, "audit trail intact") {
		t.Fatalf("audit verify: %s", out)
	}
	t.Logf("godwit audit verify:\n%s", out)

	// Exports: CSV with the record's fields as its header, JSON lines that verify offline,
	// and the REST export gives the same bytes as the CLI.
	csvOut := l.MustRun("audit", "export", "--format", "csv")
	rows, err := csv.NewReader(strings.NewReader(csvOut)).ReadAll()
	if err != nil {
		t.Fatalf("CSV export does not parse: %v\n%s", err, csvOut)
	}
	if len(rows) != len(all)+1 || strings.Join(rows[0], ",") != strings.Join(audit.CSVHeader(), ",") {
		t.Fatalf("CSV export: %d rows with header %v; want %d records under %v", len(rows), rows[0], len(all), audit.CSVHeader())
	}
	for _, row := range rows[1:] {
		if len(row) != len(audit.CSVHeader()) || !json.Valid([]byte(row[8])) || len(row[15]) != 64 {
			t.Fatalf("CSV row %q: want %d fields, JSON params and a SHA-256 hash", row, len(audit.CSVHeader()))
		}
		if row[6] == "migration.finish" && (row[11] == "" || row[12] == "" || row[13] == "") {
			t.Errorf("the migration's CSV row lacks duration, downtime or bytes: %q", row)
		}
	}
	jsonl := l.MustRun("audit", "export", "--format", "jsonl")
	chain := audit.NewChain(0, audit.GenesisHash)
	n := 0
	sc := bufio.NewScanner(strings.NewReader(jsonl))
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		var r audit.Record
		if err := json.Unmarshal(sc.Bytes(), &r); err != nil {
			t.Fatalf("JSONL line %q: %v", sc.Text(), err)
		}
		if b := chain.Next(r); b != nil {
			t.Fatalf("the JSONL export does not verify offline: %v", b)
		}
		n++
	}
	if n != len(all) {
		t.Fatalf("JSONL export has %d records, want %d", n, len(all))
	}
	if status, body := l.RawAPI(http.MethodGet, "/api/v1/audit/export?format=csv", ""); status != http.StatusOK || body != csvOut {
		t.Errorf("GET /api/v1/audit/export?format=csv: %d, and %d bytes that differ from the CLI's %d", status, len(body), len(csvOut))
	}
	if status, body := l.RawAPI(http.MethodGet, "/api/v1/audit/export?format=jsonl&vm=aud-1&action=migration.finish", ""); status != http.StatusOK ||
		strings.Count(body, "\n") != 1 || !strings.Contains(body, `"downtime_ms"`) {
		t.Errorf("GET /api/v1/audit/export?format=jsonl&vm=aud-1&action=migration.finish: %d\n%s", status, body)
	}

	// Tampering: with the center stopped, hide the refusal by rewriting its row in the
	// database (as someone with the file would, triggers dropped). The restarted center's
	// verify names exactly that record and exits 2.
	l.Stop("center")
	tamperDB(t, filepath.Join(l.Dir(), "center", "godwit.db"),
		`UPDATE audit_log SET outcome = 'succeeded', error = '' WHERE id = ?`, refused.ID)
	l.Start("center")
	out, _, err = l.Run("audit", "verify")
	var ee *exec.ExitError
	if !errors.As(err, &ee) || ee.ExitCode() != 2 {
		t.Fatalf("audit verify after tampering: %v; want exit status 2\n%s", err, out)
	}
	var v audit.Verification
	jsonOut, _, _ := l.Run("audit", "verify", "-o", "json")
	if err := json.Unmarshal([]byte(jsonOut), &v); err != nil || v.OK || v.Broken == nil || v.Broken.ID != refused.ID ||
		v.Broken.Problem != audit.ProblemHashMismatch || !strings.Contains(out, "BROKEN at record") {
		t.Fatalf("audit verify after tampering with record %d: %+v %v\n%s", refused.ID, v.Broken, err, out)
	}
	t.Logf("godwit audit verify after record %d was changed:\n%s", refused.ID, out)
}

// TestAuditCenterRestartAndCancel restarts the center while a (slowed) migration copies
// memory, then cancels the migration: the trail shows the center following it again on
// behalf of the user who asked for it, the user's cancel, and the outcome the center
// recorded (failed, with the migration's state and reason), and it still verifies.
func TestAuditCenterRestartAndCancel(t *testing.T) {
	t.Parallel()
	r := newFaultRun(t)
	me, err := user.Current()
	if err != nil {
		t.Fatal(err)
	}
	m := r.startSlowMigration()
	r.l.Stop("center")
	r.l.Start("center")
	r.l.MustRun("migration", "cancel", m.ID)
	// Whether the source reports the end as cancelled or failed is the agent's business
	// (TestFaultCancel); either way the trail records a failed outcome with its state.
	end := r.mustEnd(m.ID, time.Minute, "after the cancel")
	if end.State != api.MigrationCancelled && end.State != api.MigrationFailed {
		t.Fatalf("migration %s ended %s; want cancelled or failed", m.ID, end.State)
	}

	recs := waitAudit(t, r.l, func(rs []audit.Record) bool { return find(rs, "migration.finish") != nil }, "--vm", faultVMName)
	for _, rec := range recs {
		t.Logf("record %d: %s %s by %s (%s) for %q: %s %s params %s", rec.ID, rec.Action, rec.Target, rec.Actor, rec.ActorKind,
			rec.OnBehalfOf, rec.Outcome, rec.Error, rec.Params)
	}
	var actions []string
	for i := len(recs) - 1; i >= 0; i-- {
		actions = append(actions, recs[i].Action)
	}
	if got := strings.Join(actions, " "); got != "vm.create vm.migrate migration.resume migration.cancel migration.finish" {
		t.Fatalf("audit list --vm %s shows %s; want create, migrate, resume, cancel, finish", faultVMName, got)
	}
	res, cancel, fin := recs[2], recs[1], recs[0]
	if res.Target != m.ID || res.Actor != audit.CenterActor || res.ActorKind != audit.KindAutomation || res.OnBehalfOf != me.Username {
		t.Errorf("migration.resume record: %+v; want the center following %s again for %s", res, m.ID, me.Username)
	}
	if cancel.Target != m.ID || cancel.Actor != me.Username || cancel.Outcome != audit.Succeeded || param(cancel, "vm") != faultVMName {
		t.Errorf("migration.cancel record: %+v params %s", cancel, cancel.Params)
	}
	if fin.Target != m.ID || fin.Outcome != audit.Failed || param(fin, "state") != end.State || fin.Error != end.Error || fin.Error == "" ||
		fin.OnBehalfOf != me.Username || fin.DurationMS == nil || fin.Bytes == nil || *fin.Bytes == 0 {
		t.Errorf("migration.finish record: %+v params %s; want failed (cancelled) with a reason, time and bytes", fin, fin.Params)
	}
	if out := r.l.MustRun("audit", "verify"); !strings.Contains(out, "intact") {
		t.Errorf("audit verify: %s", out)
	}
}

// waitAudit polls `audit list -o json` with args until ok holds.
func waitAudit(t *testing.T, l *labtest.Lab, ok func([]audit.Record) bool, args ...string) []audit.Record {
	t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	for {
		var recs []audit.Record
		l.RunJSON(&recs, append([]string{"audit", "list"}, args...)...)
		if ok(recs) {
			return recs
		}
		if time.Now().After(deadline) {
			t.Fatalf("godwit audit list %s did not show what was expected: %+v", strings.Join(args, " "), recs)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

func find(rs []audit.Record, action string) *audit.Record {
	for i := range rs {
		if rs[i].Action == action {
			return &rs[i]
		}
	}
	return nil
}

// param returns a record's parameter as text ("" if absent).
func param(r audit.Record, key string) string {
	var p map[string]json.RawMessage
	if json.Unmarshal(r.Params, &p) != nil || p[key] == nil {
		return ""
	}
	var s string
	if json.Unmarshal(p[key], &s) == nil {
		return s
	}
	return string(p[key])
}

// tamperDB changes the center's database as an intruder with the file would.
func tamperDB(t *testing.T, path, q string, args ...any) {
	t.Helper()
	db, err := sql.Open("sqlite", "file:"+path+"?_pragma=busy_timeout(5000)")
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if _, err := db.ExecContext(ctx, `DROP TRIGGER audit_log_no_update`); err != nil {
		t.Fatalf("drop the audit trail's update trigger: %v", err)
	}
	res, err := db.ExecContext(ctx, q, args...)
	if err != nil {
		t.Fatalf("%s: %v", q, err)
	}
	if n, _ := res.RowsAffected(); n != 1 {
		t.Fatalf("%s changed %d rows, want 1", q, n)
	}
}

// TestCenterDownWhileMigrationCompletes stops the center mid-copy and lets the migration
// complete without it (the hosts do the work). Started again, the center reconciles the
// outcome from the source host: the migration and its task succeed, the VM's host is the
// destination, the trail records the outcome on behalf of the user who asked, and no task
// or audit record from before the restart is lost.
func TestCenterDownWhileMigrationCompletes(t *testing.T) {
	t.Parallel()
	r := newFaultRun(t)
	var before []api.Task
	r.l.RunJSON(&before, "task", "list")
	m := r.startSlowMigration()
	r.l.Stop("center")
	// Without the center, the migration converges: the guest stops dirtying and the
	// links are fast again.
	r.dirty(0, 0)
	r.l.Shape("host-1", "off")
	r.l.Shape("host-2", "off")
	src := r.l.AsCenter(m.Source)
	deadline := time.Now().Add(2 * time.Minute)
	var onHost api.Migration
	for {
		resp, err := src.Get("https://" + r.addrs[m.Source] + ":7700/agent/v1/migrations/" + m.ID)
		if err == nil {
			_ = json.NewDecoder(resp.Body).Decode(&onHost)
			resp.Body.Close()
		}
		if faultEnded(onHost) || time.Now().After(deadline) {
			break
		}
		time.Sleep(500 * time.Millisecond)
	}
	if onHost.State != api.MigrationSucceeded {
		t.Fatalf("with the center down, the source reports migration %s as %s; want it to complete", m.ID, faultDescribe(onHost))
	}
	r.l.Start("center")
	end := r.mustEnd(m.ID, time.Minute, "after the center came back")
	r.verify(end, true)
	if end.State != api.MigrationSucceeded || end.Bytes == 0 || end.TotalMS <= 0 {
		t.Errorf("the center recorded %s; want the source's success with its bytes and time", faultDescribe(end))
	}
	var task api.Task
	r.l.RunJSON(&task, "task", "show", m.ID)
	if task.State != api.TaskSucceeded || task.Finished == nil || task.Progress.Percent != 100 {
		t.Errorf("the migration's task after the restart: %+v; want succeeded at 100%%", task)
	}
	var after []api.Task
	r.l.RunJSON(&after, "task", "list")
	have := map[string]api.Task{}
	for _, x := range after {
		have[x.ID] = x
	}
	for _, x := range before {
		if y, ok := have[x.ID]; !ok || y.State != x.State || y.Kind != x.Kind {
			t.Errorf("task %s (%s, %s) from before the restart is now %+v", x.ID, x.Kind, x.State, y)
		}
	}
	recs := waitAudit(t, r.l, func(rs []audit.Record) bool { return find(rs, "migration.finish") != nil }, "--vm", faultVMName)
	fin := find(recs, "migration.finish")
	if fin.Outcome != audit.Succeeded || fin.Bytes == nil || *fin.Bytes != end.Bytes || fin.OnBehalfOf == "" {
		t.Errorf("migration.finish after the restart: %+v; want succeeded with the bytes, on behalf of the requester", fin)
	}
	if find(recs, "vm.create") == nil || find(recs, "vm.migrate") == nil {
		t.Errorf("records from before the restart are missing: %+v", recs)
	}
	if out := r.l.MustRun("audit", "verify"); !strings.Contains(out, "intact") {
		t.Errorf("audit verify: %s", out)
	}
}
