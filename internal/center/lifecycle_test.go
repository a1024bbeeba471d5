package center

import (
	"context"
	"errors"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/godwit/godwit/internal/api"
	"github.com/godwit/godwit/internal/migration"
)

// kinds lists the kinds of effects, in order.
func kinds(es []effect) []effKind {
	out := make([]effKind, len(es))
	for i, e := range es {
		out[i] = e.kind
	}
	return out
}

var effNames = map[effKind]string{effPublish: "publish", effLive: "live", effStore: "store", effAdmit: "admit",
	effLaunch: "launch", effFollow: "follow", effUnfollow: "unfollow", effPoll: "poll", effRecord: "record",
	effFailNow: "fail-now", effReply: "reply", effForget: "forget", effNoteWaiting: "note-waiting", effNoteBack: "note-back"}

func names(ks []effKind) string {
	var s []string
	for _, k := range ks {
		s = append(s, effNames[k])
	}
	return strings.Join(s, " ")
}

// expect steps s with ev and checks the phase it ends in and the effects, in order.
func expect(t *testing.T, s *migState, ev migEvent, now time.Time, phase migPhase, want ...effKind) []effect {
	t.Helper()
	es := s.step(ev, now)
	if got := kinds(es); !slices.Equal(got, want) || s.phase != phase {
		t.Fatalf("event %d in a migration now %s: effects [%s], phase %s; want [%s], %s",
			ev.kind, s.m.State, names(got), s.phase, names(want), phase)
	}
	return es
}

// A queued migration goes through every phase: it waits (its submitter hears that it
// waits), is admitted (stored as preparing before the source is asked), starts, is
// followed by its views (stored only when its state changes), ends, and is recorded.
func TestLifecycleQueuedToSucceeded(t *testing.T) {
	now := time.Date(2026, 12, 6, 12, 0, 0, 0, time.UTC)
	s := &migState{m: api.Migration{ID: "m-1", VM: "web", Source: "h1", Destination: "h2", State: api.MigrationQueued, Started: now}}
	expect(t, s, migEvent{kind: evQueued}, now, phaseAdmitting, effLive, effAdmit)
	es := expect(t, s, migEvent{kind: evWaiting, note: "waiting for a slot on host h2"}, now, phaseAdmitting, effPublish, effReply)
	if es[1].m.Waiting != "waiting for a slot on host h2" || es[1].m.State != api.MigrationQueued {
		t.Fatalf("the submitter hears %+v; want queued, with what it waits for", es[1].m)
	}
	// A second wait note does not answer the submitter again.
	expect(t, s, migEvent{kind: evWaiting, note: "still"}, now, phaseAdmitting, effPublish)
	es = expect(t, s, migEvent{kind: evAdmitted}, now, phaseStarting, effStore, effPublish, effLaunch)
	if es[0].m.State != api.MigrationPreparing || es[0].m.Waiting != "" {
		t.Fatalf("admitted: stored %+v; want preparing with no wait note", es[0].m)
	}
	// A late wait note or a second admission changes nothing.
	expect(t, s, migEvent{kind: evWaiting, note: "late"}, now, phaseStarting)
	expect(t, s, migEvent{kind: evAdmitted}, now, phaseStarting)
	pred := &migration.Prediction{}
	expect(t, s, migEvent{kind: evStarted, view: api.Migration{Prediction: pred}}, now, phaseFollowing, effLive, effFollow)
	if s.m.Prediction != pred {
		t.Fatal("the started migration lost its prediction")
	}
	// The stream covers it: no request to the source.
	expect(t, s, migEvent{kind: evTick, covered: true}, now, phaseFollowing)
	run := s.m
	run.State, run.Started, run.Prediction = api.MigrationRunning, time.Time{}, nil
	expect(t, s, migEvent{kind: evView, view: run}, now, phaseFollowing, effPublish, effStore)
	if s.m.Started != now || s.m.Prediction != pred {
		t.Fatalf("the source's view replaced the center's start time or prediction: %+v", s.m)
	}
	run.Progress.Pass = 2
	expect(t, s, migEvent{kind: evView, view: run}, now, phaseFollowing, effPublish)
	end := run
	end.State = api.MigrationSucceeded
	expect(t, s, migEvent{kind: evView, view: end}, now, phaseRecording, effRecord)
	// While it is recorded, no request to the source and no second recording.
	expect(t, s, migEvent{kind: evTick}, now.Add(time.Minute), phaseRecording)
	expect(t, s, migEvent{kind: evRecorded}, now, phaseDone, effUnfollow, effForget)
}

