package agent

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/godwit/godwit/internal/api"
	"github.com/godwit/godwit/internal/netdev"
	"github.com/godwit/godwit/internal/pki"
	"github.com/godwit/godwit/internal/qemu"
)

// vm is one VM this host holds. mu serialises operations on it (start, stop, delete);
// the fields below it are guarded by Agent.mu so status reads never wait for an operation.
type vm struct {
	op sync.Mutex

	spec  api.VMSpec
	dir   string
	owned []string // disk files this host created for the VM, removed with it

	state  string
	errMsg string
	accel  string
	proc   *qemu.Process
	// stopping is set while a stop requested through the API is under way, so the
	// watcher knows the exit was wanted.
	stopping bool
	// incoming is the migration bringing this VM in (its QEMU waits for the stream);
	// outgoing is the migration taking it away.
	incoming string
	outgoing *outgoingRecord
	// ticket is the center's ticket that brought an incoming VM in: its finish and abort
	// must come with the same one.
	ticket string
	// resumedAt, while a VM comes in, stops the reader of its QEMU's events and returns
	// when QEMU resumed it.
	resumedAt func() time.Time
	// stream is the private directory of the socket on which an incoming VM's QEMU
	// waits for a stream the agents carry (carry.go); removed with the VM's directory
	// or once the VM runs.
	stream string
	// frames puts the frames the source carries across the switch-over on an incoming
	// VM's TAPs.
	frames *frameReceiver
	// memory is the latest measurement of its memory activity (memory.go).
	memory *api.MemoryActivity
	// exit says why its QEMU last ended (api.Exit*), and exitedAt when; events
	// follows the events of its current QEMU (exit.go).
	exit     string
	exitedAt *time.Time
	events   *exitListener
	// cpu is its QEMU's CPU use (cpuuse.go).
	cpu cpuSample

	// saveMu orders writes of vm.json with the removal of the directory (gone).
	saveMu sync.Mutex
	gone   bool
}

// persisted is what vm.json keeps across agent restarts.
type persisted struct {
	Spec     api.VMSpec      `json:"spec"`
	Owned    []string        `json:"owned_disks,omitempty"`
	Error    string          `json:"error,omitempty"`
	Incoming string          `json:"incoming,omitempty"`
	Ticket   string          `json:"ticket,omitempty"`
	Outgoing *outgoingRecord `json:"outgoing,omitempty"`
	// Running says its QEMU ran when this was written; Exit and ExitedAt why and when
	// it last ended.
	Running  bool       `json:"running,omitempty"`
	Exit     string     `json:"exit,omitempty"`
	ExitedAt *time.Time `json:"exited_at,omitempty"`
}

const maxSocketPath = 107

// The VM's definition is kept twice in its run directory, each copy written
// crash-safely: should one be torn or lost, the other still names the VM and its QEMU.
const (
	stateFile  = "vm.json"
	backupFile = "vm.json.bak"
)

// vmDir is a VM's run directory: the whole UUID (32 hex digits), so that no two VMs
// share one. Directories of VMs defined before used 16 digits; they are found by
// adoptAll whatever their name, and kept.
func (a *Agent) vmDir(uuid string) (string, error) {
	dir := filepath.Join(a.cfg.StateDir, "vms", strings.ToLower(strings.ReplaceAll(uuid, "-", "")))
	if len(filepath.Join(dir, "console.sock")) > maxSocketPath {
		return "", fmt.Errorf("state directory %s is too long for QEMU's unix sockets (a VM's socket path must fit in %d bytes, and the VM's directory adds %d); choose a shorter --state-dir",
			a.cfg.StateDir, maxSocketPath, len(dir)-len(a.cfg.StateDir)+len("/console.sock"))
	}
	return dir, nil
}

