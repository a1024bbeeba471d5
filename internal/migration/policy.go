// Package migration is Godwit's live-migration engine on the source host.
//
// It has three parts:
//
//   - Policies (policy.go): convergence policies as data — downtime target and
//     bounds, bandwidth, time budget, multifd channels, vCPU throttling limits.
//   - The Controller (controller.go): a pure state machine in the style of etcd's
//     raft package. It is fed one Observation per poll of query-migrate and
//     returns a Decision (what to change in QEMU, and why) and a Progress report.
//     It does no I/O, so every decision is testable without QEMU.
//   - The driver (run.go): Run and PrepareDestination, which talk QMP to the
//     QEMU processes, apply the controller's decisions and turn the outcome into
//     a Result.
//
// Post-copy is a last resort a policy may allow (AllowPostcopy, off in every
// built-in policy): when throttling at the policy's maximum still needs more
// downtime than it allows, the controller switches the migration to post-copy,
// after which the VM runs on the destination and can never return to the
// source; a broken post-copy stream is recovered (see Options.Recover).
package migration

import (
	"errors"
	"fmt"
	"strings"
	"time"
)

// Names of the built-in policies.
const (
	PolicyBalanced       = "balanced"
	PolicyFastSwitchover = "fast-switchover"
	PolicySafe           = "safe"
	// PolicyQEMUDefaults is the untuned baseline (see QEMUDefaultsPolicy); it is
	// not one of DefaultPolicies.
	PolicyQEMUDefaults = "qemu-defaults"
	// PolicyQEMUTuned is the hand-tuned baseline (see QEMUTunedPolicy); it is not
	// one of DefaultPolicies either.
	PolicyQEMUTuned = "qemu-tuned"
)

// DefaultPolicyName is the policy used when none is named.
const DefaultPolicyName = PolicyBalanced

// Limits QEMU (10.0) puts on the parameters a policy maps to.
const (
	// MaxDowntime is the largest downtime-limit QEMU accepts (2000 s).
	MaxDowntime = 2000 * time.Second
	// MaxChannels is the largest multifd-channels QEMU accepts.
	MaxChannels = 255
	// MaxThrottle is the largest vCPU throttle QEMU accepts, in percent.
	MaxThrottle = 99
)

// QEMU's own defaults (10.0) for the parameters a policy maps to: what a tool
// that does not tune the migration gets.
const (
	// QEMUDefaultDowntimeLimit is QEMU's default downtime-limit.
	QEMUDefaultDowntimeLimit = 300 * time.Millisecond
	// QEMUDefaultMaxBandwidth is QEMU's default max-bandwidth, in bytes/s.
	QEMUDefaultMaxBandwidth int64 = 128 << 20
)

// UnlimitedBandwidth is the max-bandwidth Godwit gives QEMU for a policy whose
// MaxBandwidth is 0 ("as fast as the link allows"): 100 GiB/s. QEMU's own
// default is 128 MiB/s, which would cap a 10 GbE link at a tenth of its speed.
const UnlimitedBandwidth int64 = 100 << 30

