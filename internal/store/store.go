// Package store is the center's persistent inventory: hosts and VMs in an embedded SQLite
// database (modernc.org/sqlite, pure Go). Every write is a transaction, so a crash leaves
// either the old or the new row, and uniqueness (VM name, UUID, MAC, IP) is enforced by the
// database itself rather than by a check-then-insert race.
package store

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"hash/fnv"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/godwit/godwit/internal/api"

	_ "modernc.org/sqlite" // registers the "sqlite" driver
)

// ErrNotFound is returned when a row does not exist.
var ErrNotFound = errors.New("not found")

// DuplicateError reports a uniqueness violation on one field.
type DuplicateError struct {
	Field string // "name", "uuid", "mac" or "ip"
	Value string
	Owner string // the VM that already has it, when known
}

func (e *DuplicateError) Error() string {
	if e.Owner != "" {
		return fmt.Sprintf("%s %s is already used by VM %s", e.Field, e.Value, e.Owner)
	}
	return fmt.Sprintf("%s %s is already used", e.Field, e.Value)
}

// Store is the center's database.
type Store struct {
	// db is the one connection that writes; rdb are connections that only read, beside
	// it (WAL: readers see the last commit and never wait for the writer).
	db, rdb *sql.DB
	// beats takes heartbeats to the goroutine that commits them in groups; the Store owns
	// it: Close stops it (closing stop) and waits for it (done).
	beats chan *beat
	stop  chan struct{}
	done  chan struct{}
	once  sync.Once
	// version counts writes (Version).
	version atomic.Uint64
	// live holds each host's newest heartbeat (liveHost), ahead of what is written.
	liveMu sync.Mutex
	live   map[string]*liveHost
}

// Live load. What a host reports every 2 s is mostly what it reported before: its CPU,
// flags, datastores, networks and VMs change seldom, its load, free memory, datastores'
// free space and VMs' memory activity all the time. A heartbeat whose facts differ from
// the ones last written only in those live figures is kept in memory, where every reader
// of hosts finds it (Host, Hosts, HostsPage, LastHeartbeats), and written at most every
// liveFlush, and when the store closes; any other change is written at once, through
// the group commit. What a crash of the center can lose is live load and liveness no older than liveFlush, which
// the hosts' next heartbeats (2 s) report again; no acknowledged change of a host's
// inventory is ever held back.
const liveFlush = 30 * time.Second

// liveHost is a host's newest heartbeat: its facts, when it came, and what was last
// written (the facts' stable part, by hash, and when).
type liveHost struct {
	facts   api.HostFacts
	beat    time.Time
	stable  uint64
	written time.Time
}

// stableSum hashes a host's facts without their live figures (see liveFlush).
func stableSum(f api.HostFacts) (uint64, error) {
	f.Load, f.FreeMemoryMiB, f.AuditCheckpoint, f.Refusals = 0, 0, nil, nil
	if len(f.Datastores) > 0 {
		ds := make([]api.Datastore, len(f.Datastores))
		for i, d := range f.Datastores {
			d.FreeByte = 0
			ds[i] = d
		}
		f.Datastores = ds
	}
	if len(f.VMs) > 0 {
		vms := make([]api.VMStatus, len(f.VMs))
		for i, v := range f.VMs {
			v.Memory, v.CPU = nil, 0
			vms[i] = v
		}
		f.VMs = vms
	}
	b, err := json.Marshal(f)
	if err != nil {
		return 0, err
	}
	h := fnv.New64a()
	h.Write(b)
	return h.Sum64(), nil
}

// overlay gives h the host's newest heartbeat, if it is newer than what was written.
func (s *Store) overlay(h *HostRecord) {
	s.liveMu.Lock()
	lh := s.live[h.Facts.Name]
	s.liveMu.Unlock()
	if lh != nil && lh.beat.After(h.LastHeartbeat) {
		h.Facts, h.LastHeartbeat = lh.facts, lh.beat
	}
}

