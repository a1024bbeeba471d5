package center

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"path"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/google/uuid"

	"github.com/godwit/godwit/internal/api"
	"github.com/godwit/godwit/internal/audit"
	"github.com/godwit/godwit/internal/migration"
	"github.com/godwit/godwit/internal/placement"
	"github.com/godwit/godwit/internal/store"
)

var vmName = nameRule("VM")

const (
	defaultMemoryMiB = 512
	defaultCPUs      = 1
	defaultCPUModel  = "qemu64"
	defaultDataDisk  = 64
	maxMemoryMiB     = 4 << 20
	maxCPUs          = 256
)

func (c *Center) vmView(r store.VMRecord, lastBeat map[string]time.Time) api.VM {
	v := api.VM{
		Name: r.Spec.Name, UUID: r.Spec.UUID, Host: r.Host, State: r.State, Desired: r.Desired, Error: r.Error,
		CPUs: r.Spec.CPUs, MemoryMiB: r.Spec.MemoryMiB, Spec: r.Spec, PID: r.PID, Accel: r.Accel,
		Created: r.Created, Updated: r.Updated,
	}
	if len(r.Spec.NICs) > 0 {
		v.MAC = r.Spec.NICs[0].MAC
		v.IP = strings.SplitN(r.Spec.NICs[0].IP, "/", 2)[0]
	}
	if t, ok := lastBeat[r.Host]; !ok || !c.connected(store.HostRecord{LastHeartbeat: t}) {
		v.State = api.VMUnknown
		v.Error = fmt.Sprintf("host %s is disconnected; last known state: %s", r.Host, r.State)
	}
	return v
}

// hostMap returns when each host last beat, which is all a VM's view needs of its host
// (its facts are not read).
func (c *Center) hostMap(ctx context.Context) (map[string]time.Time, error) {
	return c.store.LastHeartbeats(ctx)
}

// listVMs returns a page of the VMs f selects (see api.Page), and how many it selects.
func (c *Center) listVMs(ctx context.Context, f store.VMFilter, p api.Page) ([]api.VM, int, error) {
	hosts, err := c.hostMap(ctx)
	if err != nil {
		return nil, 0, err
	}
	recs, total, err := c.store.VMsPage(ctx, f, p.After, p.Limit)
	if err != nil {
		return nil, 0, err
	}
	out := make([]api.VM, 0, len(recs))
	for _, r := range recs {
		out = append(out, c.vmView(r, hosts))
	}
	return out, total, nil
}

func (c *Center) getVM(ctx context.Context, name string) (api.VM, error) {
	r, err := c.record(ctx, name)
	if err != nil {
		return api.VM{}, err
	}
	hosts, err := c.hostMap(ctx)
	if err != nil {
		return api.VM{}, err
	}
	return c.vmView(r, hosts), nil
}

func (c *Center) record(ctx context.Context, name string) (store.VMRecord, error) {
	r, err := c.store.VM(ctx, name)
	if errors.Is(err, store.ErrNotFound) {
		return r, api.NotFound("no VM named %s; `godwit vm list` shows the VMs", name)
	}
	return r, err
}

func invalid(format string, args ...any) error {
	return api.Errorf(http.StatusUnprocessableEntity, "invalid_spec", format, args...)
}