// claimLocked refuses a VM that would share something on this host with another VM:
// its UUID, its run directory (where its sockets, pid file and definition live) or the
// name of a TAP. Sharing any of them would let one VM overwrite the other's files or
// tear down its network. Run directories are named by the whole UUID, so the directory
// of a VM that is not known here exists only as a leftover (or as a VM whose state
// could not be read at all): it is not taken over either. a.mu must be held; the
// caller checks the name.
func (a *Agent) claimLocked(spec api.VMSpec, dir string) error {
	taps := map[string]int{}
	for i := range spec.NICs {
		taps[netdev.TapName(spec.UUID, i)] = i
	}
	for _, o := range a.vms {
		if strings.EqualFold(o.spec.UUID, spec.UUID) {
			return api.Conflict("host %s already has a VM with UUID %s (%s)", a.cfg.Name, spec.UUID, o.spec.Name)
		}
		for j := range o.spec.NICs {
			tap := netdev.TapName(o.spec.UUID, j)
			if i, ok := taps[tap]; ok {
				return api.Conflict("NIC %d of VM %s would use TAP %s on host %s, which NIC %d of VM %s uses; give the VM another UUID",
					i, spec.Name, tap, a.cfg.Name, j, o.spec.Name)
			}
		}
	}
	if _, err := os.Lstat(dir); err == nil {
		return api.Conflict("run directory %s of VM %s already exists on host %s, though no VM there uses it; look inside, and remove it if it is a leftover",
			dir, spec.Name, a.cfg.Name)
	} else if !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("check run directory %s: %w", dir, err)
	}
	return nil
}

// save writes the VM's definition and state to both of its state files.
func (v *vm) save() error {
	v.saveMu.Lock()
	defer v.saveMu.Unlock()
	if v.gone {
		return nil
	}
	b, err := json.MarshalIndent(persisted{Spec: v.spec, Owned: v.owned, Error: v.errMsg, Incoming: v.incoming, Ticket: v.ticket, Outgoing: v.outgoing,
		Running: v.proc != nil, Exit: v.exit, ExitedAt: v.exitedAt}, "", "  ")
	if err != nil {
		return err
	}
	for _, f := range []string{stateFile, backupFile} {
		// 0600: while a migration runs, its ticket (which carries the stream's key) is here.
		if err := pki.WriteFileAtomic(filepath.Join(v.dir, f), b, 0o600); err != nil {
			return fmt.Errorf("save VM %s: %w", v.spec.Name, err)
		}
	}
	return nil
}

// loadPersisted reads a VM's definition from its run directory: from vm.json, or, when
// that is torn or missing, from its copy, in which case note says so.
func loadPersisted(dir string) (p persisted, note string, err error) {
	p, err = readPersisted(filepath.Join(dir, stateFile))
	if err == nil {
		return p, "", nil
	}
	p, berr := readPersisted(filepath.Join(dir, backupFile))
	if berr != nil {
		return persisted{}, "", fmt.Errorf("%w; and its copy: %w", err, berr)
	}
	return p, fmt.Sprintf("the VM's definition %s could not be read (%v); the agent used its copy %s", stateFile, err, backupFile), nil
}

// readPersisted reads one state file; a file that does not name a VM is an error.
func readPersisted(path string) (persisted, error) {
	var p persisted
	b, err := os.ReadFile(path)
	if err != nil {
		return p, err
	}
	if err := json.Unmarshal(b, &p); err != nil {
		return p, fmt.Errorf("%s is not valid JSON: %w", path, err)
	}
	if p.Spec.Name == "" || !canonicalUUID(p.Spec.UUID) {
		return p, fmt.Errorf("%s names no VM (no name or UUID)", path)
	}
	return p, nil
}

// removeDir deletes the VM's state directory for good: no save that races with it (the
// process watcher saves on exit) can bring a file back.
func (v *vm) removeDir() error {
	v.saveMu.Lock()
	defer v.saveMu.Unlock()
	v.gone = true
	v.dropStream()
	return os.RemoveAll(v.dir)
}

// dropStream removes the socket directory of a carried incoming stream, if any.
func (v *vm) dropStream() {
	if v.stream != "" {
		_ = os.RemoveAll(v.stream)
	}
}

func (a *Agent) get(name string) (*vm, error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	v, ok := a.vms[name]
	if !ok {
		return nil, api.NotFound("host %s has no VM named %s", a.cfg.Name, name)
	}
	return v, nil
}