const schema = `
CREATE TABLE IF NOT EXISTS hosts (
	name TEXT PRIMARY KEY,
	facts TEXT NOT NULL,
	registered TEXT NOT NULL,
	last_heartbeat TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS vms (
	name TEXT PRIMARY KEY,
	uuid TEXT NOT NULL UNIQUE,
	host TEXT NOT NULL,
	spec TEXT NOT NULL,
	desired TEXT NOT NULL,
	state TEXT NOT NULL,
	error TEXT NOT NULL DEFAULT '',
	pid INTEGER NOT NULL DEFAULT 0,
	accel TEXT NOT NULL DEFAULT '',
	created TEXT NOT NULL,
	updated TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS nics (
	vm TEXT NOT NULL REFERENCES vms(name) ON DELETE CASCADE,
	idx INTEGER NOT NULL,
	network TEXT NOT NULL,
	mac TEXT NOT NULL UNIQUE,
	ip TEXT UNIQUE,
	PRIMARY KEY (vm, idx)
);
CREATE TABLE IF NOT EXISTS migrations (
	id TEXT PRIMARY KEY,
	vm TEXT NOT NULL,
	state TEXT NOT NULL,
	record TEXT NOT NULL,
	started TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS migrations_vm ON migrations (vm, started);
CREATE INDEX IF NOT EXISTS vms_host ON vms (host);
CREATE TABLE IF NOT EXISTS tasks (
	id TEXT PRIMARY KEY,
	kind TEXT NOT NULL,
	target TEXT NOT NULL,
	initiator TEXT NOT NULL,
	state TEXT NOT NULL,
	percent REAL NOT NULL DEFAULT 0,
	phase TEXT NOT NULL DEFAULT '',
	queued TEXT NOT NULL,
	started TEXT NOT NULL DEFAULT '',
	finished TEXT NOT NULL DEFAULT '',
	result TEXT NOT NULL DEFAULT '',
	error TEXT NOT NULL DEFAULT ''
);
CREATE INDEX IF NOT EXISTS tasks_queued ON tasks (queued);
CREATE TABLE IF NOT EXISTS ip_cursor (
	network TEXT PRIMARY KEY,
	last TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS users (
	name TEXT PRIMARY KEY,
	role TEXT NOT NULL,
	password_hash TEXT NOT NULL DEFAULT '',
	created TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS tokens (
	id TEXT PRIMARY KEY,
	user TEXT NOT NULL REFERENCES users(name) ON DELETE CASCADE,
	secret_sha256 TEXT NOT NULL,
	created TEXT NOT NULL,
	expires TEXT NOT NULL DEFAULT '',
	revoked TEXT NOT NULL DEFAULT ''
);
CREATE INDEX IF NOT EXISTS tokens_user ON tokens (user);
CREATE TABLE IF NOT EXISTS host_maintenance (
	name TEXT PRIMARY KEY,
	reason TEXT NOT NULL DEFAULT '',
	since TEXT NOT NULL
);
`

// Open opens (creating if needed) the database at path. The database and its -wal and
// -shm files are readable by their owner only (mode 0600).
func Open(ctx context.Context, path string) (*Store, error) {
	if err := restrictFiles(path); err != nil {
		return nil, err
	}
	dsn := "file:" + path + "?_pragma=journal_mode(WAL)&_pragma=busy_timeout(5000)&_pragma=foreign_keys(1)&_pragma=synchronous(FULL)"
	db, err := sql.Open("sqlite", dsn)
	if err != nil {
		return nil, fmt.Errorf("open database %s: %w", path, err)
	}
	// One writer at a time is what SQLite does anyway; a single connection keeps
	// transactions from tripping over SQLITE_BUSY.
	db.SetMaxOpenConns(1)
	if _, err := db.ExecContext(ctx, schema+pkiSchema+schedulesSchema+plansSchema); err != nil {
		db.Close()
		return nil, fmt.Errorf("create schema in %s: %w", path, err)
	}
	// Columns added after their table: a database made by an older center gets them.
	if err := addColumn(ctx, db, "schedules", "creator_local", "INTEGER NOT NULL DEFAULT 0"); err != nil {
		db.Close()
		return nil, fmt.Errorf("update schema in %s: %w", path, err)
	}
	if err := addColumn(ctx, db, "migrations", "prediction", "TEXT NOT NULL DEFAULT ''"); err != nil {
		db.Close()
		return nil, fmt.Errorf("update schema in %s: %w", path, err)
	}
	rdb, err := sql.Open("sqlite", dsn+"&_pragma=query_only(1)")
	if err != nil {
		db.Close()
		return nil, fmt.Errorf("open database %s for reading: %w", path, err)
	}
	rdb.SetMaxOpenConns(maxReaders)
	rdb.SetMaxIdleConns(maxReaders)
	s := &Store{db: db, rdb: rdb, beats: make(chan *beat, maxBeatGroup), stop: make(chan struct{}), done: make(chan struct{}),
		live: map[string]*liveHost{}}
	go s.commitBeats()
	return s, nil
}

// maxReaders is how many connections read at once.
const maxReaders = 4

// restrictFiles creates the database file at path with mode 0600 if it is missing, and
// sets that mode on it and on its -wal and -shm files if they exist (made by an older
// center). The database holds password and token hashes and the audit trail; SQLite
// gives the files it creates beside it the database's own mode.
func restrictFiles(path string) error {
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return fmt.Errorf("open database %s: %w", path, err)
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("open database %s: %w", path, err)
	}
	for _, p := range []string{path, path + "-wal", path + "-shm"} {
		if err := os.Chmod(p, 0o600); err != nil && !errors.Is(err, os.ErrNotExist) {
			return fmt.Errorf("make database file %s private (mode 0600): %w", p, err)
		}
	}
	return nil
}

