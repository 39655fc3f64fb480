package cluster

import (
	"context"
	"crypto/hmac"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/raft"
)

// The internal listener (DESIGN.md, "The internal channel"): one TCP port
// for every node-to-node call. A connection is mutual TLS; the protocol it
// speaks is chosen by ALPN in the handshake, so it is authenticated with
// the rest, and then both sides prove the cluster key (peerTLS.proof)
// before a byte of Raft or RPC is read.

// ALPN protocols of the internal port; part of the wire format.
const (
	protoRaft = "exactonce-raft/1"
	protoRPC  = "exactonce-rpc/1"
)

// Limits of the internal listener.
const (
	// handshakeTimeout bounds the TLS handshake and the key proofs.
	handshakeTimeout = 5 * time.Second
	// maxHandshakes bounds connections in their handshake at once; more
	// are closed at once, so unauthenticated peers cannot make a node
	// hold unbounded work.
	maxHandshakes = 64
	// refusalLogEvery is how often a refused peer is logged at Warn (the
	// others at Debug), so a scan cannot flood the log.
	refusalLogEvery = 10 * time.Second
)

// internalMux accepts the internal port's connections, authenticates them
// and hands each to the Raft transport or the RPC server.
type internalMux struct {
	ln   net.Listener
	peer *peerTLS
	log  *slog.Logger
	raft *connQueue
	rpc  *connQueue
	// slots bounds concurrent handshakes.
	slots chan struct{}
	done  chan struct{}
	wg    sync.WaitGroup
	once  sync.Once
	// lastWarn is when a refusal was last logged at Warn (Unix ns).
	lastWarn atomic.Int64
	// refused counts refused connections (tests, status).
	refused atomic.Uint64
}

// listenInternal binds the internal port.
func listenInternal(bind string, advertise net.Addr, p *peerTLS, log *slog.Logger) (*internalMux, error) {
	ln, err := net.Listen("tcp", bind)
	if err != nil {
		return nil, fmt.Errorf("cluster: listen on the internal address %s: %w", bind, err)
	}
	m := &internalMux{
		ln: ln, peer: p, log: log,
		slots: make(chan struct{}, maxHandshakes),
		done:  make(chan struct{}),
	}
	if advertise == nil {
		advertise = ln.Addr()
	}
	m.raft = newConnQueue(advertise, m.done)
	m.rpc = newConnQueue(advertise, m.done)
	m.wg.Add(1)
	go m.accept()
	return m, nil
}

// Addr is the bound address.
func (m *internalMux) Addr() net.Addr { return m.ln.Addr() }

// Close stops accepting and waits for the handshakes in progress.
func (m *internalMux) Close() error {
	var err error
	m.once.Do(func() {
		close(m.done)
		err = m.ln.Close()
		m.wg.Wait()
	})
	return err
}

func (m *internalMux) accept() {
	defer m.wg.Done()
	for {
		conn, err := m.ln.Accept()
		if err != nil {
			select {
			case <-m.done:
				return
			default:
			}
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				continue
			}
			m.log.Warn("internal listener: accept failed", "err", err)
			select {
			case <-m.done:
				return
			case <-time.After(50 * time.Millisecond):
			}
			continue
		}
		select {
		case m.slots <- struct{}{}:
		default:
			m.refuse(conn.RemoteAddr(), errors.New("too many handshakes in progress"))
			conn.Close()
			continue
		}
		m.wg.Add(1)
		go func() {
			defer m.wg.Done()
			defer func() { <-m.slots }()
			m.handle(conn)
		}()
	}
}

// handle authenticates one connection and queues it for its protocol.
func (m *internalMux) handle(raw net.Conn) {
	conn := tls.Server(raw, m.peer.serverConfig([]string{protoRaft, protoRPC}))
	ctx, cancel := context.WithTimeout(context.Background(), handshakeTimeout)
	defer cancel()
	stop := context.AfterFunc(ctx, func() { raw.SetDeadline(time.Now()) })
	err := conn.HandshakeContext(ctx)
	if err == nil {
		err = exchangeProofs(conn, m.peer, roleServer)
	}
	if !stop() && err == nil {
		// The deadline fired: the connection is unusable.
		err = ctx.Err()
	}
	if err != nil {
		m.refuse(raw.RemoteAddr(), err)
		raw.Close()
		return
	}
	if err := raw.SetDeadline(time.Time{}); err != nil {
		raw.Close()
		return
	}
	var q *connQueue
	var out net.Conn = conn
	switch conn.ConnectionState().NegotiatedProtocol {
	case protoRaft:
		q = m.raft
	case protoRPC:
		// net/http would hand a *tls.Conn with an ALPN protocol it does not
		// know to TLSNextProto, or drop it; the wrapper keeps it HTTP/1.1
		// and carries the verified peer to the handlers.
		q, out = m.rpc, &peerConn{Conn: conn, peer: peerIDOf(conn)}
	default:
		m.refuse(raw.RemoteAddr(), errors.New("no known protocol negotiated"))
		conn.Close()
		return
	}
	if !q.put(out) {
		conn.Close()
	}
}

// peerConn is an authenticated RPC connection and the node it comes from.
type peerConn struct {
	net.Conn
	peer string
}

