package geo

import (
	"cmp"
	"context"
	"slices"
	"time"

	"github.com/anyedge/anyedge/edge/location"
)

// RouteKind says how a lookup result is reached.
type RouteKind uint8

const (
	// RouteLocal is a binding homed on this node: deliver it directly.
	RouteLocal RouteKind = iota + 1
	// RouteReplica is a binding of a home that is down (or restarting),
	// served by this node because it owns the home's sharing tag: deliver
	// it directly (its NAT binding is on the shared anycast address).
	RouteReplica
	// RouteRelay sends the request to another node (a home, or the owner
	// of a down home's tag), which looks the AoR up with LookupLocal.
	RouteRelay
)

func (k RouteKind) String() string {
	switch k {
	case RouteLocal:
		return "local"
	case RouteReplica:
		return "replica"
	case RouteRelay:
		return "relay"
	}
	return "unknown"
}

// Route is one lookup result with how to reach it and what it costs.
type Route struct {
	Kind RouteKind
	// Node delivers the request: this node (local, replica) or the relay
	// target.
	Node uint32
	// Homes are the home nodes the route stands for (a relay to a tag
	// owner may stand for several down homes).
	Homes  []uint32
	Region string // Node's region
	// RTT is the measured round trip of the direct link to Node (0: this
	// node, no direct link, or not measured yet); Hops is the cluster path
	// length (0: this node).
	RTT  time.Duration
	Hops int
	// Binding is the contact (local, replica: Home = this node) or, for a
	// relay, an entry with Home = Node and Contact = Node's SIP URI.
	Binding location.Binding
}

// peerTable caches the cluster's per-node RTT and hop count.
type peerTable struct {
	at       int64
	nodes    map[uint32]peerInfo
	regionUp int // up nodes that hold this node's bindings (its partners)
}

type peerInfo struct {
	rtt  time.Duration
	hops int
}

func (s *Service) refreshPeers(at int64) {
	t := &peerTable{at: at, nodes: map[uint32]peerInfo{}}
	for _, v := range s.cl.Nodes() {
		t.nodes[v.ID] = peerInfo{rtt: v.RTT, hops: v.Hops}
		if v.ID != s.self && v.State == "up" && (s.cfg.ReplicateContactsCrossRegion || v.Region == s.region) {
			t.regionUp++
		}
	}
	s.peers.Store(t)
}

// partnersUp reports whether a partner may acknowledge a change (true
// until the cluster's view has been read).
func (s *Service) partnersUp() bool {
	t := s.peers.Load()
	return t == nil || t.regionUp > 0
}

func (s *Service) peer(id uint32) peerInfo {
	if t := s.peers.Load(); t != nil {
		return t.nodes[id]
	}
	return peerInfo{}
}

// Lookup implements location.Store for a fresh request (one that entered
// the platform here): LookupFrom with this node's region.
func (s *Service) Lookup(ctx context.Context, aor string) ([]location.Binding, error) {
	return s.LookupFrom(ctx, aor, s.region)
}

// LookupFrom returns where a fresh request for aor goes, for a caller in
// region: first the bindings homed here (Home = this node), then those this
// node serves for down homes whose tag it owns (Home = this node), then one
// entry per node to relay to (Home = that node, Contact = its SIP URI, Q
// 1000, Expires = the latest expiry of the homes it stands for), the
// caller's region first, then by RTT. A home that is down is replaced by
// the owner of its sharing tag, which serves its replicas.
//
// The proxy delivers entries whose Home is this node directly, and relays
// the others to Home with the original Request-URI, marked as relayed; the
// node that receives a relayed request must call LookupLocal, never Lookup.
func (s *Service) LookupFrom(ctx context.Context, aor, region string) ([]location.Binding, error) {
	rs, err := s.LookupRoutes(ctx, aor, region)
	return bindingsOf(rs), err
}

// LookupLocal is the lookup for a request another node relayed here: the
// bindings homed here and the replicas this node serves for down homes of
// its tag, never a relay (so a request is relayed at most once and cannot
// loop).
func (s *Service) LookupLocal(ctx context.Context, aor string) ([]location.Binding, error) {
	rs, err := s.routes(ctx, aor, s.region, true)
	return bindingsOf(rs), err
}

// LookupRoutes is LookupFrom with each result's kind, delivering node,
// region, RTT and hop count.
func (s *Service) LookupRoutes(ctx context.Context, aor, region string) ([]Route, error) {
	return s.routes(ctx, aor, region, false)
}

func bindingsOf(rs []Route) []location.Binding {
	if len(rs) == 0 {
		return nil
	}
	out := make([]location.Binding, len(rs))
	for i := range rs {
		out[i] = rs[i].Binding
	}
	return out
}

type homeInfo struct {
	id         uint32
	region     string
	expires    int64
	registered int64
	holds      bool // this node has its bindings (replicas)
}