func (a *Agent) status(v *vm) api.VMStatus {
	st := api.VMStatus{Name: v.spec.Name, UUID: v.spec.UUID, State: v.state, Error: v.errMsg, Accel: v.accel}
	if v.proc != nil {
		st.PID = v.proc.PID
	} else {
		st.Exit, st.ExitedAt = v.exit, v.exitedAt
	}
	if v.state == api.VMRunning {
		st.Memory = v.memory // of a guest that runs: a stopped one's memory is gone
		if v.cpu.ok {
			st.CPU = math.Round(v.cpu.cores*1000) / 1000
		}
	}
	return st
}

func (a *Agent) statuses() []api.VMStatus {
	a.mu.Lock()
	defer a.mu.Unlock()
	out := make([]api.VMStatus, 0, len(a.vms))
	for _, v := range a.vms {
		out = append(out, a.status(v))
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out
}

func (a *Agent) setState(v *vm, state, errMsg string) {
	a.mu.Lock()
	v.state, v.errMsg = state, errMsg
	a.mu.Unlock()
}

// Define stores a VM on this host and creates the disks it asks for. Defining the same
// VM (same name and UUID) again is a no-op.
func (a *Agent) Define(ctx context.Context, spec api.VMSpec) (api.VMStatus, bool, error) {
	if err := a.validateSpec(spec); err != nil {
		return api.VMStatus{}, false, api.Errorf(422, "invalid_spec", "%v", err)
	}
	a.mu.Lock()
	if old, ok := a.vms[spec.Name]; ok {
		a.mu.Unlock()
		if old.spec.UUID == spec.UUID {
			return a.statusLocked(old), false, nil
		}
		return api.VMStatus{}, false, api.Conflict("host %s already has a VM named %s (UUID %s)", a.cfg.Name, spec.Name, old.spec.UUID)
	}
	dir, err := a.vmDir(spec.UUID)
	if err == nil {
		err = a.claimLocked(spec, dir)
	}
	if err != nil {
		a.mu.Unlock()
		return api.VMStatus{}, false, err
	}
	v := &vm{spec: spec, dir: dir, state: api.VMStopped}
	// Reserve the name while the disks are created, so a concurrent define fails fast.
	a.vms[spec.Name] = v
	v.op.Lock()
	a.mu.Unlock()
	defer v.op.Unlock()

	undo := func() {
		for _, p := range v.owned {
			_ = os.Remove(p)
		}
		_ = v.removeDir()
		a.mu.Lock()
		delete(a.vms, spec.Name)
		a.mu.Unlock()
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		undo()
		return api.VMStatus{}, false, fmt.Errorf("create VM directory: %w", err)
	}
	for i, d := range spec.Disks {
		p, _ := a.datastorePath(d.Datastore, d.Path)
		if _, err := os.Stat(p); err == nil {
			continue
		}
		if err := createDisk(ctx, p, d.Format, d.SizeMiB); err != nil {
			undo()
			return api.VMStatus{}, false, api.Errorf(422, "disk_create_failed", "disk %d: %v", i, err)
		}
		v.owned = append(v.owned, p)
	}
	if err := v.save(); err != nil {
		undo()
		return api.VMStatus{}, false, err
	}
	a.log.Info("VM defined", "vm", spec.Name, "uuid", spec.UUID)
	return a.statusLocked(v), true, nil
}

func (a *Agent) statusLocked(v *vm) api.VMStatus {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.status(v)
}

func createDisk(ctx context.Context, path, format string, sizeMiB int) error {
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return fmt.Errorf("create directory for %s: %w", path, err)
	}
	out, err := exec.CommandContext(ctx, "qemu-img", "create", "-q", "-f", format, path, fmt.Sprintf("%dM", sizeMiB)).CombinedOutput()
	if err != nil {
		_ = os.Remove(path)
		return fmt.Errorf("qemu-img create %s: %s", path, strings.TrimSpace(string(out)))
	}
	return nil
}

