package qmp

import "context"

// TLSCredsPSK are the arguments of object-add for a tls-creds-psk object: TLS keyed by
// a pre-shared key, read from Dir/keys.psk ("user:hexkey" lines). A client names its
// identity in Username.
type TLSCredsPSK struct {
	QOMType string `json:"qom-type"` // "tls-creds-psk"
	ID      string `json:"id"`
	// Endpoint is "server" or "client".
	Endpoint string `json:"endpoint"`
	Dir      string `json:"dir"`
	Username string `json:"username,omitempty"`
	// Priority is the GnuTLS priority string (ciphers, versions) of the sessions.
	Priority string `json:"priority,omitempty"`
}

// ObjectAdd creates a QOM object (object-add) from args, such as TLSCredsPSK.
func (m *Monitor) ObjectAdd(ctx context.Context, args any) error {
	return m.Execute(ctx, "object-add", args, nil)
}

// ObjectDel deletes the QOM object id (object-del).
func (m *Monitor) ObjectDel(ctx context.Context, id string) error {
	return m.Execute(ctx, "object-del", struct {
		ID string `json:"id"`
	}{id}, nil)
}
