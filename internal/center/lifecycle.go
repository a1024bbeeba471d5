package center

import (
	"context"
	"errors"
	"time"

	"github.com/godwit/godwit/internal/api"
)

// The life of a migration, as the center sees it. Every unfinished migration is a
// migState; one function, step, says how an event changes it and what the center must do
// about it (the effects). step does nothing itself: it reads no clock and no store and
// calls no host, so every transition can be tested by itself (lifecycle_test.go). The
// migration loop (reconcile.go) feeds it the events and carries out the effects.
//
//	admitting ──admitted──▶ starting ──started──▶ following ──terminal view──▶ recording ──recorded──▶ done
//	    │                      │                     │  ▲                         │  ▲
//	    └─refused─▶ recording  └─start failed─▶ recording (or done when the       └──┘ refused: record again
//	                             submitter waits and gets the error)  unanswered ──┘     after recordRetry
//
// The source agent owns a migration once it started it, so in following the source's
// views are the truth; when the source cannot say, the outcome is never guessed from a
// timeout (see settleByEvidence).

// migPhase is where a migration is in the center's hands.
type migPhase int

const (
	// phaseAdmitting: queued, it waits for its slots (admission).
	phaseAdmitting migPhase = iota
	// phaseStarting: admitted, the source is being asked to start it.
	phaseStarting
	// phaseFollowing: started, the source's views are followed.
	phaseFollowing
	// phaseRecording: ended, its outcome is being recorded.
	phaseRecording
	// phaseDone: recorded, or refused to a submitter who got the error; forgotten.
	phaseDone
)

func (p migPhase) String() string {
	return [...]string{"admitting", "starting", "following", "recording", "done"}[p]
}

// migState is one unfinished migration.
type migState struct {
	// m is the latest view: the center's own until the source speaks, then the source's.
	m     api.Migration
	phase migPhase
	// misses counts the source's unanswered requests in a row.
	misses int
	// replied is set once whoever asked for the migration has had the first outcome.
	replied bool
	// stored is the state last written to the migration's record.
	stored string
	// busy is set while a request to the source or a recording is in flight.
	busy bool
	// retryAt is when an outcome the store refused is recorded again.
	retryAt time.Time
}

// migEventKind is what happened to a migration.
type migEventKind int

const (
	// evQueued: a migration was asked for and waits for admission.
	evQueued migEventKind = iota
	// evAdmittedNow: a migration was asked for and admitted at once (high priority).
	evAdmittedNow
	// evAdopted: a migration the store holds as started, followed again (a restarted
	// center, or one found in the store that nothing followed).
	evAdopted
	// evWaiting: its admission waits; note says for what.
	evWaiting
	// evAdmitted: it has its slots.
	evAdmitted
	// evRefused: admission ended without slots; err is context.Canceled when a user
	// cancelled it.
	evRefused
	// evStarted: the source accepted it; view carries the prediction.
	evStarted
	// evStartFailed: the source (or the center) could not start it: err.
	evStartFailed
	// evView: the source's view (from its progress stream, a request, or the hosts'
	// heartbeats when polled is set).
	evView
	// evUnanswered: a request to the source failed: err; unknown when the source said it
	// has no record of the migration.
	evUnanswered
	// evRecorded: its outcome is in the store.
	evRecorded
	// evRecordFailed: the store refused its outcome.
	evRecordFailed
	// evTick: time passes; covered when the source's progress stream speaks of it.
	evTick
)

// migEvent is one event of one migration.
type migEvent struct {
	kind migEventKind
	id   string
	view api.Migration
	note string
	err  error
	// unknown: the source has no record of the migration (evUnanswered).
	unknown bool
	// polled: the event answers the loop's own request to the source.
	polled bool
	// covered: the source's progress stream speaks of the migration (evTick).
	covered bool
}

// effKind is something the loop does for a migration.
type effKind int

const (
	// effPublish makes m the migration's live view and updates its task.
	effPublish effKind = iota
	// effLive makes m the live view only.
	effLive
	// effStore writes m's state to the migration's record.
	effStore
	// effAdmit asks for the migration's slots (in the background).
	effAdmit
	// effLaunch asks the source to start it (in the background).
	effLaunch
	// effFollow subscribes to the source's progress stream for it.
	effFollow
	// effUnfollow ends that subscription.
	effUnfollow
	// effPoll asks the source for its view (in the background).
	effPoll
	// effRecord records the outcome m: state, the VM's move, audit, slots released (in
	// the background).
	effRecord
	// effFailNow stores a start failure that its submitter is told of: slots released,
	// state stored, task updated; the submitter's request is the audit record.
	effFailNow
	// effReply gives whoever asked for the migration its first outcome: m, or err.
	effReply
	// effForget drops the migration from the loop and its live view.
	effForget
	// effNoteWaiting logs why the outcome is pending.
	effNoteWaiting
	// effNoteBack logs that the source answers again.
	effNoteBack
)