// qemuSpec turns a VM spec into what the qemu package starts.
func (a *Agent) qemuSpec(v *vm, accel string) (qemu.Spec, error) {
	s := v.spec
	q := qemu.Spec{
		Name: s.Name, UUID: s.UUID, CPUs: s.CPUs, MemoryMiB: s.MemoryMiB, CPUModel: s.CPUModel, Machine: s.Machine,
		Accel: accel, Cmdline: s.Boot.Cmdline, BootFromDisk: s.Boot.FromDisk, RunDir: v.dir,
	}
	var err error
	if s.Boot.Kernel != "" {
		if q.Kernel, err = a.resolvePath(s.Boot.Kernel); err != nil {
			return q, err
		}
		if s.Boot.Initrd != "" {
			if q.Initrd, err = a.resolvePath(s.Boot.Initrd); err != nil {
				return q, err
			}
		}
	}
	for i, d := range s.Disks {
		p, err := a.datastorePath(d.Datastore, d.Path)
		if err != nil {
			return q, err
		}
		q.Disks = append(q.Disks, qemu.Disk{ID: fmt.Sprintf("disk%d", i), Path: p, Format: d.Format})
	}
	for i, n := range s.NICs {
		q.NICs = append(q.NICs, qemu.NIC{ID: fmt.Sprintf("net%d", i), MAC: n.MAC, Tap: netdev.TapName(s.UUID, i)})
	}
	return q, nil
}

func (a *Agent) createTaps(v *vm) error {
	a.endLinger(v.spec.UUID)
	for i, n := range v.spec.NICs {
		br := a.cfg.Networks[n.Network]
		if br == "" {
			return fmt.Errorf("NIC %d: host %s has no network %q", i, a.cfg.Name, n.Network)
		}
		if err := netdev.CreateTap(netdev.TapName(v.spec.UUID, i), br, 0); err != nil {
			return fmt.Errorf("NIC %d: %w", i, err)
		}
	}
	return nil
}

func (a *Agent) deleteTaps(v *vm) {
	for i := range v.spec.NICs {
		if err := netdev.DeleteTap(netdev.TapName(v.spec.UUID, i)); err != nil {
			a.log.Warn("delete TAP", "vm", v.spec.Name, "err", err)
		}
	}
}

// Start powers a VM on. A QEMU that fails to start leaves the VM in the error state with
// QEMU's own message, and its TAPs removed.
func (a *Agent) Start(ctx context.Context, name string) (api.VMStatus, error) {
	v, err := a.get(name)
	if err != nil {
		return api.VMStatus{}, err
	}
	v.op.Lock()
	defer v.op.Unlock()
	if st := a.statusLocked(v); st.State == api.VMRunning {
		return st, nil
	}
	probe, err := a.waitAccel(ctx)
	if err != nil {
		return api.VMStatus{}, err
	}
	// failWith leaves the VM in the error state with err as the reason, and answers with
	// a 422 of that code.
	failWith := func(code string, err error) (api.VMStatus, error) {
		a.deleteTaps(v)
		a.setState(v, api.VMError, err.Error())
		_ = v.save()
		a.log.Warn("VM failed to start", "vm", name, "err", err)
		return a.statusLocked(v), api.Errorf(422, code, "VM %s did not start on host %s: %v", name, a.cfg.Name, err)
	}
	fail := func(err error) (api.VMStatus, error) { return failWith("start_failed", err) }
	// A CPU model that needs flags this host lacks is refused before QEMU runs. A model
	// outside QEMU's catalog of baselines (host, max, or a name QEMU does not know) is
	// left to QEMU, which says why if it refuses.
	if err := a.checkCPU(ctx, v.spec.CPUModel); err != nil && !errors.Is(err, qemu.ErrUnknownCPUModel) {
		var se *api.StatusError
		if errors.As(err, &se) && se.Code == codeCPUUnsupported {
			return failWith(codeCPUUnsupported, err)
		}
		return api.VMStatus{}, err
	}
	a.setState(v, api.VMStarting, "")
	q, err := a.qemuSpec(v, probe.Accel)
	if err != nil {
		return fail(err)
	}
	if err := a.createTaps(v); err != nil {
		return fail(err)
	}
	p, err := qemu.Start(ctx, a.cfg.QEMU, q)
	if err != nil {
		return fail(err)
	}
	a.mu.Lock()
	v.proc, v.state, v.errMsg, v.accel, v.stopping = p, api.VMRunning, "", probe.Accel, false
	v.exit, v.exitedAt = "", nil
	v.memory = nil // a fresh guest: what the last one did says nothing
	a.mu.Unlock()
	_ = v.save()
	a.watch(v, p)
	a.log.Info("VM started", "vm", name, "pid", p.PID, "accel", probe.Accel)
	return a.statusLocked(v), nil
}

