package bgp

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"testing"

	api "github.com/osrg/gobgp/v3/api"
	"github.com/osrg/gobgp/v3/pkg/apiutil"
	"github.com/osrg/gobgp/v3/pkg/packet/bgp"
)

// recRIB records the path operations the announcer makes, decoded to one
// line each, attributes sorted: "add 203.0.113.10/32 comm=65535:0 med=50 nh=0.0.0.0".
type recRIB struct {
	ops  []string
	fail map[string]error // prefix -> error for the next add or delete
}

func (r *recRIB) AddPath(_ context.Context, req *api.AddPathRequest) (*api.AddPathResponse, error) {
	line, pfx := describePath(req.Path)
	if err := r.fail[pfx]; err != nil {
		delete(r.fail, pfx)
		return nil, err
	}
	r.ops = append(r.ops, "add "+line)
	return &api.AddPathResponse{}, nil
}

func (r *recRIB) DeletePath(_ context.Context, req *api.DeletePathRequest) error {
	if req.Path == nil || !req.Path.IsWithdraw || req.Family == nil {
		return fmt.Errorf("delete without a withdrawn path and family: %v", req)
	}
	_, pfx := describePath(req.Path)
	if err := r.fail[pfx]; err != nil {
		delete(r.fail, pfx)
		return err
	}
	r.ops = append(r.ops, "del "+pfx)
	return nil
}

func (r *recRIB) take() []string {
	ops := r.ops
	r.ops = nil
	return ops
}

func describePath(p *api.Path) (line, prefix string) {
	nlri, err := apiutil.GetNativeNlri(p)
	if err != nil {
		return "bad nlri: " + err.Error(), ""
	}
	attrs, err := apiutil.GetNativePathAttributes(p)
	if err != nil {
		return "bad attrs: " + err.Error(), ""
	}
	prefix = nlri.String()
	parts := []string{prefix}
	for _, a := range attrs {
		switch a := a.(type) {
		case *bgp.PathAttributeOrigin:
			if a.Value != bgp.BGP_ORIGIN_ATTR_TYPE_IGP {
				parts = append(parts, "origin!=igp")
			}
		case *bgp.PathAttributeNextHop:
			parts = append(parts, "nh="+a.Value.String())
		case *bgp.PathAttributeMpReachNLRI:
			parts = append(parts, "mpnh="+a.Nexthop.String())
		case *bgp.PathAttributeMultiExitDisc:
			parts = append(parts, fmt.Sprintf("med=%d", a.Value))
		case *bgp.PathAttributeLocalPref:
			parts = append(parts, fmt.Sprintf("lp=%d", a.Value))
		case *bgp.PathAttributeCommunities:
			var cs []string
			for _, c := range a.Value {
				cs = append(cs, Community(c).String())
			}
			parts = append(parts, "comm="+strings.Join(cs, ","))
		case *bgp.PathAttributeAsPath:
			parts = append(parts, "aspath="+strings.TrimSuffix(strings.TrimPrefix(a.String(), "{AsPath: "), "}"))
		default:
			parts = append(parts, fmt.Sprintf("attr%d", a.GetType()))
		}
	}
	slices.Sort(parts[1:]) // attribute order is the sender's business
	return strings.Join(parts, " "), prefix
}

var (
	vip   = netip.MustParseAddr("203.0.113.10")
	pfxA  = netip.PrefixFrom(vip, 32)
	pfxB  = netip.MustParsePrefix("203.0.113.64/26")
	pfx6  = netip.MustParsePrefix("2001:db8::10/128")
	gshut = GracefulShutdown
)

func newTestAnnouncer(ibgp bool) (*announcer, *recRIB, *[][]Advertisement) {
	r := &recRIB{fail: map[string]error{}}
	var changes [][]Advertisement
	return newAnnouncer(r, 65001, ibgp, func(a []Advertisement) { changes = append(changes, a) }), r, &changes
}