// A high-priority migration admitted at once whose source refuses to start it: its
// submitter gets the error, its slots are given back at once, and it is forgotten; the
// request's own audit record says it, so nothing is recorded as an outcome.
func TestLifecycleStartRefusedToItsSubmitter(t *testing.T) {
	now := time.Date(2026, 12, 6, 12, 0, 0, 0, time.UTC)
	s := &migState{m: api.Migration{ID: "m-2", State: api.MigrationQueued}}
	expect(t, s, migEvent{kind: evAdmittedNow}, now, phaseStarting, effStore, effPublish, effLaunch)
	boom := errors.New("host h1 refused")
	es := expect(t, s, migEvent{kind: evStartFailed, err: boom}, now, phaseDone, effFailNow, effReply, effForget)
	if es[1].err != boom || es[0].m.State != api.MigrationFailed || es[0].m.Finished == nil || es[0].m.Error != boom.Error() {
		t.Fatalf("a refused start: %+v / %v; want failed, finished, with the reason, and the error to the submitter", es[0].m, es[1].err)
	}
}

// A migration that waited in the queue and then fails to start has answered its
// submitter already: its end is recorded like any other.
func TestLifecycleQueuedStartFailureIsRecorded(t *testing.T) {
	now := time.Date(2026, 12, 6, 12, 0, 0, 0, time.UTC)
	s := &migState{m: api.Migration{ID: "m-3", State: api.MigrationQueued}}
	expect(t, s, migEvent{kind: evQueued}, now, phaseAdmitting, effLive, effAdmit)
	expect(t, s, migEvent{kind: evWaiting, note: "w"}, now, phaseAdmitting, effPublish, effReply)
	expect(t, s, migEvent{kind: evAdmitted}, now, phaseStarting, effStore, effPublish, effLaunch)
	es := expect(t, s, migEvent{kind: evStartFailed, err: errors.New("no")}, now, phaseRecording, effRecord)
	if es[0].m.State != api.MigrationFailed {
		t.Fatalf("recorded %+v; want failed", es[0].m)
	}
}

// A queued migration cancelled by a user ends cancelled with what it waited for; one
// the limiter refuses ends failed with the limiter's reason.
func TestLifecycleRefusedAdmission(t *testing.T) {
	now := time.Date(2026, 12, 6, 12, 0, 0, 0, time.UTC)
	s := &migState{m: api.Migration{ID: "m-4", State: api.MigrationQueued}}
	expect(t, s, migEvent{kind: evQueued}, now, phaseAdmitting, effLive, effAdmit)
	expect(t, s, migEvent{kind: evWaiting, note: "waiting for host h2"}, now, phaseAdmitting, effPublish, effReply)
	es := expect(t, s, migEvent{kind: evRefused, err: context.Canceled}, now, phaseRecording, effRecord)
	if m := es[0].m; m.State != api.MigrationCancelled || m.Error != "cancelled while it waited in the queue (waiting for host h2)" || m.Finished == nil {
		t.Fatalf("cancelled in the queue: %+v", m)
	}
	s = &migState{m: api.Migration{ID: "m-5", State: api.MigrationQueued}}
	expect(t, s, migEvent{kind: evQueued}, now, phaseAdmitting, effLive, effAdmit)
	es = expect(t, s, migEvent{kind: evRefused, err: errors.New("costs more than the limit")}, now, phaseRecording, effRecord)
	if m := es[0].m; m.State != api.MigrationFailed || m.Error != "not admitted: costs more than the limit" {
		t.Fatalf("refused by the limiter: %+v", m)
	}
	// Its submitter, who never heard that it waits, hears the end once it is recorded.
	expect(t, s, migEvent{kind: evRecordFailed, err: errors.New("disk full")}, now, phaseRecording, effReply)
	// Recorded again only after recordRetry.
	expect(t, s, migEvent{kind: evTick}, now.Add(recordRetry-time.Millisecond), phaseRecording)
	expect(t, s, migEvent{kind: evTick}, now.Add(recordRetry), phaseRecording, effRecord)
	expect(t, s, migEvent{kind: evRecorded}, now, phaseDone, effUnfollow, effForget)
}

