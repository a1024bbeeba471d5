package audit

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/godwit/godwit/internal/store"

	"github.com/godwit/godwit/internal/api"
)

// schema is the audit trail's part of the center's database. The triggers make the table
// append-only for the center's own code: a record cannot be changed, and only records at
// or before the anchor (those Trim is removing) can be deleted. They are a guard against
// mistakes, not against someone with the database file; the hash chain is that.
const schema = `
CREATE TABLE IF NOT EXISTS audit_log (
	id INTEGER PRIMARY KEY,
	time TEXT NOT NULL,
	actor TEXT NOT NULL,
	actor_kind TEXT NOT NULL,
	on_behalf_of TEXT NOT NULL DEFAULT '',
	from_addr TEXT NOT NULL DEFAULT '',
	action TEXT NOT NULL,
	target TEXT NOT NULL DEFAULT '',
	params TEXT NOT NULL,
	outcome TEXT NOT NULL,
	error TEXT NOT NULL DEFAULT '',
	duration_ms REAL,
	downtime_ms REAL,
	bytes INTEGER,
	prev_hash TEXT NOT NULL,
	hash TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS audit_log_time ON audit_log (time);
CREATE INDEX IF NOT EXISTS audit_log_target ON audit_log (target);
CREATE INDEX IF NOT EXISTS audit_log_migration ON audit_log (json_extract(params, '$.migration'))
	WHERE action = 'vm.migrate' AND json_valid(params);
CREATE TABLE IF NOT EXISTS audit_chain (
	one INTEGER PRIMARY KEY CHECK (one = 1),
	anchor_id INTEGER NOT NULL,
	anchor_hash TEXT NOT NULL,
	head_id INTEGER NOT NULL,
	head_hash TEXT NOT NULL,
	trimmed INTEGER NOT NULL DEFAULT 0,
	trimmed_at TEXT NOT NULL DEFAULT ''
);
INSERT OR IGNORE INTO audit_chain (one, anchor_id, anchor_hash, head_id, head_hash) VALUES (1, 0, '` + GenesisHash + `', 0, '` + GenesisHash + `');
CREATE TRIGGER IF NOT EXISTS audit_log_no_update BEFORE UPDATE ON audit_log
BEGIN
	SELECT RAISE(ABORT, 'audit records cannot be changed');
END;
CREATE TRIGGER IF NOT EXISTS audit_log_no_delete BEFORE DELETE ON audit_log
	WHEN OLD.id > (SELECT anchor_id FROM audit_chain WHERE one = 1)
BEGIN
	SELECT RAISE(ABORT, 'audit records are only removed by retention, oldest first');
END;
`

// Options configures a Log.
type Options struct {
	// Logger receives what the audit trail cannot record; default slog.Default().
	Logger *slog.Logger
	// Now is the clock; default time.Now.
	Now func() time.Time
	// Reader is a pool of connections that only read the same (WAL) database, beside
	// the one that writes; the heartbeats' checkpoint checks read through it, with
	// statements prepared once. Default: the writing database.
	Reader *sql.DB
	// HeadReuse is how long the heartbeats' checkpoints may reuse the chain's state
	// (its head) as last read, rather than read it for every heartbeat: a checkpoint
	// then names a head at most this old, and a cut chain is seen at most this late.
	// 0: read every time.
	HeadReuse time.Duration
}

// Log is the audit trail in a database. Its methods are safe for concurrent use.
type Log struct {
	db  *sql.DB
	log *slog.Logger
	now func() time.Time

	// mu serialises Append and Trim's cut with each other. Appends inside a store write
	// (appendTx) do not take it; their transaction orders them.
	mu sync.Mutex
	// trimMu keeps Trim from removing records a Verify is walking.
	trimMu sync.RWMutex
	// anchors are the checkpoints that anchor the chain's head on the hosts.
	anchors anchors
	// chainStmt and hashStmt read the chain's state and a record's hash for the
	// heartbeats' checkpoint checks, on Options.Reader.
	chainStmt, hashStmt *sql.Stmt
	// headReuse is Options.HeadReuse; head is the chain's state as last read for a
	// checkpoint, and when (monotonic).
	headReuse time.Duration
	headMu    sync.Mutex
	head      chainState
	headAt    time.Time
}