// Policy is a named convergence policy: what the controller aims for and how
// far it may go to get a migration to converge. Policies are data; see
// DefaultPolicies for the built-in ones.
type Policy struct {
	// Name identifies the policy, e.g. "balanced".
	Name string `json:"name"`
	// DowntimeTarget is the pause we aim for at switch-over. It is QEMU's
	// downtime-limit when the migration starts.
	DowntimeTarget time.Duration `json:"downtime_target"`
	// DowntimeMax is how far the controller may raise the downtime limit when
	// the migration does not converge at DowntimeTarget. 0 means
	// DowntimeTarget: never raise it.
	DowntimeMax time.Duration `json:"downtime_max"`
	// MaxBandwidth is the migration traffic limit in bytes/s; 0 means as fast as
	// the link allows (QEMU gets UnlimitedBandwidth).
	MaxBandwidth int64 `json:"max_bandwidth"`
	// TimeBudget is how long the migration may take; when it is used up the
	// migration is cancelled cleanly and the VM keeps running on the source.
	TimeBudget time.Duration `json:"time_budget"`
	// Channels is the number of multifd channels; 0 or 1 means a single
	// migration stream (multifd off).
	Channels int `json:"channels"`
	// ThrottleInitial is the vCPU throttle, in percent, applied first when the
	// guest dirties memory faster than the link carries it.
	ThrottleInitial int `json:"throttle_initial"`
	// ThrottleStep is how many percent each further throttle step adds.
	ThrottleStep int `json:"throttle_step"`
	// ThrottleMax is the highest vCPU throttle, in percent (at most 99); 0
	// means never throttle.
	ThrottleMax int `json:"throttle_max"`
	// AllowPostcopy allows switching to post-copy as a last resort: when the
	// vCPUs are throttled to ThrottleMax and the migration would still need more
	// downtime than DowntimeMax. From the switch on the VM runs on the
	// destination, which fetches the pages it lacks from the source: it can
	// never return to the source, and should the source or the link between
	// the hosts die for good before the last page arrived, the VM is lost.
	// Off in every built-in policy; `vm migrate --postcopy` turns it on for one
	// migration.
	AllowPostcopy bool `json:"allow_postcopy"`
	// Encryption says whether the memory stream is encrypted: carried between the
	// hosts' agents over mutual TLS (internal/agent's carry.go), QEMU talking only to a
	// local socket: EncryptionRequired, EncryptionOpportunistic or EncryptionOff. Empty
	// means opportunistic.
	Encryption string `json:"encryption"`

	// The baselines' knobs (see QEMUTunedPolicy), which Godwit's own policies leave
	// alone:
	//
	// QEMUAutoConverge turns on QEMU's own auto-converge with QEMU's default throttle
	// steps (20% first, +10% up to 99%) instead of the controller's.
	QEMUAutoConverge bool `json:"qemu_auto_converge,omitempty"`
	// NoReturnPath runs the migration without QEMU's return path: the source does not
	// wait for the destination to confirm it loaded the state (and cannot learn that
	// it failed to).
	NoReturnPath bool `json:"no_return_path,omitempty"`
	// Announce replaces the destination's announce timing (AnnounceInitial and the
	// rest) when set.
	Announce *AnnounceTiming `json:"announce,omitempty"`
}

// AnnounceTiming is when the destination announces the VM's MACs from its new port:
// the first round after Initial, then rounds Step further apart each time (at most
// Max apart), Rounds in all (QEMU's announce-* parameters).
type AnnounceTiming struct {
	Initial, Step, Max time.Duration
	Rounds             int
}

// Encryption modes of the migration stream. As in vCenter, the default is
// opportunistic: encrypted whenever both hosts can (the migration comes with the
// center's ticket), plain otherwise — with the reason in the migration's note.
// Required fails a migration that cannot be encrypted; off never encrypts.
const (
	EncryptionRequired      = "required"
	EncryptionOpportunistic = "opportunistic"
	EncryptionOff           = "off"
)

// ParseEncryption checks an encryption mode; empty is opportunistic.
func ParseEncryption(s string) (string, error) {
	switch s {
	case "":
		return EncryptionOpportunistic, nil
	case EncryptionRequired, EncryptionOpportunistic, EncryptionOff:
		return s, nil
	}
	return "", fmt.Errorf("encryption %q is not a mode: use required, opportunistic or off", s)
}

// EncryptionMode is the policy's encryption mode, opportunistic when unset.
func (p Policy) EncryptionMode() string {
	m, err := ParseEncryption(p.Encryption)
	if err != nil {
		return EncryptionRequired // an unknown mode errs on the safe side; Validate refuses it
	}
	return m
}

// DefaultPolicies returns the built-in policies, a fresh copy on every call
// ("balanced" first, the default):
//
//	balanced         downtime 5 ms (raised up to 100 ms if that alone converges),
//	                 no bandwidth limit, budget 10 min, single stream,
//	                 throttle 20% +10% per step up to 80%, no post-copy.
//	fast-switchover  downtime 2 ms (up to 20 ms), no bandwidth limit, budget 10 min,
//	                 single stream, throttle 30% +15% up to 95%: the shortest pause,
//	                 at the cost of slowing a busy guest hard for a while.
//	safe             downtime 50 ms (up to 300 ms, QEMU's own default limit), no
//	                 bandwidth limit, budget 30 min, single stream, throttle 10% +10%
//	                 up to 40% and never more: a busy guest keeps most of its CPU,
//	                 and a migration that cannot converge within those bounds is
//	                 cancelled at the budget rather than forced.
//
// Encryption: balanced and fast-switchover encrypt opportunistically (the default, as
// in vCenter), safe requires encryption.
//
// None allows post-copy (a migration may ask for it: `vm migrate --postcopy`).
// All use a single stream: on the 2-core TCG
// development machine, 2 multifd channels over loopback were not reliably
// faster on an idle 512 MiB guest (medians of 7 runs: 92 ms against 135 ms in
// one series, 122 ms against 83 ms in another) and their switch-over was long
// more often (see BenchmarkIdleGuest); set Channels for fast links on hosts
// with cores to spare.
func DefaultPolicies() []Policy {
	return []Policy{
		{
			Name:            PolicyBalanced,
			DowntimeTarget:  5 * time.Millisecond,
			DowntimeMax:     100 * time.Millisecond,
			TimeBudget:      10 * time.Minute,
			ThrottleInitial: 20,
			ThrottleStep:    10,
			ThrottleMax:     80,
			Encryption:      EncryptionOpportunistic,
		},
		{
			Name:            PolicyFastSwitchover,
			DowntimeTarget:  2 * time.Millisecond,
			DowntimeMax:     20 * time.Millisecond,
			TimeBudget:      10 * time.Minute,
			ThrottleInitial: 30,
			ThrottleStep:    15,
			ThrottleMax:     95,
			Encryption:      EncryptionOpportunistic,
		},
		{
			Name:            PolicySafe,
			DowntimeTarget:  50 * time.Millisecond,
			DowntimeMax:     300 * time.Millisecond,
			TimeBudget:      30 * time.Minute,
			ThrottleInitial: 10,
			ThrottleStep:    10,
			ThrottleMax:     40,
			Encryption:      EncryptionRequired,
		},
	}
}