// createVM validates a request, places the VM, reserves its name and addresses, and has
// the host define it. When anything fails, nothing is left behind.
func (c *Center) createVM(ctx context.Context, req api.CreateVMRequest) (api.VM, error) {
	spec := api.VMSpec{Name: req.Name, UUID: uuid.NewString(), CPUs: defaultCPUs, MemoryMiB: defaultMemoryMiB,
		CPUModel: req.CPUModel, Machine: req.Machine, Boot: req.Boot, Disks: req.Disks, NICs: req.NICs, MigrationPolicy: req.MigrationPolicy}
	if spec.Machine == "" {
		spec.Machine = api.MachineQ35Lean
	}
	if err := spec.CheckBounds(); err != nil {
		return api.VM{}, invalid("%v", err)
	}
	if len(req.Image) > api.MaxShortName {
		return api.VM{}, invalid("the image name is %d bytes long; at most %d are allowed", len(req.Image), api.MaxShortName)
	}
	if err := vmName(req.Name); err != nil {
		return api.VM{}, err
	}
	if req.CPUs != nil {
		spec.CPUs = *req.CPUs
	}
	if req.MemoryMiB != nil {
		spec.MemoryMiB = *req.MemoryMiB
	}
	if spec.MemoryMiB < 16 || spec.MemoryMiB > maxMemoryMiB {
		return api.VM{}, invalid("memory must be between 16 and %d MiB, not %d", maxMemoryMiB, spec.MemoryMiB)
	}
	if spec.CPUs < 1 || spec.CPUs > maxCPUs {
		return api.VM{}, invalid("cpus must be between 1 and %d, not %d", maxCPUs, spec.CPUs)
	}
	if spec.CPUModel == "" {
		spec.CPUModel = c.cfg.CPUBaseline // the cluster's baseline, as EVC would
	}
	if req.MigrationPolicy != "" {
		p, err := migration.LookupPolicy(req.MigrationPolicy)
		if err != nil {
			return api.VM{}, invalid("%v", err)
		}
		spec.MigrationPolicy = p.Name
	}
	if _, err := c.record(ctx, req.Name); err == nil {
		return api.VM{}, api.Conflict("a VM named %s already exists; choose another name or delete it first", req.Name)
	}
	useImage := spec.Boot.Kernel == "" && !spec.Boot.FromDisk
	if useImage && req.Image == "" {
		req.Image = api.DefaultImage
	}
	if !useImage && req.Image != "" {
		return api.VM{}, invalid("give either an image or a kernel/disk to boot, not both")
	}
	if spec.Boot.Initrd != "" && spec.Boot.Kernel == "" {
		return api.VM{}, invalid("an initrd needs a kernel (--kernel)")
	}
	if spec.Boot.Kernel != "" && spec.Boot.FromDisk {
		return api.VM{}, invalid("boot from a kernel or from a disk, not both")
	}

	host, err := c.place(ctx, req, spec)
	if err != nil {
		return api.VM{}, err
	}
	audit.Params(ctx, map[string]any{"host": host.Facts.Name, "uuid": spec.UUID})
	if useImage {
		img, ds := findImage(host, req.Image)
		if img == nil {
			return api.VM{}, invalid("host %s has no image %q on any datastore", host.Facts.Name, req.Image)
		}
		switch {
		case img.Kernel != "":
			spec.Boot = api.Boot{Kernel: img.Kernel, Initrd: img.Initrd, Cmdline: img.Cmdline}
		default:
			spec.Boot = api.Boot{FromDisk: true}
			spec.Disks = append([]api.Disk{{Datastore: ds, Path: strings.TrimPrefix(img.Disk, "["+ds+"] "), Format: diskFormat(img.Disk)}}, spec.Disks...)
		}
		size := defaultDataDisk
		if req.DataDiskMiB != nil {
			size = *req.DataDiskMiB
		}
		if size > 0 && img.Kernel != "" && len(req.Disks) == 0 {
			spec.Disks = append(spec.Disks, api.Disk{Datastore: ds, Path: path.Join("vms", spec.Name, "data.qcow2"), Format: "qcow2", SizeMiB: size})
		}
	}
	if err := resolveDiskPaths(host, spec.Disks); err != nil {
		return api.VM{}, err
	}
	if err := checkDisks(host, spec.Disks); err != nil {
		return api.VM{}, err
	}
	if len(spec.NICs) == 0 && len(host.Facts.Networks) > 0 {
		spec.NICs = []api.NIC{{Network: host.Facts.Networks[0].Name}}
	}

	now := c.now()
	c.allocMu.Lock()
	err = c.assignAddresses(ctx, host, &spec)
	if err == nil {
		if useImage && len(spec.NICs) > 0 && spec.NICs[0].IP != "" && spec.Boot.Kernel != "" {
			spec.Boot.Cmdline = strings.TrimSpace(fmt.Sprintf("%s godwit.ip=%s godwit.hostname=%s", spec.Boot.Cmdline, spec.NICs[0].IP, spec.Name))
		}
		if berr := spec.CheckBounds(); berr != nil { // the image and the addresses added to it
			err = invalid("%v", berr)
		}
	}
	if err == nil {
		err = c.store.InsertVM(ctx, store.VMRecord{Spec: spec, Host: host.Facts.Name, Desired: api.VMStopped,
			State: api.VMStopped, Created: now, Updated: now})
	}
	if err == nil {
		for _, n := range spec.NICs {
			if _, pooled := c.cfg.Pools[n.Network]; pooled && n.IP != "" {
				if cerr := c.store.SetLastIP(ctx, n.Network, n.IP); cerr != nil {
					c.log.Warn("address cursor not saved; the next VM may reuse a recent address", "err", cerr)
				}
			}
		}
	}
	c.allocMu.Unlock()
	if err != nil {
		var dup *store.DuplicateError
		if errors.As(err, &dup) {
			return api.VM{}, api.Conflict("%v; choose another", dup)
		}
		return api.VM{}, err
	}

	cl, err := c.agent(host, 2*time.Minute)
	if err == nil {
		err = cl.Do(ctx, http.MethodPut, "/agent/v1/vms/"+spec.Name, spec, nil)
	}
	if err != nil {
		if derr := c.store.DeleteVM(context.WithoutCancel(ctx), spec.Name); derr != nil {
			c.log.Error("could not undo VM record after a failed create", "vm", spec.Name, "err", derr)
		}
		return api.VM{}, hostError(host.Facts.Name, "define VM "+spec.Name, err)
	}
	c.log.Info("VM created", "vm", spec.Name, "host", host.Facts.Name, "uuid", spec.UUID)
	if req.Start {
		return c.startVM(ctx, spec.Name)
	}
	return c.getVM(ctx, spec.Name)
}