// A followed migration whose source does not answer: asked once a tick (never two
// requests at once), its task says why only after quietPolls misses (at once when the
// source has no record of it), said once per reason; the source answering again resets
// the count.
func TestLifecycleUnansweredSource(t *testing.T) {
	now := time.Date(2026, 12, 6, 12, 0, 0, 0, time.UTC)
	s := &migState{m: api.Migration{ID: "m-6", Source: "h1", State: api.MigrationRunning}}
	expect(t, s, migEvent{kind: evAdopted}, now, phaseFollowing, effLive, effFollow)
	down := errors.New("connection refused")
	for i := 1; i <= quietPolls+1; i++ {
		expect(t, s, migEvent{kind: evTick}, now, phaseFollowing, effPoll)
		expect(t, s, migEvent{kind: evTick}, now, phaseFollowing) // a request is in flight
		want := []effKind{}
		if i == quietPolls {
			want = []effKind{effPublish, effNoteWaiting}
		}
		expect(t, s, migEvent{kind: evUnanswered, err: down, polled: true}, now, phaseFollowing, want...)
	}
	if !strings.Contains(s.m.Waiting, "cannot reach source host h1") {
		t.Fatalf("task note %q; want it to say the center cannot reach h1", s.m.Waiting)
	}
	// The source answers again.
	back := s.m
	back.Waiting = ""
	expect(t, s, migEvent{kind: evView, view: back, polled: true}, now, phaseFollowing, effNoteBack, effPublish)
	if s.misses != 0 {
		t.Fatalf("misses after an answer: %d", s.misses)
	}
	// No record of it on the source: said at once.
	expect(t, s, migEvent{kind: evTick}, now, phaseFollowing, effPoll)
	expect(t, s, migEvent{kind: evUnanswered, err: down, unknown: true, polled: true}, now, phaseFollowing, effPublish, effNoteWaiting)
	if !strings.Contains(s.m.Waiting, "has no record of this migration") {
		t.Fatalf("task note %q; want it to say the source has no record", s.m.Waiting)
	}
}

// Events that do not belong to a phase change nothing: a view before the migration
// started, a start answer for one not starting, a late record answer.
func TestLifecycleIgnoresStrayEvents(t *testing.T) {
	now := time.Date(2026, 12, 6, 12, 0, 0, 0, time.UTC)
	s := &migState{m: api.Migration{ID: "m-7", State: api.MigrationQueued}}
	expect(t, s, migEvent{kind: evQueued}, now, phaseAdmitting, effLive, effAdmit)
	for _, ev := range []migEvent{
		{kind: evView, view: api.Migration{State: api.MigrationSucceeded}},
		{kind: evStarted}, {kind: evStartFailed, err: errors.New("x")},
		{kind: evRecorded}, {kind: evRecordFailed, err: errors.New("x")},
		{kind: evUnanswered, err: errors.New("x")},
		{kind: evTick},
	} {
		expect(t, s, ev, now, phaseAdmitting)
	}
	if s.m.State != api.MigrationQueued {
		t.Fatalf("stray events changed the migration: %+v", s.m)
	}
}
