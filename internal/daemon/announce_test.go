package daemon

import (
	"context"
	"io"
	"log/slog"
	"net/netip"
	"os"
	"slices"
	"sync"
	"syscall"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/goleak"

	"github.com/anyedge/anyedge/bgp"
	"github.com/anyedge/anyedge/cluster"
	"github.com/anyedge/anyedge/internal/config"
	"github.com/anyedge/anyedge/vip"
)

// tagNode is a fake cluster node whose sharing tags the test sets.
type tagNode struct {
	*fakeClusterNode
	tmu    sync.Mutex
	active map[string]bool
}

func (n *tagNode) Tags() []cluster.TagView {
	n.tmu.Lock()
	defer n.tmu.Unlock()
	var out []cluster.TagView
	for _, t := range []string{"vip-a", "vip3-a"} {
		out = append(out, cluster.TagView{Name: t, Active: n.active[t]})
	}
	return out
}

func (n *tagNode) setActive(tag string, on bool) {
	n.tmu.Lock()
	n.active[tag] = on
	n.tmu.Unlock()
}

const vipConfig = `
admin: {listen: "127.0.0.1:0"}
cluster:
  node_id: 7
  region: test
  seed: true
  key: 0123456789abcdef
  tags: [{name: vip-a, region: test}, {name: vip3-a, region: test}]
bgp:
  asn: 65001
  router_id: 198.18.0.1
  peers: [{address: 198.18.0.254, asn: 65000}]
  prefixes: [{prefix: 203.0.113.10/32}]
vips:
  - {tag: vip-a, address: 203.0.113.21/32, interface: lan0}
  - {tag: vip3-a, address: 203.0.113.31/32, mode: l3}
`

// TestVIPsFollowTags wires the VIP mover with a recording router: the
// reconcile at start, the VIPs of the owned tags, the l3 one announced
// next to the anycast prefix, and both given up at SIGTERM.
func TestVIPsFollowTags(t *testing.T) {
	defer goleak.VerifyNone(t)
	cfg, err := config.Parse("edged.yaml", []byte(vipConfig))
	if err != nil {
		t.Fatal(err)
	}
	ev := &events{}
	node := &tagNode{fakeClusterNode: newFakeClusterNode(ev), active: map[string]bool{}}
	sp := &recSpeaker{Fake: bgp.NewFake(), ev: ev}
	rec := &vip.Recorder{}
	var gotVIPs []vip.VIP
	sigs := make(chan os.Signal)
	d, err := New(cfg, WithLogOutput(io.Discard), WithSignals(sigs),
		WithNodeFactory(func(cluster.Config, *slog.Logger, prometheus.Registerer) (Node, error) { return node, nil }),
		WithSpeakerFactory(func(bgp.Config, *slog.Logger, prometheus.Registerer) (bgp.Speaker, error) { return sp, nil }),
		WithVIPRouterFactory(func(vips []vip.VIP, _ func(vip.VIP)) (vip.Router, error) {
			gotVIPs = vips
			return rec, nil
		}))
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- d.Run(context.Background()) }()

	prefixes := func() []string {
		var out []string
		for _, a := range sp.Announced() {
			out = append(out, a.Prefix.String())
		}
		return out
	}
	eventually(t, "the reconcile at start", func() bool { return len(rec.Sets()) > 0 })
	if len(gotVIPs) != 2 || gotVIPs[1].Interface != "lo" || len(rec.Have()) != 0 {
		t.Fatalf("router built with %v; holds %v", gotVIPs, rec.Have())
	}
	eventually(t, "the anycast prefix", func() bool { return slices.Equal(prefixes(), []string{"203.0.113.10/32"}) })

	node.setActive("vip-a", true)
	node.setActive("vip3-a", true)
	d.onClusterEvent(cluster.Event{Kind: cluster.EventTagOwner, Tag: "vip3-a", Active: true})
	eventually(t, "both VIPs", func() bool { return len(rec.Have()) == 2 })
	eventually(t, "the l3 VIP announced", func() bool {
		return slices.Equal(prefixes(), []string{"203.0.113.10/32", "203.0.113.31/32"})
	})

	node.setActive("vip3-a", false)
	d.onClusterEvent(cluster.Event{Kind: cluster.EventTagOwner, Tag: "vip3-a"})
	eventually(t, "the l3 VIP given up", func() bool {
		return slices.Equal(rec.Have(), []netip.Prefix{netip.MustParsePrefix("203.0.113.21/32")}) &&
			slices.Equal(prefixes(), []string{"203.0.113.10/32"})
	})

	sigs <- syscall.SIGTERM
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if len(rec.Have()) != 0 {
		t.Errorf("VIPs left after the shutdown: %v", rec.Have())
	}
}
