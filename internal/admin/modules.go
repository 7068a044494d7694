package admin

import (
	"errors"
	"net/http"
	"strconv"
	"time"

	"github.com/anyedge/anyedge/cluster"
	"github.com/anyedge/anyedge/edge/cps"
)

// The endpoints of the modules built on the cluster: readiness, drain,
// CPS limits and BGP. A module the node does not run (no section in
// edged.yaml) answers 404 with an error that says so, so that edgectl can
// tell "not configured" from "no such endpoint".

// ReadyFunc reports whether the node is ready to take traffic and, when it
// is not, why (for example "drained", "sip: listeners not up").
type ReadyFunc func() (ready bool, reasons []string)

// Drainer takes the node out of service and puts it back.
type Drainer interface {
	// SetDrained drains (true) or undrains (false) the node. An error
	// wrapping cluster.ErrNotRunning is answered 503; any other error 500.
	SetDrained(drained bool) error
}

// CPS is what the admin API needs from the CPS limiter service.
type CPS interface {
	Status() []cps.LimitStatus
	Top(limit string, n int) ([]cps.KeyRate, error)
	SetRate(limit string, rate float64) error
}

// BGP is what the admin API needs from the BGP speaker, already in the
// API's terms.
type BGP interface {
	Peers() []BGPPeer
	Routes() []BGPRoute
}

// WithReadiness serves /readyz from f. Without it /readyz answers 404.
func WithReadiness(f ReadyFunc) Option { return func(s *Server) { s.ready = f } }

// WithDrainer serves POST /v1/drain and /v1/undrain. Without it they
// answer 404.
func WithDrainer(d Drainer) Option { return func(s *Server) { s.drainer = d } }

// WithCPS serves /v1/cps. Without it (no cps section) the CPS endpoints
// answer 404.
func WithCPS(c CPS) Option { return func(s *Server) { s.cps = c } }

// WithBGP serves /v1/bgp. Without it (no bgp section) the BGP endpoints
// answer 404.
func WithBGP(b BGP) Option { return func(s *Server) { s.bgp = b } }

// ReadyBody is the body of GET /readyz: 200 {"ready": true} or 503
// {"ready": false, "reasons": [...]}.
type ReadyBody struct {
	Ready   bool     `json:"ready"`
	Reasons []string `json:"reasons,omitempty"`
}

// CPSLimit is one CPS limit as this node sees it (GET /v1/cps).
type CPSLimit struct {
	Name      string `json:"name"`
	Algorithm string `json:"algorithm"`
	Selector  string `json:"selector"`
	// Region is set for a per-region limit.
	Region string        `json:"region,omitempty"`
	Window time.Duration `json:"window_ns"`
	// Limit is the configured (or run-time) rate, calls per second.
	Limit float64 `json:"limit"`
	// Share is the part of Limit in force (split partition policy).
	Share float64 `json:"share"`
	// Rate is the platform-wide rate of accepted calls now.
	Rate float64 `json:"rate"`
	// Offered estimates the platform-wide rate of calls offered.
	Offered float64 `json:"offered"`
	// Rejected counts the calls this limit refused on this node.
	Rejected uint64 `json:"rejected"`
	// Keys and Top are set for keyed limits.
	Keys int          `json:"keys,omitempty"`
	Top  []CPSKeyRate `json:"top,omitempty"`
}

// CPSKeyRate is one key of a keyed limit with its platform-wide rate
// (GET /v1/cps/top).
type CPSKeyRate struct {
	Key  string  `json:"key"`
	Rate float64 `json:"rate"`
}

// SetRateRequest is the body of POST /v1/cps/rate.
type SetRateRequest struct {
	Name string  `json:"name"`
	Rate float64 `json:"rate"`
}

// BGPPeer is the session with one router (GET /v1/bgp/peers).
type BGPPeer struct {
	Address          string        `json:"address"`
	ASN              uint32        `json:"asn"`
	State            string        `json:"state"` // idle, connect, active, opensent, openconfirm, established
	Uptime           time.Duration `json:"uptime_ns"`
	PrefixesSent     uint64        `json:"prefixes_sent"`
	PrefixesReceived uint64        `json:"prefixes_received"`
	LastError        string        `json:"last_error,omitempty"`
	// BFD is the BFD session's state, or "" when BFD is off.
	BFD string `json:"bfd,omitempty"`
}

// BGPRoute is one announced prefix and the routers it is announced to
// (GET /v1/bgp/routes).
type BGPRoute struct {
	Prefix string `json:"prefix"`
	// NextHop is "" for the session's own address (next-hop-self).
	NextHop     string   `json:"next_hop,omitempty"`
	MED         uint32   `json:"med,omitempty"`
	LocalPref   uint32   `json:"local_pref,omitempty"`
	Communities []string `json:"communities,omitempty"`
	Prepend     int      `json:"prepend,omitempty"`
	// Peers are the routers with an established session of the prefix's
	// family: those that have the path.
	Peers []string `json:"peers"`
}

// Top limits for GET /v1/cps/top.
const (
	defaultTopN = 10
	maxTopN     = 1000
)

