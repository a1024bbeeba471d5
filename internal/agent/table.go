package agent

import (
	"net/http"

	"github.com/godwit/godwit/internal/api"
	"github.com/godwit/godwit/internal/qemu"
)

// Routes is the agent's route table: every endpoint and who may call it. The guard
// (tls.go), the route-matrix test and the documentation read it; a handler registered
// for a pattern it does not declare stops the agent.
//
// The center calls everything that manages the host. Another host calls only the steps
// of a migration, and only with a ticket the center signed for that migration that
// names it (ticket package): the source prepares, finishes and aborts the destination's
// copy; the destination asks the source how the migration goes. Metrics are public.
func Routes() []api.Route {
	const (
		center = api.AccessCenter
		source = api.AccessMigrationSource
		dest   = api.AccessMigrationDestination
	)
	return []api.Route{
		{Method: "GET", Path: "/agent/v1/host", Access: center, Summary: "What the host reports in heartbeats", Response: api.HostFacts{}},
		{Method: "GET", Path: "/agent/v1/vms", Access: center, Summary: "The VMs on this host", Response: []api.VMStatus{}},
		{Method: "PUT", Path: "/agent/v1/vms/{name}", Access: center, Summary: "Define a VM here", Request: api.VMSpec{}, Response: api.VMStatus{}},
		{Method: "DELETE", Path: "/agent/v1/vms/{name}", Access: center, Summary: "Remove a stopped VM", Status: http.StatusNoContent},
		{Method: "POST", Path: "/agent/v1/vms/{name}/start", Access: center, Summary: "Start a VM's QEMU", Response: api.VMStatus{}},
		{Method: "POST", Path: "/agent/v1/vms/{name}/stop", Access: center, Summary: "Stop a VM", Query: []string{"force", "grace"}, Response: api.VMStatus{}},
		{Method: "GET", Path: "/agent/v1/vms/{name}/memory", Access: center, Summary: "A running VM's memory activity, measured again when older than max_age (default 30s)", Query: []string{"max_age"}, Response: api.MemoryActivity{}},
		{Method: "GET", Path: "/agent/v1/vms/{name}/console", Access: center, Summary: "The end of a VM's console log (text)", Query: []string{"tail"}},
		{Method: "POST", Path: "/agent/v1/vms/{name}/migrate", Access: center, Summary: "Migrate a VM to another host, with the center's ticket", Request: api.AgentMigrateRequest{}, Response: api.Migration{}, Status: http.StatusAccepted},
		{Method: "POST", Path: "/agent/v1/preflight", Access: center, Summary: "Could this host take a VM?", Request: api.IncomingRequest{}, Status: http.StatusNoContent},
		{Method: "GET", Path: "/agent/v1/cpu-models", Access: center, Summary: "The CPU models this host can give guests", Response: qemu.CPUCaps{}},
		{Method: "GET", Path: "/agent/v1/migrations/stream", Access: center, Summary: "Every migration this host runs as the source, then each change (newline-delimited JSON)", Stream: true},
		{Method: "GET", Path: "/agent/v1/migrations/{id}", Access: dest, CenterToo: true, Summary: "How a migration this host runs as the source goes", Response: api.Migration{}},
		{Method: "POST", Path: "/agent/v1/migrations/{id}/bandwidth", Access: center, Summary: "Cap a running migration's stream", Request: api.BandwidthRequest{}, Response: api.Migration{}},
		{Method: "POST", Path: "/agent/v1/migrations/{id}/cancel", Access: center, Summary: "Cancel a migration; the VM stays here", Response: api.Migration{}},
		{Method: "POST", Path: "/agent/v1/incoming", Access: source, Summary: "Prepare a QEMU to receive a VM", Request: api.IncomingRequest{}, Response: api.IncomingReply{}},
		{Method: "POST", Path: "/agent/v1/vms/{name}/incoming/{id}/finish", Access: source, Summary: "Take a migrated VM as this host's own", Response: api.FinishReply{}},
		{Method: "POST", Path: "/agent/v1/vms/{name}/incoming/{id}/abort", Access: source, Summary: "Tear down a copy whose migration failed (postcopy=lost: even one that runs, lost in post-copy)", Query: []string{"postcopy"}, Status: http.StatusNoContent},
		{Method: "POST", Path: "/agent/v1/vms/{name}/incoming/{id}/stream", Access: source, Summary: "Carry an encrypted migration stream to the waiting copy's QEMU: the connection is upgraded (Upgrade: " + streamUpgrade + ") and carries the stream both ways", Status: http.StatusSwitchingProtocols},
		{Method: "POST", Path: "/agent/v1/vms/{name}/incoming/{id}/recover", Access: source, Summary: "Listen again for a broken post-copy stream", Request: api.RecoverRequest{}, Response: api.RecoverReply{}},
		{Method: "GET", Path: "/metrics", Access: api.AccessPublic, Summary: "Prometheus metrics (text)"},
		// Any other path under /agent/: 404 to the center, refused to everyone else.
		{Path: "/agent/", Access: center, Summary: "No such endpoint"},
	}
}
