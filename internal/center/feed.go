package center

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/godwit/godwit/internal/api"
)

// Progress feeds. The center follows every migration on a source host through one
// progress stream from that host's agent (GET /agent/v1/migrations/stream): opened when
// the first migration there is followed, closed when none is left. The stream pushes
// each migration's view when it changes, so following costs one connection per source
// host, not a request per migration every 100 ms. A follower whose migration the stream
// has not spoken of since it (re)connected — the stream is down, or the agent no longer
// knows the migration — asks for it by itself (GET /agent/v1/migrations/{id}) every
// retryEvery, as following always did when the source did not answer; that is how a
// missed outcome is learned and how misses are counted for settleByEvidence.
const (
	// feedBackoffMin and feedBackoffMax bound the wait before the stream is opened again
	// after it broke or could not be opened; it doubles from one to the other.
	feedBackoffMin = 100 * time.Millisecond
	feedBackoffMax = retryEvery
	// feedConnect bounds opening the stream, up to its answer's header.
	feedConnect = 5 * time.Second
	// maxUnclaimed bounds the views a feed keeps of migrations it has no follower for
	// yet: the source pushes a migration's first view as soon as it starts, which may
	// be before the center follows it.
	maxUnclaimed = 64
)

// feed is the progress stream of one source host and the followers it serves. Its
// followers are guarded by the center's feedMu.
type feed struct {
	host      string
	followers map[string]*follower // by migration id
	// unclaimed holds the latest view of each migration the current connection spoke
	// of under way that no follower took yet (at most maxUnclaimed; not those that had
	// ended when first spoken of, which the center has recorded or reads by itself).
	unclaimed map[string]api.Migration
	// restart ends the current connection, so that the next one is opened anew.
	restart context.CancelFunc
	stop    context.CancelFunc
}

// follower is the mailbox of one followed migration: the feed leaves the latest view
// in it and wakes the migration loop, which takes it.
type follower struct {
	id   string
	wake chan struct{} // the migration loop's, capacity 1: some view is waiting

	mu   sync.Mutex
	view *api.Migration
	// covered is set when the current connection of the feed spoke of the migration,
	// and cleared when the connection ends.
	covered bool
}

// offer leaves m, the newest view, for the follower.
func (f *follower) offer(m api.Migration) {
	f.mu.Lock()
	f.view = &m
	f.covered = true
	f.mu.Unlock()
	select {
	case f.wake <- struct{}{}:
	default:
	}
}

// take returns the view left since the last take, if any.
func (f *follower) take() (api.Migration, bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.view == nil {
		return api.Migration{}, false
	}
	m := *f.view
	f.view = nil
	return m, true
}

func (f *follower) isCovered() bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.covered
}

// joinFeed makes m's follower, which signals wake when it has a view, and adds it to the
// feed of its source host, opening the feed if it is the host's first.
func (c *Center) joinFeed(m api.Migration, wake chan struct{}) *follower {
	f := &follower{id: m.ID, wake: wake}
	c.feedMu.Lock()
	defer c.feedMu.Unlock()
	fd := c.feeds[m.Source]
	if fd == nil {
		ctx, stop := context.WithCancel(c.runCtx)
		fd = &feed{host: m.Source, followers: map[string]*follower{}, unclaimed: map[string]api.Migration{}, stop: stop, restart: func() {}}
		c.feeds[m.Source] = fd
		c.wg.Add(1)
		go func() {
			defer c.wg.Done()
			c.runFeed(ctx, fd)
		}()
	}
	fd.followers[m.ID] = f
	if v, ok := fd.unclaimed[m.ID]; ok {
		delete(fd.unclaimed, m.ID)
		f.offer(v)
	}
	return f
}

// leaveFeed removes a follower from its host's feed, closing the feed if it was the
// last.
func (c *Center) leaveFeed(host string, f *follower) {
	c.feedMu.Lock()
	defer c.feedMu.Unlock()
	fd := c.feeds[host]
	if fd == nil || fd.followers[f.id] != f {
		return
	}
	delete(fd.followers, f.id)
	if len(fd.followers) == 0 {
		fd.stop()
		delete(c.feeds, host)
	}
}

