package bgp

import (
	"context"
	"slices"
	"sync"
)

// Fake is a Speaker that records every Set, for the tests of code that
// decides what to announce (drain, health gating, VIP ownership). It
// validates like the real speaker, so a test gets the same errors.
type Fake struct {
	mu       sync.Mutex
	sets     [][]Advertisement
	have     []Advertisement
	peers    []PeerStatus
	failNext error
	closed   bool
	peerCfgs []PeerConfig
}

// NewFake returns a fake whose Peers reports peers.
func NewFake(peers ...PeerStatus) *Fake { return &Fake{peers: slices.Clone(peers)} }

// Set records advs (normalised and sorted by prefix, as Announced returns
// them) and makes them the announced set. A failure armed with FailNext
// is returned instead, recording nothing.
func (f *Fake) Set(_ context.Context, advs ...Advertisement) error {
	want, err := desired(advs)
	if err != nil {
		return err
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.closed {
		return ErrClosed
	}
	if err := f.failNext; err != nil {
		f.failNext = nil
		return err
	}
	set := make([]Advertisement, 0, len(want))
	for _, a := range want {
		set = append(set, a)
	}
	slices.SortFunc(set, func(a, b Advertisement) int { return comparePrefix(a.Prefix, b.Prefix) })
	f.sets = append(f.sets, set)
	f.have = set
	return nil
}

// Sets returns every recorded Set, oldest first.
func (f *Fake) Sets() [][]Advertisement {
	f.mu.Lock()
	defer f.mu.Unlock()
	out := make([][]Advertisement, len(f.sets))
	for i, s := range f.sets {
		out[i] = slices.Clone(s)
	}
	return out
}

// FailNext makes the next Set return err.
func (f *Fake) FailNext(err error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.failNext = err
}

// SetPeers changes what Peers reports.
func (f *Fake) SetPeers(peers ...PeerStatus) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.peers = slices.Clone(peers)
}

// Peers implements Speaker.
func (f *Fake) Peers() []PeerStatus {
	f.mu.Lock()
	defer f.mu.Unlock()
	return slices.Clone(f.peers)
}

// Announced implements Speaker.
func (f *Fake) Announced() []Advertisement {
	f.mu.Lock()
	defer f.mu.Unlock()
	return slices.Clone(f.have)
}

// Close implements Speaker. The announced set is emptied, as the routers
// would drop the paths.
func (f *Fake) Close() error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.closed = true
	f.have = nil
	return nil
}

// Closed reports whether Close was called.
func (f *Fake) Closed() bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.closed
}

var (
	_ Speaker     = (*Fake)(nil)
	_ PeerUpdater = (*Fake)(nil)
	_ PeerUpdater = (*GoBGP)(nil)
)

// UpdatePeers implements PeerUpdater: it records peers (validated) and
// reports what changed against the previous call's list.
func (f *Fake) UpdatePeers(_ context.Context, peers []PeerConfig) (PeerChanges, error) {
	check := Config{ASN: 64512, RouterID: "192.0.2.1", Peers: slices.Clone(peers)}
	if err := check.Validate(); err != nil {
		return PeerChanges{}, err
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.closed {
		return PeerChanges{}, ErrClosed
	}
	ch := DiffPeers(f.peerCfgs, check.Peers)
	f.peerCfgs = check.Peers
	return ch, nil
}

// PeerConfigs returns the peers of the last UpdatePeers.
func (f *Fake) PeerConfigs() []PeerConfig {
	f.mu.Lock()
	defer f.mu.Unlock()
	return slices.Clone(f.peerCfgs)
}