func TestSetReconciles(t *testing.T) {
	n, r, changes := newTestAnnouncer(false)
	ctx := context.Background()
	steps := []struct {
		name string
		advs []Advertisement
		ops  []string
	}{
		{"announce two", []Advertisement{{Prefix: pfxB}, {Prefix: pfxA}}, []string{
			"add 203.0.113.10/32 nh=0.0.0.0", "add 203.0.113.64/26 nh=0.0.0.0"}},
		{"same set again: nothing", []Advertisement{{Prefix: pfxA}, {Prefix: pfxB}}, nil},
		{"new attributes: one add, no withdraw (implicit)", []Advertisement{
			{Prefix: pfxA, MED: 50, Communities: []Community{gshut, 64512<<16 | 7, gshut}}, {Prefix: pfxB}}, []string{
			"add 203.0.113.10/32 comm=64512:7,65535:0 med=50 nh=0.0.0.0"}},
		{"community order does not matter", []Advertisement{
			{Prefix: pfxA, MED: 50, Communities: []Community{64512<<16 | 7, gshut}}, {Prefix: pfxB}}, nil},
		{"drop one", []Advertisement{{Prefix: pfxB}}, []string{"del 203.0.113.10/32"}},
		{"swap: announce first, then withdraw", []Advertisement{{Prefix: pfx6, Prepend: 2}}, []string{
			"add 2001:db8::10/128 aspath=65001 65001 mpnh=::", "del 203.0.113.64/26"}},
		{"explicit next hop and local pref", []Advertisement{{Prefix: pfx6, Prepend: 2}, {Prefix: pfxA, NextHop: netip.MustParseAddr("198.18.0.5"), LocalPref: 50}}, []string{
			"add 203.0.113.10/32 lp=50 nh=198.18.0.5"}},
		{"withdraw all", nil, []string{"del 203.0.113.10/32", "del 2001:db8::10/128"}},
		{"empty again: nothing", nil, nil},
	}
	for _, s := range steps {
		if err := n.set(ctx, s.advs); err != nil {
			t.Fatalf("%s: %v", s.name, err)
		}
		if got := r.take(); !slices.Equal(got, s.ops) {
			t.Fatalf("%s: ops\n%q\nwant\n%q", s.name, got, s.ops)
		}
		want, _ := desired(s.advs)
		got := n.announced()
		if len(got) != len(want) {
			t.Fatalf("%s: announced %v", s.name, got)
		}
		for _, a := range got {
			if !a.Equal(want[a.Prefix]) {
				t.Fatalf("%s: announced %v, want %v", s.name, a, want[a.Prefix])
			}
		}
	}
	// onChange ran only for the sets that changed something.
	if len(*changes) != 6 {
		t.Errorf("onChange ran %d times, want 6", len(*changes))
	}
}

func TestSetRefusesBadSets(t *testing.T) {
	n, r, _ := newTestAnnouncer(false)
	ctx := context.Background()
	if err := n.set(ctx, []Advertisement{{Prefix: pfxA}}); err != nil {
		t.Fatal(err)
	}
	r.take()
	for name, advs := range map[string][]Advertisement{
		"duplicate prefix":  {{Prefix: pfxA}, {Prefix: pfxA, MED: 1}},
		"host bits":         {{Prefix: netip.MustParsePrefix("203.0.113.10/24")}},
		"no prefix":         {{}},
		"v6 next hop on v4": {{Prefix: pfxA, NextHop: netip.MustParseAddr("2001:db8::1")}},
		"prepend too long":  {{Prefix: pfxA, Prepend: MaxPrepend + 1}},
		"negative prepend":  {{Prefix: pfxA, Prepend: -1}},
	} {
		if err := n.set(ctx, advs); err == nil {
			t.Errorf("%s: accepted", name)
		}
		if ops := r.take(); len(ops) != 0 {
			t.Errorf("%s: sent %v before refusing", name, ops)
		}
		if got := n.announced(); len(got) != 1 || got[0].Prefix != pfxA {
			t.Errorf("%s: announced set changed: %v", name, got)
		}
	}
	ib, _, _ := newTestAnnouncer(true)
	if err := ib.set(ctx, []Advertisement{{Prefix: pfxA, Prepend: 1}}); err == nil {
		t.Error("prepend with iBGP peers accepted")
	}
}

