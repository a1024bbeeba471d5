package center

import (
	"testing"

	"github.com/godwit/godwit/internal/api"
)

// powerDecision: a guest's own power-off (or a stop on the host) is accepted as the new
// desired state; a crash, a kill, a lost or unexplained exit is restarted until the
// budget is spent, then given up; anything else is left alone.
func TestPowerDecision(t *testing.T) {
	for _, tc := range []struct {
		exit     string
		restarts int
		want     powerAction
	}{
		{api.ExitGuestPoweroff, 0, powerAccept},
		{api.ExitRequested, 0, powerAccept},
		{api.ExitCrashed, 0, powerRestart},
		{api.ExitKilled, 1, powerRestart},
		{api.ExitLost, 2, powerRestart},
		{api.ExitUnknown, 0, powerRestart},
		{api.ExitCrashed, maxRestarts, powerGiveUp},
		{api.ExitGuestPoweroff, maxRestarts, powerAccept},
		{"", 0, powerNone},
	} {
		got, why := powerDecision(tc.exit, tc.restarts)
		if got != tc.want {
			t.Errorf("exit %q after %d restarts: %v (%s); want %v", tc.exit, tc.restarts, got, why, tc.want)
		}
		if got != powerNone && why == "" {
			t.Errorf("exit %q: no reason given", tc.exit)
		}
	}
}
