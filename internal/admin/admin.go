// Package admin is edged's admin HTTP API: health and readiness,
// Prometheus metrics, the cluster views and operator actions, drain, and
// the CPS and BGP modules' views and actions that edgectl uses.
//
// Reads are open to whoever can reach the listener; the daemon keeps it on
// loopback unless configured otherwise, and then requires a token. Calls that
// change cluster state need "Authorization: Bearer TOKEN" whenever a token is
// configured. Every error is JSON, {"error": "..."}, so that clients can show
// the daemon's reason rather than a bare status.
package admin

import (
	"crypto/sha256"
	"crypto/subtle"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"strings"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/anyedge/anyedge/cluster"
)

// maxBody bounds request bodies: the API takes small JSON objects only.
const maxBody = 64 << 10

// Server serves the admin API for one cluster node.
type Server struct {
	api      cluster.API
	log      *slog.Logger
	gatherer prometheus.Gatherer
	token    []byte // sha256 of the configured token; nil: no token
	mux      *http.ServeMux

	// Modules; nil when the node does not run them (modules.go).
	ready   ReadyFunc
	drainer Drainer
	cps     CPS
	bgp     BGP
	loc     Location
}

// Option sets an optional dependency or setting of a Server.
type Option func(*Server)

// WithLogger sets the logger (default: discard).
func WithLogger(l *slog.Logger) Option { return func(s *Server) { s.log = l } }

// WithGatherer serves g on /metrics (default: an empty registry).
func WithGatherer(g prometheus.Gatherer) Option { return func(s *Server) { s.gatherer = g } }

// WithToken requires "Authorization: Bearer token" on state-changing calls.
// An empty token requires nothing.
func WithToken(token string) Option {
	return func(s *Server) {
		s.token = nil
		if token != "" {
			h := sha256.Sum256([]byte(token))
			s.token = h[:]
		}
	}
}

// New builds the admin API over api.
func New(api cluster.API, opts ...Option) *Server {
	s := &Server{
		api:      api,
		log:      slog.New(slog.DiscardHandler),
		gatherer: prometheus.NewRegistry(),
		mux:      http.NewServeMux(),
	}
	for _, o := range opts {
		o(s)
	}
	s.routes()
	return s
}

func (s *Server) routes() {
	s.handle("GET", "/healthz", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		_, _ = w.Write([]byte("ok\n"))
	})
	s.handle("GET", "/metrics", promhttp.HandlerFor(s.gatherer, promhttp.HandlerOpts{
		ErrorLog: slog.NewLogLogger(s.log.Handler(), slog.LevelWarn),
	}).ServeHTTP)
	s.handle("GET", "/v1/cluster/nodes", func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, http.StatusOK, orEmpty(s.api.Nodes()))
	})
	s.handle("GET", "/v1/cluster/topology", func(w http.ResponseWriter, r *http.Request) {
		t := s.api.Topology()
		t.Nodes, t.Links, t.Routes = orEmpty(t.Nodes), orEmpty(t.Links), orEmpty(t.Routes)
		writeJSON(w, http.StatusOK, t)
	})
	s.handle("GET", "/v1/cluster/caps", func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, http.StatusOK, orEmpty(s.api.Caps()))
	})
	s.handle("GET", "/v1/cluster/tags", func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, http.StatusOK, orEmpty(s.api.Tags()))
	})
	s.handle("POST", "/v1/cluster/remove", s.authorized(s.remove))
	s.handle("POST", "/v1/cluster/tags/active", s.authorized(s.setTagActive))
	s.moduleRoutes()
	s.mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		writeError(w, http.StatusNotFound, "no such endpoint: "+r.URL.Path)
	})
}

// handle registers h for method and path, and a JSON 405 for the path with
// any other method (ServeMux's own 405 is plain text).
func (s *Server) handle(method, path string, h http.HandlerFunc) {
	s.mux.HandleFunc(method+" "+path, h)
	allow := method
	if method == "GET" {
		allow = "GET, HEAD"
	}
	s.mux.HandleFunc(path, func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Allow", allow)
		writeError(w, http.StatusMethodNotAllowed, fmt.Sprintf("method %s not allowed, use %s", r.Method, method))
	})
}

// ServeHTTP serves the admin API.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) { s.mux.ServeHTTP(w, r) }

