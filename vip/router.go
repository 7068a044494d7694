package vip

import (
	"errors"
	"net/netip"
	"slices"
	"sync"
)

// Router puts VIPs on the host.
type Router interface {
	// Set makes exactly owned present among the configured VIPs: it adds
	// those missing (announcing the l2 ones) and removes the configured
	// VIPs that are present but not owned. Addresses that are not
	// configured VIPs are never touched. It is idempotent. An error leaves
	// the rest applied; the next Set retries.
	Set(owned []VIP) error
	// Close releases the router's sockets; it does not remove VIPs (call
	// Set(nil) first for that).
	Close() error
}

// ErrUnsupported is returned by NewLinux on other systems.
var ErrUnsupported = errors.New("vip: moving addresses is only implemented on Linux")

// Recorder is a Router that records every Set, for tests of code that
// decides which VIPs a node holds.
type Recorder struct {
	mu      sync.Mutex
	sets    [][]netip.Prefix
	have    []netip.Prefix
	failErr error
	closed  bool
}

// Set implements Router: it records the owned prefixes, sorted.
func (r *Recorder) Set(owned []VIP) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if err := r.failErr; err != nil {
		r.failErr = nil
		return err
	}
	var ps []netip.Prefix
	for _, v := range owned {
		ps = append(ps, v.Prefix)
	}
	slices.SortFunc(ps, func(a, b netip.Prefix) int { return a.Addr().Compare(b.Addr()) })
	r.sets = append(r.sets, ps)
	r.have = ps
	return nil
}

// Close implements Router.
func (r *Recorder) Close() error {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.closed = true
	return nil
}

// FailNext makes the next Set fail with err.
func (r *Recorder) FailNext(err error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.failErr = err
}

// Have is what the last successful Set made present.
func (r *Recorder) Have() []netip.Prefix {
	r.mu.Lock()
	defer r.mu.Unlock()
	return slices.Clone(r.have)
}

// Sets returns every recorded Set.
func (r *Recorder) Sets() [][]netip.Prefix {
	r.mu.Lock()
	defer r.mu.Unlock()
	return slices.Clone(r.sets)
}

var _ Router = (*Recorder)(nil)
