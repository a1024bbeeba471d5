// Package placement decides where a VM may live-migrate and ranks the hosts
// that can take it, like the migration wizard and DRS ratings of vCenter.
//
// The center converts its inventory into a VM and a list of Host values from
// the hosts' live heartbeats. Check lists what stands between the VM and one
// host; Recommend checks every host and ranks the compatible ones. An Index
// prepares hosts once (CPU flags, datastores and networks as bit sets, QEMU
// versions parsed) so that ranking a VM against a thousand hosts takes a few
// milliseconds, and many VMs can be ranked against one snapshot. Nothing in
// the package has side effects or mutable global state.
//
// # Findings
//
// Each Finding has a Code, a Severity and a one-sentence Message naming what
// is wrong and, where useful, what to do. Errors block the migration to the
// host; warnings do not. Check returns errors first, in this order, then
// warnings in theirs.
//
// Errors:
//
//   - same_host: the host is the VM's source host.
//   - host_disconnected: the host's agent is not connected to the center.
//   - host_unhealthy: the host's health is not "ok" (an empty health counts as
//     not reported); the message quotes the health and its reason.
//   - host_maintenance: the host is in maintenance mode.
//   - accel_mismatch: the source runs the VM with one accelerator (kvm or tcg)
//     and the host offers another, or has not reported one yet; a VM cannot
//     migrate between accelerators. An unknown (empty) source accelerator is
//     not checked. Names compare case-insensitively.
//   - qemu_incompatible: the host's QEMU is older than the source's by
//     major.minor: 10.0.x cannot receive from 10.1.x, while 10.0.1 may receive
//     from 10.0.2, since the micro (stable) releases of one series share its
//     machine types and stream format. Either version not being "major.minor"
//     or "major.minor.micro" in decimal digits is also this error.
//   - cpu_unsupported: the VM's CPU model needs CPUID flags the host cannot
//     give guests; the message names every missing flag, sorted.
//   - memory_short: the host's free memory minus HostReserveMiB (1024 MiB,
//     kept for the host's kernel, agent and page cache) is less than the VM's
//     memory plus VMOverheadMiB (256 MiB, for the QEMU process, device state
//     and incoming-migration buffers); the message gives the numbers in MiB.
//   - datastore_missing: the host cannot reach a datastore the VM's disks live
//     on; one finding per datastore, by name.
//   - network_missing: the host lacks a network the VM's NICs use; one finding
//     per network, by name.
//
// Warnings:
//
//   - host_loaded: the 1-minute load per core is above LoadPerCoreThreshold
//     (0.8). Hosts reporting fewer than 1 core count as 1 core.
//   - memory_tight: after the move (free memory less the VM's memory and
//     overhead) less than MemoryTightFraction (10%) of the host's memory would
//     be free. Not given when memory_short is.
//   - slots_full: the host already runs as many migrations as it has slots
//     (a host reporting fewer than 1 slot counts as 1), so the migration will
//     queue until a slot frees.
//   - link_busy: more than LinkBusyThreshold (70%) of the host's migration
//     link is in use.
//
// # Ranking
//
// Recommend refuses every host with an error finding and scores the others
// from 0 to 100, higher is better, as the weighted mean of four criterion
// scores, each 0 to 100:
//
//   - cpu: 100 × (1 − load per core), so an idle host scores 100 and a host
//     with a load of 1.0 per core or more scores 0.
//   - memory: 100 × the share of the host's memory free after the move.
//   - migrations: 100 × (1 − (running + queued) / slots), 0 once the
//     migrations fill the slots.
//   - link: 100 × (1 − link load).
//
// A measure that is NaN counts as the worst. DefaultWeights are cpu 0.35,
// memory 0.35, migrations 0.2 and link 0.1. Weights are normalized to sum to
// 1, so only their ratios matter; Weights.Validate rejects negative or
// non-finite weights and weights that are all zero. Each candidate carries
// its breakdown (the raw value in words, the criterion score, its normalized
// weight and its contribution, score × weight), so a user sees why a host
// ranks where it does; the contributions add up to the score within
// rounding (scores are rounded to 0.1). Stars turns a score into a 1 to 5
// rating: 5 from 80, 4 from 60, 3 from 40, 2 from 20, 1 below.
//
// Candidates are sorted by score, best first, ties broken by host name, and
// keep their warnings. Refused hosts are sorted by name and carry their
// errors. The output types have snake_case JSON tags for the REST API; their
// slices marshal as [] rather than null.
package placement