// authorized checks the bearer token, if one is configured. The token is
// compared as a SHA-256 digest in constant time, so neither its bytes nor
// its length leak through timing.
func (s *Server) authorized(h http.HandlerFunc) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		if s.token != nil {
			got, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
			sum := sha256.Sum256([]byte(got))
			if !ok || subtle.ConstantTimeCompare(sum[:], s.token) != 1 {
				s.log.Warn("admin call refused: missing or wrong token",
					"method", r.Method, "path", r.URL.Path, "remote", r.RemoteAddr)
				w.Header().Set("WWW-Authenticate", `Bearer realm="edged"`)
				writeError(w, http.StatusUnauthorized, "missing or wrong bearer token")
				return
			}
		}
		h(w, r)
	}
}

// RemoveRequest is the body of POST /v1/cluster/remove.
type RemoveRequest struct {
	Node uint32 `json:"node"`
}

// SetTagActiveRequest is the body of POST /v1/cluster/tags/active. Node 0
// clears the operator's override and lets the cluster elect the owner.
type SetTagActiveRequest struct {
	Tag  string `json:"tag"`
	Node uint32 `json:"node"`
}

// Result is the body of a successful state-changing call.
type Result struct {
	Status string `json:"status"`
}

func (s *Server) remove(w http.ResponseWriter, r *http.Request) {
	var req RemoveRequest
	if !decode(w, r, &req) {
		return
	}
	if req.Node == 0 {
		writeError(w, http.StatusBadRequest, `"node" is required (1..4294967295)`)
		return
	}
	if err := s.api.RemoveNode(req.Node); err != nil {
		s.refused(w, r, err, "node", req.Node)
		return
	}
	s.log.Info("node removed by operator", "node", req.Node, "remote", r.RemoteAddr)
	writeJSON(w, http.StatusOK, Result{Status: "ok"})
}

func (s *Server) setTagActive(w http.ResponseWriter, r *http.Request) {
	var req SetTagActiveRequest
	if !decode(w, r, &req) {
		return
	}
	if req.Tag == "" {
		writeError(w, http.StatusBadRequest, `"tag" is required`)
		return
	}
	if err := s.api.SetTagActive(req.Tag, req.Node); err != nil {
		s.refused(w, r, err, "tag", req.Tag, "node", req.Node)
		return
	}
	s.log.Info("sharing tag owner set by operator", "tag", req.Tag, "node", req.Node, "remote", r.RemoteAddr)
	writeJSON(w, http.StatusOK, Result{Status: "ok"})
}

// refused reports an operation the cluster turned down. The request was
// well-formed, so the conflict is with the cluster's state: 409.
func (s *Server) refused(w http.ResponseWriter, r *http.Request, err error, attrs ...any) {
	s.log.Warn("admin call refused", append(attrs, "path", r.URL.Path, "err", err)...)
	status := http.StatusConflict
	switch {
	case errors.Is(err, cluster.ErrUnknownNode), errors.Is(err, cluster.ErrUnknownTag):
		status = http.StatusNotFound
	case errors.Is(err, cluster.ErrNotRunning):
		status = http.StatusServiceUnavailable
	}
	writeError(w, status, err.Error())
}

// decode reads a JSON request body into v, answering 400 on any problem.
func decode(w http.ResponseWriter, r *http.Request, v any) bool {
	dec := json.NewDecoder(http.MaxBytesReader(w, r.Body, maxBody))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		var mbe *http.MaxBytesError
		if errors.As(err, &mbe) {
			writeError(w, http.StatusRequestEntityTooLarge, "request body too large")
			return false
		}
		writeError(w, http.StatusBadRequest, "bad request body: "+err.Error())
		return false
	}
	if dec.More() {
		writeError(w, http.StatusBadRequest, "bad request body: more than one JSON value")
		return false
	}
	return true
}

type errorBody struct {
	Error string `json:"error"`
}

func writeError(w http.ResponseWriter, status int, msg string) {
	writeJSON(w, status, errorBody{Error: msg})
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(status)
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	_ = enc.Encode(v) // the status is sent; a write error means the client left
}

// orEmpty makes nil lists encode as [] rather than null, so that clients
// can iterate without a null check.
func orEmpty[T any](s []T) []T {
	if s == nil {
		return []T{}
	}
	return s
}
