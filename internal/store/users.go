package store

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"strings"
	"time"
)

// UserRecord is a stored user. PasswordHash is a bcrypt hash, or empty for a user who
// can only use API tokens (the agent user).
type UserRecord struct {
	Name         string
	Role         string
	PasswordHash string
	Created      time.Time
}

// TokenRecord is a stored API token. Only the SHA-256 of its secret is kept; Expires
// and Revoked are zero when the token does not expire or is not revoked.
type TokenRecord struct {
	ID           string
	User         string
	SecretSHA256 string
	Created      time.Time
	Expires      time.Time
	Revoked      time.Time
}

// InsertUser adds a user; a user of that name already existing is a *DuplicateError.
func (s *Store) InsertUser(ctx context.Context, u UserRecord) error {
	return s.write(ctx, "store user "+u.Name, func(tx *sql.Tx) error {
		_, err := tx.ExecContext(ctx, `INSERT INTO users (name, role, password_hash, created) VALUES (?, ?, ?, ?)`,
			u.Name, u.Role, u.PasswordHash, ts(u.Created))
		if err != nil && strings.Contains(err.Error(), "UNIQUE") {
			return &DuplicateError{Field: "user", Value: u.Name}
		}
		if err != nil {
			return fmt.Errorf("store user %s: %w", u.Name, err)
		}
		return nil
	})
}

// User returns the user called name, or ErrNotFound.
func (s *Store) User(ctx context.Context, name string) (UserRecord, error) {
	var u UserRecord
	var created string
	err := s.rdb.QueryRowContext(ctx, `SELECT name, role, password_hash, created FROM users WHERE name = ?`, name).
		Scan(&u.Name, &u.Role, &u.PasswordHash, &created)
	if errors.Is(err, sql.ErrNoRows) {
		return u, ErrNotFound
	}
	if err != nil {
		return u, fmt.Errorf("read user %s: %w", name, err)
	}
	u.Created = parseTS(created)
	return u, nil
}

// Users returns every user, by name.
func (s *Store) Users(ctx context.Context) ([]UserRecord, error) {
	rows, err := s.rdb.QueryContext(ctx, `SELECT name, role, password_hash, created FROM users ORDER BY name`)
	if err != nil {
		return nil, fmt.Errorf("list users: %w", err)
	}
	defer rows.Close()
	var out []UserRecord
	for rows.Next() {
		var u UserRecord
		var created string
		if err := rows.Scan(&u.Name, &u.Role, &u.PasswordHash, &created); err != nil {
			return nil, fmt.Errorf("list users: %w", err)
		}
		u.Created = parseTS(created)
		out = append(out, u)
	}
	return out, rows.Err()
}

// DeleteUser removes a user and, with it, every token of the user.
func (s *Store) DeleteUser(ctx context.Context, name string) error {
	return s.exec1(ctx, "delete user "+name, `DELETE FROM users WHERE name = ?`, name)
}

// InsertToken adds a token.
func (s *Store) InsertToken(ctx context.Context, t TokenRecord) error {
	return s.exec(ctx, "store a token for "+t.User, `INSERT INTO tokens (id, user, secret_sha256, created, expires, revoked) VALUES (?, ?, ?, ?, ?, ?)`,
		t.ID, t.User, t.SecretSHA256, ts(t.Created), optTS(nonZero(t.Expires)), optTS(nonZero(t.Revoked)))
}

// Token returns the token with this id, or ErrNotFound.
func (s *Store) Token(ctx context.Context, id string) (TokenRecord, error) {
	var t TokenRecord
	var created, expires, revoked string
	err := s.rdb.QueryRowContext(ctx, `SELECT id, user, secret_sha256, created, expires, revoked FROM tokens WHERE id = ?`, id).
		Scan(&t.ID, &t.User, &t.SecretSHA256, &created, &expires, &revoked)
	if errors.Is(err, sql.ErrNoRows) {
		return t, ErrNotFound
	}
	if err != nil {
		return t, fmt.Errorf("read token %s: %w", id, err)
	}
	t.Created = parseTS(created)
	if p := optParseTS(expires); p != nil {
		t.Expires = *p
	}
	if p := optParseTS(revoked); p != nil {
		t.Revoked = *p
	}
	return t, nil
}

// RevokeToken marks a token revoked at now; revoking a revoked token keeps the first time.
func (s *Store) RevokeToken(ctx context.Context, id string, now time.Time) error {
	return s.exec1(ctx, "revoke token "+id, `UPDATE tokens SET revoked = CASE WHEN revoked = '' THEN ? ELSE revoked END WHERE id = ?`, ts(now), id)
}

func nonZero(t time.Time) *time.Time {
	if t.IsZero() {
		return nil
	}
	return &t
}
