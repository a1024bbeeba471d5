package store

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"time"
)

// pkiSchema holds the tables of the cluster's certificate authority: join tokens and
// issued certificates.
const pkiSchema = `
CREATE TABLE IF NOT EXISTS join_tokens (
	id TEXT PRIMARY KEY,
	secret_sha256 TEXT NOT NULL,
	host TEXT NOT NULL DEFAULT '',
	created TEXT NOT NULL,
	created_by TEXT NOT NULL,
	expires TEXT NOT NULL,
	used TEXT NOT NULL DEFAULT '',
	used_by TEXT NOT NULL DEFAULT '',
	revoked TEXT NOT NULL DEFAULT ''
);
CREATE TABLE IF NOT EXISTS certificates (
	serial TEXT PRIMARY KEY,
	name TEXT NOT NULL,
	kind TEXT NOT NULL,
	not_before TEXT NOT NULL,
	not_after TEXT NOT NULL,
	join_token TEXT NOT NULL DEFAULT '',
	revoked TEXT NOT NULL DEFAULT '',
	revoked_reason TEXT NOT NULL DEFAULT ''
);
CREATE INDEX IF NOT EXISTS certificates_name ON certificates (name);
CREATE INDEX IF NOT EXISTS certificates_revoked ON certificates (serial) WHERE revoked != '';
`

// JoinTokenRecord is a one-time token with which a host joins the cluster. Only the
// SHA-256 of its secret is kept. Host, when set, is the only name that may join with
// it. Used is set, once, by the join that consumed it.
type JoinTokenRecord struct {
	ID           string
	SecretSHA256 string
	Host         string
	Created      time.Time
	CreatedBy    string
	Expires      time.Time
	Used         time.Time
	UsedBy       string
	Revoked      time.Time
}

// CertRecord is a certificate the CA issued: to a host (kind "host") or to the center.
type CertRecord struct {
	Serial        string
	Name          string
	Kind          string
	NotBefore     time.Time
	NotAfter      time.Time
	JoinToken     string
	Revoked       time.Time
	RevokedReason string
}

// ErrTokenUsed means a join token was already consumed.
var ErrTokenUsed = errors.New("join token already used")

// InsertJoinToken stores a new join token.
func (s *Store) InsertJoinToken(ctx context.Context, t JoinTokenRecord) error {
	return s.exec(ctx, "store join token", `INSERT INTO join_tokens (id, secret_sha256, host, created, created_by, expires) VALUES (?, ?, ?, ?, ?, ?)`,
		t.ID, t.SecretSHA256, t.Host, ts(t.Created), t.CreatedBy, ts(t.Expires))
}

const joinTokenCols = `id, secret_sha256, host, created, created_by, expires, used, used_by, revoked`

func scanJoinToken(sc scanner) (JoinTokenRecord, error) {
	var t JoinTokenRecord
	var created, expires, used, revoked string
	if err := sc.Scan(&t.ID, &t.SecretSHA256, &t.Host, &created, &t.CreatedBy, &expires, &used, &t.UsedBy, &revoked); err != nil {
		return t, err
	}
	t.Created, t.Expires, t.Used, t.Revoked = parseTS(created), parseTS(expires), parseTS(used), parseTS(revoked)
	return t, nil
}

// JoinToken returns the join token with this id, or ErrNotFound.
func (s *Store) JoinToken(ctx context.Context, id string) (JoinTokenRecord, error) {
	return queryOne(ctx, s.rdb, scanJoinToken, "join token "+id, `SELECT `+joinTokenCols+` FROM join_tokens WHERE id = ?`, id)
}

// JoinTokens lists the join tokens, newest first.
func (s *Store) JoinTokens(ctx context.Context) ([]JoinTokenRecord, error) {
	return queryAll(ctx, s.rdb, scanJoinToken, "join tokens", `SELECT `+joinTokenCols+` FROM join_tokens ORDER BY created DESC`)
}

// RevokeJoinToken marks an unused join token revoked.
func (s *Store) RevokeJoinToken(ctx context.Context, id string, now time.Time) error {
	return s.exec1(ctx, "revoke join token "+id, `UPDATE join_tokens SET revoked = CASE WHEN revoked = '' THEN ? ELSE revoked END WHERE id = ?`, ts(now), id)
}

