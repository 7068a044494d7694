package admin

import (
	"context"
	"net/http"
	"strings"
	"time"

	"github.com/anyedge/anyedge/geo"
)

// Location is what the admin API needs from the distributed user location
// (*geo.Service is one).
type Location interface {
	LookupRoutes(ctx context.Context, aor, region string) ([]geo.Route, error)
	Region() string
}

// WithLocation serves GET /v1/location/{aor}. Without it (no geo section)
// the endpoint answers 404.
func WithLocation(l Location) Option { return func(s *Server) { s.loc = l } }

// LocationRoute is one result of a lookup (GET /v1/location/{aor}): where
// a call for the AoR entering this node would go.
type LocationRoute struct {
	// Kind is local (homed here), replica (a down home's binding this node
	// serves for its tag) or relay (to another node).
	Kind string `json:"kind"`
	// Node delivers the call: this node, or the relay target.
	Node uint32 `json:"node"`
	// Homes are the home nodes the route stands for.
	Homes  []uint32 `json:"homes"`
	Region string   `json:"region"`
	// Contact is the UA's contact (local, replica) or the relay target's
	// SIP URI (relay).
	Contact  string        `json:"contact"`
	Received string        `json:"received,omitempty"`
	Expires  time.Time     `json:"expires"`
	RTT      time.Duration `json:"rtt_ns"`
	Hops     int           `json:"hops"`
}

// maxAoR bounds the AoR in the path.
const maxAoR = 512

// location serves GET /v1/location/{aor}: a read-only lookup, exactly as a
// fresh call entering this node would do it (it counts as one in
// anyedge_geo_lookups_total). The AoR may omit "sip:". ?region= asks as a
// caller of another region would (default: this node's).
func (s *Server) location(w http.ResponseWriter, r *http.Request) {
	if s.loc == nil {
		notConfigured(w, "the distributed location is not configured on this node (no geo section in edged.yaml)")
		return
	}
	aor := r.PathValue("aor")
	if !strings.HasPrefix(aor, "sip:") && !strings.HasPrefix(aor, "sips:") {
		aor = "sip:" + aor
	}
	user, host, ok := strings.Cut(aor[strings.IndexByte(aor, ':')+1:], "@")
	if !ok || user == "" || host == "" || len(aor) > maxAoR || strings.ContainsAny(aor, " \t\r\n;?<>") {
		writeError(w, http.StatusBadRequest, `the AoR must be user@domain (optionally with "sip:"), at most 512 bytes, no parameters`)
		return
	}
	region := r.URL.Query().Get("region")
	if region == "" {
		region = s.loc.Region()
	}
	rs, err := s.loc.LookupRoutes(r.Context(), aor, region)
	if err != nil {
		s.log.Warn("location lookup failed", "aor", aor, "err", err)
		writeError(w, http.StatusInternalServerError, err.Error())
		return
	}
	out := make([]LocationRoute, len(rs))
	for i, rt := range rs {
		out[i] = LocationRoute{
			Kind: rt.Kind.String(), Node: rt.Node, Homes: orEmpty(rt.Homes), Region: rt.Region,
			Contact: rt.Binding.Contact, Received: rt.Binding.Received, Expires: rt.Binding.Expires,
			RTT: rt.RTT, Hops: rt.Hops,
		}
	}
	writeJSON(w, http.StatusOK, out)
}