// Open prepares the audit trail's tables in db (the center's database) and returns the
// trail.
func Open(ctx context.Context, db *sql.DB, opts Options) (*Log, error) {
	if opts.Logger == nil {
		opts.Logger = slog.Default()
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	if _, err := db.ExecContext(ctx, schema); err != nil {
		return nil, fmt.Errorf("create the audit trail's tables: %w", err)
	}
	if opts.Reader == nil {
		opts.Reader = db
	}
	l := &Log{db: db, log: opts.Logger, now: opts.Now, headReuse: opts.HeadReuse}
	var err error
	if l.chainStmt, err = opts.Reader.PrepareContext(ctx, chainQuery); err != nil {
		return nil, fmt.Errorf("prepare the audit trail's chain read: %w", err)
	}
	if l.hashStmt, err = opts.Reader.PrepareContext(ctx, `SELECT hash FROM audit_log WHERE id = ?`); err != nil {
		return nil, fmt.Errorf("prepare the audit trail's record read: %w", err)
	}
	return l, nil
}

// chainState is the audit_chain row: where the chain starts (the anchor: the last
// trimmed record, or id 0 and GenesisHash) and where it ends (the head).
type chainState struct {
	AnchorID   int64
	AnchorHash string
	HeadID     int64
	HeadHash   string
	Trimmed    int64
	TrimmedAt  string
}

type querier interface {
	QueryRowContext(ctx context.Context, query string, args ...any) *sql.Row
}

// chainQuery reads the audit_chain row.
const chainQuery = `SELECT anchor_id, anchor_hash, head_id, head_hash, trimmed, trimmed_at FROM audit_chain WHERE one = 1`

func readChain(ctx context.Context, q querier) (chainState, error) {
	return scanChain(q.QueryRowContext(ctx, chainQuery))
}

// scanChain reads the chain's state from row, a chainQuery's.
func scanChain(row *sql.Row) (chainState, error) {
	var s chainState
	err := row.Scan(&s.AnchorID, &s.AnchorHash, &s.HeadID, &s.HeadHash, &s.Trimmed, &s.TrimmedAt)
	if errors.Is(err, sql.ErrNoRows) {
		return s, errors.New("the audit trail's chain state (table audit_chain) is missing; the database was tampered with or damaged")
	}
	if err != nil {
		return s, fmt.Errorf("read the audit trail's chain state: %w", err)
	}
	return s, nil
}

// Append adds a record at the end of the chain and returns it as stored. It sets ID,
// PrevHash and Hash, and Time when it is zero; Params must be a JSON object or empty.
// Every field is cut to its bound first (see MaxField and the others).
func (l *Log) Append(ctx context.Context, r Record) (Record, error) {
	r, err := prepare(r)
	if err != nil {
		return Record{}, err
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	tx, err := l.db.BeginTx(ctx, nil)
	if err != nil {
		return Record{}, fmt.Errorf("append audit record %s: %w", r.Action, err)
	}
	defer tx.Rollback()
	if r, err = l.appendTx(ctx, tx, r); err != nil {
		return Record{}, err
	}
	if err := tx.Commit(); err != nil {
		return Record{}, fmt.Errorf("append audit record %d (%s): %w", r.ID, r.Action, err)
	}
	return r, nil
}

// AppendHook returns a store.TxHook that appends r in the transaction of a write, so
// that the record and what it records commit together or not at all.
func (l *Log) AppendHook(r Record) store.TxHook {
	return func(ctx context.Context, tx *sql.Tx) (func(), error) {
		p, err := prepare(r)
		if err == nil {
			_, err = l.appendTx(ctx, tx, p)
		}
		return nil, err
	}
}

// AppendOnceHook is AppendHook for work that makes several writes with the same
// context (a migration is stored, then updated as it starts): r is appended in the
// transaction of the first write that commits, and not again.
func (l *Log) AppendOnceHook(r Record) store.TxHook {
	var done atomic.Bool
	return func(ctx context.Context, tx *sql.Tx) (func(), error) {
		if done.Load() {
			return nil, nil
		}
		p, err := prepare(r)
		if err == nil {
			_, err = l.appendTx(ctx, tx, p)
		}
		if err != nil {
			return nil, err
		}
		return func() { done.Store(true) }, nil
	}
}

// prepare checks a record and brings it into its stored form: bounded, and its params
// as json.Marshal writes them, so that exports (which go through json.Marshal) carry the
// exact text the hash covers.
func prepare(r Record) (Record, error) {
	if r.Action == "" || r.Actor == "" || r.ActorKind == "" || r.Outcome == "" {
		return Record{}, fmt.Errorf("audit record (action %q, actor %q, actor kind %q, outcome %q) lacks an action, actor, actor kind or outcome; this is a bug in the caller",
			api.Truncate(r.Action, MaxField), api.Truncate(r.Actor, MaxField), api.Truncate(r.ActorKind, MaxField), api.Truncate(r.Outcome, MaxField))
	}
	if len(r.Params) == 0 {
		r.Params = json.RawMessage("{}")
	}
	var obj map[string]json.RawMessage
	if err := json.Unmarshal(r.Params, &obj); err != nil || obj == nil {
		return Record{}, fmt.Errorf("audit record %s: params must be a JSON object: %s", r.Action, api.Truncate(string(r.Params), MaxParamValue))
	}
	if err := bound(&r, obj); err != nil {
		return Record{}, fmt.Errorf("audit record %s: encode params: %w", r.Action, err)
	}
	return r, nil
}

// appendTx writes a prepared record at the end of the chain inside tx. It takes no lock
// of the Log: it may run inside a store write, which holds the database's only
// connection, while an Append holds l.mu waiting for that connection. The transaction
// is what orders it with other appends (and id being the primary key makes a racing
// append fail rather than fork the chain).
func (l *Log) appendTx(ctx context.Context, tx *sql.Tx, r Record) (Record, error) {
	// Stamped inside the transaction, so that times rise with ids.
	if r.Time.IsZero() {
		r.Time = l.now()
	}
	r.Time = r.Time.UTC().Truncate(time.Microsecond)
	st, err := readChain(ctx, tx)
	if err != nil {
		return Record{}, err
	}
	r.ID, r.PrevHash = st.HeadID+1, st.HeadHash
	r.Hash = r.ComputeHash()
	var bytes any
	if r.Bytes != nil {
		bytes = int64(*r.Bytes)
	}
	_, err = tx.ExecContext(ctx, `INSERT INTO audit_log (id, time, actor, actor_kind, on_behalf_of, from_addr, action,
		target, params, outcome, error, duration_ms, downtime_ms, bytes, prev_hash, hash)
		VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`,
		r.ID, r.Time.Format(timeLayout), r.Actor, r.ActorKind, r.OnBehalfOf, r.From, r.Action,
		r.Target, string(r.Params), r.Outcome, r.Error, nullFloat(r.DurationMS), nullFloat(r.DowntimeMS), bytes,
		r.PrevHash, r.Hash)
	if err != nil {
		return Record{}, fmt.Errorf("append audit record %d (%s): %w", r.ID, r.Action, err)
	}
	if _, err := tx.ExecContext(ctx, `UPDATE audit_chain SET head_id = ?, head_hash = ? WHERE one = 1`, r.ID, r.Hash); err != nil {
		return Record{}, fmt.Errorf("append audit record %d: move the chain's head: %w", r.ID, err)
	}
	return r, nil
}

func nullFloat(f *float64) any {
	if f == nil {
		return nil
	}
	return *f
}

// recordCols are the columns scanRecord reads, in its order.
const recordCols = `id, time, actor, actor_kind, on_behalf_of, from_addr, action, target, params, outcome, error,
	duration_ms, downtime_ms, bytes, prev_hash, hash`

// scanRecord reads a row as stored. A time that does not parse becomes the zero time,
// which no longer matches the record's hash: Verify reports it.
func scanRecord(sc interface{ Scan(...any) error }) (Record, error) {
	var r Record
	var tm, params string
	var dur, down sql.NullFloat64
	var bytes sql.NullInt64
	if err := sc.Scan(&r.ID, &tm, &r.Actor, &r.ActorKind, &r.OnBehalfOf, &r.From, &r.Action, &r.Target, &params,
		&r.Outcome, &r.Error, &dur, &down, &bytes, &r.PrevHash, &r.Hash); err != nil {
		return Record{}, err
	}
	r.Time, _ = time.Parse(timeLayout, tm)
	r.Params = json.RawMessage(params)
	if dur.Valid {
		r.DurationMS = &dur.Float64
	}
	if down.Valid {
		r.DowntimeMS = &down.Float64
	}
	if bytes.Valid {
		b := uint64(bytes.Int64)
		r.Bytes = &b
	}
	return r, nil
}
