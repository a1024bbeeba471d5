package migration

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/godwit/godwit/internal/qmp"
)

// ErrNotPaused is wrapped by RecoverDestination's error when the destination's
// migration is not a post-copy that can be recovered now: not (yet) in post-copy
// — still loading the switch-over's device state, whose stream must not be
// broken — or already reconnecting.
var ErrNotPaused = errors.New("the migration is not a paused post-copy")

// pauseTimeout bounds the wait for either end to pause its post-copy stream
// after migrate-pause.
const pauseTimeout = 5 * time.Second

// RecoverDestination makes the destination QEMU behind mon, whose post-copy
// stream broke, listen for the source again on uri (migrate-recover); the
// source then resumes to it (Options.Recover). A destination that has not
// noticed the break yet — its end of a dead connection still looks open — is
// paused first. Only out-of-band commands are used: the destination's main
// loop may be blocked on a page the broken stream does not bring. The stream's
// TLS credentials and the key they read at every handshake stay as they were,
// so a recovered stream is encrypted like the first. The error wraps
// ErrNotPaused when the migration is neither paused nor pausable (not in
// post-copy, or already reconnecting).
func RecoverDestination(ctx context.Context, mon *qmp.Monitor, uri string) error {
	deadline := time.Now().Add(pauseTimeout)
	paused := false
	for {
		err := mon.MigrateRecover(ctx, uri)
		if err == nil {
			return nil
		}
		if !qmp.IsClass(err, qmp.ClassGenericError) {
			return fmt.Errorf("making the destination QEMU listen again on %s failed: %w", uri, err)
		}
		if !paused {
			if perr := mon.MigratePause(ctx); perr != nil {
				return fmt.Errorf("%w: the destination QEMU can neither listen again (%v) nor break its end of the stream (%v)", ErrNotPaused, err, perr)
			}
			paused = true
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("the destination QEMU did not pause its end of the stream within %v: %w", pauseTimeout, err)
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("making the destination QEMU listen again: %w", ctx.Err())
		case <-time.After(DefaultPollInterval):
		}
	}
}

// waitMigrationStatus polls query-migrate until it reports status, for at most d.
func waitMigrationStatus(ctx context.Context, mon *qmp.Monitor, status string, d time.Duration) error {
	ctx, cancel := context.WithTimeout(ctx, d)
	defer cancel()
	for {
		info, err := mon.QueryMigrate(ctx)
		switch {
		case err == nil && info.Status == status:
			return nil
		case err != nil && ctx.Err() == nil:
			return fmt.Errorf("asking QEMU for its migration state failed: %w", err)
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("the migration is %q, not %q, after %v", info.Status, status, d)
		case <-time.After(DefaultPollInterval):
		}
	}
}
