package agent

import (
	"testing"

	"github.com/godwit/godwit/internal/api"
	"github.com/godwit/godwit/internal/qmp"
)

// exitReason: QEMU's last SHUTDOWN event, or its absence while the agent listened, says
// why QEMU ended.
func TestExitReason(t *testing.T) {
	for _, tc := range []struct {
		sd       *qmp.ShutdownEventData
		listened bool
		want     string
	}{
		{&qmp.ShutdownEventData{Guest: true, Reason: "guest-shutdown"}, true, api.ExitGuestPoweroff},
		{&qmp.ShutdownEventData{Reason: "host-signal"}, true, api.ExitKilled},
		{&qmp.ShutdownEventData{Reason: "host-qmp-quit"}, true, api.ExitRequested},
		{&qmp.ShutdownEventData{Reason: "host-error"}, true, api.ExitCrashed},
		{nil, true, api.ExitCrashed},
		{nil, false, api.ExitUnknown},
	} {
		if got := exitReason(tc.sd, tc.listened); got != tc.want {
			t.Errorf("event %+v, listened %v: %s; want %s", tc.sd, tc.listened, got, tc.want)
		}
	}
	var none *exitListener
	if got := none.verdict(false, 0); got != api.ExitUnknown {
		t.Errorf("no listener: %s; want unknown", got)
	}
	if got := none.verdict(true, 0); got != api.ExitRequested {
		t.Errorf("no listener, stopped on request: %s; want requested", got)
	}
}