// peerIDOf names the verified peer of a handshaken connection.
func peerIDOf(conn *tls.Conn) string {
	if certs := conn.ConnectionState().PeerCertificates; len(certs) > 0 {
		return NodeIDOf(certs[0])
	}
	return ""
}

// refuse logs a refused connection: at Warn at most every refusalLogEvery.
func (m *internalMux) refuse(from net.Addr, err error) {
	m.refused.Add(1)
	level := slog.LevelDebug
	now := time.Now().UnixNano()
	if last := m.lastWarn.Load(); now-last >= int64(refusalLogEvery) && m.lastWarn.CompareAndSwap(last, now) {
		level = slog.LevelWarn
	}
	m.log.Log(context.Background(), level,
		"internal port: refused a connection (not a node of this cluster: another cluster key, a certificate not of the internal CA, or not an ExactOnce node)",
		"remote", from.String(), "err", err)
}

// exchangeProofs sends this side's proof of the cluster key and checks the
// peer's. Both sides write first: 32 bytes never block on a TCP socket.
func exchangeProofs(conn *tls.Conn, p *peerTLS, role byte) error {
	peerRole := roleServer
	if role == roleServer {
		peerRole = roleClient
	}
	cs := conn.ConnectionState()
	mine, err := p.proof(cs, role)
	if err != nil {
		return err
	}
	want, err := p.proof(cs, peerRole)
	if err != nil {
		return err
	}
	if _, err := conn.Write(mine); err != nil {
		return fmt.Errorf("send key proof: %w", err)
	}
	got := make([]byte, len(want))
	if _, err := io.ReadFull(conn, got); err != nil {
		return fmt.Errorf("read key proof: %w", err)
	}
	if !hmac.Equal(got, want) {
		return errors.New("the peer does not hold this cluster's key")
	}
	return nil
}

// dial opens an authenticated connection to addr for proto; when wantID is
// not empty the peer's certificate must name that node.
func (p *peerTLS) dial(ctx context.Context, addr, proto, wantID string) (*tls.Conn, error) {
	ctx, cancel := context.WithTimeout(ctx, handshakeTimeout)
	defer cancel()
	var d net.Dialer
	raw, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("dial %s: %w", addr, err)
	}
	conn := tls.Client(raw, p.clientConfig(proto, wantID))
	stop := context.AfterFunc(ctx, func() { raw.SetDeadline(time.Now()) })
	err = conn.HandshakeContext(ctx)
	if err == nil && conn.ConnectionState().NegotiatedProtocol != proto {
		err = fmt.Errorf("the peer does not speak %s", proto)
	}
	if err == nil {
		err = exchangeProofs(conn, p, roleClient)
	}
	stopped := stop()
	if err != nil {
		raw.Close()
		return nil, fmt.Errorf("internal handshake with %s: %w", addr, err)
	}
	if !stopped {
		// The deadline fired after the proofs: the conn is unusable.
		raw.Close()
		return nil, fmt.Errorf("internal handshake with %s: %w", addr, ctx.Err())
	}
	return conn, nil
}

// connQueue is a net.Listener fed with authenticated connections. Closing
// it stops its consumer (the Raft transport or the RPC server); the port
// itself belongs to the internalMux.
type connQueue struct {
	addr   net.Addr
	ch     chan net.Conn
	done   <-chan struct{}
	closed chan struct{}
	once   sync.Once
}

func newConnQueue(addr net.Addr, done <-chan struct{}) *connQueue {
	return &connQueue{addr: addr, ch: make(chan net.Conn), done: done, closed: make(chan struct{})}
}

// put hands conn to Accept; false when the queue or the port closed first.
func (q *connQueue) put(conn net.Conn) bool {
	select {
	case q.ch <- conn:
		return true
	case <-q.done:
		return false
	case <-q.closed:
		return false
	}
}

// Accept returns the next authenticated connection.
func (q *connQueue) Accept() (net.Conn, error) {
	select {
	case c := <-q.ch:
		return c, nil
	case <-q.done:
		return nil, net.ErrClosed
	case <-q.closed:
		return nil, net.ErrClosed
	}
}

// Close stops Accept; later connections for this protocol are closed.
func (q *connQueue) Close() error {
	q.once.Do(func() { close(q.closed) })
	return nil
}

// Addr is the advertised internal address.
func (q *connQueue) Addr() net.Addr { return q.addr }

// raftStream is the raft.StreamLayer of the internal port.
type raftStream struct {
	*connQueue
	peer *peerTLS
	// idAt names the node expected at a Raft address ("" when unknown).
	idAt func(raft.ServerAddress) string
}

var _ raft.StreamLayer = (*raftStream)(nil)

// Dial opens an authenticated Raft connection within timeout.
func (s *raftStream) Dial(address raft.ServerAddress, timeout time.Duration) (net.Conn, error) {
	ctx := context.Background()
	if timeout > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, timeout)
		defer cancel()
	}
	conn, err := s.peer.dial(ctx, string(address), protoRaft, s.idAt(address))
	if err != nil {
		return nil, fmt.Errorf("cluster: raft: %w", err)
	}
	return conn, nil
}
