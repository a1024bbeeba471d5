package center

import (
	"context"
	"errors"
	"net/http"
	"time"

	"github.com/godwit/godwit/internal/api"
	"github.com/godwit/godwit/internal/audit"
	"github.com/godwit/godwit/internal/store"
)

// registerUsers adds logging in, users and tokens to mux:
//
//	POST   /api/v1/login          user and password → a token that lasts 12 h
//	GET    /api/v1/users          the users (admin)
//	POST   /api/v1/users          create a user (admin)
//	DELETE /api/v1/users/{name}   delete a user and its tokens (admin)
//	POST   /api/v1/tokens         a token for oneself or, as admin, for another user
//	DELETE /api/v1/tokens/{id}    revoke one's own token or, as admin, anyone's
func (c *Center) registerUsers(mux *api.Mux) {
	mux.HandleFunc("POST /api/v1/login", func(w http.ResponseWriter, r *http.Request) {
		var req api.LoginRequest
		if err := api.Decode(w, r, &req); err != nil {
			api.WriteError(w, err)
			return
		}
		name := api.Truncate(req.User, maxLoginName)
		audit.SetTarget(r.Context(), name)
		audit.SetActor(r.Context(), audit.Actor{Name: name, Kind: audit.KindUser})
		t, err := c.login(r.Context(), loginSource(r), req)
		setRetryAfter(w, err)
		writeResult(w, http.StatusCreated, t, err)
	})
	mux.HandleFunc("GET /api/v1/users", func(w http.ResponseWriter, r *http.Request) {
		us, err := c.listUsers(r.Context())
		writeResult(w, http.StatusOK, us, err)
	})
	mux.HandleFunc("POST /api/v1/users", func(w http.ResponseWriter, r *http.Request) {
		var req api.CreateUserRequest
		if err := api.Decode(w, r, &req); err != nil {
			api.WriteError(w, err)
			return
		}
		audit.SetTarget(r.Context(), req.Name)
		u, err := c.createUser(r.Context(), req)
		writeResult(w, http.StatusCreated, u, err)
	})
	mux.HandleFunc("DELETE /api/v1/users/{name}", func(w http.ResponseWriter, r *http.Request) {
		if err := c.deleteUser(r.Context(), r.PathValue("name")); err != nil {
			api.WriteError(w, err)
			return
		}
		w.WriteHeader(http.StatusNoContent)
	})
	mux.HandleFunc("POST /api/v1/tokens", func(w http.ResponseWriter, r *http.Request) {
		var req api.CreateTokenRequest
		if err := api.Decode(w, r, &req); err != nil {
			api.WriteError(w, err)
			return
		}
		p := principalOf(r.Context())
		if req.User == "" {
			req.User = p.name
		}
		audit.SetTarget(r.Context(), req.User)
		t, err := c.createToken(r.Context(), p, req)
		writeResult(w, http.StatusCreated, t, err)
	})
	mux.HandleFunc("DELETE /api/v1/tokens/{id}", func(w http.ResponseWriter, r *http.Request) {
		if err := c.revokeToken(r.Context(), principalOf(r.Context()), r.PathValue("id")); err != nil {
			api.WriteError(w, err)
			return
		}
		w.WriteHeader(http.StatusNoContent)
	})
}

func userView(u store.UserRecord) api.User {
	return api.User{Name: u.Name, Role: u.Role, Created: u.Created}
}

// login checks a user's password, within the limits on failed logins from source and
// for the user (checkLogin), and issues a token.
func (c *Center) login(ctx context.Context, source string, req api.LoginRequest) (api.Token, error) {
	var u store.UserRecord
	err := c.checkLogin(source, req.User, func() (bool, error) {
		var err error
		u, err = c.store.User(ctx, req.User)
		if err != nil && !errors.Is(err, store.ErrNotFound) {
			return false, err
		}
		return checkPassword(u.PasswordHash, req.Password), nil
	})
	if errors.Is(err, errWrongPassword) {
		return api.Token{}, api.Errorf(http.StatusUnauthorized, "unauthorized", "%v; check both and try again", err)
	}
	if err != nil {
		return api.Token{}, err
	}
	return c.issueToken(ctx, u, loginTokenLifetime)
}