// addColumn adds a column to a table unless it has it.
func addColumn(ctx context.Context, db *sql.DB, table, column, def string) error {
	var n int
	if err := db.QueryRowContext(ctx, `SELECT count(*) FROM pragma_table_info(?) WHERE name = ?`, table, column).Scan(&n); err != nil {
		return fmt.Errorf("read the columns of %s: %w", table, err)
	}
	if n > 0 {
		return nil
	}
	if _, err := db.ExecContext(ctx, `ALTER TABLE `+table+` ADD COLUMN `+column+` `+def); err != nil {
		return fmt.Errorf("add column %s to %s: %w", column, table, err)
	}
	return nil
}

// Close stops the heartbeat writer, writes the live figures held in memory, and closes
// the database.
func (s *Store) Close() error {
	s.once.Do(func() { close(s.stop) })
	<-s.done
	ferr := s.flushLive()
	return errors.Join(ferr, s.rdb.Close(), s.db.Close())
}

// flushLive writes every host's newest heartbeat not written yet, in one transaction.
func (s *Store) flushLive() error {
	s.liveMu.Lock()
	var group []*beat
	for name, lh := range s.live {
		if lh.beat.After(lh.written) {
			b, err := json.Marshal(lh.facts)
			if err != nil {
				continue
			}
			group = append(group, &beat{name: name, facts: string(b), now: lh.beat, done: make(chan struct{})})
			lh.written = lh.beat
		}
	}
	s.liveMu.Unlock()
	if len(group) == 0 {
		return nil
	}
	s.commitGroup(group)
	return group[0].err
}

// DB returns the database handle, for parts of the center that keep their own tables in
// the same file (the audit trail).
func (s *Store) DB() *sql.DB { return s.db }

// ReadDB is the pool of connections that only read, beside DB (WAL): what they read is
// what was committed when their statement began.
func (s *Store) ReadDB() *sql.DB { return s.rdb }

func ts(t time.Time) string { return t.UTC().Format(time.RFC3339Nano) }

func parseTS(s string) time.Time {
	t, _ := time.Parse(time.RFC3339Nano, s)
	return t
}

// HostRecord is a stored host.
type HostRecord struct {
	Facts         api.HostFacts
	Registered    time.Time
	LastHeartbeat time.Time
}

// SaveHeartbeat records a host's facts, registering it on its first heartbeat.
// Heartbeats that arrive together are committed in one transaction (a group commit:
// one fsync for many hosts); it returns once its own is on disk.
func (s *Store) SaveHeartbeat(ctx context.Context, f api.HostFacts, now time.Time) (registered bool, err error) {
	select {
	case <-s.stop:
		return false, fmt.Errorf("save heartbeat of host %s: the store is closed", f.Name)
	default:
	}
	stable, err := stableSum(f)
	if err != nil {
		return false, fmt.Errorf("encode facts of host %s: %w", f.Name, err)
	}
	s.liveMu.Lock()
	if lh := s.live[f.Name]; lh != nil && lh.stable == stable && now.Sub(lh.written) < liveFlush && !now.Before(lh.beat) {
		lh.facts, lh.beat = f, now
		s.liveMu.Unlock()
		return false, nil
	}
	s.liveMu.Unlock()
	registered, err = s.writeHeartbeat(ctx, f, now)
	if err == nil {
		s.liveMu.Lock()
		s.live[f.Name] = &liveHost{facts: f, beat: now, stable: stable, written: now}
		s.liveMu.Unlock()
	}
	return registered, err
}

// writeHeartbeat writes a host's facts through the group commit.
func (s *Store) writeHeartbeat(ctx context.Context, f api.HostFacts, now time.Time) (registered bool, err error) {
	b, err := json.Marshal(f)
	if err != nil {
		return false, fmt.Errorf("encode facts of host %s: %w", f.Name, err)
	}
	hb := &beat{name: f.Name, facts: string(b), now: now, done: make(chan struct{})}
	select {
	case s.beats <- hb:
	case <-ctx.Done():
		return false, fmt.Errorf("save heartbeat of host %s: %w", f.Name, ctx.Err())
	case <-s.stop:
		return false, fmt.Errorf("save heartbeat of host %s: the store is closed", f.Name)
	}
	// Once queued it is written (or fails) with its group; the caller waits for that,
	// so that an acknowledged heartbeat is on disk.
	select {
	case <-hb.done:
	case <-s.done:
		select {
		case <-hb.done:
		default:
			return false, fmt.Errorf("save heartbeat of host %s: the store is closed", f.Name)
		}
	}
	return hb.registered, hb.err
}

// A beat is one host's heartbeat waiting to be committed.
type beat struct {
	name, facts string
	now         time.Time
	registered  bool
	err         error
	done        chan struct{}
}

