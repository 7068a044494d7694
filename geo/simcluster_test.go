package geo

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/anyedge/anyedge/cluster"
	"github.com/anyedge/anyedge/cluster/core"
	"github.com/anyedge/anyedge/edge/location"
)

// simCluster adapts one core of a core.Sim to Cluster. Calls made from
// outside the simulation's own loop must be followed by sim.Flush(id);
// calls made from capability callbacks are drained by the simulation.
type simCluster struct {
	sim *core.Sim
	c   *core.Core
}

func (a *simCluster) Self() cluster.NodeMeta                  { return a.c.Self() }
func (a *simCluster) Meta(id uint32) (cluster.NodeMeta, bool) { return a.c.Meta(id) }
func (a *simCluster) IsUp(id uint32) bool                     { return a.c.IsUp(id) }

func (a *simCluster) TagOwner(tag string) uint32 {
	for _, t := range a.c.Tags() {
		if t.Name == tag {
			return t.Owner
		}
	}
	return 0
}

func (a *simCluster) Send(capName string, typ cluster.MsgType, to uint32, body []byte) error {
	if !a.c.Send(a.sim.Now(), capName, typ, to, body) {
		return fmt.Errorf("node %d unreachable", to)
	}
	return nil
}

func (a *simCluster) SendMatching(capName string, typ cluster.MsgType, f cluster.Filter, body []byte) int {
	var match func(core.NodeMeta) bool
	if f != nil {
		match = f
	}
	return a.c.SendMatching(a.sim.Now(), capName, typ, match, body)
}

func (a *simCluster) Nodes() []cluster.NodeView {
	var out []cluster.NodeView
	for _, id := range a.c.UpNodes() {
		m, _ := a.c.Meta(id)
		out = append(out, cluster.NodeView{ID: id, Region: m.Region, State: "up", RTT: a.c.RTT(id), Hops: len(a.c.Path(id))})
	}
	return out
}

// geoSim runs a Service on every node of a core.Sim.
type geoSim struct {
	t       testing.TB
	sim     *core.Sim
	cfg     Config
	svc     map[uint32]*Service
	region  map[uint32]string
	ids     []uint32
	regions []string
	// afterDelivery, when set, runs after every message a service
	// handles, so a test can check an invariant between any two
	// deliveries rather than once per tick.
	afterDelivery func()
}

type simNode struct {
	id     uint32
	region string
}

// newGeoSim builds a full mesh of nodes (the first is the seed), a sharing
// tag per region, and a Service per node, and waits until all are synced.
func newGeoSim(t testing.TB, seed int64, cfg Config, nodes ...simNode) *geoSim {
	t.Helper()
	if err := cfg.Validate(); err != nil {
		t.Fatal(err)
	}
	g := &geoSim{t: t, cfg: cfg, svc: map[uint32]*Service{}, region: map[uint32]string{}}
	var tags []core.TagSpec
	for _, n := range nodes {
		if !slices.Contains(g.regions, n.region) {
			g.regions = append(g.regions, n.region)
			tags = append(tags, core.TagSpec{Name: cfg.TagFor(n.region), Region: n.region})
		}
	}
	g.sim = core.NewSim(t, seed, tags...)
	g.sim.OnBoot(func(id core.NodeID, c *core.Core) {
		s, err := New(cfg, &simCluster{sim: g.sim, c: c}, WithClock(g.sim.Now))
		if err != nil {
			t.Fatal(err)
		}
		s.inline = true
		for _, cp := range s.Capabilities() {
			h, a := cp.Handle, cp.Apply
			cp.Handle = func(from core.NodeID, typ cluster.MsgType, body []byte) {
				h(from, typ, body)
				if g.afterDelivery != nil {
					g.afterDelivery()
				}
			}
			cp.Apply = func(from core.NodeID, recs [][]byte) {
				a(from, recs)
				if g.afterDelivery != nil {
					g.afterDelivery()
				}
			}
			c.Register(cp)
		}
		g.svc[id] = s
	})
	g.sim.OnEvent(func(id core.NodeID, e core.Event) {
		if s := g.svc[id]; s != nil {
			s.HandleEvent(e)
		}
	})
	for i, n := range nodes {
		g.region[n.id] = n.region
		g.ids = append(g.ids, n.id)
		g.sim.AddNode(n.id, n.region, i == 0)
	}
	for i, a := range g.ids {
		for _, b := range g.ids[i+1:] {
			g.sim.Connect(a, b)
		}
	}
	g.waitSynced(20 * time.Second)
	return g
}

// step advances the simulation by one tick and runs every live service's
// periodic work.
func (g *geoSim) step() {
	g.sim.Run(20 * time.Millisecond)
	for _, id := range g.ids {
		if g.sim.Alive(id) {
			g.svc[id].Tick(g.sim.Now())
			g.sim.Flush(id)
		}
	}
}

func (g *geoSim) run(d time.Duration) {
	for end := g.sim.Now().Add(d); g.sim.Now().Before(end); {
		g.step()
	}
}

// eventually steps until check passes or d has passed.
func (g *geoSim) eventually(d time.Duration, check func() error) error {
	var err error
	for end := g.sim.Now().Add(d); g.sim.Now().Before(end); {
		g.step()
		if err = check(); err == nil {
			return nil
		}
	}
	return err
}