// restartFeed ends the current connection of host's feed (if any): the next one is
// opened anew, its certificate checked again (after a revocation).
func (c *Center) restartFeed(host string) {
	c.feedMu.Lock()
	defer c.feedMu.Unlock()
	if fd := c.feeds[host]; fd != nil {
		fd.restart()
	}
}

// runFeed keeps the feed's stream open until ctx ends, opening it again with backoff
// whenever it breaks.
func (c *Center) runFeed(ctx context.Context, fd *feed) {
	backoff := feedBackoffMin
	for {
		conn, restart := context.WithCancel(ctx)
		c.feedMu.Lock()
		fd.restart = restart
		c.feedMu.Unlock()
		opened := time.Now()
		heard, err := c.readFeed(conn, fd)
		restart()
		c.uncover(fd)
		if ctx.Err() != nil {
			return
		}
		if heard {
			c.log.Info("the progress stream of a source host ended; opening it again", "host", fd.host, "err", err)
		} else {
			c.log.Debug("the progress stream of a source host cannot be opened", "host", fd.host, "err", err, "retry_in", backoff)
		}
		// A stream that served a while is opened again soon; one that keeps failing
		// (or ending as soon as it opens) less and less often.
		if heard && time.Since(opened) >= api.ProgressHeartbeat {
			backoff = feedBackoffMin
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(backoff):
		}
		backoff = min(2*backoff, feedBackoffMax)
	}
}

// readFeed opens the feed's stream and hands each view to the migration's follower until
// the stream ends, ctx ends, or no line arrives within api.ProgressSilence. heard says
// whether the stream opened.
func (c *Center) readFeed(ctx context.Context, fd *feed) (heard bool, err error) {
	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	h, err := c.store.Host(ctx, fd.host)
	if err != nil {
		return false, err
	}
	cl, err := c.agent(h, 0)
	if err != nil {
		return false, err
	}
	slow := time.AfterFunc(feedConnect, func() {
		cancel(fmt.Errorf("%s's agent did not answer the progress stream's request within %s", fd.host, feedConnect))
	})
	resp, err := cl.Stream(ctx, "/agent/v1/migrations/stream")
	slow.Stop()
	if err != nil {
		return false, errors.Join(err, context.Cause(ctx))
	}
	defer resp.Body.Close()
	watchdog := time.AfterFunc(api.ProgressSilence, func() {
		cancel(fmt.Errorf("no word from %s's progress stream for %s", fd.host, api.ProgressSilence))
	})
	defer watchdog.Stop()
	err = api.ReadProgress(resp.Body, func(ev api.ProgressEvent) error {
		watchdog.Reset(api.ProgressSilence)
		if ev.Migration == nil {
			return nil // a heartbeat
		}
		c.feedMu.Lock()
		defer c.feedMu.Unlock()
		if f := fd.followers[ev.Migration.ID]; f != nil {
			f.offer(*ev.Migration)
		} else if _, ok := fd.unclaimed[ev.Migration.ID]; ok || !terminal(ev.Migration.State) && len(fd.unclaimed) < maxUnclaimed {
			fd.unclaimed[ev.Migration.ID] = *ev.Migration
		}
		return nil
	})
	if cause := context.Cause(ctx); cause != nil {
		err = cause
	}
	if err == nil {
		err = errors.New("the agent ended the stream")
	}
	return true, err
}

// uncover marks every follower of the feed as not spoken of by a live stream, so that
// each asks for its migration by itself until a stream speaks of it again, and forgets
// the connection's unclaimed views.
func (c *Center) uncover(fd *feed) {
	c.feedMu.Lock()
	defer c.feedMu.Unlock()
	clear(fd.unclaimed)
	for _, f := range fd.followers {
		f.mu.Lock()
		f.covered = false
		f.mu.Unlock()
	}
}