// maxBeatGroup is how many heartbeats one transaction commits at most.
const maxBeatGroup = 256

// commitBeats writes heartbeats in groups: all those that arrived while the previous
// group was being committed go in one transaction, one fsync, instead of one each.
// Nothing waits for a group to fill: a heartbeat alone is committed at once.
func (s *Store) commitBeats() {
	defer close(s.done)
	group := make([]*beat, 0, maxBeatGroup)
	for {
		group = group[:0]
		select {
		case hb := <-s.beats:
			group = append(group, hb)
		case <-s.stop:
			return
		}
	more:
		for len(group) < maxBeatGroup {
			select {
			case hb := <-s.beats:
				group = append(group, hb)
			default:
				break more
			}
		}
		s.commitGroup(group)
	}
}

func (s *Store) commitGroup(group []*beat) {
	// A group is not cancelled by one caller's context: the others wait for it.
	ctx := context.Background()
	what := "save heartbeat of host " + group[0].name
	if len(group) > 1 {
		what = fmt.Sprintf("save heartbeats of %d hosts", len(group))
	}
	err := s.writeTx(ctx, what, func(tx *sql.Tx) error {
		for _, hb := range group {
			hb.registered = false
			res, err := tx.ExecContext(ctx, `UPDATE hosts SET facts = ?, last_heartbeat = ? WHERE name = ?`, hb.facts, ts(hb.now), hb.name)
			if err != nil {
				return fmt.Errorf("save heartbeat of host %s: %w", hb.name, err)
			}
			if n, _ := res.RowsAffected(); n == 1 {
				continue
			}
			if _, err := tx.ExecContext(ctx, `INSERT INTO hosts (name, facts, registered, last_heartbeat) VALUES (?, ?, ?, ?)`,
				hb.name, hb.facts, ts(hb.now), ts(hb.now)); err != nil {
				return fmt.Errorf("register host %s: %w", hb.name, err)
			}
			hb.registered = true
		}
		return nil
	})
	for _, hb := range group {
		hb.err = err
		if err != nil {
			hb.registered = false
		}
		close(hb.done)
	}
}

// Hosts returns every host, by name.
func (s *Store) Hosts(ctx context.Context) ([]HostRecord, error) {
	return s.hosts(ctx, `SELECT facts, registered, last_heartbeat FROM hosts ORDER BY name`)
}

func (s *Store) hosts(ctx context.Context, q string, args ...any) ([]HostRecord, error) {
	rows, err := s.rdb.QueryContext(ctx, q, args...)
	if err != nil {
		return nil, fmt.Errorf("list hosts: %w", err)
	}
	defer rows.Close()
	var out []HostRecord
	for rows.Next() {
		var facts, reg, hb string
		if err := rows.Scan(&facts, &reg, &hb); err != nil {
			return nil, fmt.Errorf("list hosts: %w", err)
		}
		var h HostRecord
		if err := json.Unmarshal([]byte(facts), &h.Facts); err != nil {
			return nil, fmt.Errorf("decode host record: %w", err)
		}
		h.Registered, h.LastHeartbeat = parseTS(reg), parseTS(hb)
		s.overlay(&h)
		out = append(out, h)
	}
	return out, rows.Err()
}

// HostsPage returns at most limit hosts with names after after, by name, and how many
// hosts there are.
func (s *Store) HostsPage(ctx context.Context, after string, limit int) ([]HostRecord, int, error) {
	hosts, err := s.hosts(ctx, `SELECT facts, registered, last_heartbeat FROM hosts WHERE name > ? ORDER BY name LIMIT ?`, after, limit)
	if err != nil {
		return nil, 0, err
	}
	var total int
	if err := s.rdb.QueryRowContext(ctx, `SELECT count(*) FROM hosts`).Scan(&total); err != nil {
		return nil, 0, fmt.Errorf("count hosts: %w", err)
	}
	return hosts, total, nil
}

// LastHeartbeats returns when each host last beat, without reading its facts.
func (s *Store) LastHeartbeats(ctx context.Context) (map[string]time.Time, error) {
	rows, err := s.rdb.QueryContext(ctx, `SELECT name, last_heartbeat FROM hosts`)
	if err != nil {
		return nil, fmt.Errorf("list hosts' heartbeats: %w", err)
	}
	defer rows.Close()
	out := map[string]time.Time{}
	for rows.Next() {
		var name, hb string
		if err := rows.Scan(&name, &hb); err != nil {
			return nil, fmt.Errorf("list hosts' heartbeats: %w", err)
		}
		out[name] = parseTS(hb)
	}
	s.liveMu.Lock()
	for name, lh := range s.live {
		if t, ok := out[name]; ok && lh.beat.After(t) {
			out[name] = lh.beat
		}
	}
	s.liveMu.Unlock()
	return out, rows.Err()
}