// A failed add leaves the old set in force for that prefix, the rest is
// applied, and the next Set retries.
func TestSetPartialFailure(t *testing.T) {
	n, r, _ := newTestAnnouncer(false)
	ctx := context.Background()
	boom := errors.New("boom")
	r.fail["203.0.113.10/32"] = boom
	err := n.set(ctx, []Advertisement{{Prefix: pfxA}, {Prefix: pfxB}})
	if !errors.Is(err, boom) {
		t.Fatalf("err %v", err)
	}
	if got := n.announced(); len(got) != 1 || got[0].Prefix != pfxB {
		t.Fatalf("announced %v, want only the prefix that worked", got)
	}
	r.take()
	if err := n.set(ctx, []Advertisement{{Prefix: pfxA}, {Prefix: pfxB}}); err != nil {
		t.Fatal(err)
	}
	if got := r.take(); !slices.Equal(got, []string{"add 203.0.113.10/32 nh=0.0.0.0"}) {
		t.Fatalf("retry ops %q", got)
	}
	// A failed withdraw keeps the prefix as announced.
	r.fail["203.0.113.64/26"] = boom
	if err := n.set(ctx, []Advertisement{{Prefix: pfxA}}); !errors.Is(err, boom) {
		t.Fatalf("err %v", err)
	}
	if got := n.announced(); len(got) != 2 {
		t.Fatalf("announced %v, want both (withdraw failed)", got)
	}
	n.close()
	if err := n.set(ctx, nil); !errors.Is(err, ErrClosed) {
		t.Fatalf("after close: %v", err)
	}
}

func TestFakeRecordsSets(t *testing.T) {
	f := NewFake(PeerStatus{Address: netip.MustParseAddr("198.18.0.1"), State: StateEstablished})
	ctx := context.Background()
	var s Speaker = f
	if err := s.Set(ctx, Advertisement{Prefix: pfxB}, Advertisement{Prefix: pfxA, Communities: []Community{gshut, gshut}}); err != nil {
		t.Fatal(err)
	}
	if err := s.Set(ctx, Advertisement{Prefix: pfxA}, Advertisement{Prefix: pfxA}); err == nil {
		t.Fatal("duplicate accepted by the fake")
	}
	f.FailNext(errors.New("router gone"))
	if err := s.Set(ctx); err == nil {
		t.Fatal("FailNext ignored")
	}
	if err := s.Set(ctx, WithGracefulShutdown(Advertisement{Prefix: pfxA})...); err != nil {
		t.Fatal(err)
	}
	sets := f.Sets()
	if len(sets) != 2 {
		t.Fatalf("%d sets recorded, want 2 (failures record nothing)", len(sets))
	}
	if got := fmt.Sprint(sets[0]); got != "[203.0.113.10/32 communities 65535:0 203.0.113.64/26]" {
		t.Errorf("first set %s", got)
	}
	if got := s.Announced(); len(got) != 1 || !slices.Contains(got[0].Communities, GracefulShutdown) {
		t.Errorf("announced %v", got)
	}
	if p := s.Peers(); len(p) != 1 || !p[0].Established() {
		t.Errorf("peers %v", p)
	}
	s.Close()
	if !f.Closed() || len(s.Announced()) != 0 {
		t.Error("close")
	}
	if err := s.Set(ctx); !errors.Is(err, ErrClosed) {
		t.Errorf("set after close: %v", err)
	}
}