func (c *Center) listUsers(ctx context.Context) ([]api.User, error) {
	us, err := c.store.Users(ctx)
	if err != nil {
		return nil, err
	}
	out := make([]api.User, 0, len(us))
	for _, u := range us {
		out = append(out, userView(u))
	}
	return out, nil
}

func (c *Center) createUser(ctx context.Context, req api.CreateUserRequest) (api.User, error) {
	if !userName.MatchString(req.Name) {
		return api.User{}, api.BadRequest("user name %q is not valid: use up to 64 lower-case letters, digits, '.', '_' or '-', starting with a letter", req.Name)
	}
	switch req.Role {
	case api.RoleAdmin, api.RoleOperator, api.RoleViewer:
	default:
		return api.User{}, api.BadRequest("role %q is not known: use admin, operator or viewer", req.Role)
	}
	hash, err := hashPassword(req.Password)
	if err != nil {
		return api.User{}, err
	}
	u := store.UserRecord{Name: req.Name, Role: req.Role, PasswordHash: hash, Created: c.now().UTC()}
	if err := c.store.InsertUser(ctx, u); err != nil {
		var dup *store.DuplicateError
		if errors.As(err, &dup) {
			return api.User{}, api.Conflict("user %s already exists; delete it first or pick another name", req.Name)
		}
		return api.User{}, err
	}
	return userView(u), nil
}

func (c *Center) deleteUser(ctx context.Context, name string) error {
	u, err := c.store.User(ctx, name)
	if errors.Is(err, store.ErrNotFound) {
		return api.NotFound("no user %s; `godwit user list` shows them", name)
	}
	if err != nil {
		return err
	}
	if u.Role == api.RoleAdmin {
		us, err := c.store.Users(ctx)
		if err != nil {
			return err
		}
		admins := 0
		for _, x := range us {
			if x.Role == api.RoleAdmin {
				admins++
			}
		}
		if admins <= 1 {
			return api.Conflict("user %s is the last administrator; create another admin before deleting it", name)
		}
	}
	if err := c.store.DeleteUser(ctx, name); err != nil && !errors.Is(err, store.ErrNotFound) {
		return err
	}
	return nil
}

func (c *Center) createToken(ctx context.Context, p principal, req api.CreateTokenRequest) (api.Token, error) {
	if req.User == "" {
		return api.Token{}, api.BadRequest("say whose token this is: name a user (godwit token create --user NAME)")
	}
	if req.User != p.name && p.role != api.RoleAdmin {
		return api.Token{}, api.Errorf(http.StatusForbidden, "forbidden", "only an admin may create a token for another user (%s)", req.User)
	}
	life, err := parseLifetime(req.Expires, defaultTokenLifetime)
	if err != nil {
		return api.Token{}, err
	}
	limit, who := maxUserTokenLifetime, "a user who is not an admin"
	if p.role == api.RoleAdmin {
		limit, who = maxTokenLifetime, "an admin"
	}
	if life == 0 || life > limit {
		return api.Token{}, api.BadRequest("every API token expires, and %s may create one for at most %d days; ask for less (e.g. --expires 30d)",
			who, limit/(24*time.Hour))
	}
	u, err := c.store.User(ctx, req.User)
	if errors.Is(err, store.ErrNotFound) {
		return api.Token{}, api.NotFound("no user %s; create it first with `godwit user create`", req.User)
	}
	if err != nil {
		return api.Token{}, err
	}
	return c.issueToken(ctx, u, life)
}

func (c *Center) revokeToken(ctx context.Context, p principal, id string) error {
	t, err := c.store.Token(ctx, id)
	if errors.Is(err, store.ErrNotFound) {
		return api.NotFound("no token %s", id)
	}
	if err != nil {
		return err
	}
	if t.User != p.name && p.role != api.RoleAdmin {
		// Not found rather than forbidden: others' token ids are not to be probed.
		return api.NotFound("no token %s", id)
	}
	if err := c.store.RevokeToken(ctx, id, c.now()); err != nil {
		return err
	}
	return nil
}
