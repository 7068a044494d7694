package bgp

import (
	"context"
	"fmt"
	"net/netip"
	"reflect"
	"slices"

	api "github.com/osrg/gobgp/v3/api"

	"github.com/anyedge/anyedge/bfd"
)

// PeerChanges is what UpdatePeers did, each list sorted by address.
type PeerChanges struct {
	Added, Removed []string
	// Replaced are peers whose settings changed: their session was
	// deleted and added again (one session reset each).
	Replaced []string
}

// Empty reports whether nothing changed.
func (c PeerChanges) Empty() bool { return len(c.Added)+len(c.Removed)+len(c.Replaced) == 0 }

// PeerUpdater is a speaker whose routers can change at run time (SIGHUP).
// *GoBGP and *Fake are ones.
type PeerUpdater interface {
	// UpdatePeers makes peers (validated, as in Config.Peers) the set of
	// routers: new ones are dialled, removed ones get a Cease and are
	// deleted, changed ones are replaced. A peer whose settings are
	// unchanged is not touched: its session stays up. The announced set
	// is kept and sent to new peers.
	UpdatePeers(ctx context.Context, peers []PeerConfig) (PeerChanges, error)
}

// DiffPeers compares two validated peer lists by address.
func DiffPeers(old, cur []PeerConfig) PeerChanges {
	var ch PeerChanges
	byAddr := map[string]PeerConfig{}
	for _, p := range old {
		byAddr[p.Address] = p
	}
	seen := map[string]bool{}
	for _, p := range cur {
		seen[p.Address] = true
		o, ok := byAddr[p.Address]
		switch {
		case !ok:
			ch.Added = append(ch.Added, p.Address)
		case !reflect.DeepEqual(o, p):
			ch.Replaced = append(ch.Replaced, p.Address)
		}
	}
	for _, p := range old {
		if !seen[p.Address] {
			ch.Removed = append(ch.Removed, p.Address)
		}
	}
	for _, l := range [][]string{ch.Added, ch.Removed, ch.Replaced} {
		slices.SortFunc(l, func(a, b string) int { return netip.MustParseAddr(a).Compare(netip.MustParseAddr(b)) })
	}
	return ch
}

// UpdatePeers implements PeerUpdater. peers are validated first (with
// the speaker's ASN: prepending is refused once a peer is iBGP); on a
// validation error nothing changes. A GoBGP call failing half-way leaves
// the peers done so far changed, and returns the error: calling again
// with the same list finishes the job.
func (s *GoBGP) UpdatePeers(ctx context.Context, peers []PeerConfig) (PeerChanges, error) {
	check := Config{ASN: s.cfg.ASN, RouterID: s.cfg.RouterID, Peers: slices.Clone(peers)}
	if err := check.Validate(); err != nil {
		return PeerChanges{}, fmt.Errorf("bgp: %w", err)
	}
	peers = check.Peers
	s.closeMu.Lock()
	defer s.closeMu.Unlock()
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return PeerChanges{}, ErrClosed
	}
	var old []PeerConfig
	for _, ps := range s.peers {
		old = append(old, ps.cfg)
	}
	s.mu.Unlock()
	ch := DiffPeers(old, peers)
	if ch.Empty() {
		return ch, nil
	}
	ibgp := false
	for _, p := range peers {
		ibgp = ibgp || p.ASN == s.cfg.ASN
	}
	if ibgp {
		// Refuse before touching a session: the announced set would
		// become unannounceable to the new iBGP peer.
		for _, a := range s.ann.announced() {
			if a.Prepend > 0 {
				return PeerChanges{}, fmt.Errorf("bgp: an iBGP peer, but %s is announced with a prepend", a.Prefix)
			}
		}
	}
	byAddr := map[string]PeerConfig{}
	for _, p := range peers {
		byAddr[p.Address] = p
	}
	for _, a := range append(slices.Clone(ch.Removed), ch.Replaced...) {
		if err := s.deletePeer(ctx, a); err != nil {
			return ch, err
		}
	}
	s.ann.setIBGP(ibgp)
	for _, a := range append(slices.Clone(ch.Replaced), ch.Added...) {
		if err := s.addPeer(ctx, byAddr[a]); err != nil {
			return ch, err
		}
	}
	s.cfg.Peers = slices.Clone(peers)
	s.log.Info("bgp peers updated", "added", ch.Added, "removed", ch.Removed, "replaced", ch.Replaced)
	return ch, nil
}

// deletePeer ends the session with the router at addr (a Cease) and
// forgets it, with its BFD session.
func (s *GoBGP) deletePeer(ctx context.Context, addr string) error {
	a := netip.MustParseAddr(addr)
	if err := s.srv.DeletePeer(ctx, &api.DeletePeerRequest{Address: addr}); err != nil {
		return fmt.Errorf("bgp: delete peer %s: %w", addr, err)
	}
	s.mu.Lock()
	delete(s.peers, a)
	bp := s.bfdPeers[a]
	delete(s.bfdPeers, a)
	s.mu.Unlock()
	if bp != nil {
		_ = bp.Close() // tells the router AdminDown: not a failure (RFC 5882 §3.2)
	}
	s.m.peerRemoved(addr)
	return nil
}

// addPeer configures and dials the router p, with BFD when enabled.
func (s *GoBGP) addPeer(ctx context.Context, p PeerConfig) error {
	a := netip.MustParseAddr(p.Address)
	s.mu.Lock()
	s.peers[a] = &peerState{cfg: p, addr: a, state: StateIdle, bfd: bfd.Down}
	s.mu.Unlock()
	if err := s.srv.AddPeer(ctx, &api.AddPeerRequest{Peer: apiPeer(p)}); err != nil {
		s.mu.Lock()
		delete(s.peers, a)
		s.mu.Unlock()
		return fmt.Errorf("bgp: add peer %s: %w", p.Address, err)
	}
	s.m.peerAdded(p.Address)
	if p.BFD.Enabled {
		if err := s.startBFD(p); err != nil {
			return fmt.Errorf("bgp: peer %s: bfd: %w", p.Address, err)
		}
	}
	return nil
}