// Host returns one host.
func (s *Store) Host(ctx context.Context, name string) (HostRecord, error) {
	var facts, reg, hb string
	err := s.rdb.QueryRowContext(ctx, `SELECT facts, registered, last_heartbeat FROM hosts WHERE name = ?`, name).
		Scan(&facts, &reg, &hb)
	if errors.Is(err, sql.ErrNoRows) {
		return HostRecord{}, ErrNotFound
	}
	if err != nil {
		return HostRecord{}, fmt.Errorf("read host %s: %w", name, err)
	}
	var h HostRecord
	if err := json.Unmarshal([]byte(facts), &h.Facts); err != nil {
		return HostRecord{}, fmt.Errorf("decode host %s: %w", name, err)
	}
	h.Registered, h.LastHeartbeat = parseTS(reg), parseTS(hb)
	s.overlay(&h)
	return h, nil
}

// VMRecord is a stored VM: its definition, where it lives, what the user wants of it
// (Desired: running or stopped) and what its host last reported (State).
type VMRecord struct {
	Spec    api.VMSpec
	Host    string
	Desired string
	State   string
	Error   string
	PID     int
	Accel   string
	Created time.Time
	Updated time.Time
}

// InsertVM stores a new VM. A name, UUID, MAC or IP already in use gives a *DuplicateError.
func (s *Store) InsertVM(ctx context.Context, r VMRecord) error {
	spec, err := json.Marshal(r.Spec)
	if err != nil {
		return fmt.Errorf("encode spec of %s: %w", r.Spec.Name, err)
	}
	return s.write(ctx, "insert VM "+r.Spec.Name, func(tx *sql.Tx) error {
		_, err := tx.ExecContext(ctx, `INSERT INTO vms (name, uuid, host, spec, desired, state, error, pid, accel, created, updated)
		VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`,
			r.Spec.Name, r.Spec.UUID, r.Host, string(spec), r.Desired, r.State, r.Error, r.PID, r.Accel, ts(r.Created), ts(r.Updated))
		if err != nil {
			return s.duplicate(ctx, tx, err, r)
		}
		for i, n := range r.Spec.NICs {
			var ip any
			if n.IP != "" {
				ip = ipOnly(n.IP)
			}
			if _, err := tx.ExecContext(ctx, `INSERT INTO nics (vm, idx, network, mac, ip) VALUES (?, ?, ?, ?, ?)`,
				r.Spec.Name, i, n.Network, strings.ToLower(n.MAC), ip); err != nil {
				return s.duplicate(ctx, tx, err, r)
			}
		}
		return nil
	})
}

func ipOnly(cidr string) string {
	if i := strings.IndexByte(cidr, '/'); i >= 0 {
		return cidr[:i]
	}
	return cidr
}

// duplicate turns a UNIQUE constraint failure into a *DuplicateError naming the owner.
func (s *Store) duplicate(ctx context.Context, tx *sql.Tx, err error, r VMRecord) error {
	msg := err.Error()
	if !strings.Contains(msg, "UNIQUE constraint failed") {
		return fmt.Errorf("insert VM %s: %w", r.Spec.Name, err)
	}
	switch {
	case strings.Contains(msg, "vms.name"):
		return &DuplicateError{Field: "name", Value: r.Spec.Name}
	case strings.Contains(msg, "vms.uuid"):
		var owner string
		_ = tx.QueryRowContext(ctx, `SELECT name FROM vms WHERE uuid = ?`, r.Spec.UUID).Scan(&owner)
		return &DuplicateError{Field: "uuid", Value: r.Spec.UUID, Owner: owner}
	case strings.Contains(msg, "nics.mac"):
		for _, n := range r.Spec.NICs {
			var owner string
			if tx.QueryRowContext(ctx, `SELECT vm FROM nics WHERE mac = ?`, strings.ToLower(n.MAC)).Scan(&owner) == nil && owner != r.Spec.Name {
				return &DuplicateError{Field: "MAC", Value: n.MAC, Owner: owner}
			}
		}
		return &DuplicateError{Field: "MAC", Value: "(one of the NICs)"}
	case strings.Contains(msg, "nics.ip"):
		for _, n := range r.Spec.NICs {
			var owner string
			if n.IP != "" && tx.QueryRowContext(ctx, `SELECT vm FROM nics WHERE ip = ?`, ipOnly(n.IP)).Scan(&owner) == nil && owner != r.Spec.Name {
				return &DuplicateError{Field: "IP", Value: ipOnly(n.IP), Owner: owner}
			}
		}
		return &DuplicateError{Field: "IP", Value: "(one of the NICs)"}
	case strings.Contains(msg, "nics.vm"):
		return fmt.Errorf("insert VM %s: two NICs share an index: %w", r.Spec.Name, err)
	}
	return fmt.Errorf("insert VM %s: %w", r.Spec.Name, err)
}

const vmCols = `spec, host, desired, state, error, pid, accel, created, updated`

