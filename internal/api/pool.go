package api

import (
	"crypto/tls"
	"sync"
	"time"
)

// HostClients keeps one client, and so one pool of keep-alive TLS connections, per host
// that its owner calls (the center its agents, an agent its peers): following a migration
// costs a handshake or two, not one per poll. A host's client is made anew when its URL
// changes, and can be forgotten (its certificate revoked), so that the next call opens,
// and verifies, a new connection.
type HostClients struct {
	// tlsFor is the TLS configuration for calling host.
	tlsFor func(host string) *tls.Config

	mu      sync.Mutex
	clients map[string]hostClient
}

type hostClient struct {
	url    string
	client *Client
}

// NewHostClients returns clients that call each host with tlsFor(host).
func NewHostClients(tlsFor func(host string) *tls.Config) *HostClients {
	return &HostClients{tlsFor: tlsFor, clients: map[string]hostClient{}}
}

// Get returns the client of host at url, whose calls time out after timeout.
func (p *HostClients) Get(host, url string, timeout time.Duration) (*Client, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	hc, ok := p.clients[host]
	if !ok || hc.url != url {
		c, err := NewClient(url, 0, WithTLS(p.tlsFor(host)))
		if err != nil {
			return nil, err
		}
		if ok {
			hc.client.CloseIdle()
		}
		hc = hostClient{url: url, client: c}
		p.clients[host] = hc
	}
	return hc.client.WithTimeout(timeout), nil
}

// Forget closes host's idle connections and drops its client.
func (p *HostClients) Forget(host string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if hc, ok := p.clients[host]; ok {
		hc.client.CloseIdle()
		delete(p.clients, host)
	}
}

// ForgetAll forgets every host.
func (p *HostClients) ForgetAll() {
	p.mu.Lock()
	defer p.mu.Unlock()
	for host, hc := range p.clients {
		hc.client.CloseIdle()
		delete(p.clients, host)
	}
}
