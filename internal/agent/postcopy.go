package agent

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"time"

	"github.com/godwit/godwit/internal/api"
	"github.com/godwit/godwit/internal/migration"
	"github.com/godwit/godwit/internal/qemu"
	"github.com/godwit/godwit/internal/qmp"
)

// Post-copy (see internal/migration). Once a migration switched to post-copy the VM
// runs on the destination while part of its memory is still on the source: it can
// never run on the source again, and its copy on the destination must never be dropped
// while the source may still bring the rest. A broken stream is recovered: the source
// asks the destination to listen again (RecoverIncoming) and resumes to it.

// guestStatusWait bounds the question whether a copy's QEMU runs the guest. A
// destination in post-copy may not answer at all: its main loop waits for a page the
// broken stream does not bring.
const guestStatusWait = 3 * time.Second

// recoverer returns the migration's Recover function on the source: it asks the
// destination to listen again for the broken post-copy stream, on its migration
// address, or for a carried stream (stream not nil) on its socket, and returns where
// the source resumes: the destination's address, or stream's socket, whose next
// connection is carried to the destination again. A destination that no longer has
// the copy ends the migration (lost).
func (a *Agent) recoverer(dest *api.Client, name, id, addr string, stream *outStream) func(context.Context) (string, error) {
	return func(ctx context.Context) (string, error) {
		var rep api.RecoverReply
		err := dest.Do(ctx, http.MethodPost, "/agent/v1/vms/"+name+"/incoming/"+id+"/recover", api.RecoverRequest{Address: addr, Carried: stream != nil}, &rep)
		var se *api.StatusError
		if errors.As(err, &se) && se.Status == http.StatusGone {
			return "", fmt.Errorf("%w: %v", migration.ErrNoDestination, err)
		}
		if err == nil && stream != nil {
			return stream.uri(), nil
		}
		return rep.URI, err
	}
}

// RecoverIncoming makes the copy of migration id, whose post-copy stream broke, listen
// for the source again on address (see migration.RecoverDestination) and returns where.
// 410 when this host no longer has the copy (the migration cannot be recovered), 409
// when its migration is not a post-copy that can be recovered now (the source tries
// again).
func (a *Agent) RecoverIncoming(ctx context.Context, name, id string, req api.RecoverRequest) (api.RecoverReply, error) {
	gone := func(why string) (api.RecoverReply, error) {
		return api.RecoverReply{}, api.Errorf(http.StatusGone, "copy_gone", "host %s no longer has the copy of VM %s that migration %s brings in (%s): its post-copy stream cannot be recovered", a.cfg.Name, name, id, why)
	}
	if req.Address == "" && !req.Carried {
		return api.RecoverReply{}, api.BadRequest("a recovery needs the address this host listens on for the migration stream")
	}
	v, err := a.get(name)
	if err != nil {
		return gone("no such VM here")
	}
	v.op.Lock()
	defer v.op.Unlock()
	a.mu.Lock()
	p, inc := v.proc, v.incoming
	a.mu.Unlock()
	if inc != id {
		return gone("the VM here is not that copy")
	}
	if p == nil || !p.Alive() {
		return gone("its QEMU ended")
	}
	mon, err := p.Monitor(ctx)
	if err != nil {
		return api.RecoverReply{}, fmt.Errorf("reach the copy's QEMU: %w", err)
	}
	uri, err := a.incomingURI(v, req.Address, req.Carried)
	if err != nil {
		return api.RecoverReply{}, err
	}
	if err := migration.RecoverDestination(ctx, mon, uri); err != nil {
		if errors.Is(err, migration.ErrNotPaused) {
			return api.RecoverReply{}, api.Conflict("the copy of VM %s cannot take the stream of migration %s again now: %v", name, id, err)
		}
		return api.RecoverReply{}, err
	}
	a.log.Info("listening again for the broken post-copy stream", "vm", name, "migration", id, "uri", uri)
	return api.RecoverReply{URI: uri}, nil
}

// guestRuns reports whether a QEMU runs its guest, asking for at most guestStatusWait.
// A QEMU that does not answer in time is an error, not a no: in post-copy it runs the
// guest while its main loop waits for memory.
func guestRuns(ctx context.Context, p *qemu.Process) (bool, error) {
	ctx, cancel := context.WithTimeout(ctx, guestStatusWait)
	defer cancel()
	mon, err := p.Monitor(ctx)
	if err != nil {
		return false, err
	}
	st, err := mon.QueryStatus(ctx)
	if err != nil {
		return false, err
	}
	return st.Running, nil
}

// inPostcopy reports whether QEMU's migration is one of post-copy's, unfinished:
// the VM has left the source and its memory is still arriving on the destination.
// A QEMU that cannot say (its monitor does not answer) counts as in post-copy.
func inPostcopy(ctx context.Context, mon *qmp.Monitor) bool {
	ctx, cancel := context.WithTimeout(ctx, guestStatusWait)
	defer cancel()
	info, err := mon.QueryMigrate(ctx)
	if err != nil {
		return !errors.Is(err, qmp.ErrClosed)
	}
	return postcopyStatus(info.Status)
}

// postcopyStatus reports whether a QEMU migration status is one of post-copy's.
func postcopyStatus(status string) bool {
	switch status {
	case qmp.MigrationPostcopyActive, qmp.MigrationPostcopyPaused, qmp.MigrationPostcopyRecoverSetup, qmp.MigrationPostcopyRecover:
		return true
	}
	return false
}

// abandon makes sure a VM that left this host in post-copy, whose migration did not
// complete, never runs here again: its QEMU (paused since the switch) ends, its TAPs
// go, and the VM stays defined here, in the error state with why, so that it can be
// started again from its disks once its copy on the destination is gone. Its memory is
// lost either way: the part here is useless without the destination's vCPU and device
// state, and the copy there lacks this part.
func (a *Agent) abandon(v *vm, p *qemu.Process, why string) {
	a.mu.Lock()
	v.proc, v.stopping = nil, true
	v.state, v.errMsg = api.VMError, why
	a.mu.Unlock()
	if err := p.Kill(); err != nil {
		a.log.Error("could not end the source QEMU of a VM lost in post-copy", "vm", v.spec.Name, "pid", p.PID, "err", err)
	}
	_ = p.Close()
	a.deleteTaps(v)
	_ = v.save()
	go a.kick()
}

// allowed words a post-copy permission.
func allowed(postcopy bool) string {
	if postcopy {
		return "allowed"
	}
	return "not allowed"
}
