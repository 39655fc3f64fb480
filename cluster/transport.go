package cluster

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"time"

	"github.com/hashicorp/raft"
)

// tlsStreamLayer is a raft.StreamLayer over mutual TLS: it listens with
// tls.Listen and dials with tls.Dialer, both using the node's RaftTLS
// configuration (which must require and verify client certificates).
type tlsStreamLayer struct {
	net.Listener
	advertise net.Addr
	cfg       *tls.Config
}

var _ raft.StreamLayer = (*tlsStreamLayer)(nil)

func newTLSStreamLayer(bind string, advertise net.Addr, cfg *tls.Config) (*tlsStreamLayer, error) {
	if len(cfg.Certificates) == 0 && cfg.GetCertificate == nil {
		return nil, errors.New("cluster: RaftTLS has no certificate")
	}
	l, err := tls.Listen("tcp", bind, cfg)
	if err != nil {
		return nil, fmt.Errorf("cluster: raft TLS listen on %s: %w", bind, err)
	}
	return &tlsStreamLayer{Listener: l, advertise: advertise, cfg: cfg}, nil
}

// Addr is the advertised address peers dial.
func (s *tlsStreamLayer) Addr() net.Addr { return s.advertise }

// Dial opens a TLS connection to a peer, handshake included, within timeout.
func (s *tlsStreamLayer) Dial(address raft.ServerAddress, timeout time.Duration) (net.Conn, error) {
	cfg := s.cfg.Clone()
	if cfg.ServerName == "" {
		host, _, err := net.SplitHostPort(string(address))
		if err == nil {
			cfg.ServerName = host
		}
	}
	// The timeout bounds the TCP connect and the TLS handshake together.
	ctx := context.Background()
	if timeout > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, timeout)
		defer cancel()
	}
	d := &tls.Dialer{Config: cfg}
	conn, err := d.DialContext(ctx, "tcp", string(address))
	if err != nil {
		return nil, fmt.Errorf("raft TLS dial %s: %w", address, err)
	}
	return conn, nil
}
