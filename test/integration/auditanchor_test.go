package integration

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"net/http"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/godwit/godwit/internal/audit"
	"github.com/godwit/godwit/internal/labtest"
)

// TestAuditCutIsCaught anchors the audit trail on the hosts and then cuts it as an
// intruder with the center's database file would: with the center stopped, the newest
// records deleted and the chain's head (audit_chain) rewritten to the last record left,
// the chain alone is intact — but the hosts hold the center's signed checkpoint of a
// record that is gone, so `godwit audit verify` exits 2 saying the chain was cut, naming
// the host and the checkpoint. Before the cut, with one host's agent killed and started
// again in between, the trail verifies intact and anchored by both hosts. On the way, an
// unauthenticated request with a 600 KiB query leaves at most a bounded record.
func TestAuditCutIsCaught(t *testing.T) {
	l := newLab(t, 2)

	// Audited requests: a maintenance mode, join tokens, and a stranger's huge request.
	l.MustRun("host", "maintenance", "host-2", "on", "--reason", "new disks")
	l.MustRun("host", "maintenance", "host-2", "off")
	l.MustRun("host", "join-token", "create", "--host", "host-9")
	status, _ := tlsCall(t, l.HTTPS("client", "", nil), http.MethodPost,
		l.Lab().CenterURL+"/api/v1/vms?pad="+strings.Repeat("p", 600<<10), `{"name":"x"}`)
	t.Logf("the unauthenticated 600 KiB request was answered %d", status)
	var all []audit.Record
	l.RunJSON(&all, "audit", "list", "--limit", "1000")
	padded := false
	for _, r := range all {
		padded = padded || strings.Contains(string(r.Params), "…(614400 bytes)")
		size := len(r.Actor) + len(r.ActorKind) + len(r.OnBehalfOf) + len(r.From) + len(r.Action) + len(r.Outcome) +
			len(r.Target) + len(r.Error) + len(r.Params)
		if size > 6*audit.MaxField+audit.MaxTarget+audit.MaxError+audit.MaxParams {
			t.Errorf("record %d (%s) holds %d bytes; records are bounded", r.ID, r.Action, size)
		}
		if strings.Contains(string(r.Params), "ppp") && !strings.Contains(string(r.Params), "…(614400 bytes)") {
			t.Errorf("record %d keeps the 600 KiB query without saying it was cut: %.200s", r.ID, r.Params)
		}
	}
	// Refused before any handler (header too large), it is not recorded at all.
	if !padded && status != http.StatusRequestHeaderFieldsTooLarge {
		t.Errorf("the unauthenticated 600 KiB request (answered %d) is not in the trail with its query cut short", status)
	}

	// The hosts come to hold a checkpoint at or after the newest record; a host killed
	// and started again still holds it.
	var v audit.Verification
	l.RunJSON(&v, "audit", "verify")
	head := v.HeadID
	waitAnchors(t, l, head, "before the cut")
	l.Crash("host-1")
	l.Start("host-1")
	v = waitAnchors(t, l, head, "after host-1's agent restarted")
	out := l.MustRun("audit", "verify")
	if !v.OK || !strings.Contains(out, "audit trail intact") || !strings.Contains(out, "anchored by the checkpoints of host-1 at record") {
		t.Fatalf("the untouched, anchored trail: %+v\n%s", v, out)
	}
	t.Logf("godwit audit verify before the cut:\n%s", out)
	cp := v.Anchors[0].ID

	// The cut: the records from the last three before the checkpoint on are deleted, and
	// the head moved back to match.
	l.Stop("center")
	keep := cp - 3
	cutTrail(t, filepath.Join(l.Dir(), "center", "godwit.db"), keep)
	l.Start("center")

	// The chain alone still verifies; the checkpoints the hosts report show the cut.
	deadline := time.Now().Add(30 * time.Second)
	for {
		v = audit.Verification{}
		jsonOut, _, _ := l.Run("audit", "verify", "-o", "json")
		if err := json.Unmarshal([]byte(jsonOut), &v); err != nil {
			t.Fatalf("audit verify -o json after the cut: %v\n%s", err, jsonOut)
		}
		if len(v.Anchors) == 2 || time.Now().After(deadline) {
			break
		}
		time.Sleep(500 * time.Millisecond)
	}
	if v.OK || v.Broken == nil || v.Broken.Problem != audit.ProblemCut || v.HeadID != keep || len(v.Anchors) != 2 {
		t.Fatalf("audit verify after the cut to record %d: %+v; want broken (cut) by both hosts' checkpoints", keep, v)
	}
	out, _, err := l.Run("audit", "verify")
	var ee *exec.ExitError
	if !errors.As(err, &ee) || ee.ExitCode() != 2 {
		t.Fatalf("audit verify after the cut: %v; want exit status 2\n%s", err, out)
	}
	for _, want := range []string{"BROKEN", "cut", "host host-1", "checkpoint of record " + strconv.FormatInt(cp, 10),
		"the chain ends at record " + strconv.FormatInt(keep, 10)} {
		if !strings.Contains(out, want) {
			t.Errorf("audit verify after the cut does not say %q:\n%s", want, out)
		}
	}
	t.Logf("godwit audit verify after the newest records were deleted and the head rewritten:\n%s", out)
}

// waitAnchors waits until every host holds a checkpoint at or after record id, and
// returns the verification that shows it.
func waitAnchors(t *testing.T, l *labtest.Lab, id int64, when string) audit.Verification {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		var v audit.Verification
		l.RunJSON(&v, "audit", "verify")
		ok := len(v.Anchors) == 2
		for _, a := range v.Anchors {
			ok = ok && a.Status == audit.AnchorHolds && a.ID >= id
		}
		if ok {
			return v
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: the hosts do not hold checkpoints at or after record %d: %+v", when, id, v.Anchors)
		}
		time.Sleep(500 * time.Millisecond)
	}
}

// cutTrail deletes the audit records after keep and points the chain's head at keep, as
// an intruder with the database file would (triggers dropped first).
func cutTrail(t *testing.T, path string, keep int64) {
	t.Helper()
	db, err := sql.Open("sqlite", "file:"+path+"?_pragma=busy_timeout(5000)")
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	for _, q := range []string{
		`DROP TRIGGER audit_log_no_update`,
		`DROP TRIGGER audit_log_no_delete`,
		`DELETE FROM audit_log WHERE id > ?1`,
		`UPDATE audit_chain SET head_id = ?1, head_hash = (SELECT hash FROM audit_log WHERE id = ?1)`,
	} {
		args := []any{}
		if strings.Contains(q, "?") {
			args = append(args, keep)
		}
		if _, err := db.ExecContext(ctx, q, args...); err != nil {
			t.Fatalf("%s: %v", q, err)
		}
	}
}