func (g *geoSim) allSynced() error {
	for _, id := range g.ids {
		if g.sim.Alive(id) && !g.svc[id].Synced() {
			return fmt.Errorf("node %d not synced", id)
		}
	}
	return nil
}

func (g *geoSim) waitSynced(d time.Duration) {
	g.t.Helper()
	if err := g.eventually(d, g.allSynced); err != nil {
		g.t.Fatal(err)
	}
}

// ua is a simulated user agent.
type ua struct {
	aor, instance, callID, contact string
	cseq                           uint32
}

func (u *ua) request(now time.Time, expires time.Duration) *location.SaveRequest {
	u.cseq++
	return &location.SaveRequest{
		AoR: u.aor, CallID: u.callID, CSeq: u.cseq, Now: now,
		Contacts: []location.Binding{{
			Contact: u.contact, InstanceID: u.instance, Q: 1000, Expires: now.Add(expires),
			Received: "198.51.100.7:5060", Transport: "udp", Socket: "udp:203.0.113.10:5060", NATed: true,
		}},
	}
}

// matches reports whether b is this UA's binding (its instance, or its
// Call-ID when it has none).
func (u *ua) matches(b *location.Binding) bool {
	if b.AoR != u.aor {
		return false
	}
	if u.instance != "" {
		return b.InstanceID == u.instance
	}
	return b.InstanceID == "" && b.CallID == u.callID
}

// register saves a REGISTER at node id and returns the generation to wait
// for (nil: nothing to replicate).
func (g *geoSim) register(id uint32, u *ua, expires time.Duration) (*gen, error) {
	_, gn, err := g.svc[id].save(context.Background(), u.request(g.sim.Now(), expires))
	g.sim.Flush(id)
	return gn, err
}

// registerAcked registers and steps until the partner confirmed.
func (g *geoSim) registerAcked(id uint32, u *ua, expires time.Duration) AckResult {
	g.t.Helper()
	gn, err := g.register(id, u, expires)
	if err != nil {
		g.t.Fatal(err)
	}
	if gn == nil {
		return AckAlone
	}
	for range 100 {
		if r := gn.Result(); r != AckPending {
			return r
		}
		g.step()
	}
	g.t.Fatal("save never resolved")
	return AckPending
}

// reach returns the bindings a fresh request at node from reaches: its
// local and replica routes, and the LookupLocal of each relay target that
// is alive. It fails if a relay points at a dead node.
func (g *geoSim) reach(from uint32, aor string) ([]location.Binding, error) {
	ctx := context.Background()
	rs, err := g.svc[from].LookupRoutes(ctx, aor, g.region[from])
	if err != nil {
		return nil, err
	}
	var out []location.Binding
	for _, r := range rs {
		if r.Kind != RouteRelay {
			if r.Binding.Home != from {
				return nil, fmt.Errorf("node %d: %s binding with Home %d", from, r.Kind, r.Binding.Home)
			}
			out = append(out, r.Binding)
			continue
		}
		if r.Node == from {
			return nil, fmt.Errorf("node %d relays to itself", from)
		}
		if !g.sim.Alive(r.Node) {
			return nil, fmt.Errorf("node %d relays to dead node %d", from, r.Node)
		}
		bs, err := g.svc[r.Node].LookupLocal(ctx, aor)
		if err != nil {
			return nil, err
		}
		for _, b := range bs {
			if b.Home != r.Node {
				return nil, fmt.Errorf("node %d: LookupLocal returned Home %d", r.Node, b.Home)
			}
		}
		out = append(out, bs...)
	}
	return out, nil
}

var errNotFound = errors.New("not found")

// findUA checks that a fresh request at from reaches exactly one binding of
// u, with contact.
func (g *geoSim) findUA(from uint32, u *ua, contact string) error {
	bs, err := g.reach(from, u.aor)
	if err != nil {
		return err
	}
	var got []location.Binding
	for i := range bs {
		if u.matches(&bs[i]) {
			got = append(got, bs[i])
		}
	}
	switch {
	case len(got) == 0:
		return fmt.Errorf("node %d: %s: %w", from, u.aor, errNotFound)
	case contact != "" && got[0].Contact != contact:
		return fmt.Errorf("node %d: %s: contact %s, want %s", from, u.aor, got[0].Contact, contact)
	}
	return nil
}

// dumpMeta lists a node's metadata records, comparable across nodes.
func (s *Service) dumpMeta() map[string]string {
	out := map[string]string{}
	for i := range s.st.shards {
		sh := &s.st.shards[i]
		sh.mu.Lock()
		for aor, st := range sh.aors {
			for _, m := range st.metas {
				out[fmt.Sprintf("%s@%d", aor, m.home)] = fmt.Sprintf("%+v dead=%v exp=%d claims=%v", m.ver, m.dead, m.expires, m.claims)
			}
		}
		sh.mu.Unlock()
	}
	return out
}

// dumpBinds lists a node's binding records.
func (s *Service) dumpBinds() map[string]string {
	out := map[string]string{}
	for i := range s.st.shards {
		sh := &s.st.shards[i]
		sh.mu.Lock()
		for aor, st := range sh.aors {
			for _, r := range st.binds {
				out[fmt.Sprintf("%s@%d/%s", aor, r.home, r.key)] = fmt.Sprintf("%+v dead=%v", r.ver, r.dead)
			}
		}
		sh.mu.Unlock()
	}
	return out
}