// watch follows a VM's QEMU process until it exits or the agent stops.
func (a *Agent) watch(v *vm, p *qemu.Process) {
	events := a.listenExit(a.runCtx, qemu.Spec{RunDir: p.RunDir}.EventsPath())
	a.mu.Lock()
	v.events = events
	a.mu.Unlock()
	a.wg.Add(1)
	go func() {
		defer a.wg.Done()
		if err := p.Wait(a.runCtx); err != nil {
			return // the agent is stopping; the VM keeps running
		}
		a.mu.Lock()
		wanted := v.stopping
		a.mu.Unlock()
		exit := events.verdict(wanted, time.Second)
		exitedAt := time.Now().UTC()
		a.mu.Lock()
		if v.proc != p {
			a.mu.Unlock()
			return
		}
		v.exit, v.exitedAt = exit, &exitedAt
		if v.incoming != "" {
			// The migration bringing the VM in failed: QEMU exits on a broken stream.
			a.mu.Unlock()
			a.dropIncoming(v)
			a.log.Info("incoming VM's QEMU ended; the copy is dropped", "vm", v.spec.Name)
			return
		}
		wanted = wanted || v.stopping
		v.proc, v.state, v.stopping = nil, api.VMStopped, false
		if !wanted {
			v.errMsg = ""
		} else {
			v.exit = api.ExitRequested
		}
		a.mu.Unlock()
		a.deleteTaps(v)
		_ = v.save()
		a.log.Info("VM stopped", "vm", v.spec.Name, "requested", wanted, "exit", v.exit)
		go a.kick()
	}()
}

// Stop powers a VM off: an ACPI shutdown with a grace period, then a hard stop. With
// force, it stops at once.
func (a *Agent) Stop(ctx context.Context, name string, force bool, grace time.Duration) (api.VMStatus, error) {
	v, err := a.get(name)
	if err != nil {
		return api.VMStatus{}, err
	}
	v.op.Lock()
	defer v.op.Unlock()
	a.mu.Lock()
	p := v.proc
	if p == nil {
		if v.state != api.VMError {
			v.state = api.VMStopped
		}
		a.mu.Unlock()
		return a.statusLocked(v), nil
	}
	v.stopping, v.state = true, api.VMStopping
	a.mu.Unlock()
	if force {
		err = p.Kill()
	} else {
		err = p.Shutdown(ctx, grace)
	}
	if err != nil {
		a.setState(v, api.VMRunning, "")
		return a.statusLocked(v), fmt.Errorf("stop VM %s: %w", name, err)
	}
	a.mu.Lock()
	if v.proc == p {
		now := time.Now().UTC()
		v.proc, v.state, v.errMsg, v.stopping = nil, api.VMStopped, "", false
		v.exit, v.exitedAt = api.ExitRequested, &now
	}
	a.mu.Unlock()
	a.deleteTaps(v)
	_ = v.save()
	a.log.Info("VM stopped", "vm", name, "force", force)
	return a.statusLocked(v), nil
}

