package qmp

import "context"

// TLSCredsX509 are the arguments of object-add for a tls-creds-x509 object: TLS
// credentials read from Dir, which holds ca-cert.pem and, for Endpoint "server",
// server-cert.pem and server-key.pem, or for "client", client-cert.pem and
// client-key.pem.
type TLSCredsX509 struct {
	QOMType string `json:"qom-type"` // "tls-creds-x509"
	ID      string `json:"id"`
	// Endpoint is "server" or "client".
	Endpoint string `json:"endpoint"`
	Dir      string `json:"dir"`
	// VerifyPeer makes a server demand, and check, the client's certificate.
	VerifyPeer bool `json:"verify-peer"`
}

// AuthzList are the arguments of object-add for an authz-list object: identities (for
// TLS, the client certificate's distinguished name) checked against Rules in order,
// Policy ("allow" or "deny") deciding when none matches.
type AuthzList struct {
	QOMType string          `json:"qom-type"` // "authz-list"
	ID      string          `json:"id"`
	Policy  string          `json:"policy"`
	Rules   []AuthzListRule `json:"rules"`
}

// AuthzListRule is one rule of an authz-list: Match ("exact" or "glob" per Format)
// decides Policy ("allow" or "deny").
type AuthzListRule struct {
	Match  string `json:"match"`
	Policy string `json:"policy"`
	Format string `json:"format"`
}

// ObjectAdd creates a QOM object (object-add) from args, such as TLSCredsX509.
func (m *Monitor) ObjectAdd(ctx context.Context, args any) error {
	return m.Execute(ctx, "object-add", args, nil)
}

// ObjectDel deletes the QOM object id (object-del).
func (m *Monitor) ObjectDel(ctx context.Context, id string) error {
	return m.Execute(ctx, "object-del", struct {
		ID string `json:"id"`
	}{id}, nil)
}
