package center

import (
	"net/http"

	"github.com/godwit/godwit/internal/api"
	"github.com/godwit/godwit/internal/audit"
	"github.com/godwit/godwit/internal/migration"
)

// Routes is the center's route table: every endpoint, who may call it, and its audit
// action. The authorizer, the audit trail, the OpenAPI document (GET
// /api/v1/openapi.json) and the route-matrix test all read it; a handler registered for
// a pattern it does not declare makes the center refuse to start.
//
// Roles: viewer reads; operator also powers VMs on and off, migrates, cancels and
// manages schedules; admin does everything; agent is a host's certificate (an admin may
// act as one); public needs no credentials (logging in, joining, the CA, this table).
func Routes() []api.Route {
	const (
		public   = api.AccessPublic
		agent    = api.RoleAgent
		viewer   = api.RoleViewer
		operator = api.RoleOperator
		admin    = api.RoleAdmin
	)
	auditQuery := []string{"since", "until", "user", "vm", "host", "action", "limit", "order", "after"}
	return []api.Route{
		{Method: "POST", Path: "/api/v1/login", Access: public, Action: "user.login", Summary: "Trade a user name and password for an API token", Request: api.LoginRequest{}, Response: api.Token{}, Status: http.StatusCreated},
		{Method: "GET", Path: "/api/v1/pki/ca", Access: public, Summary: "The cluster CA's certificate and fingerprint", Response: api.CAInfo{}},
		{Method: "GET", Path: "/api/v1/openapi.json", Access: public, Summary: "This API, described as OpenAPI 3"},
		{Method: "POST", Path: "/api/v1/hosts/join", Access: public, Action: "host.join", Summary: "A host joins with a one-time join token and a certificate signing request", Request: api.JoinRequest{}, Response: api.JoinReply{}, Status: http.StatusCreated},

		{Method: "POST", Path: "/api/v1/hosts/heartbeat", Access: agent, Summary: "A host reports itself", Request: api.HostFacts{}, Response: api.HeartbeatReply{}},
		{Method: "POST", Path: "/api/v1/hosts/renew", Access: agent, Action: "host.renew", Summary: "A host renews its certificate with its current one", Request: api.RenewRequest{}, Response: api.JoinReply{}, Status: http.StatusCreated},

		{Method: "GET", Path: "/api/v1/hosts", Access: viewer, Summary: "The hosts, a page at a time in name order (Link: rel=next; X-Total-Count)", Query: []string{"limit", "after"}, Response: []api.Host{}},
		{Method: "GET", Path: "/api/v1/hosts/{name}", Access: viewer, Summary: "One host", Response: api.Host{}},
		{Method: "POST", Path: "/api/v1/hosts/{name}/maintenance", Access: admin, Action: "host.maintenance", Target: "name", Summary: "Put a host into maintenance mode, which moves its running VMs away by a plan, or take it out (cancelling the plan's queued moves)", Request: api.MaintenanceRequest{}, Response: api.Host{}},
		{Method: "GET", Path: "/api/v1/hosts/{name}/maintenance/plan", Access: viewer, Summary: "The plan entering maintenance would carry out now: each VM's destination and predicted time and downtime, and the makespan (nothing changes)", Query: []string{"reason"}, Response: api.Plan{}},
		{Method: "POST", Path: "/api/v1/hosts/{name}/revoke", Access: admin, Action: "host.revoke", Target: "name", Summary: "Revoke every certificate of a host", Request: api.RevokeRequest{}, Response: []api.Certificate{}},
		{Method: "GET", Path: "/api/v1/datastores", Access: viewer, Summary: "Every datastore and the hosts that see it", Response: []api.Datastore{}},
		{Method: "GET", Path: "/api/v1/networks", Access: viewer, Summary: "Every network and the hosts that have it", Response: []api.Network{}},

		{Method: "GET", Path: "/api/v1/vms", Access: viewer, Summary: "The VMs, a page at a time in name order (Link: rel=next; X-Total-Count), of one host or state", Query: []string{"limit", "after", "host", "state"}, Response: []api.VM{}},
		{Method: "POST", Path: "/api/v1/vms", Access: admin, Action: "vm.create", Summary: "Create a VM (and start it)", Request: api.CreateVMRequest{}, Response: api.VM{}, Status: http.StatusCreated},
		{Method: "GET", Path: "/api/v1/vms/{name}", Access: viewer, Summary: "One VM", Response: api.VM{}},
		{Method: "DELETE", Path: "/api/v1/vms/{name}", Access: admin, Action: "vm.delete", Target: "name", Summary: "Delete a stopped VM", Status: http.StatusNoContent},
		{Method: "POST", Path: "/api/v1/vms/{name}/start", Access: operator, Action: "vm.start", Target: "name", Summary: "Power a VM on", Response: api.VM{}},
		{Method: "POST", Path: "/api/v1/vms/{name}/stop", Access: operator, Action: "vm.stop", Target: "name", Summary: "Power a VM off (ACPI, then force)", Query: []string{"force", "grace"}, Response: api.VM{}},
		{Method: "GET", Path: "/api/v1/vms/{name}/console", Access: viewer, Summary: "The end of a VM's serial console log (text)", Query: []string{"tail"}},
		{Method: "POST", Path: "/api/v1/vms/{name}/migrate", Access: operator, Action: "vm.migrate", Target: "name", Summary: "Live-migrate a VM", Request: api.MigrateRequest{}, Response: api.Migration{}, Status: http.StatusAccepted},
		{Method: "GET", Path: "/api/v1/vms/{name}/migrate/check", Access: viewer, Summary: "Which hosts could take a VM, and why not; what a migration there is expected to take", Query: []string{"to", "policy"}, Response: api.MigrationCheck{}},
		{Method: "GET", Path: "/api/v1/vms/{name}/migrate/recommend", Access: viewer, Summary: "Destinations for a VM ranked with a score breakdown and predictions", Query: []string{"policy"}, Response: api.Recommendation{}},

		{Method: "GET", Path: "/api/v1/migrations", Access: viewer, Summary: "Recent migrations", Query: []string{"vm"}, Response: []api.Migration{}},
		{Method: "POST", Path: "/api/v1/migrations", Access: operator, Action: "migration.bulk", Summary: "Migrate several VMs at once", Request: api.BulkMigrateRequest{}, Response: api.BulkMigrateReply{}, Status: http.StatusAccepted},
		{Method: "GET", Path: "/api/v1/migrations/{id}", Access: viewer, Summary: "One migration, live while it runs", Response: api.Migration{}},
		{Method: "POST", Path: "/api/v1/migrations/{id}/cancel", Access: operator, Action: "migration.cancel", Target: "id", Summary: "Cancel a migration; the VM stays on its source", Response: api.Migration{}},
		{Method: "GET", Path: "/api/v1/migration-slots", Access: viewer, Summary: "Migration slots in use and the queue", Response: api.MigrationSlots{}},
		{Method: "GET", Path: "/api/v1/migration-policies", Access: viewer, Summary: "The migration policies", Response: []migration.Policy{}},

		{Method: "GET", Path: "/api/v1/plans", Access: viewer, Summary: "The center's plans (maintenance evacuations), newest first; state=open for the unfinished ones", Query: []string{"host", "state"}, Response: []api.Plan{}},
		{Method: "GET", Path: "/api/v1/plans/{id}", Access: viewer, Summary: "One plan: its moves, each predicted against actual", Response: api.Plan{}},
		{Method: "POST", Path: "/api/v1/plans/{id}/apply", Access: operator, Action: "plan.apply", Target: "id", Summary: "Carry out a recommended plan (the balancer's, in recommend mode)", Response: api.Plan{}},
		{Method: "GET", Path: "/api/v1/cluster/balancer", Access: viewer, Summary: "The balancer's mode and level, and its last round: each host's load, the imbalance against its target", Response: api.BalancerStatus{}},
		{Method: "PUT", Path: "/api/v1/cluster/balancer", Access: admin, Action: "cluster.balancer", Summary: "Set the balancer's mode (off, recommend, automatic) and level (1-5)", Request: api.BalancerSettings{}, Response: api.BalancerStatus{}},
		{Method: "GET", Path: "/api/v1/cluster/recommendations", Access: viewer, Summary: "The balancer's recommended moves, each explained with numbers", Response: []api.Plan{}},

		{Method: "GET", Path: "/api/v1/tasks", Access: viewer, Summary: "Tasks, newest first", Query: []string{"state", "target", "kind", "limit"}, Response: []api.Task{}},
		{Method: "GET", Path: "/api/v1/tasks/stream", Access: viewer, Summary: "Every change of a task, as Server-Sent Events", Stream: true},
		{Method: "GET", Path: "/api/v1/tasks/{id}", Access: viewer, Summary: "One task", Response: api.Task{}},
		{Method: "POST", Path: "/api/v1/tasks/{id}/cancel", Access: operator, Action: "task.cancel", Target: "id", Summary: "Cancel a task", Response: api.Task{}},

		{Method: "GET", Path: "/api/v1/schedules", Access: viewer, Summary: "Every schedule", Response: []api.Schedule{}},
		{Method: "POST", Path: "/api/v1/schedules", Access: operator, Action: "schedule.create", Summary: "Schedule migrations, once or by cron", Request: api.CreateScheduleRequest{}, Response: api.Schedule{}, Status: http.StatusCreated},
		{Method: "GET", Path: "/api/v1/schedules/{name}", Access: viewer, Summary: "One schedule and its last run", Response: api.Schedule{}},
		{Method: "DELETE", Path: "/api/v1/schedules/{name}", Access: operator, Action: "schedule.delete", Target: "name", Summary: "Delete a schedule", Status: http.StatusNoContent},
		{Method: "POST", Path: "/api/v1/schedules/{name}/disable", Access: operator, Action: "schedule.disable", Target: "name", Summary: "Stop a schedule from running", Response: api.Schedule{}},
		{Method: "POST", Path: "/api/v1/schedules/{name}/enable", Access: operator, Action: "schedule.enable", Target: "name", Summary: "Let a schedule run again", Response: api.Schedule{}},

		{Method: "GET", Path: "/api/v1/audit", Access: viewer, Summary: "Audit records", Query: auditQuery, Response: []audit.Record{}},
		{Method: "GET", Path: "/api/v1/audit/export", Access: viewer, Summary: "Audit records as JSON lines or CSV", Query: append([]string{"format"}, auditQuery...), Stream: true},
		{Method: "GET", Path: "/api/v1/audit/verify", Access: viewer, Summary: "Check the audit trail's hash chain", Response: audit.Verification{}},

		{Method: "GET", Path: "/api/v1/users", Access: admin, Summary: "Every user", Response: []api.User{}},
		{Method: "POST", Path: "/api/v1/users", Access: admin, Action: "user.create", Summary: "Create a user", Request: api.CreateUserRequest{}, Response: api.User{}, Status: http.StatusCreated},
		{Method: "DELETE", Path: "/api/v1/users/{name}", Access: admin, Action: "user.delete", Target: "name", Summary: "Delete a user and its tokens", Status: http.StatusNoContent},
		// Anyone signed in manages their own tokens; the handlers check whose.
		{Method: "POST", Path: "/api/v1/tokens", Access: viewer, Action: "token.create", Summary: "An API token for oneself (or, as admin, for another user)", Request: api.CreateTokenRequest{}, Response: api.Token{}, Status: http.StatusCreated},
		{Method: "DELETE", Path: "/api/v1/tokens/{id}", Access: viewer, Action: "token.revoke", Target: "id", Summary: "Revoke one's own token (or, as admin, anyone's)", Status: http.StatusNoContent},
		{Method: "GET", Path: "/api/v1/join-tokens", Access: admin, Summary: "Join tokens", Response: []api.JoinToken{}},
		{Method: "POST", Path: "/api/v1/join-tokens", Access: admin, Action: "host.join-token.create", Summary: "Create a one-time join token", Request: api.CreateJoinTokenRequest{}, Response: api.JoinToken{}, Status: http.StatusCreated},
		{Method: "DELETE", Path: "/api/v1/join-tokens/{id}", Access: admin, Action: "host.join-token.revoke", Target: "id", Summary: "Revoke an unused join token", Status: http.StatusNoContent},
		{Method: "GET", Path: "/api/v1/certificates", Access: admin, Summary: "Every certificate the CA issued", Response: []api.Certificate{}},

		{Method: "GET", Path: "/metrics", Access: viewer, Summary: "Prometheus metrics (text)"},
		// Any other path under /api/: answered 404 to a signed-in caller, so strangers
		// learn nothing of what exists.
		{Path: "/api/", Access: viewer, Summary: "No such endpoint"},
	}
}