func scanVM(sc scanner) (VMRecord, error) {
	var spec, created, updated string
	var r VMRecord
	if err := sc.Scan(&spec, &r.Host, &r.Desired, &r.State, &r.Error, &r.PID, &r.Accel, &created, &updated); err != nil {
		return VMRecord{}, err
	}
	if err := json.Unmarshal([]byte(spec), &r.Spec); err != nil {
		return VMRecord{}, fmt.Errorf("decode VM spec: %w", err)
	}
	r.Created, r.Updated = parseTS(created), parseTS(updated)
	return r, nil
}

// VM returns one VM by name.
func (s *Store) VM(ctx context.Context, name string) (VMRecord, error) {
	return queryOne(ctx, s.rdb, scanVM, "VM "+name, `SELECT `+vmCols+` FROM vms WHERE name = ?`, name)
}

// VMs returns every VM, by name.
func (s *Store) VMs(ctx context.Context) ([]VMRecord, error) {
	return queryAll(ctx, s.rdb, scanVM, "VMs", `SELECT `+vmCols+` FROM vms ORDER BY name`)
}

// VMFilter selects VMs: zero fields select all.
type VMFilter struct {
	Host, State string
}

func (f VMFilter) where(after string) (string, []any) {
	w, args := []string{"name > ?"}, []any{after}
	if f.Host != "" {
		w, args = append(w, "host = ?"), append(args, f.Host)
	}
	if f.State != "" {
		w, args = append(w, "state = ?"), append(args, f.State)
	}
	return strings.Join(w, " AND "), args
}

// VMsPage returns at most limit VMs that f selects with names after after, by name, and
// how many f selects in all.
func (s *Store) VMsPage(ctx context.Context, f VMFilter, after string, limit int) ([]VMRecord, int, error) {
	where, args := f.where(after)
	recs, err := queryAll(ctx, s.rdb, scanVM, "VMs", `SELECT `+vmCols+` FROM vms WHERE `+where+` ORDER BY name LIMIT ?`, append(args, limit)...)
	if err != nil {
		return nil, 0, err
	}
	cw, cargs := f.where("")
	var total int
	if err := s.rdb.QueryRowContext(ctx, `SELECT count(*) FROM vms WHERE `+cw, cargs...).Scan(&total); err != nil {
		return nil, 0, fmt.Errorf("count VMs: %w", err)
	}
	return recs, total, nil
}

// VMStatesOn returns the VMs recorded on host with what a heartbeat compares (no spec
// but the name and UUID, which it does not decode), by name.
func (s *Store) VMStatesOn(ctx context.Context, host string) ([]VMRecord, error) {
	return queryAll(ctx, s.rdb, scanVMState, "VM states on "+host, `SELECT `+vmStateCols+` FROM vms WHERE host = ? ORDER BY name`, host)
}

// vmStateCols are what scanVMState reads: a VM's state without its spec.
const vmStateCols = `name, uuid, host, desired, state, error, pid, accel, created, updated`

func scanVMState(sc scanner) (VMRecord, error) {
	var r VMRecord
	var created, updated string
	if err := sc.Scan(&r.Spec.Name, &r.Spec.UUID, &r.Host, &r.Desired, &r.State, &r.Error, &r.PID, &r.Accel, &created, &updated); err != nil {
		return VMRecord{}, err
	}
	r.Created, r.Updated = parseTS(created), parseTS(updated)
	return r, nil
}

// VMsDown returns the VMs whose desired state is running while their recorded state is
// stopped or error: what the center's power loop looks at.
func (s *Store) VMsDown(ctx context.Context) ([]VMRecord, error) {
	return queryAll(ctx, s.rdb, scanVMState, "VMs wanted running and down", `SELECT `+vmStateCols+` FROM vms
		WHERE desired = 'running' AND state IN ('stopped', 'error') ORDER BY name`)
}

// VMCounts returns how many VMs each host has on record.
func (s *Store) VMCounts(ctx context.Context) (map[string]int, error) {
	rows, err := s.rdb.QueryContext(ctx, `SELECT host, count(*) FROM vms GROUP BY host`)
	if err != nil {
		return nil, fmt.Errorf("count VMs by host: %w", err)
	}
	defer rows.Close()
	out := map[string]int{}
	for rows.Next() {
		var h string
		var n int
		if err := rows.Scan(&h, &n); err != nil {
			return nil, fmt.Errorf("count VMs by host: %w", err)
		}
		out[h] = n
	}
	return out, rows.Err()
}

// SetDesired records what the user wants: api.VMRunning or api.VMStopped.
func (s *Store) SetDesired(ctx context.Context, name, desired string, now time.Time) error {
	return s.exec1(ctx, "update VM "+name, `UPDATE vms SET desired = ?, updated = ? WHERE name = ?`, desired, ts(now), name)
}