// hostError keeps a host's 4xx answers as they are (they describe bad input) and turns
// transport failures into 502 with the host named.
func hostError(host, what string, err error) error {
	var se *api.StatusError
	if errors.As(err, &se) {
		if se.Status >= 400 && se.Status < 500 {
			return se
		}
		return api.Errorf(http.StatusBadGateway, "host_failed", "host %s could not %s: %s", host, what, se.Msg)
	}
	return api.Errorf(http.StatusBadGateway, "host_unreachable", "host %s could not be reached to %s: %v", host, what, err)
}

func diskFormat(p string) string {
	if strings.HasSuffix(p, ".qcow2") {
		return "qcow2"
	}
	return "raw"
}

func findImage(h store.HostRecord, name string) (*api.Image, string) {
	for _, ds := range h.Facts.Datastores {
		for i := range ds.Images {
			if ds.Images[i].Name == name {
				return &ds.Images[i], ds.Name
			}
		}
	}
	return nil, ""
}

func hasDatastore(h store.HostRecord, name string) bool {
	for _, d := range h.Facts.Datastores {
		if d.Name == name {
			return true
		}
	}
	return false
}

func hasNetwork(h store.HostRecord, name string) bool {
	for _, n := range h.Facts.Networks {
		if n.Name == name {
			return true
		}
	}
	return false
}

// resolveDiskPaths turns disks given as absolute paths into datastore-relative ones.
func resolveDiskPaths(h store.HostRecord, disks []api.Disk) error {
	for i := range disks {
		d := &disks[i]
		if d.Datastore != "" || !strings.HasPrefix(d.Path, "/") {
			continue
		}
		for _, ds := range h.Facts.Datastores {
			root := strings.TrimRight(ds.Path, "/") + "/"
			if strings.HasPrefix(d.Path, root) {
				d.Datastore, d.Path = ds.Name, strings.TrimPrefix(d.Path, root)
				break
			}
		}
		if d.Datastore == "" {
			return invalid("disk %d: %s is not inside a datastore of host %s; disks must live on a datastore", i, d.Path, h.Facts.Name)
		}
	}
	return nil
}

func checkDisks(h store.HostRecord, disks []api.Disk) error {
	for i, d := range disks {
		if d.Datastore == "" || d.Path == "" {
			return invalid("disk %d needs a datastore and a path", i)
		}
		if !hasDatastore(h, d.Datastore) {
			return invalid("disk %d: datastore %q is unknown on host %s", i, d.Datastore, h.Facts.Name)
		}
		if d.Format == "" {
			return invalid("disk %d: give its format, raw or qcow2", i)
		}
		if d.Format != "raw" && d.Format != "qcow2" {
			return invalid("disk %d: format must be raw or qcow2, not %q", i, d.Format)
		}
		if d.SizeMiB < 0 {
			return invalid("disk %d: size must not be negative", i)
		}
	}
	return nil
}