// QEMUDefaultsPolicy returns "qemu-defaults", the untuned baseline Godwit's
// benchmarks compare its own policies against: QEMU driven with its default
// migration parameters, as a script or tool that does not tune the migration
// gets it. It is not a policy to run VMs with, so it is not among
// DefaultPolicies (nor listed by `godwit migration policies`); LookupPolicy
// finds it by name.
//
// Policies are data that Run always maps onto QEMU, so this one gives QEMU
// exactly the values QEMU has by default, which leaves the defaults in place:
// downtime-limit 300 ms, never raised (DowntimeMax 0); max-bandwidth 128 MiB/s;
// a single stream (multifd off); auto-converge off and no vCPU throttling
// (ThrottleMax 0); no post-copy. The controller then never changes anything: it
// only observes, and cancels at a time budget of 24 hours, which in practice
// means never (QEMU itself never gives up on a migration).
//
// What Godwit's plumbing sets regardless of the policy, and this baseline
// therefore shares with every other policy (see SourceCapabilities,
// SourceParameters, DestinationCapabilities, DestinationParameters):
//
//   - the events and return-path capabilities on both sides (return-path must
//     match on both; without it a destination failing at the very end would
//     leave the VM on neither host). With the return path QEMU's downtime
//     figure includes the wait for the destination to confirm it loaded the
//     state;
//   - avail-switchover-bandwidth 0, which is QEMU's default anyway;
//   - the destination's announce timing (AnnounceInitial and the rest: the
//     first RARP after 1 ms, 8 rounds), where QEMU's default waits 50 ms and sends
//     5 rounds. So on the network this baseline is announced faster than a
//     truly untuned QEMU would be, which flatters it, not Godwit.
func QEMUDefaultsPolicy() Policy {
	return qemuDefaults()
}

// QEMUTunedPolicy returns "qemu-tuned", the baseline of a user who read QEMU's manual
// and drives it by hand (what a Proxmox or libvirt user sets): downtime-limit 5 ms,
// max-bandwidth 10 GiB/s, QEMU's own auto-converge, no return path, no pause before
// switch-over, and on the destination the first announce after 1 ms, then every 10 ms
// more, 5 rounds. The controller only observes, as for qemu-defaults. It is a
// benchmark baseline: without the return path a destination that fails at the very
// end leaves the VM on neither host.
func QEMUTunedPolicy() Policy {
	return Policy{
		Name:             PolicyQEMUTuned,
		DowntimeTarget:   5 * time.Millisecond,
		MaxBandwidth:     10 << 30,
		TimeBudget:       24 * time.Hour,
		Encryption:       EncryptionOff,
		QEMUAutoConverge: true,
		NoReturnPath:     true,
		Announce:         &AnnounceTiming{Initial: time.Millisecond, Step: 10 * time.Millisecond, Max: 50 * time.Millisecond, Rounds: 5},
	}
}

func qemuDefaults() Policy {
	return Policy{
		Name:           PolicyQEMUDefaults,
		DowntimeTarget: QEMUDefaultDowntimeLimit,
		MaxBandwidth:   QEMUDefaultMaxBandwidth,
		TimeBudget:     24 * time.Hour,
		Encryption:     EncryptionOff, // QEMU migrates in the clear unless told otherwise
	}
}

