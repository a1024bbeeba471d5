package qmp

import (
	"encoding/json"
	"fmt"
	"time"
)

// Event is an asynchronous QMP event.
type Event struct {
	// Name is QEMU's event name, e.g. "SHUTDOWN" or "MIGRATION".
	Name string
	// Data is the event's "data" member, undecoded (may be empty).
	Data json.RawMessage
	// Timestamp is when QEMU emitted the event.
	Timestamp time.Time
}

// Names of QEMU events this project cares about.
const (
	EventShutdown           = "SHUTDOWN"
	EventPowerdown          = "POWERDOWN"
	EventReset              = "RESET"
	EventStop               = "STOP"
	EventResume             = "RESUME"
	EventGuestPanicked      = "GUEST_PANICKED"
	EventMigration          = "MIGRATION"
	EventMigrationPass      = "MIGRATION_PASS"
	EventBlockJobCompleted  = "BLOCK_JOB_COMPLETED"
	EventNICRxFilterChanged = "NIC_RX_FILTER_CHANGED"
)

// ShutdownEventData is the data of a SHUTDOWN event.
type ShutdownEventData struct {
	// Guest is true when the guest initiated the shutdown.
	Guest bool `json:"guest"`
	// Reason is e.g. "host-qmp-quit", "guest-shutdown", "host-signal".
	Reason string `json:"reason"`
}

// MigrationEventData is the data of a MIGRATION event (emitted when the
// "events" migration capability is on).
type MigrationEventData struct {
	// Status is the new migration status, as in MigrationInfo.Status.
	Status string `json:"status"`
}

// MigrationPassEventData is the data of a MIGRATION_PASS event.
type MigrationPassEventData struct {
	// Pass is the number of the dirty-sync pass that starts.
	Pass int64 `json:"pass"`
}

// Decode unmarshals the event's data into v.
func (e Event) Decode(v any) error {
	if len(e.Data) == 0 {
		return fmt.Errorf("qmp event %s has no data", e.Name)
	}
	if err := json.Unmarshal(e.Data, v); err != nil {
		return fmt.Errorf("qmp event %s: decode data: %w", e.Name, err)
	}
	return nil
}

// Events returns the channel on which QEMU's events are delivered, in the
// order QEMU sent them. The channel is closed when the connection ends.
//
// Replies are never held up by a slow event reader: the Monitor buffers up
// to 256 events and, when the buffer is full, drops the oldest buffered
// event to make room for the newest (see DroppedEvents). A reader that needs
// every event must keep up; a reader that needs a state (e.g. the migration
// status) should query it rather than rely on having seen every event.
// Meant for a single consumer: with several, each event goes to only one.
func (m *Monitor) Events() <-chan Event { return m.events }

// DroppedEvents returns how many events were discarded because the reader
// of Events fell behind.
func (m *Monitor) DroppedEvents() uint64 { return m.dropped.Load() }

// deliverEvent queues one event without ever blocking, dropping the oldest
// queued event when the buffer is full. Only the reader goroutine calls it.
func (m *Monitor) deliverEvent(msg message) {
	ev := Event{Name: msg.Event, Data: msg.Data}
	if msg.Timestamp != nil {
		ev.Timestamp = time.Unix(msg.Timestamp.Seconds, msg.Timestamp.Microseconds*1000)
	}
	for {
		select {
		case m.events <- ev:
			return
		default:
		}
		select {
		case <-m.events:
			m.dropped.Add(1)
		default:
		}
	}
}