// place decides where a new VM goes with the placement engine, as an initial placement
// (no source host): the same checks as the migration wizard's — connected, healthy, not
// in maintenance, CPU model, memory (placement.MemoryFits), datastores, networks, image —
// and the same ranking. With req.Host it checks that host and refuses, with the
// findings' sentences and the first one's code, a host that cannot take the VM; without
// it, it takes the best-ranked host, or says why no host can take the VM (409 no_host).
func (c *Center) place(ctx context.Context, req api.CreateVMRequest, spec api.VMSpec) (store.HostRecord, error) {
	hosts, err := c.store.Hosts(ctx)
	if err != nil {
		return store.HostRecord{}, err
	}
	if err := knownAnywhere(hosts, req, spec); err != nil {
		return store.HostRecord{}, err
	}
	if req.Host != "" {
		i := slices.IndexFunc(hosts, func(h store.HostRecord) bool { return h.Facts.Name == req.Host })
		if i < 0 {
			return store.HostRecord{}, invalid("there is no host named %q; `godwit host list` shows the hosts", req.Host)
		}
		hosts = hosts[i : i+1]
	} else if len(hosts) == 0 {
		return store.HostRecord{}, api.Errorf(http.StatusConflict, "no_host", "no host has registered yet; start `godwit agent` on a host")
	}
	inputs, err := c.hostInputs(ctx, hosts)
	if err != nil {
		return store.HostRecord{}, err
	}
	rec, err := placement.Recommend(c.newVMInput(ctx, req, spec, hosts), inputs, placement.DefaultWeights())
	if err != nil {
		return store.HostRecord{}, err
	}
	best, ok := rec.Best()
	switch {
	case !ok && req.Host != "":
		errs := rec.Refused[0].Errors
		return store.HostRecord{}, api.Errorf(http.StatusUnprocessableEntity, errs[0].Code, "host %s cannot run VM %s: %s",
			req.Host, spec.Name, findingSentences(errs))
	case !ok:
		var errs []placement.Finding
		for _, r := range rec.Refused {
			errs = append(errs, r.Errors...)
		}
		return store.HostRecord{}, api.Errorf(http.StatusConflict, "no_host", "no host can run VM %s: %s", spec.Name, findingSentences(errs))
	}
	for _, h := range hosts {
		if h.Facts.Name == best.Host {
			return h, nil
		}
	}
	return store.HostRecord{}, fmt.Errorf("the placement engine chose host %s, which is not among the hosts", best.Host)
}

// findingSentences joins the findings' sentences, each once.
func findingSentences(fs []placement.Finding) string {
	msgs := make([]string, len(fs))
	for i, f := range fs {
		msgs[i] = f.Message
	}
	return joinSentences(msgs)
}

// newVMInput describes a VM being created for the placement engine: no source host, the
// datastores of its disks, the networks of its NICs, its image when it boots from one,
// and the CPUID flags its CPU model needs when a host's CPU catalog tells (else the
// engine checks the model's name against each host's models).
func (c *Center) newVMInput(ctx context.Context, req api.CreateVMRequest, spec api.VMSpec, hosts []store.HostRecord) placement.VM {
	v := placement.VM{Name: spec.Name, MemoryMiB: spec.MemoryMiB, CPUs: spec.CPUs, CPUModel: spec.CPUModel, Networks: vmNetworks(spec)}
	for _, d := range spec.Disks {
		// A disk given by an absolute path gets its datastore on the chosen host
		// (resolveDiskPaths).
		if d.Datastore != "" && !slices.Contains(v.Datastores, d.Datastore) {
			v.Datastores = append(v.Datastores, d.Datastore)
		}
	}
	if spec.Boot.Kernel == "" && !spec.Boot.FromDisk {
		v.Image = req.Image
	}
	if v.CPUModel != "" {
		v.CPUFlags = c.catalogFlags(ctx, hosts, v.CPUModel)
	}
	return v
}

// catalogFlags returns the CPUID flags of model as defined by the CPU catalog of the
// first of hosts that has reported one and defines it; nil when none does. Each distinct
// catalog is asked once; a disconnected host's only when the center has it already.
func (c *Center) catalogFlags(ctx context.Context, hosts []store.HostRecord, model string) []string {
	tried := map[string]bool{}
	for _, h := range hosts {
		key := h.Facts.GuestCPU.Catalog
		if key == "" || tried[key] {
			continue
		}
		if _, cached := c.cpuCatalogs.Load(key); !cached && !c.connected(h) {
			continue
		}
		tried[key] = true
		if flags, err := c.modelFlags(ctx, h, model); err == nil {
			return flags
		}
	}
	return nil
}

