package admission

import (
	"fmt"
	"maps"
	"strings"
	"unicode"
)

// Kinds of resource a migration costs against.
const (
	// KindHost is a hypervisor host: the source or the destination of a migration.
	KindHost = "host"
	// KindNetwork is a network the migration traffic crosses.
	KindNetwork = "network"
	// KindDatastore is a datastore holding the migrating VM's disks.
	KindDatastore = "datastore"
)

// Default limits, vCenter's.
const (
	// DefaultHostLimit is how many migrations a host runs at once when its migration
	// link is slower than FastLinkBitsPerSecond.
	DefaultHostLimit = 4
	// FastHostLimit is how many migrations a host runs at once when its migration link
	// runs at FastLinkBitsPerSecond or faster.
	FastHostLimit = 8
	// FastLinkBitsPerSecond is the link speed, 10 Gbit/s, from which a host gets
	// FastHostLimit.
	FastLinkBitsPerSecond int64 = 10_000_000_000
	// DefaultNetworkLimit is how many migrations cross one network at once.
	DefaultNetworkLimit = 8
	// DefaultDatastoreLimit is how many migrations use one datastore at once.
	DefaultDatastoreLimit = 128
)

// Host names the host resource of the host called name ("host:NAME").
func Host(name string) string { return KindHost + ":" + name }

// Network names the network resource of the network called name ("network:NAME").
func Network(name string) string { return KindNetwork + ":" + name }

// Datastore names the datastore resource of the datastore called name ("datastore:NAME").
func Datastore(name string) string { return KindDatastore + ":" + name }

// ParseResource splits a resource into its kind and name. Both must be non-empty, and
// neither may hold spaces or control characters.
func ParseResource(resource string) (kind, name string, err error) {
	kind, name, ok := strings.Cut(resource, ":")
	if !ok || kind == "" || name == "" {
		return "", "", fmt.Errorf("resource %q must look like KIND:NAME, e.g. host:host-1", resource)
	}
	if strings.ContainsFunc(resource, func(r rune) bool { return unicode.IsSpace(r) || unicode.IsControl(r) }) {
		return "", "", fmt.Errorf("resource %q must not contain spaces or control characters", resource)
	}
	return kind, name, nil
}

// MigrationCosts returns the usual costs of one migration from the host called source to
// the host called destination: 1 on each of the two hosts, 1 on each network named in
// networks and 1 on each datastore named in datastores. A network or datastore named twice
// is charged once; a migration whose source and destination are the same host costs 2 on
// it, since that host does the work of both ends.
func MigrationCosts(source, destination string, networks, datastores []string) map[string]int {
	costs := map[string]int{}
	costs[Host(source)]++
	costs[Host(destination)]++
	for _, n := range networks {
		costs[Network(n)] = 1
	}
	for _, d := range datastores {
		costs[Datastore(d)] = 1
	}
	return costs
}

// Limits says how many slots each resource has, i.e. how many migrations of cost 1 it
// takes at once.
type Limits struct {
	// Kinds is the limit of every resource of a kind, by kind ("host", "network",
	// "datastore" or any other).
	Kinds map[string]int
	// Resources is the limit of individual resources, by resource ("host:host-2"); it
	// overrides Kinds.
	Resources map[string]int
}

// DefaultLimits returns vCenter's limits: 4 per host (DefaultHostLimit; give hosts on
// 10 Gbit/s links HostLimitForLink's 8 in Resources or with Limiter.SetLimit), 8 per
// network and 128 per datastore. The maps are new on every call.
func DefaultLimits() Limits {
	return Limits{
		Kinds: map[string]int{
			KindHost:      DefaultHostLimit,
			KindNetwork:   DefaultNetworkLimit,
			KindDatastore: DefaultDatastoreLimit,
		},
		Resources: map[string]int{},
	}
}

// HostLimitForLink returns vCenter's limit for a host whose migration link runs at
// bitsPerSecond: FastHostLimit (8) at 10 Gbit/s and above, DefaultHostLimit (4) below.
func HostLimitForLink(bitsPerSecond int64) int {
	if bitsPerSecond >= FastLinkBitsPerSecond {
		return FastHostLimit
	}
	return DefaultHostLimit
}

// Limit returns the limit of resource: its own if Resources has one, else its kind's.
func (l Limits) Limit(resource string) (int, error) {
	kind, _, err := ParseResource(resource)
	if err != nil {
		return 0, err
	}
	if n, ok := l.Resources[resource]; ok {
		return n, nil
	}
	if n, ok := l.Kinds[kind]; ok {
		return n, nil
	}
	return 0, fmt.Errorf("resource %s has no limit: the limits set none for kind %q or for the resource itself", resource, kind)
}

// Validate checks that every kind is a plain word, every resource is KIND:NAME and no
// limit is negative.
func (l Limits) Validate() error {
	for kind, n := range l.Kinds {
		if _, _, err := ParseResource(kind + ":x"); err != nil || strings.Contains(kind, ":") {
			return fmt.Errorf("resource kind %q must be a non-empty word without colons, spaces or control characters", kind)
		}
		if n < 0 {
			return fmt.Errorf("the limit of kind %s is %d; a limit cannot be negative", kind, n)
		}
	}
	for r, n := range l.Resources {
		if _, _, err := ParseResource(r); err != nil {
			return err
		}
		if n < 0 {
			return fmt.Errorf("the limit of %s is %d; a limit cannot be negative", r, n)
		}
	}
	return nil
}

// clone returns a copy of l that shares no map with it (and has non-nil maps).
func (l Limits) clone() Limits {
	c := Limits{Kinds: maps.Clone(l.Kinds), Resources: maps.Clone(l.Resources)}
	if c.Kinds == nil {
		c.Kinds = map[string]int{}
	}
	if c.Resources == nil {
		c.Resources = map[string]int{}
	}
	return c
}
