// Package admission limits how many live migrations run at once, the way VMware vCenter
// limits vMotion: every migration costs slots on the resources it uses, every resource
// has a limit, and a migration that does not fit waits in a queue rather than failing.
// The package is pure: it does no I/O and starts no goroutines; a request waits in the
// goroutine that called [Limiter.Acquire].
//
// # Resources and costs
//
// A resource is a string KIND:NAME, such as "host:host-1", "network:lab" or
// "datastore:shared"; [Host], [Network] and [Datastore] build them. A [Request] says what
// a migration costs on each resource it uses. [MigrationCosts] builds the usual costs:
// 1 on the source host, 1 on the destination host, 1 on each network the migration
// crosses and 1 on each datastore its disks are on. A migration is admitted as a whole or
// not at all, and holds all its slots from admission until [Ticket.Release].
//
// # Limits
//
// [Limits] gives a limit to every resource of a kind and, overriding that, to individual
// resources (host-2 limited to 2, say); [Limiter.SetLimit] changes one resource's limit
// while the limiter runs. [DefaultLimits] are vCenter's:
//
//	host        4 concurrent migrations; 8 when the host's migration link runs at
//	            10 Gbit/s or more (see [HostLimitForLink])
//	network     8
//	datastore   128
//
// A limit of 0 lets no migration use the resource. A resource whose kind has no limit and
// that has none of its own cannot be used at all. A request that costs more on some
// resource than that resource's limit could never run: it is refused at once, and so is a
// waiting request when [Limiter.SetLimit] lowers a limit below its cost.
//
// # Priorities and the queue
//
// There are three priorities: [High], [Normal] and [Low].
//
// Normal and low requests that do not fit wait in one queue, in admission order: normal
// before low, then by arrival (first in, first out). Whenever something changes (a
// migration is admitted or released, a request joins or leaves the queue, a limit
// changes) the limiter walks the queue in that order. Every waiting request claims its
// costs on every resource it needs, whether it can be admitted now or not, and a request
// is admitted when, on every resource it needs, the room left by the holders and by the
// claims of the requests ahead of it in the walk covers its cost. Hence:
//
//   - A later request is admitted ahead of an earlier waiting one only if it needs none of
//     the resources the earlier one is waiting for. So there is no head-of-line blocking
//     across unrelated resources: a request waiting for host-1 does not hold up one that
//     migrates between host-3 and host-4.
//   - On a resource that the earlier request needs but still has room on (typically the
//     shared network or datastore), a later request may take only the room beyond the
//     earlier one's claim. So a later request never takes what an earlier one needs, and
//     a waiting request is never starved by requests that arrive after it with the same
//     or lower priority: it waits only for migrations admitted before it arrived, for
//     requests ahead of it, and for high-priority migrations. A low request does wait for
//     normal ones that arrive after it.
//
// High-priority requests are never queued. A high request is admitted at once, ahead of
// every waiting normal and low request, if each resource it needs has room now (limit
// minus slots in use, ignoring the queue's claims); otherwise it is refused at once with a
// [*BusyError] naming each full resource and the migrations that hold it. As in vCenter,
// a high-priority migration that cannot get its resources does not start, rather than
// crawl.
//
// # Waiting
//
// While a request waits, Acquire calls its waiting function, in the caller's goroutine and
// with no lock held, every time what the request waits for changes: its position in the
// queue, or a blocking resource's holders or the earlier requests that claim it (see
// [Wait]). The first call comes as soon as the request is queued. Changes that happen in
// quick succession may be reported once, with the latest state. When the context ends,
// Acquire returns its error wrapped and the request leaves the queue without a trace; the
// requests behind it are reconsidered at once.
//
// # Shares
//
// Migrations that hold the same resource share it by weight: [Priority.Weight] is 4 for
// high, 2 for normal and 1 for low. [Limiter.Shares] gives each holder of a resource its
// weight times its cost there, divided by the sum of those products over all holders,
// so the shares add up to 1. The caller caps each migration's bandwidth on a network at
// share × link rate (and can weigh CPU time on a host the same way), and recomputes the
// shares whenever the channel from [Limiter.Changes] is closed.
package admission