// Delete removes a stopped VM from this host with the disks the host created for it.
func (a *Agent) Delete(ctx context.Context, name string) error {
	v, err := a.get(name)
	if err != nil {
		return err
	}
	v.op.Lock()
	defer v.op.Unlock()
	if st := a.statusLocked(v); st.State == api.VMRunning || st.State == api.VMStopping || st.State == api.VMStarting {
		return api.Conflict("VM %s is %s; stop it before deleting it", name, st.State)
	}
	a.deleteTaps(v)
	for _, p := range v.owned {
		if err := os.Remove(p); err != nil && !errors.Is(err, os.ErrNotExist) {
			return fmt.Errorf("delete disk %s of VM %s: %w", p, name, err)
		}
		_ = os.Remove(filepath.Dir(p)) // the VM's folder on the datastore, if now empty
	}
	if err := v.removeDir(); err != nil {
		return fmt.Errorf("delete state of VM %s: %w", name, err)
	}
	a.mu.Lock()
	delete(a.vms, name)
	a.mu.Unlock()
	a.log.Info("VM deleted", "vm", name)
	return nil
}

// adoptAll loads the VMs in the state directory and re-attaches to those still running.
// A VM whose definition cannot be read at all is not forgotten while its QEMU runs
// (see recoverVM).
func (a *Agent) adoptAll(ctx context.Context) error {
	entries, err := os.ReadDir(filepath.Join(a.cfg.StateDir, "vms"))
	if err != nil {
		return fmt.Errorf("read the VMs' state: %w", err)
	}
	for _, e := range entries {
		if !e.IsDir() {
			continue
		}
		dir := filepath.Join(a.cfg.StateDir, "vms", e.Name())
		p, note, err := loadPersisted(dir)
		if err != nil {
			v, rerr := a.recoverVM(ctx, dir, err)
			if rerr != nil {
				a.log.Warn("a VM directory holds no readable definition and no running QEMU; it is left as it is", "dir", dir, "err", err, "qemu", rerr)
				continue
			}
			a.mu.Lock()
			a.vms[v.spec.Name] = v
			a.mu.Unlock()
			continue
		}
		if note != "" {
			a.log.Warn("VM state recovered from its copy", "dir", dir, "vm", p.Spec.Name, "note", note)
		}
		if err := p.Spec.CheckBounds(); err != nil {
			// Only an older agent could have stored it; it cannot run, and handling its
			// TAPs could not end well.
			a.log.Warn("skipping a VM whose definition is beyond the limits; remove its state directory", "dir", dir, "err", err)
			continue
		}
		v := &vm{spec: p.Spec, dir: dir, owned: p.Owned, state: api.VMStopped,
			incoming: p.Incoming, ticket: p.Ticket, outgoing: p.Outgoing, exit: p.Exit, exitedAt: p.ExitedAt}
		proc, err := qemu.Adopt(ctx, v.dir, p.Spec.UUID)
		switch {
		case err == nil && v.incoming != "":
			v.proc, v.state = proc, api.VMIncoming
			a.watch(v, proc)
			a.log.Info("re-adopted an incoming VM; waiting for its migration to be settled", "vm", v.spec.Name, "migration", v.incoming)
			a.settleIncoming(ctx, v, proc)
		case err == nil && v.outgoing != nil:
			v.proc, v.state = proc, api.VMRunning
			a.watch(v, proc)
			a.settleOutgoing(v, proc)
		case err != nil && errors.Is(err, qemu.ErrNotRunning) && v.incoming != "":
			a.dropIncoming(v)
			continue
		case err == nil:
			v.proc, v.state = proc, api.VMRunning
			if err := a.createTaps(v); err != nil { // idempotent: they exist while QEMU holds them
				a.log.Warn("re-adopted VM has a TAP problem", "vm", v.spec.Name, "err", err)
			}
			a.watch(v, proc)
			a.log.Info("re-adopted running VM", "vm", v.spec.Name, "pid", proc.PID)
		case errors.Is(err, qemu.ErrNotRunning):
			if p.Error != "" {
				v.state, v.errMsg = api.VMError, p.Error
			}
			if p.Running {
				// It ran when this agent last saw it: the host restarted, or QEMU
				// ended while the agent was down.
				now := time.Now().UTC()
				v.exit, v.exitedAt = api.ExitLost, &now
				if err := v.save(); err != nil {
					a.log.Warn("could not record that a VM's QEMU was lost", "vm", v.spec.Name, "err", err)
				}
				a.log.Warn("VM's QEMU was gone when the agent started", "vm", v.spec.Name)
			}
			a.deleteTaps(v)
		default:
			return fmt.Errorf("re-adopt VM %s: %w", p.Spec.Name, err)
		}
		if note != "" {
			a.mu.Lock()
			v.errMsg = note
			a.mu.Unlock()
			if err := v.save(); err != nil {
				a.log.Warn("could not write the recovered VM state back", "vm", v.spec.Name, "err", err)
			}
		}
		a.mu.Lock()
		a.vms[v.spec.Name] = v
		a.mu.Unlock()
	}
	return nil
}