func (s *Server) moduleRoutes() {
	s.handle("GET", "/readyz", s.readyz)
	s.handle("POST", "/v1/drain", s.authorized(s.drain(true)))
	s.handle("POST", "/v1/undrain", s.authorized(s.drain(false)))
	s.handle("GET", "/v1/cps", s.withCPS(func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, http.StatusOK, cpsLimits(s.cps.Status()))
	}))
	s.handle("GET", "/v1/cps/top", s.withCPS(s.cpsTop))
	s.handle("POST", "/v1/cps/rate", s.authorized(s.withCPS(s.cpsSetRate)))
	s.handle("GET", "/v1/location/{aor}", s.location)
	s.handle("GET", "/v1/bgp/peers", s.withBGP(func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, http.StatusOK, orEmpty(s.bgp.Peers()))
	}))
	s.handle("GET", "/v1/bgp/routes", s.withBGP(func(w http.ResponseWriter, r *http.Request) {
		routes := s.bgp.Routes()
		for i := range routes {
			routes[i].Peers = orEmpty(routes[i].Peers)
		}
		writeJSON(w, http.StatusOK, orEmpty(routes))
	}))
}

func notConfigured(w http.ResponseWriter, what string) {
	writeError(w, http.StatusNotFound, what)
}

func (s *Server) withCPS(h http.HandlerFunc) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		if s.cps == nil {
			notConfigured(w, "cps is not configured on this node (no cps section in edged.yaml)")
			return
		}
		h(w, r)
	}
}

func (s *Server) withBGP(h http.HandlerFunc) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		if s.bgp == nil {
			notConfigured(w, "bgp is not configured on this node (no bgp section in edged.yaml)")
			return
		}
		h(w, r)
	}
}

func (s *Server) readyz(w http.ResponseWriter, r *http.Request) {
	if s.ready == nil {
		notConfigured(w, "readiness is not reported by this server")
		return
	}
	ok, reasons := s.ready()
	if ok {
		writeJSON(w, http.StatusOK, ReadyBody{Ready: true})
		return
	}
	if len(reasons) == 0 {
		reasons = []string{"not ready"} // never a bare false
	}
	writeJSON(w, http.StatusServiceUnavailable, ReadyBody{Ready: false, Reasons: reasons})
}

// drain serves POST /v1/drain (on) and /v1/undrain. The body, if any, is
// ignored: there is nothing to say but "do it".
func (s *Server) drain(on bool) http.HandlerFunc {
	verb := map[bool]string{true: "drained", false: "undrained"}[on]
	return func(w http.ResponseWriter, r *http.Request) {
		if s.drainer == nil {
			notConfigured(w, "drain is not available on this server")
			return
		}
		if err := s.drainer.SetDrained(on); err != nil {
			s.log.Error("admin call failed", "path", r.URL.Path, "err", err)
			status := http.StatusInternalServerError
			if errors.Is(err, cluster.ErrNotRunning) {
				status = http.StatusServiceUnavailable
			}
			writeError(w, status, err.Error())
			return
		}
		s.log.Info("node "+verb+" by operator", "remote", r.RemoteAddr)
		writeJSON(w, http.StatusOK, Result{Status: "ok"})
	}
}

func (s *Server) cpsTop(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	name := q.Get("limit")
	if name == "" {
		writeError(w, http.StatusBadRequest, `query parameter "limit" is required`)
		return
	}
	n := defaultTopN
	if v := q.Get("n"); v != "" {
		var err error
		n, err = strconv.Atoi(v)
		if err != nil || n < 1 || n > maxTopN {
			writeError(w, http.StatusBadRequest, `query parameter "n" must be 1..`+strconv.Itoa(maxTopN)+`, not "`+v+`"`)
			return
		}
	}
	top, err := s.cps.Top(name, n)
	if err != nil {
		s.cpsRefused(w, r, err, "limit", name)
		return
	}
	out := make([]CPSKeyRate, len(top))
	for i, k := range top {
		out[i] = CPSKeyRate{Key: k.Key, Rate: k.Rate}
	}
	writeJSON(w, http.StatusOK, out)
}

func (s *Server) cpsSetRate(w http.ResponseWriter, r *http.Request) {
	var req SetRateRequest
	if !decode(w, r, &req) {
		return
	}
	if req.Name == "" {
		writeError(w, http.StatusBadRequest, `"name" is required`)
		return
	}
	if err := s.cps.SetRate(req.Name, req.Rate); err != nil {
		s.cpsRefused(w, r, err, "limit", req.Name, "rate", req.Rate)
		return
	}
	s.log.Info("cps rate set by operator", "limit", req.Name, "rate", req.Rate, "remote", r.RemoteAddr)
	writeJSON(w, http.StatusOK, Result{Status: "ok"})
}

// cpsRefused answers 404 for an unknown limit and 400 for anything else
// the limiter turns down (a rate out of range, top of a global limit):
// the request does not fit the configured limits.
func (s *Server) cpsRefused(w http.ResponseWriter, r *http.Request, err error, attrs ...any) {
	s.log.Warn("admin call refused", append(attrs, "path", r.URL.Path, "err", err)...)
	status := http.StatusBadRequest
	if errors.Is(err, cps.ErrUnknownLimit) {
		status = http.StatusNotFound
	}
	writeError(w, status, err.Error())
}

func cpsLimits(st []cps.LimitStatus) []CPSLimit {
	out := make([]CPSLimit, len(st))
	for i, l := range st {
		out[i] = CPSLimit{
			Name: l.Name, Algorithm: string(l.Algorithm), Selector: string(l.Selector), Region: l.Region,
			Window: l.Window, Limit: l.Limit, Share: l.Share, Rate: l.Rate, Offered: l.Offered,
			Rejected: l.Rejected, Keys: l.Keys,
		}
		for _, k := range l.Top {
			out[i].Top = append(out[i].Top, CPSKeyRate{Key: k.Key, Rate: k.Rate})
		}
	}
	return out
}