// knownAnywhere refuses datastores, networks and images that no host has: those are
// mistakes in the request, not a lack of capacity.
func knownAnywhere(hosts []store.HostRecord, req api.CreateVMRequest, spec api.VMSpec) error {
	someHost := func(ok func(store.HostRecord) bool) bool {
		for _, h := range hosts {
			if ok(h) {
				return true
			}
		}
		return len(hosts) == 0
	}
	for i, d := range spec.Disks {
		if d.Datastore != "" && !someHost(func(h store.HostRecord) bool { return hasDatastore(h, d.Datastore) }) {
			return invalid("disk %d: there is no datastore %q; `godwit host show HOST` lists a host's datastores", i, d.Datastore)
		}
	}
	for i, n := range spec.NICs {
		if n.Network != "" && !someHost(func(h store.HostRecord) bool { return hasNetwork(h, n.Network) }) {
			return invalid("NIC %d: there is no network %q on any host", i, n.Network)
		}
	}
	if spec.Boot.Kernel == "" && !spec.Boot.FromDisk {
		if !someHost(func(h store.HostRecord) bool { img, _ := findImage(h, req.Image); return img != nil }) {
			return invalid("there is no image %q on any datastore; images live in a datastore's images/NAME/ folder", req.Image)
		}
	}
	return nil
}

// assignAddresses fills in and checks each NIC's MAC and IP. Callers hold allocMu.
func (c *Center) assignAddresses(ctx context.Context, h store.HostRecord, spec *api.VMSpec) error {
	macs, err := c.store.UsedMACs(ctx)
	if err != nil {
		return err
	}
	for i := range spec.NICs {
		n := &spec.NICs[i]
		if n.Network == "" {
			return invalid("NIC %d needs a network", i)
		}
		if !hasNetwork(h, n.Network) {
			return invalid("NIC %d: network %q does not exist on host %s", i, n.Network, h.Facts.Name)
		}
		if n.MAC == "" {
			if n.MAC, err = newMAC(macs); err != nil {
				return err
			}
		} else if n.MAC, err = checkMAC(n.MAC); err != nil {
			return invalid("NIC %d: %v", i, err)
		}
		if owner, taken := macs[n.MAC]; taken {
			return api.Conflict("NIC %d: MAC %s is already used by VM %s; choose another or leave it out", i, n.MAC, owner)
		}
		macs[n.MAC] = spec.Name
		pool, hasPool := c.cfg.Pools[n.Network]
		switch {
		case n.IP != "" && hasPool:
			if n.IP, err = pool.checkIP(n.IP); err != nil {
				return invalid("NIC %d: %v", i, err)
			}
		case n.IP == "" && hasPool:
			used, err := c.store.UsedIPs(ctx, n.Network)
			if err != nil {
				return err
			}
			for _, o := range spec.NICs[:i] {
				used[strings.SplitN(o.IP, "/", 2)[0]] = true
			}
			last, err := c.store.LastIP(ctx, n.Network)
			if err != nil {
				return err
			}
			if n.IP, err = pool.next(used, last); err != nil {
				return api.Errorf(http.StatusConflict, "pool_exhausted", "NIC %d: %v", i, err)
			}
		}
	}
	return nil
}

func (c *Center) hostOf(ctx context.Context, r store.VMRecord, what string) (store.HostRecord, *api.Client, error) {
	audit.Params(ctx, map[string]any{"host": r.Host})
	h, err := c.store.Host(ctx, r.Host)
	if err != nil {
		return h, nil, fmt.Errorf("host %s of VM %s: %w", r.Host, r.Spec.Name, err)
	}
	if !c.connected(h) {
		return h, nil, api.Errorf(http.StatusConflict, "host_disconnected",
			"host %s of VM %s is disconnected, so the VM cannot %s now; try again when the host is back", r.Host, r.Spec.Name, what)
	}
	cl, err := c.agent(h, 3*time.Minute)
	return h, cl, err
}