func (s *Service) routes(ctx context.Context, aor, callerRegion string, relayed bool) ([]Route, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	if relayed {
		s.m.relayed.Inc()
	} else {
		s.m.fresh.Inc()
	}
	if callerRegion == "" {
		callerRegion = s.region
	}
	now := s.now()
	sh := s.st.shard(aor)
	var locals []Route
	var homes []homeInfo
	addHome := func(h homeInfo) {
		for i := range homes {
			if homes[i].id == h.id {
				homes[i].expires = max(homes[i].expires, h.expires)
				homes[i].registered = max(homes[i].registered, h.registered)
				homes[i].holds = homes[i].holds || h.holds
				if homes[i].region == "" {
					homes[i].region = h.region
				}
				return
			}
		}
		homes = append(homes, h)
	}
	sh.mu.Lock()
	st := sh.aors[aor]
	if st == nil {
		sh.mu.Unlock()
		return nil, nil
	}
	for i := range st.binds {
		r := &st.binds[i]
		if !s.st.usable(st, r, now) {
			continue
		}
		if r.home == s.self {
			locals = append(locals, Route{Kind: RouteLocal, Node: s.self, Homes: []uint32{s.self}, Region: s.region, Binding: r.binding(st.aor)})
			continue
		}
		addHome(homeInfo{id: r.home, expires: r.exp, registered: r.ver.T, holds: true})
	}
	for i := range st.metas {
		m := &st.metas[i]
		if m.home != s.self && m.live(now) {
			addHome(homeInfo{id: m.home, region: m.region, expires: m.expires, registered: m.ver.T})
		}
	}
	for i := range homes {
		homes[i].region = s.homeRegion(st, homes[i].id)
	}
	sh.mu.Unlock()

	var serve, stale []uint32
	var relays []Route
	relay := func(target uint32, h homeInfo) {
		if relayed {
			return // never relayed twice
		}
		for i := range relays {
			if r := &relays[i]; r.Node == target {
				r.Homes = append(r.Homes, h.id)
				r.Binding.Expires = fromNanos(max(nanos(r.Binding.Expires), h.expires))
				r.Binding.Registered = fromNanos(max(nanos(r.Binding.Registered), h.registered))
				return
			}
		}
		meta, _ := s.cl.Meta(target)
		p := s.peer(target)
		contact := ""
		if meta.SIPAddr != "" {
			contact = "sip:" + meta.SIPAddr
		}
		relays = append(relays, Route{
			Kind: RouteRelay, Node: target, Homes: []uint32{h.id}, Region: meta.Region, RTT: p.rtt, Hops: p.hops,
			Binding: location.Binding{
				AoR: aor, Contact: contact, Q: 1000, Home: target,
				Expires: fromNanos(h.expires), Registered: fromNanos(h.registered),
			},
		})
	}
	slices.SortFunc(homes, func(a, b homeInfo) int { return cmp.Compare(a.id, b.id) })
	for _, h := range homes {
		if h.region == "" {
			continue // a removed node nobody knows the region of
		}
		if s.serving(h.id, h.region) {
			if relayed && h.holds {
				stale = append(stale, h.id)
			}
			relay(h.id, h)
			continue
		}
		owner := s.cl.TagOwner(s.cfg.TagFor(h.region))
		switch {
		case owner == s.self:
			if h.holds {
				serve = append(serve, h.id)
			}
		case owner != 0 && s.cl.IsUp(owner):
			relay(owner, h)
		case owner == 0 && s.cfg.ReplicateContactsCrossRegion && h.holds && !relayed:
			// The home's whole region is down and every node holds
			// every binding: deliver from here.
			serve = append(serve, h.id)
		}
	}
	if len(locals) == 0 && len(serve) == 0 && len(stale) > 0 {
		// Relayed here for a home that serves again in this node's view
		// (undrained, restarted and synced): the sender's view is older,
		// and it chose this node, which holds the replicas, in the home's
		// stead. It relayed to no one else for that home, so delivering
		// them here doubles nothing, where relaying twice is not allowed
		// and answering 480 would fail the call (seen in the roll-out).
		serve = stale
	}
	var replicas []Route
	if len(serve) > 0 {
		sh.mu.Lock()
		if st := sh.aors[aor]; st != nil {
			for i := range st.binds {
				r := &st.binds[i]
				if slices.Contains(serve, r.home) && s.st.usable(st, r, now) {
					b := r.binding(st.aor)
					b.Home = s.self
					replicas = append(replicas, Route{Kind: RouteReplica, Node: s.self, Homes: []uint32{r.home}, Region: s.region, Binding: b})
				}
			}
		}
		sh.mu.Unlock()
	}
	sortByBinding(locals)
	sortByBinding(replicas)
	slices.SortFunc(relays, func(a, b Route) int {
		ra, rb := a.Region != callerRegion, b.Region != callerRegion
		if ra != rb {
			if ra {
				return 1
			}
			return -1
		}
		if c := costCmp(a, b); c != 0 {
			return c
		}
		return cmp.Compare(a.Node, b.Node)
	})
	out := append(append(locals, replicas...), relays...)
	for i := range out {
		s.m.routeKind[out[i].Kind].Inc()
	}
	return out, nil
}

// sortByBinding orders routes as location.SortBindings orders bindings:
// highest q, then most recently registered, then contact.
func sortByBinding(rs []Route) {
	slices.SortFunc(rs, func(a, b Route) int {
		x, y := &a.Binding, &b.Binding
		if x.Q != y.Q {
			return y.Q - x.Q
		}
		if c := y.Registered.Compare(x.Registered); c != 0 {
			return c
		}
		return cmp.Compare(x.Contact, y.Contact)
	})
}

// costCmp prefers a measured RTT (lower first) to an unknown one, then
// fewer hops.
func costCmp(a, b Route) int {
	ka, kb := a.RTT > 0, b.RTT > 0
	switch {
	case ka && kb && a.RTT != b.RTT:
		return cmp.Compare(a.RTT, b.RTT)
	case ka != kb:
		if ka {
			return -1
		}
		return 1
	}
	ha, hb := a.Hops, b.Hops
	if ha == 0 {
		ha = 1 << 30
	}
	if hb == 0 {
		hb = 1 << 30
	}
	return cmp.Compare(ha, hb)
}
