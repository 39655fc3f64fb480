package httpapi

import (
	"net/http"
	"strings"
	"unicode/utf8"

	"github.com/gorilla/mux"

	"github.com/exactonce/exactonce/fsm"
	"github.com/exactonce/exactonce/internal/secure"
)

// maxClientNameLen bounds a client's name (characters).
const maxClientNameLen = 200

// clientCreatedResponse is the 201 body of POST /v1/admin/clients. The
// secret is shown only here.
type clientCreatedResponse struct {
	ClientID     string `json:"clientId"`
	ClientSecret string `json:"clientSecret"`
	Name         string `json:"name"`
	CreatedAt    string `json:"createdAt"`
}

// clientView is one client in GET /v1/admin/clients.
type clientView struct {
	ClientID  string `json:"clientId"`
	Name      string `json:"name"`
	CreatedAt string `json:"createdAt"`
	RevokedAt string `json:"revokedAt,omitempty"`
}

type clientRevokedResponse struct {
	ClientID  string `json:"clientId"`
	RevokedAt string `json:"revokedAt"`
}

func (s *Server) adminCreateClient(w http.ResponseWriter, r *http.Request, body []byte) {
	var req struct {
		Name *string `json:"name"`
	}
	if err := decodeStrict(body, &req); err != nil {
		WriteError(w, errInvalid, err.Error(), nil)
		return
	}
	if req.Name == nil || strings.TrimSpace(*req.Name) == "" {
		WriteError(w, errInvalid, "name is required", nil)
		return
	}
	name := strings.TrimSpace(*req.Name)
	if utf8.RuneCountInString(name) > maxClientNameLen {
		WriteError(w, errInvalid, "name is longer than 200 characters", nil)
		return
	}
	id := secure.NewClientID()
	secret := secure.NewSecret()
	cmd := &fsm.Command{
		Type:         fsm.CmdCreateClient,
		CreateClient: &fsm.CreateClient{ID: id, Name: name, SecretHash: secure.HashSecret(secret)},
	}
	s.apply(w, r, cmd, func(res *fsm.Result) (int, any) {
		if res.Code != fsm.CodeOK {
			return resultError(res)
		}
		c := res.Client
		if c == nil {
			return http.StatusInternalServerError, errorBody(errInternal, "create client returned no client", nil)
		}
		return http.StatusCreated, clientCreatedResponse{ClientID: c.ID, ClientSecret: secret, Name: c.Name, CreatedAt: fmtTime(c.CreatedAt)}
	})
}

func (s *Server) adminListClients(w http.ResponseWriter, r *http.Request) {
	if !s.readBarrier(w, r, nil) {
		return
	}
	if !onlyConsistencyParam(w, r) {
		return
	}
	var clients []*fsm.Client
	err := s.b.FSM().View(func(v *fsm.View) error {
		var err error
		clients, err = v.Clients()
		return err
	})
	if err != nil {
		LoggerFrom(r.Context()).Error("list clients", "error", err)
		WriteError(w, errInternal, "", nil)
		return
	}
	out := struct {
		Clients []clientView `json:"clients"`
	}{Clients: make([]clientView, 0, len(clients))}
	for _, c := range clients {
		if c.ID == fsm.DemoClientID {
			continue
		}
		out.Clients = append(out.Clients, clientView{ClientID: c.ID, Name: c.Name, CreatedAt: fmtTime(c.CreatedAt), RevokedAt: fmtTime(c.RevokedAt)})
	}
	WriteJSON(w, http.StatusOK, out)
}

func (s *Server) adminRevokeClient(w http.ResponseWriter, r *http.Request, _ []byte) {
	id := mux.Vars(r)["id"]
	if id == fsm.DemoClientID {
		WriteError(w, string(fsm.CodeClientNotFound), "the demo client cannot be revoked", nil)
		return
	}
	cmd := &fsm.Command{Type: fsm.CmdRevokeClient, RevokeClient: &fsm.RevokeClient{ID: id}}
	s.apply(w, r, cmd, func(res *fsm.Result) (int, any) {
		if res.Code != fsm.CodeOK {
			return resultError(res)
		}
		if res.Client == nil {
			return http.StatusInternalServerError, errorBody(errInternal, "revoke returned no client", nil)
		}
		return http.StatusOK, clientRevokedResponse{ClientID: res.Client.ID, RevokedAt: fmtTime(res.Client.RevokedAt)}
	})
}