// PolicyNames returns the names of the built-in policies, the default first.
func PolicyNames() []string {
	var names []string
	for _, p := range DefaultPolicies() {
		names = append(names, p.Name)
	}
	return names
}

// LookupPolicy returns the built-in policy called name; "" selects the default
// ("balanced"). It also finds the benchmark baselines "qemu-defaults" and "qemu-tuned"
// (see QEMUDefaultsPolicy, QEMUTunedPolicy). An unknown name is an error that lists the
// known ones.
func LookupPolicy(name string) (Policy, error) {
	if name == "" {
		name = DefaultPolicyName
	}
	for _, p := range append(DefaultPolicies(), QEMUDefaultsPolicy(), QEMUTunedPolicy()) {
		if p.Name == name {
			return p, nil
		}
	}
	return Policy{}, fmt.Errorf("there is no migration policy called %q; the policies are %s (and %s and %s, QEMU untuned and hand-tuned, for comparison)",
		name, strings.Join(PolicyNames(), ", "), PolicyQEMUDefaults, PolicyQEMUTuned)
}

// Validate checks that the policy can be applied to QEMU and reports every
// problem found, one sentence each.
func (p Policy) Validate() error {
	var errs []error
	bad := func(format string, args ...any) { errs = append(errs, fmt.Errorf(format, args...)) }
	if p.Name == "" {
		bad("the policy has no name")
	}
	switch {
	case p.DowntimeTarget < time.Millisecond:
		bad("the downtime target is %v; it must be at least 1ms", p.DowntimeTarget)
	case p.DowntimeTarget > MaxDowntime:
		bad("the downtime target is %v; QEMU accepts at most %v", p.DowntimeTarget, MaxDowntime)
	}
	if p.DowntimeMax != 0 && (p.DowntimeMax < p.DowntimeTarget || p.DowntimeMax > MaxDowntime) {
		bad("the maximum downtime is %v; it must be 0 (the target) or between the target %v and %v",
			p.DowntimeMax, p.DowntimeTarget, MaxDowntime)
	}
	if p.MaxBandwidth < 0 {
		bad("the bandwidth limit is %d bytes/s; it must be 0 (unlimited) or positive", p.MaxBandwidth)
	}
	if p.TimeBudget <= 0 {
		bad("the time budget is %v; it must be positive", p.TimeBudget)
	}
	if p.Channels < 0 || p.Channels > MaxChannels {
		bad("the policy asks for %d multifd channels; QEMU accepts 0 or 1 (single stream) up to %d", p.Channels, MaxChannels)
	}
	if p.ThrottleMax < 0 || p.ThrottleMax > MaxThrottle {
		bad("the maximum vCPU throttle is %d%%; it must be between 0 (never throttle) and %d%%", p.ThrottleMax, MaxThrottle)
	} else if p.ThrottleMax > 0 {
		if p.ThrottleInitial < 1 || p.ThrottleInitial > p.ThrottleMax {
			bad("the initial vCPU throttle is %d%%; it must be between 1%% and the maximum %d%%", p.ThrottleInitial, p.ThrottleMax)
		}
		if p.ThrottleStep < 1 && p.ThrottleInitial < p.ThrottleMax {
			bad("the vCPU throttle step is %d%%; it must be at least 1%% to get from %d%% to %d%%",
				p.ThrottleStep, p.ThrottleInitial, p.ThrottleMax)
		}
	}
	if _, err := ParseEncryption(p.Encryption); err != nil {
		bad("%v", err)
	}
	if len(errs) == 0 {
		return nil
	}
	name := p.Name
	if name == "" {
		name = "(unnamed)"
	}
	return fmt.Errorf("migration policy %s is invalid: %w", name, errors.Join(errs...))
}

// downtimeMax returns the effective upper bound of the downtime limit.
func (p Policy) downtimeMax() time.Duration {
	if p.DowntimeMax < p.DowntimeTarget {
		return p.DowntimeTarget
	}
	return p.DowntimeMax
}

// bandwidth returns the max-bandwidth to give QEMU, in bytes/s.
func (p Policy) bandwidth() int64 {
	if p.MaxBandwidth <= 0 {
		return UnlimitedBandwidth
	}
	return p.MaxBandwidth
}

// multifd reports whether the policy uses multifd channels.
func (p Policy) multifd() bool { return p.Channels > 1 }

// throttles reports whether the policy may throttle vCPUs.
func (p Policy) throttles() bool { return p.ThrottleMax > 0 }