// ConsumeJoinToken marks a join token used by host and records the certificate issued
// with it, in one transaction: a token that is already used (by a concurrent join, or
// a replay) is ErrTokenUsed and nothing is written.
func (s *Store) ConsumeJoinToken(ctx context.Context, id, host string, now time.Time, cert CertRecord) error {
	return s.write(ctx, "consume join token", func(tx *sql.Tx) error {
		res, err := tx.ExecContext(ctx, `UPDATE join_tokens SET used = ?, used_by = ? WHERE id = ? AND used = ''`, ts(now), host, id)
		if err != nil {
			return fmt.Errorf("consume join token: %w", err)
		}
		if n, _ := res.RowsAffected(); n == 0 {
			return ErrTokenUsed
		}
		return insertCert(ctx, tx, cert)
	})
}

// InsertCert records an issued certificate.
func (s *Store) InsertCert(ctx context.Context, c CertRecord) error {
	return s.write(ctx, "record certificate "+c.Serial, func(tx *sql.Tx) error { return insertCert(ctx, tx, c) })
}

func insertCert(ctx context.Context, db execer, c CertRecord) error {
	_, err := db.ExecContext(ctx, `INSERT INTO certificates (serial, name, kind, not_before, not_after, join_token) VALUES (?, ?, ?, ?, ?, ?)`,
		c.Serial, c.Name, c.Kind, ts(c.NotBefore), ts(c.NotAfter), c.JoinToken)
	if err != nil {
		return fmt.Errorf("record certificate %s of %s: %w", c.Serial, c.Name, err)
	}
	return nil
}

const certCols = `serial, name, kind, not_before, not_after, join_token, revoked, revoked_reason`

func scanCert(sc scanner) (CertRecord, error) {
	var c CertRecord
	var nb, na, rev string
	if err := sc.Scan(&c.Serial, &c.Name, &c.Kind, &nb, &na, &c.JoinToken, &rev, &c.RevokedReason); err != nil {
		return c, err
	}
	c.NotBefore, c.NotAfter, c.Revoked = parseTS(nb), parseTS(na), parseTS(rev)
	return c, nil
}

// Cert returns the certificate with this serial, or ErrNotFound.
func (s *Store) Cert(ctx context.Context, serial string) (CertRecord, error) {
	return queryOne(ctx, s.rdb, scanCert, "certificate "+serial, `SELECT `+certCols+` FROM certificates WHERE serial = ?`, serial)
}

// Certs lists the issued certificates, newest first.
func (s *Store) Certs(ctx context.Context) ([]CertRecord, error) {
	return queryAll(ctx, s.rdb, scanCert, "certificates", `SELECT `+certCols+` FROM certificates ORDER BY not_before DESC, serial`)
}

// RevokeCerts revokes every unrevoked certificate of name and returns their serials.
func (s *Store) RevokeCerts(ctx context.Context, name, reason string, now time.Time) ([]string, error) {
	var serials []string
	err := s.write(ctx, "revoke certificates of "+name, func(tx *sql.Tx) error {
		rows, err := tx.QueryContext(ctx, `SELECT serial FROM certificates WHERE name = ? AND revoked = ''`, name)
		if err != nil {
			return fmt.Errorf("revoke certificates of %s: %w", name, err)
		}
		defer rows.Close()
		for rows.Next() {
			var s string
			if err := rows.Scan(&s); err != nil {
				return fmt.Errorf("revoke certificates of %s: %w", name, err)
			}
			serials = append(serials, s)
		}
		if err := rows.Err(); err != nil {
			return fmt.Errorf("revoke certificates of %s: %w", name, err)
		}
		if _, err := tx.ExecContext(ctx, `UPDATE certificates SET revoked = ?, revoked_reason = ? WHERE name = ? AND revoked = ''`, ts(now), reason, name); err != nil {
			return fmt.Errorf("revoke certificates of %s: %w", name, err)
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	return serials, nil
}

// RevokedSerials lists the serials of every revoked certificate that has not expired
// yet (an expired one is refused anyway).
func (s *Store) RevokedSerials(ctx context.Context, now time.Time) ([]string, error) {
	rows, err := s.rdb.QueryContext(ctx, `SELECT serial FROM certificates WHERE revoked != '' AND not_after > ? ORDER BY serial`, ts(now))
	if err != nil {
		return nil, fmt.Errorf("list revoked certificates: %w", err)
	}
	defer rows.Close()
	var out []string
	for rows.Next() {
		var s string
		if err := rows.Scan(&s); err != nil {
			return nil, fmt.Errorf("list revoked certificates: %w", err)
		}
		out = append(out, s)
	}
	return out, rows.Err()
}