// recoverVM keeps a VM whose definition (both state files) cannot be read but whose
// QEMU still runs in dir: it re-adopts the QEMU, rebuilds the definition from QEMU's
// command line, writes it back, and reports the VM with an error that says what
// happened. Killing or forgetting a running VM because a file was damaged would lose
// the guest. It fails when no QEMU of this directory runs.
func (a *Agent) recoverVM(ctx context.Context, dir string, cause error) (*vm, error) {
	proc, q, err := qemu.AdoptRunDir(ctx, dir)
	if err != nil {
		return nil, err
	}
	spec := a.specFromQEMU(q)
	v := &vm{spec: spec, dir: dir, proc: proc, state: api.VMRunning, accel: q.Accel}
	if q.Incoming != "" {
		v.state = api.VMIncoming // its migration's id is lost: only the source can settle it
	}
	v.errMsg = fmt.Sprintf("the VM's definition could not be read (%v); the agent found its QEMU (pid %d) running and keeps it, "+
		"with the definition rebuilt from QEMU's command line (compare it with the center's)", cause, proc.PID)
	if err := v.save(); err != nil {
		a.log.Warn("could not write the rebuilt VM definition", "vm", spec.Name, "err", err)
	}
	a.watch(v, proc)
	a.log.Error("VM definition lost; re-adopted its running QEMU from its command line", "vm", spec.Name, "uuid", spec.UUID,
		"pid", proc.PID, "dir", dir, "err", cause)
	return v, nil
}

// inDatastore finds the datastore that holds the host path p, and p's path in it.
func (a *Agent) inDatastore(p string) (ds, rel string, ok bool) {
	for _, name := range a.datastoreNames() {
		if r, err := filepath.Rel(a.cfg.Datastores[name], p); err == nil && filepath.IsLocal(r) {
			return name, r, true
		}
	}
	return "", "", false
}

// datastoreRef writes a host path as "[datastore] path" when a datastore holds it.
func (a *Agent) datastoreRef(p string) string {
	if ds, rel, ok := a.inDatastore(p); ok {
		return "[" + ds + "] " + rel
	}
	return p
}

// specFromQEMU turns the Spec read from a QEMU command line back into the VM's
// definition: disks as paths in this host's datastores, NICs on the networks whose
// bridges hold their TAPs. What the command line does not say (the migration policy,
// the disks this host created) is left empty.
func (a *Agent) specFromQEMU(q qemu.Spec) api.VMSpec {
	s := api.VMSpec{Name: q.Name, UUID: q.UUID, CPUs: q.CPUs, MemoryMiB: q.MemoryMiB, CPUModel: q.CPUModel,
		Boot: api.Boot{Kernel: a.datastoreRef(q.Kernel), Initrd: a.datastoreRef(q.Initrd), Cmdline: q.Cmdline, FromDisk: q.BootFromDisk}}
	for _, d := range q.Disks {
		if ds, rel, ok := a.inDatastore(d.Path); ok {
			s.Disks = append(s.Disks, api.Disk{Datastore: ds, Path: rel, Format: d.Format})
		}
	}
	for _, n := range q.NICs {
		nic := api.NIC{MAC: n.MAC}
		for name, br := range a.cfg.Networks {
			if b, err := netdev.BridgeInfo(br); err == nil && slices.Contains(b.Ports, n.Tap) {
				nic.Network = name
			}
		}
		s.NICs = append(s.NICs, nic)
	}
	return s
}
