package center

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"strings"

	"github.com/godwit/godwit/internal/api"
	"github.com/godwit/godwit/internal/audit"
	"github.com/godwit/godwit/internal/placement"
	"github.com/godwit/godwit/internal/store"
)

// maxBulk bounds the VMs of one bulk request.
const maxBulk = 1000

// requester is who asks for migrations: the actor the audit trail names, where the
// request came from, and how tasks name the initiator.
type requester struct {
	actor     audit.Actor
	from      string
	initiator string
}

// bulkMigrate moves several VMs by one request: each to req.To, or (Auto) each to the
// wizard's best host, counting the moves already planned by this request against the
// hosts' memory and slots. Every VM is checked and submitted like a single migration
// (queued when its slots are taken); the VMs that cannot move are listed with why. Each
// VM's migration gets its own vm.migrate audit record, naming the requester.
func (c *Center) bulkMigrate(ctx context.Context, req api.BulkMigrateRequest, who requester) (api.BulkMigrateReply, error) {
	rep := api.BulkMigrateReply{Migrations: []api.Migration{}, Refused: []api.BulkRefusal{}}
	if err := checkBulkShape(req); err != nil {
		return rep, err
	}
	plannedMiB := map[string]int{}
	plannedMoves := map[string]int{}
	for _, vm := range req.VMs {
		to := req.To
		if req.Auto {
			best, err := c.autoDestination(ctx, vm, plannedMiB, plannedMoves)
			if err != nil {
				rep.Refused = append(rep.Refused, refusal(vm, err))
				c.recordBulkItem(ctx, who, vm, nil, err)
				continue
			}
			to = best
		}
		p, err := c.planMigration(ctx, vm, api.MigrateRequest{To: to, Policy: req.Policy, Encryption: req.Encryption, Priority: req.Priority, Postcopy: req.Postcopy})
		if err == nil {
			// The VM's record commits with its migration's.
			hooked := store.WithTxHook(ctx, c.trail.AppendOnceHook(bulkItemRecord(who, vm, &p.m, nil)))
			var m api.Migration
			if m, err = c.submit(hooked, p, who.initiator); err == nil {
				rep.Migrations = append(rep.Migrations, m)
				plannedMiB[to] += p.memoryMiB
				plannedMoves[to]++
				continue
			}
		}
		rep.Refused = append(rep.Refused, refusal(vm, err))
		c.recordBulkItem(ctx, who, vm, nil, err)
	}
	ids := make([]string, len(rep.Migrations))
	for i, m := range rep.Migrations {
		ids[i] = m.ID
	}
	audit.Params(ctx, map[string]any{"migrations": ids, "refused": len(rep.Refused)})
	return rep, nil
}

// checkBulkShape checks what a bulk request (or a schedule's) says, before any VM is
// looked at: some VMs, each once, not too many, and either a destination or auto.
func checkBulkShape(req api.BulkMigrateRequest) error {
	switch {
	case len(req.VMs) == 0:
		return api.BadRequest("name the VMs to move: `vm migrate VM... --to HOST` (vms)")
	case len(req.VMs) > maxBulk:
		return api.BadRequest("one request moves at most %d VMs, not %d; split it", maxBulk, len(req.VMs))
	case req.To == "" && !req.Auto:
		return api.BadRequest("say where the VMs go: a destination host (`--to HOST`, to) or `--auto` (auto), to let the wizard place each one")
	case req.To != "" && req.Auto:
		return api.BadRequest("give either a destination host (`--to`, to) or `--auto` (auto), not both")
	}
	seen := map[string]bool{}
	for _, vm := range req.VMs {
		if seen[vm] {
			return api.BadRequest("VM %s is named twice; name each VM once", vm)
		}
		seen[vm] = true
	}
	return nil
}

// autoDestination is the wizard's best host for vm, with the moves this request already
// planned counted against the hosts.
func (c *Center) autoDestination(ctx context.Context, vm string, plannedMiB, plannedMoves map[string]int) (string, error) {
	_, v, hosts, _, err := c.wizardInputs(ctx, vm)
	if err != nil {
		return "", err
	}
	for i := range hosts {
		hosts[i].FreeMemoryMiB -= plannedMiB[hosts[i].Name]
		hosts[i].MigrationsQueued += plannedMoves[hosts[i].Name]
	}
	rec, err := placement.Recommend(v, hosts, placement.DefaultWeights())
	if err != nil {
		return "", err
	}
	best, ok := rec.Best()
	if !ok {
		msgs := []string{}
		for _, r := range rec.Refused {
			for _, f := range r.Errors {
				msgs = append(msgs, f.Message)
			}
		}
		return "", api.Errorf(422, "no_destination", "no host can take VM %s: %s", vm, joinSentences(msgs))
	}
	return best.Host, nil
}

// joinSentences joins findings' sentences, each once.
func joinSentences(ss []string) string { return strings.Join(slices.Compact(ss), " ") }

// refusal is a VM of a bulk request that could not move.
func refusal(vm string, err error) api.BulkRefusal {
	r := api.BulkRefusal{VM: vm, Error: err.Error()}
	var se *api.StatusError
	if errors.As(err, &se) {
		r.Code = se.Code
	}
	return r
}

// recordBulkItem writes the vm.migrate record of one VM of a bulk request that could not
// move (a VM that moves gets its record with its migration's, see bulkMigrate).
func (c *Center) recordBulkItem(ctx context.Context, who requester, vm string, m *api.Migration, err error) {
	if _, aerr := c.trail.Append(context.WithoutCancel(ctx), bulkItemRecord(who, vm, m, err)); aerr != nil {
		c.log.Error("a migration of a bulk request could not be recorded in the audit trail", "vm", vm, "err", fmt.Errorf("append: %w", aerr))
	}
}

// bulkItemRecord is the vm.migrate record of one VM of a bulk request.
func bulkItemRecord(who requester, vm string, m *api.Migration, err error) audit.Record {
	params := map[string]any{"bulk": true}
	rec := audit.Record{Actor: who.actor.Name, ActorKind: who.actor.Kind, OnBehalfOf: who.actor.OnBehalfOf, From: who.from,
		Action: "vm.migrate", Target: vm, Outcome: audit.Succeeded}
	if m != nil {
		params["migration"], params["source"], params["destination"] = m.ID, m.Source, m.Destination
		params["policy"], params["priority"], params["encryption"] = m.Policy, m.Priority, m.Encryption
		params["postcopy"] = m.PostcopyAllowed
	}
	if err != nil {
		rec.Outcome, rec.Error = audit.Refused, err.Error()
		var se *api.StatusError
		if !errors.As(err, &se) || se.Status >= http.StatusInternalServerError {
			rec.Outcome = audit.Failed
		}
	}
	rec.Params, _ = audit.EncodeParams(params)
	return rec
}