func (c *Center) startVM(ctx context.Context, name string) (api.VM, error) {
	r, err := c.record(ctx, name)
	if err != nil {
		return api.VM{}, err
	}
	h, cl, err := c.hostOf(ctx, r, "start")
	if err != nil {
		return api.VM{}, err
	}
	if err := c.store.SetDesired(ctx, name, api.VMRunning, c.now()); err != nil {
		return api.VM{}, err
	}
	var st api.VMStatus
	err = cl.Do(ctx, http.MethodPost, "/agent/v1/vms/"+name+"/start", nil, &st)
	if err != nil {
		var se *api.StatusError
		if errors.As(err, &se) && se.Code == "start_failed" {
			_ = c.store.SetState(ctx, name, api.VMStatus{State: api.VMError, Error: se.Msg}, c.now())
		}
		return api.VM{}, hostError(h.Facts.Name, "start VM "+name, err)
	}
	if err := c.store.SetState(ctx, name, st, c.now()); err != nil {
		return api.VM{}, err
	}
	c.log.Info("VM started", "vm", name, "host", h.Facts.Name, "pid", st.PID)
	return c.getVM(ctx, name)
}

func (c *Center) stopVM(ctx context.Context, name string, force bool, grace string) (api.VM, error) {
	r, err := c.record(ctx, name)
	if err != nil {
		return api.VM{}, err
	}
	if grace != "" {
		if d, err := time.ParseDuration(grace); err != nil || d < 0 || d > 10*time.Minute {
			return api.VM{}, api.BadRequest("grace %q must be a duration between 0s and 10m, such as 30s", grace)
		}
	}
	h, cl, err := c.hostOf(ctx, r, "stop")
	if err != nil {
		return api.VM{}, err
	}
	if err := c.store.SetDesired(ctx, name, api.VMStopped, c.now()); err != nil {
		return api.VM{}, err
	}
	q := fmt.Sprintf("?force=%t", force)
	if grace != "" {
		q += "&grace=" + grace
	}
	var st api.VMStatus
	if err := cl.Do(ctx, http.MethodPost, "/agent/v1/vms/"+name+"/stop"+q, nil, &st); err != nil {
		return api.VM{}, hostError(h.Facts.Name, "stop VM "+name, err)
	}
	if err := c.store.SetState(ctx, name, st, c.now()); err != nil {
		return api.VM{}, err
	}
	c.log.Info("VM stopped", "vm", name, "host", h.Facts.Name)
	return c.getVM(ctx, name)
}

func (c *Center) deleteVM(ctx context.Context, name string) error {
	r, err := c.record(ctx, name)
	if err != nil {
		return err
	}
	if r.State == api.VMRunning || r.State == api.VMStarting || r.State == api.VMStopping {
		return api.Conflict("VM %s is %s; stop it first (`godwit vm stop %s`)", name, r.State, name)
	}
	h, cl, err := c.hostOf(ctx, r, "be deleted")
	if err != nil {
		return err
	}
	err = cl.Do(ctx, http.MethodDelete, "/agent/v1/vms/"+name, nil, nil)
	var se *api.StatusError
	if err != nil && !(errors.As(err, &se) && se.Status == http.StatusNotFound) {
		return hostError(h.Facts.Name, "delete VM "+name, err)
	}
	if err := c.store.DeleteVM(ctx, name); err != nil && !errors.Is(err, store.ErrNotFound) {
		return err
	}
	c.log.Info("VM deleted", "vm", name, "host", h.Facts.Name)
	return nil
}

// console returns the newest output of a VM's serial console from its host: tail bytes,
// at most api.MaxConsoleBytes ("" or 0: that many), whatever the host answers.
func (c *Center) console(ctx context.Context, name, tail string) ([]byte, error) {
	r, err := c.record(ctx, name)
	if err != nil {
		return nil, err
	}
	h, cl, err := c.hostOf(ctx, r, "show its console")
	if err != nil {
		return nil, err
	}
	var out []byte
	p := "/agent/v1/vms/" + name + "/console"
	limit := int64(api.MaxConsoleBytes)
	if tail != "" {
		n, err := strconv.ParseInt(tail, 10, 64)
		if err != nil || n < 0 {
			return nil, api.BadRequest("tail %q must be a number of bytes", tail)
		}
		if n > 0 {
			limit = min(n, limit)
		}
		p += "?tail=" + strconv.FormatInt(limit, 10)
	}
	if err := cl.Do(ctx, http.MethodGet, p, nil, &out); err != nil {
		return nil, hostError(h.Facts.Name, "read the console of "+name, err)
	}
	return out[max(int64(len(out))-limit, 0):], nil
}