// effect is one thing to do, with the migration's view as it is then.
type effect struct {
	kind effKind
	m    api.Migration
	err  error
}

// quietPolls is how many unanswered requests in a row make the task say that the center
// waits for the source.
const quietPolls = 3

// step applies ev to s at time now and returns what the center must do, in order.
func (s *migState) step(ev migEvent, now time.Time) []effect {
	var out []effect
	do := func(k effKind) { out = append(out, effect{kind: k, m: s.m}) }
	reply := func() {
		if !s.replied {
			s.replied = true
			do(effReply)
		}
	}
	start := func() {
		s.phase = phaseStarting
		s.m.State, s.m.Waiting = api.MigrationPreparing, ""
		s.stored = s.m.State
		do(effStore)
		do(effPublish)
		do(effLaunch)
	}
	record := func() {
		s.phase, s.busy = phaseRecording, true
		do(effRecord)
	}
	switch ev.kind {
	case evQueued:
		s.phase, s.stored = phaseAdmitting, s.m.State
		do(effLive)
		do(effAdmit)
	case evAdmittedNow:
		start()
	case evAdopted:
		s.phase, s.stored, s.replied = phaseFollowing, s.m.State, true
		do(effLive)
		do(effFollow)
	case evWaiting:
		if s.phase != phaseAdmitting {
			return nil
		}
		s.m.Waiting = ev.note
		do(effPublish)
		reply()
	case evAdmitted:
		if s.phase != phaseAdmitting {
			return nil
		}
		start()
	case evRefused:
		if s.phase != phaseAdmitting {
			return nil
		}
		end := now.UTC()
		s.m.State, s.m.Finished = api.MigrationCancelled, &end
		s.m.Error = "cancelled while it waited in the queue"
		if s.m.Waiting != "" {
			s.m.Error += " (" + s.m.Waiting + ")"
		}
		if !errors.Is(ev.err, context.Canceled) {
			s.m.State, s.m.Error = api.MigrationFailed, "not admitted: "+ev.err.Error()
		}
		record()
	case evStarted:
		if s.phase != phaseStarting {
			return nil
		}
		s.phase = phaseFollowing
		if ev.view.Prediction != nil {
			s.m.Prediction = ev.view.Prediction
		}
		do(effLive)
		do(effFollow)
		reply()
	case evStartFailed:
		if s.phase != phaseStarting {
			return nil
		}
		end := now.UTC()
		s.m.State, s.m.Error, s.m.Finished = api.MigrationFailed, ev.err.Error(), &end
		if s.replied {
			// It waited in the queue: its end is recorded like any other.
			record()
			return out
		}
		s.phase = phaseDone
		do(effFailNow)
		out = append(out, effect{kind: effReply, m: s.m, err: ev.err})
		s.replied = true
		do(effForget)
	case evView:
		if ev.polled {
			s.busy = false
		}
		cur := withOrigin(ev.view, s.m)
		switch s.phase {
		case phaseRecording:
			// An outcome being recorded again takes the newest word of the source.
			if !s.busy && terminal(cur.State) {
				s.m = cur
			}
			return nil
		case phaseFollowing:
		default:
			return nil
		}
		if s.misses >= quietPolls {
			do(effNoteBack)
		}
		s.misses = 0
		s.m = cur
		if terminal(cur.State) {
			// Not published until recorded: the outcome and the VM's move are seen
			// together, from the store.
			record()
			return out
		}
		do(effPublish)
		if cur.State != s.stored {
			s.stored = cur.State
			do(effStore)
		}
	case evUnanswered:
		if ev.polled {
			s.busy = false
		}
		if s.phase != phaseFollowing {
			return nil
		}
		s.misses++
		note := waitingFor(s.m, ev.unknown, ev.err)
		if (s.misses >= quietPolls || ev.unknown) && note != s.m.Waiting {
			s.m.Waiting = note
			do(effPublish)
			out = append(out, effect{kind: effNoteWaiting, m: s.m, err: ev.err})
		}
	case evRecorded:
		if s.phase != phaseRecording {
			return nil
		}
		s.phase, s.busy = phaseDone, false
		reply()
		do(effUnfollow)
		do(effForget)
	case evRecordFailed:
		if s.phase != phaseRecording {
			return nil
		}
		s.busy, s.retryAt = false, now.Add(recordRetry)
		reply()
	case evTick:
		switch {
		case s.busy:
		case s.phase == phaseRecording && !now.Before(s.retryAt):
			s.busy = true
			do(effRecord)
		case s.phase == phaseFollowing && !ev.covered:
			s.busy = true
			do(effPoll)
		}
	}
	return out
}
