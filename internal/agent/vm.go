package agent

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/godwit/godwit/internal/api"
	"github.com/godwit/godwit/internal/netdev"
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
	// resumedAt, while a VM comes in, stops the reader of its QEMU's events and returns
	// when QEMU resumed it.
	resumedAt func() time.Time

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
	Outgoing *outgoingRecord `json:"outgoing,omitempty"`
}

const maxSocketPath = 107

func (a *Agent) vmDir(uuid string) (string, error) {
	id := strings.ReplaceAll(uuid, "-", "")
	if len(id) > 16 {
		id = id[:16]
	}
	dir := filepath.Join(a.cfg.StateDir, "vms", id)
	if len(filepath.Join(dir, "console.sock")) > maxSocketPath {
		return "", fmt.Errorf("state directory %s is too long for QEMU's unix sockets (max %d bytes); choose a shorter --state-dir", a.cfg.StateDir, maxSocketPath)
	}
	return dir, nil
}

func (v *vm) save() error {
	v.saveMu.Lock()
	defer v.saveMu.Unlock()
	if v.gone {
		return nil
	}
	b, err := json.MarshalIndent(persisted{Spec: v.spec, Owned: v.owned, Error: v.errMsg, Incoming: v.incoming, Outgoing: v.outgoing}, "", "  ")
	if err != nil {
		return err
	}
	tmp := filepath.Join(v.dir, "vm.json.tmp")
	if err := os.WriteFile(tmp, b, 0o644); err != nil {
		return fmt.Errorf("save VM %s: %w", v.spec.Name, err)
	}
	return os.Rename(tmp, filepath.Join(v.dir, "vm.json"))
}

// removeDir deletes the VM's state directory for good: no save that races with it (the
// process watcher saves on exit) can bring a file back.
func (v *vm) removeDir() error {
	v.saveMu.Lock()
	defer v.saveMu.Unlock()
	v.gone = true
	return os.RemoveAll(v.dir)
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
	for _, o := range a.vms {
		if o.spec.UUID == spec.UUID {
			a.mu.Unlock()
			return api.VMStatus{}, false, api.Conflict("host %s already has a VM with UUID %s (%s)", a.cfg.Name, spec.UUID, o.spec.Name)
		}
	}
	dir, err := a.vmDir(spec.UUID)
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
		Name: s.Name, UUID: s.UUID, CPUs: s.CPUs, MemoryMiB: s.MemoryMiB, CPUModel: s.CPUModel,
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
	a.mu.Unlock()
	_ = v.save()
	a.watch(v, p)
	a.log.Info("VM started", "vm", name, "pid", p.PID, "accel", probe.Accel)
	return a.statusLocked(v), nil
}

// watch follows a VM's QEMU process until it exits or the agent stops.
func (a *Agent) watch(v *vm, p *qemu.Process) {
	a.wg.Add(1)
	go func() {
		defer a.wg.Done()
		if err := p.Wait(a.runCtx); err != nil {
			return // the agent is stopping; the VM keeps running
		}
		a.mu.Lock()
		if v.proc != p {
			a.mu.Unlock()
			return
		}
		if v.incoming != "" {
			// The migration bringing the VM in failed: QEMU exits on a broken stream.
			a.mu.Unlock()
			a.dropIncoming(v)
			a.log.Info("incoming VM's QEMU ended; the copy is dropped", "vm", v.spec.Name)
			return
		}
		wanted := v.stopping
		v.proc, v.state, v.stopping = nil, api.VMStopped, false
		if !wanted {
			v.errMsg = ""
		}
		a.mu.Unlock()
		a.deleteTaps(v)
		_ = v.save()
		a.log.Info("VM stopped", "vm", v.spec.Name, "requested", wanted)
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
		v.proc, v.state, v.errMsg, v.stopping = nil, api.VMStopped, "", false
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
func (a *Agent) adoptAll(ctx context.Context) error {
	dirs, err := filepath.Glob(filepath.Join(a.cfg.StateDir, "vms", "*", "vm.json"))
	if err != nil {
		return err
	}
	for _, f := range dirs {
		b, err := os.ReadFile(f)
		if err != nil {
			return fmt.Errorf("read %s: %w", f, err)
		}
		var p persisted
		if err := json.Unmarshal(b, &p); err != nil {
			a.log.Warn("skipping unreadable VM state", "file", f, "err", err)
			continue
		}
		if err := p.Spec.CheckBounds(); err != nil {
			// Only an older agent could have stored it; it cannot run, and handling its
			// TAPs could not end well.
			a.log.Warn("skipping a VM whose definition is beyond the limits; remove its state directory", "file", f, "err", err)
			continue
		}
		v := &vm{spec: p.Spec, dir: filepath.Dir(f), owned: p.Owned, state: api.VMStopped,
			incoming: p.Incoming, outgoing: p.Outgoing}
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
			a.deleteTaps(v)
		default:
			return fmt.Errorf("re-adopt VM %s: %w", p.Spec.Name, err)
		}
		a.mu.Lock()
		a.vms[v.spec.Name] = v
		a.mu.Unlock()
	}
	return nil
}