// SetState records what the VM's host reports (or what an operation observed).
func (s *Store) SetState(ctx context.Context, name string, st api.VMStatus, now time.Time) error {
	return s.exec1(ctx, "update VM "+name, `UPDATE vms SET state = ?, error = ?, pid = ?, accel = ?, updated = ? WHERE name = ?`,
		st.State, st.Error, st.PID, st.Accel, ts(now), name)
}

// DeleteVM removes a VM and its NICs' addresses.
func (s *Store) DeleteVM(ctx context.Context, name string) error {
	return s.exec1(ctx, "delete VM "+name, `DELETE FROM vms WHERE name = ?`, name)
}

// UsedIPs returns the addresses in use on a network.
func (s *Store) UsedIPs(ctx context.Context, network string) (map[string]bool, error) {
	rows, err := s.rdb.QueryContext(ctx, `SELECT ip FROM nics WHERE network = ? AND ip IS NOT NULL`, network)
	if err != nil {
		return nil, fmt.Errorf("list addresses on %s: %w", network, err)
	}
	defer rows.Close()
	used := map[string]bool{}
	for rows.Next() {
		var ip string
		if err := rows.Scan(&ip); err != nil {
			return nil, err
		}
		used[ip] = true
	}
	return used, rows.Err()
}

// UsedMACs returns every MAC in use, with the VM that has it.
func (s *Store) UsedMACs(ctx context.Context) (map[string]string, error) {
	rows, err := s.rdb.QueryContext(ctx, `SELECT mac, vm FROM nics`)
	if err != nil {
		return nil, fmt.Errorf("list MACs: %w", err)
	}
	defer rows.Close()
	used := map[string]string{}
	for rows.Next() {
		var m, vm string
		if err := rows.Scan(&m, &vm); err != nil {
			return nil, err
		}
		used[m] = vm
	}
	return used, rows.Err()
}

// LastIP returns the address last handed out on a network ("" if none), so allocation
// can go round the pool instead of reusing a just-released address that peers may
// still have cached in their ARP tables.
func (s *Store) LastIP(ctx context.Context, network string) (string, error) {
	var ip string
	err := s.rdb.QueryRowContext(ctx, `SELECT last FROM ip_cursor WHERE network = ?`, network).Scan(&ip)
	if errors.Is(err, sql.ErrNoRows) {
		return "", nil
	}
	if err != nil {
		return "", fmt.Errorf("read address cursor of %s: %w", network, err)
	}
	return ip, nil
}

// SetLastIP records the address last handed out on a network.
func (s *Store) SetLastIP(ctx context.Context, network, ip string) error {
	return s.exec(ctx, "save address cursor of "+network, `INSERT INTO ip_cursor (network, last) VALUES (?, ?)
		ON CONFLICT(network) DO UPDATE SET last = excluded.last`, network, ipOnly(ip))
}

// Move records that a VM now lives on another host (after a migration), with the state
// that host reports, in one update.
func (s *Store) Move(ctx context.Context, name, host string, st api.VMStatus, now time.Time) error {
	return s.exec1(ctx, "move VM "+name, moveVM, host, st.State, st.Error, st.PID, st.Accel, ts(now), name)
}

const moveVM = `UPDATE vms SET host = ?, state = ?, error = ?, pid = ?, accel = ?, updated = ? WHERE name = ?`

// InsertMigration stores a new migration record. An id already taken is a
// *DuplicateError (Field "migration"): a migration's history is never overwritten by
// another's.
func (s *Store) InsertMigration(ctx context.Context, m api.Migration) error {
	b, err := json.Marshal(m)
	if err != nil {
		return fmt.Errorf("encode migration %s: %w", m.ID, err)
	}
	err = s.write(ctx, "store migration "+m.ID, func(tx *sql.Tx) error {
		_, err := tx.ExecContext(ctx, `INSERT INTO migrations (id, vm, state, record, started) VALUES (?, ?, ?, ?, ?)`,
			m.ID, m.VM, m.State, string(b), ts(m.Started))
		return err
	})
	if err != nil && strings.Contains(err.Error(), "UNIQUE") {
		return &DuplicateError{Field: "migration", Value: m.ID, Owner: s.migrationVM(ctx, m.ID)}
	}
	if err != nil {
		return fmt.Errorf("store migration %s: %w", m.ID, err)
	}
	return nil
}

// UpdateMigration records a new state of a stored migration of the same VM;
// ErrNotFound when there is none, so an update never creates a record.
func (s *Store) UpdateMigration(ctx context.Context, m api.Migration) error {
	b, err := json.Marshal(m)
	if err != nil {
		return fmt.Errorf("encode migration %s: %w", m.ID, err)
	}
	return s.write(ctx, "update migration "+m.ID, func(tx *sql.Tx) error {
		return updateMigration(ctx, tx, m, b)
	})
}

