package httpapi

import (
	"net/http"
	"sync"

	"github.com/exactonce/exactonce/fsm"
)

// clientCache keeps decoded client records for authentication, so that a
// request does not open a view and decode its client every time. It is
// valid for one fsm.ClientsVersion: any committed client change (create,
// revoke) or restore empties it, so a revocation takes effect on the next
// request after this node applies it, as without the cache.
type clientCache struct {
	mu      sync.Mutex
	version uint64
	clients map[string]*fsm.Client
}

// lookup returns the client (nil when unknown) from the cache or the state.
// Unknown ids are not cached: they cost a view, as before, and cannot grow
// the cache.
func (c *clientCache) lookup(f *fsm.FSM, id string) (*fsm.Client, error) {
	version := f.ClientsVersion() // read before the state: see ClientsVersion
	c.mu.Lock()
	if c.version == version {
		if cl, ok := c.clients[id]; ok {
			c.mu.Unlock()
			return cl, nil
		}
	}
	c.mu.Unlock()

	var cl *fsm.Client
	err := f.View(func(v *fsm.View) error {
		var err error
		cl, err = v.Client(id)
		return err
	})
	if err != nil || cl == nil {
		return nil, err
	}
	c.mu.Lock()
	if c.version != version {
		c.version, c.clients = version, map[string]*fsm.Client{}
	}
	if c.clients == nil {
		c.clients = map[string]*fsm.Client{}
	}
	c.clients[id] = cl
	c.mu.Unlock()
	return cl, nil
}

// stillAllowed answers 401 and returns false when clientID, authenticated
// before a read barrier, is revoked in the state the barrier brought: a
// revocation committed before the read began is never ignored. A cached
// lookup; the secret was checked already and never changes.
func (s *Server) stillAllowed(w http.ResponseWriter, r *http.Request, clientID string) bool {
	c, err := s.clients.lookup(s.b.FSM(), clientID)
	if err != nil {
		LoggerFrom(r.Context()).Error("auth: read client", "error", err)
		WriteError(w, errInternal, "", nil)
		return false
	}
	if c == nil || c.RevokedAt != 0 {
		WriteError(w, errUnauth, "", nil)
		return false
	}
	return true
}
