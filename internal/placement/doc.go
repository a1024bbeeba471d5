// Package placement is Godwit's one placement engine: it decides where a VM may
// run — be created, or live-migrate to — and ranks the hosts that can take it, like
// the migration wizard and DRS ratings of vCenter.
//
// An Engine works like Nomad's scheduler: a list of named feasibility checkers
// (the Checker constants), each refusing a host with typed findings, then a list of
// named scorers (the Criterion constants) that rank the hosts no checker refused,
// each keeping its score in the candidate's breakdown. Every placement decision goes
// through it: VM creation (the center's place, an initial placement), the migration
// wizard's check and recommendation, bulk and scheduled --auto moves (evacuations),
// and the destination agent's preflight, which runs the checks a host can make of
// itself (NewEngine with memory, qemu-release, datastores and networks). Memory has
// one rule, MemoryFits, for all of them.
//
// The center converts its inventory into a VM and a list of Host values from
// the hosts' live heartbeats. Check lists what stands between the VM and one
// host; Recommend checks every host and ranks the compatible ones. A VM without
// a source host (VM.Host empty) is an initial placement: the checks that compare
// a host with the source (same_host, accel_mismatch, qemu_incompatible) are
// skipped. An Index prepares hosts once (CPU flags and models, datastores,
// networks and images as bit sets, QEMU versions parsed) so that ranking a VM
// against a thousand hosts takes a few milliseconds, and many VMs can be ranked
// against one snapshot. Nothing in the package has side effects or mutable
// global state.
//
// # Findings
//
// Each Finding has a Code, a Severity and a one-sentence Message naming what
// is wrong and, where useful, what to do. Errors block placing the VM on the
// host (migrating it there, or creating it there); warnings do not. Check returns errors first, in this order, then
// warnings in theirs.
//
// Errors, each from the checker named in brackets:
//
//   - same_host [same-host]: the host is the VM's source host.
//   - host_disconnected [connected]: the host's agent is not connected to the center.
//   - host_unhealthy [health]: the host's health is not "ok" (an empty health counts as
//     not reported); the message quotes the health and its reason.
//   - host_maintenance [maintenance]: the host is in maintenance mode.
//   - accel_mismatch [accel]: the source runs the VM with one accelerator (kvm or tcg)
//     and the host offers another, or has not reported one yet; a VM cannot
//     migrate between accelerators. An unknown (empty) source accelerator is
//     not checked. Names compare case-insensitively.
//   - qemu_incompatible [qemu-release]: the host's QEMU is of another release
//     (major.minor) than the source's: an older one cannot read the stream, a
//     newer one defines the unversioned q35 machine differently. 10.0.1 may
//     receive from 10.0.2, since the micro (stable) releases of one series
//     share its machine types and stream format. Either version not being
//     "major.minor" or "major.minor.micro" in decimal digits is also this error.
//   - cpu_unsupported [cpu-flags]: the VM's CPU model needs CPUID flags the host
//     cannot give guests; the message names every missing flag, sorted, or says
//     that the host has not reported any flags yet.
//   - cpu_unsupported [cpu-model]: the flags of the VM's CPU model are unknown
//     (VM.CPUFlags empty) and the host lists the models it provides
//     (Host.CPUModels) without the VM's.
//   - memory_short [memory]: the host's free memory minus HostReserveMiB (1024
//     MiB, kept for the host's kernel, agent and page cache) is less than the
//     VM's memory plus VMOverheadMiB (256 MiB, for the QEMU process, device state
//     and incoming-migration buffers), i.e. not MemoryFits; the message gives the
//     numbers in MiB.
//   - datastore_missing [datastores]: the host cannot reach a datastore the VM's
//     disks live on; one finding per datastore, by name.
//   - network_missing [networks]: the host lacks a network the VM's NICs use;
//     one finding per network, by name.
//   - image_missing [image]: the VM being created boots from an image
//     (VM.Image) that no datastore of the host holds. A VM that boots from a
//     kernel or a disk names no image and is not checked.
//
// Warnings:
//
//   - host_loaded [load]: the 1-minute load per core is above LoadPerCoreThreshold
//     (0.8). Hosts reporting fewer than 1 core count as 1 core.
//   - memory_tight [memory-tight]: after the move (free memory less the VM's memory and
//     overhead) less than MemoryTightFraction (10%) of the host's memory would
//     be free. Not given when memory_short is.
//   - slots_full [slots]: the host already runs as many migrations as it has slots
//     (a host reporting fewer than 1 slot counts as 1), so the migration will
//     queue until a slot frees.
//   - link_busy [link]: more than LinkBusyThreshold (70%) of the host's migration
//     link is in use.
//
// # Ranking
//
// Recommend refuses every host with an error finding and scores the others
// from 0 to 100, higher is better, as the weighted mean of four criterion
// scores, each 0 to 100 and each from the scorer of that name:
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