func updateMigration(ctx context.Context, e execer, m api.Migration, record []byte) error {
	err := execOne(ctx, e, "update migration "+m.ID, `UPDATE migrations SET state = ?, record = ? WHERE id = ? AND vm = ?`,
		m.State, string(record), m.ID, m.VM)
	if errors.Is(err, ErrNotFound) {
		return fmt.Errorf("update migration %s of VM %s: %w", m.ID, m.VM, ErrNotFound)
	}
	return err
}

// migrationVM is the VM of a stored migration, or "" when it cannot be read.
func (s *Store) migrationVM(ctx context.Context, id string) string {
	var vm string
	_ = s.rdb.QueryRowContext(ctx, `SELECT vm FROM migrations WHERE id = ?`, id).Scan(&vm)
	return vm
}

// EndMigration records a stored migration's outcome and, when moved is not nil (it
// succeeded), that its VM now lives on the destination with the state moved says, in
// one transaction: no reader sees the outcome without the move, and the hooks of ctx
// (the outcome's audit record) commit with both or neither.
func (s *Store) EndMigration(ctx context.Context, m api.Migration, moved *api.VMStatus, now time.Time) error {
	b, err := json.Marshal(m)
	if err != nil {
		return fmt.Errorf("encode migration %s: %w", m.ID, err)
	}
	return s.write(ctx, "record the outcome of migration "+m.ID, func(tx *sql.Tx) error {
		// A VM deleted meanwhile has nothing to move; the outcome is recorded all the same.
		if moved != nil {
			if _, err := tx.ExecContext(ctx, moveVM, m.Destination, moved.State, moved.Error, moved.PID, moved.Accel,
				ts(now), m.VM); err != nil {
				return fmt.Errorf("move VM %s: %w", m.VM, err)
			}
		}
		return updateMigration(ctx, tx, m, b)
	})
}

// SetMigrationPrediction stores the prediction made for a migration when it was
// admitted. It has a column of its own, so that the records the migration's source
// reports, which replace the record, never lose it; ErrNotFound when there is no such
// migration.
func (s *Store) SetMigrationPrediction(ctx context.Context, id string, p api.Prediction) error {
	b, err := json.Marshal(p)
	if err != nil {
		return fmt.Errorf("encode the prediction of migration %s: %w", id, err)
	}
	return s.exec1(ctx, "store the prediction of migration "+id, `UPDATE migrations SET prediction = ? WHERE id = ?`, string(b), id)
}

// migrationColumns are the columns decodeMigration reads, in its order.
const migrationColumns = `record, prediction`

// decodeMigration decodes a migration's record and, when it has one, its prediction.
func decodeMigration(rec, prediction string) (api.Migration, error) {
	var m api.Migration
	if err := json.Unmarshal([]byte(rec), &m); err != nil {
		return m, err
	}
	if prediction != "" {
		var p api.Prediction
		if err := json.Unmarshal([]byte(prediction), &p); err != nil {
			return m, fmt.Errorf("its prediction: %w", err)
		}
		m.Prediction = &p
	}
	return m, nil
}

// Migration returns one migration record.
func (s *Store) Migration(ctx context.Context, id string) (api.Migration, error) {
	var rec, prediction string
	err := s.rdb.QueryRowContext(ctx, `SELECT `+migrationColumns+` FROM migrations WHERE id = ?`, id).Scan(&rec, &prediction)
	if errors.Is(err, sql.ErrNoRows) {
		return api.Migration{}, ErrNotFound
	}
	if err != nil {
		return api.Migration{}, fmt.Errorf("read migration %s: %w", id, err)
	}
	m, err := decodeMigration(rec, prediction)
	if err != nil {
		return api.Migration{}, fmt.Errorf("decode migration %s: %w", id, err)
	}
	return m, nil
}

// Migrations returns migration records, newest first: those of one VM if vm is not
// empty, only unfinished ones if active.
func (s *Store) Migrations(ctx context.Context, vm string, active bool, limit int) ([]api.Migration, error) {
	q := `SELECT ` + migrationColumns + ` FROM migrations WHERE (? = '' OR vm = ?)`
	if active {
		q += ` AND state NOT IN ('succeeded', 'failed', 'cancelled')`
	}
	q += ` ORDER BY started DESC LIMIT ?`
	rows, err := s.rdb.QueryContext(ctx, q, vm, vm, limit)
	if err != nil {
		return nil, fmt.Errorf("list migrations: %w", err)
	}
	defer rows.Close()
	var out []api.Migration
	for rows.Next() {
		var rec, prediction string
		if err := rows.Scan(&rec, &prediction); err != nil {
			return nil, err
		}
		m, err := decodeMigration(rec, prediction)
		if err != nil {
			return nil, fmt.Errorf("decode migration: %w", err)
		}
		out = append(out, m)
	}
	return out, rows.Err()
}
