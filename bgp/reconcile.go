package bgp

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"net/netip"
	"slices"
	"sync"
	"time"

	api "github.com/osrg/gobgp/v3/api"
	"github.com/osrg/gobgp/v3/pkg/apiutil"
	"github.com/osrg/gobgp/v3/pkg/packet/bgp"
)

// rib is the part of the GoBGP server that announcer drives. The real one
// is *server.BgpServer; tests record the calls.
type rib interface {
	AddPath(ctx context.Context, r *api.AddPathRequest) (*api.AddPathResponse, error)
	DeletePath(ctx context.Context, r *api.DeletePathRequest) error
}

// announcer reconciles the announced set with the desired one: the logic
// behind Speaker.Set, apart from any server.
type announcer struct {
	rib rib
	asn uint32
	// ibgp is set when some peer is iBGP: prepending is then refused.
	ibgp bool
	// onChange is called with the announced set after every Set that
	// changed it (metrics).
	onChange func([]Advertisement)

	mu     sync.Mutex
	have   map[netip.Prefix]Advertisement
	closed bool
}

func newAnnouncer(r rib, asn uint32, ibgp bool, onChange func([]Advertisement)) *announcer {
	return &announcer{rib: r, asn: asn, ibgp: ibgp, onChange: onChange, have: map[netip.Prefix]Advertisement{}}
}

// desired validates and normalises advs, keyed by prefix.
func desired(advs []Advertisement) (map[netip.Prefix]Advertisement, error) {
	want := make(map[netip.Prefix]Advertisement, len(advs))
	for i, a := range advs {
		if err := a.Validate(); err != nil {
			return nil, fmt.Errorf("bgp: advertisement %d (%v): %w", i, a.Prefix, err)
		}
		if _, dup := want[a.Prefix]; dup {
			return nil, fmt.Errorf("bgp: advertisement %d: duplicate prefix %s", i, a.Prefix)
		}
		want[a.Prefix] = a.normalize()
	}
	return want, nil
}

// diff returns what takes have to want: the advertisements to announce
// (new prefixes and changed attributes; a changed path replaces the old
// one by implicit withdraw, so it is not withdrawn first) and the ones to
// withdraw, each sorted by prefix.
func diff(have, want map[netip.Prefix]Advertisement) (announce, withdraw []Advertisement) {
	for p, w := range want {
		if h, ok := have[p]; !ok || !h.Equal(w) {
			announce = append(announce, w)
		}
	}
	for p, h := range have {
		if _, ok := want[p]; !ok {
			withdraw = append(withdraw, h)
		}
	}
	byPrefix := func(a, b Advertisement) int { return comparePrefix(a.Prefix, b.Prefix) }
	slices.SortFunc(announce, byPrefix)
	slices.SortFunc(withdraw, byPrefix)
	return announce, withdraw
}

// setIBGP records whether some peer is iBGP now (peers changed).
func (n *announcer) setIBGP(ibgp bool) {
	n.mu.Lock()
	defer n.mu.Unlock()
	n.ibgp = ibgp
}

func (n *announcer) set(ctx context.Context, advs []Advertisement) error {
	want, err := desired(advs)
	if err != nil {
		return err
	}
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.ibgp {
		for _, a := range want {
			if a.Prepend > 0 {
				return fmt.Errorf("bgp: %s: prepend with iBGP peers would look like a loop to them", a.Prefix)
			}
		}
	}
	if n.closed {
		return ErrClosed
	}
	announce, withdraw := diff(n.have, want)
	if len(announce)+len(withdraw) == 0 {
		return nil
	}
	// Announce before withdrawing, so that a change of prefix (a VIP
	// moving from a /32 to another) never leaves a gap. Each success is
	// recorded at once: after a failure, have is what the server holds,
	// and the next Set retries the rest.
	var errs []error
	for _, a := range announce {
		path, err := n.path(a, false)
		if err == nil {
			_, err = n.rib.AddPath(ctx, &api.AddPathRequest{TableType: api.TableType_GLOBAL, Path: path})
		}
		if err != nil {
			errs = append(errs, fmt.Errorf("bgp: announce %s: %w", a.Prefix, err))
			continue
		}
		n.have[a.Prefix] = a
	}
	for _, a := range withdraw {
		path, err := n.path(a, true)
		if err == nil {
			err = n.rib.DeletePath(ctx, &api.DeletePathRequest{TableType: api.TableType_GLOBAL, Family: path.Family, Path: path})
		}
		if err != nil {
			errs = append(errs, fmt.Errorf("bgp: withdraw %s: %w", a.Prefix, err))
			continue
		}
		delete(n.have, a.Prefix)
	}
	if n.onChange != nil {
		n.onChange(n.announcedLocked())
	}
	return errors.Join(errs...)
}

func (n *announcer) announced() []Advertisement {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.announcedLocked()
}

func (n *announcer) announcedLocked() []Advertisement {
	out := slices.Collect(maps.Values(n.have))
	slices.SortFunc(out, func(a, b Advertisement) int { return comparePrefix(a.Prefix, b.Prefix) })
	for i := range out {
		out[i].Communities = slices.Clone(out[i].Communities)
	}
	return out
}

// close makes later sets fail.
func (n *announcer) close() {
	n.mu.Lock()
	n.closed = true
	n.mu.Unlock()
}

// path builds the GoBGP path of a: ORIGIN IGP, the next hop (0.0.0.0 or
// :: for "self", which GoBGP replaces with the session's address), and the
// optional MED, LOCAL_PREF, COMMUNITIES and prepended AS_PATH.
func (n *announcer) path(a Advertisement, withdraw bool) (*api.Path, error) {
	var nlri bgp.AddrPrefixInterface
	attrs := []bgp.PathAttributeInterface{bgp.NewPathAttributeOrigin(bgp.BGP_ORIGIN_ATTR_TYPE_IGP)}
	if a.Prefix.Addr().Is4() {
		nh := "0.0.0.0"
		if a.NextHop.IsValid() {
			nh = a.NextHop.String()
		}
		nlri = bgp.NewIPAddrPrefix(uint8(a.Prefix.Bits()), a.Prefix.Addr().String())
		attrs = append(attrs, bgp.NewPathAttributeNextHop(nh))
	} else {
		nh := "::"
		if a.NextHop.IsValid() {
			nh = a.NextHop.String()
		}
		nlri = bgp.NewIPv6AddrPrefix(uint8(a.Prefix.Bits()), a.Prefix.Addr().String())
		attrs = append(attrs, bgp.NewPathAttributeMpReachNLRI(nh, []bgp.AddrPrefixInterface{nlri}))
	}
	if a.MED != 0 {
		attrs = append(attrs, bgp.NewPathAttributeMultiExitDisc(a.MED))
	}
	if a.LocalPref != 0 {
		attrs = append(attrs, bgp.NewPathAttributeLocalPref(a.LocalPref))
	}
	if len(a.Communities) > 0 {
		cs := make([]uint32, len(a.Communities))
		for i, c := range a.Communities {
			cs[i] = uint32(c)
		}
		attrs = append(attrs, bgp.NewPathAttributeCommunities(cs))
	}
	if a.Prepend > 0 {
		asns := slices.Repeat([]uint32{n.asn}, a.Prepend)
		attrs = append(attrs, bgp.NewPathAttributeAsPath([]bgp.AsPathParamInterface{
			bgp.NewAs4PathParam(bgp.BGP_ASPATH_ATTR_TYPE_SEQ, asns),
		}))
	}
	return apiutil.NewPath(nlri, withdraw, attrs, time.Now())
}
