package placement

import "slices"

// bitset is a set of small integers, one bit each.
type bitset []uint64

// set adds i to the set, growing it as needed.
func (b *bitset) set(i int) {
	w := i / 64
	for len(*b) <= w {
		*b = append(*b, 0)
	}
	(*b)[w] |= 1 << (uint(i) % 64)
}

// has reports whether i is in the set.
func (b bitset) has(i int) bool {
	w := i / 64
	return w < len(b) && b[w]&(1<<(uint(i)%64)) != 0
}

// covers reports whether every member of need is in b.
func (b bitset) covers(need bitset) bool {
	for w, x := range need {
		var have uint64
		if w < len(b) {
			have = b[w]
		}
		if x&^have != 0 {
			return false
		}
	}
	return true
}

// universe numbers the names of one kind (CPU flags, CPU models, datastores, networks
// or images) seen on the hosts of an Index.
type universe struct {
	ids   map[string]int
	names []string // by number
}

// add returns the number of name, numbering it if it is new.
func (u *universe) add(name string) int {
	if id, ok := u.ids[name]; ok {
		return id
	}
	if u.ids == nil {
		u.ids = make(map[string]int)
	}
	id := len(u.ids)
	u.ids[name] = id
	u.names = append(u.names, name)
	return id
}

// namesOf returns the names in b, sorted.
func (u *universe) namesOf(b bitset) []string {
	var out []string
	for id, name := range u.names {
		if b.has(id) {
			out = append(out, name)
		}
	}
	slices.Sort(out)
	return out
}

// ref is one name resolved against a universe: its number, or -1 when no host has it.
type ref int

// ref resolves name against u without changing it.
func (u *universe) ref(name string) ref {
	if id, ok := u.ids[name]; ok && name != "" {
		return ref(id)
	}
	return -1
}

// in reports whether the name is in b.
func (r ref) in(b bitset) bool { return r >= 0 && b.has(int(r)) }

// bits returns the set of names, numbering the new ones.
func (u *universe) bits(names []string) bitset {
	var b bitset
	for _, n := range names {
		if n != "" {
			b.set(u.add(n))
		}
	}
	return b
}

// need is what a VM needs of one kind, resolved against a universe.
type need struct {
	names   []string // sorted, without duplicates or empty names
	ids     []int    // the number of each name; -1 when no host has it
	bits    bitset   // the numbered names
	unknown bool     // some name has no number: no host has it
}

// need resolves names against u without changing it.
func (u *universe) need(names []string) need {
	n := need{names: sortedSet(names)}
	n.ids = make([]int, len(n.names))
	for i, name := range n.names {
		id, ok := u.ids[name]
		if !ok {
			n.ids[i], n.unknown = -1, true
			continue
		}
		n.ids[i] = id
		n.bits.set(id)
	}
	return n
}

// missing returns the needed names absent from have, sorted; nil if none.
func (n need) missing(have bitset) []string {
	if !n.unknown && have.covers(n.bits) {
		return nil
	}
	var out []string
	for i, name := range n.names {
		if n.ids[i] < 0 || !have.has(n.ids[i]) {
			out = append(out, name)
		}
	}
	return out
}

// sortedSet returns names sorted, without duplicates or empty strings.
func sortedSet(names []string) []string {
	out := make([]string, 0, len(names))
	for _, n := range names {
		if n != "" {
			out = append(out, n)
		}
	}
	slices.Sort(out)
	return slices.Compact(out)
}

// entry is one host of an Index, with its sets and version precomputed.
type entry struct {
	host       Host // without its slices
	flags      bitset
	models     bitset
	datastores bitset
	networks   bitset
	images     bitset
	qemu       version
	qemuErr    error
}

// Index holds hosts prepared for fast checks by an Engine: their CPU flags, CPU
// models, datastores, networks and images as bit sets, their QEMU versions parsed.
// Build it once per inventory snapshot and rank any number of VMs against it. An
// Index is immutable and safe for concurrent use; it keeps no reference to the
// slices of the hosts it was built from.
type Index struct {
	engine     *Engine
	flags      universe
	models     universe
	datastores universe
	networks   universe
	images     universe
	entries    []entry
}

// NewIndex prepares hosts for Check and Recommend by the DefaultEngine.
func NewIndex(hosts []Host) *Index {
	return defaultEngine.Index(hosts)
}

// newIndex prepares hosts; the caller sets the engine.
func newIndex(hosts []Host) *Index {
	ix := &Index{entries: make([]entry, len(hosts))}
	for i, h := range hosts {
		e := &ix.entries[i]
		e.flags = ix.flags.bits(h.CPUFlags)
		e.models = ix.models.bits(h.CPUModels)
		e.datastores = ix.datastores.bits(h.Datastores)
		e.networks = ix.networks.bits(h.Networks)
		e.images = ix.images.bits(h.Images)
		e.qemu, e.qemuErr = parseVersion(h.QEMUVersion)
		h.CPUFlags, h.CPUModels, h.Datastores, h.Networks, h.Images = nil, nil, nil, nil, nil
		e.host = h
	}
	return ix
}

// Len returns the number of hosts in the index.
func (ix *Index) Len() int { return len(ix.entries) }

// Check returns the findings of every host of the index for vm, in the
// index's host order: for each host, what the engine's Check(vm, host) returns.
func (ix *Index) Check(vm VM) [][]Finding {
	p := ix.prepare(vm)
	out := make([][]Finding, len(ix.entries))
	for i := range ix.entries {
		out[i], _ = ix.engine.evaluate(p, &ix.entries[i], false)
	}
	return out
}

// prepared is a VM resolved against an Index.
type prepared struct {
	vm         VM
	flags      need
	model      ref
	models     *universe // for messages
	datastores need
	networks   need
	image      ref
	qemu       version
	qemuErr    error
	needMiB    int // MemoryNeedMiB of the VM's memory
}

// prepare resolves vm against the index's universes.
func (ix *Index) prepare(vm VM) *prepared {
	p := &prepared{
		vm:         vm,
		flags:      ix.flags.need(vm.CPUFlags),
		model:      ix.models.ref(vm.CPUModel),
		models:     &ix.models,
		datastores: ix.datastores.need(vm.Datastores),
		networks:   ix.networks.need(vm.Networks),
		image:      ix.images.ref(vm.Image),
		needMiB:    MemoryNeedMiB(vm.MemoryMiB),
	}
	p.qemu, p.qemuErr = parseVersion(vm.QEMUVersion)
	return p
}
