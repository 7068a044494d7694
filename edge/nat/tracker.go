package nat

import (
	"context"
	"sync"

	"github.com/anyedge/anyedge/edge/location"
)

// Tracker is the Source of the bindings registered through this node: the
// edge adds an AoR after each successful REGISTER it handled, and Bindings
// reads their current contacts from the store. An AoR with no contacts
// left is forgotten. The Store interface has no listing on purpose (a
// distributed store cannot list cheaply), and only the node a UA
// registered through holds its NAT pinhole anyway.
type Tracker struct {
	store location.Store
	mu    sync.Mutex
	aors  map[string]uint64 // AoR → generation of its last Add
	gen   uint64
}

// NewTracker returns an empty tracker over store.
func NewTracker(store location.Store) *Tracker {
	return &Tracker{store: store, aors: map[string]uint64{}}
}

// Add tracks aor (again).
func (t *Tracker) Add(aor string) {
	t.mu.Lock()
	t.gen++
	t.aors[aor] = t.gen
	t.mu.Unlock()
}

// Len is the number of tracked AoRs.
func (t *Tracker) Len() int {
	t.mu.Lock()
	defer t.mu.Unlock()
	return len(t.aors)
}

// Bindings returns the current bindings of every tracked AoR.
func (t *Tracker) Bindings(ctx context.Context) ([]location.Binding, error) {
	t.mu.Lock()
	snap := make(map[string]uint64, len(t.aors))
	for a, g := range t.aors {
		snap[a] = g
	}
	t.mu.Unlock()
	var out []location.Binding
	for aor, gen := range snap {
		bs, err := t.store.Lookup(ctx, aor)
		if err != nil {
			return nil, err
		}
		if len(bs) == 0 {
			t.mu.Lock()
			if t.aors[aor] == gen { // not re-added meanwhile
				delete(t.aors, aor)
			}
			t.mu.Unlock()
			continue
		}
		out = append(out, bs...)
	}
	return out, nil
}

// Ranger is a store that can list its bindings (location.Memory).
type Ranger interface {
	Range(fn func(aor string, bindings []location.Binding) bool)
}

// NATRanger is a Ranger that can list its NATed bindings alone, without
// decoding the others (location.Memory).
type NATRanger interface {
	RangeNATed(fn func(aor string, bindings []location.Binding) bool)
}

// RangeSource lists every binding of a store that can list them. With it
// the pinger also picks up contacts that became this node's without a
// REGISTER through it (a partner's, after a failover); the ownership
// predicate then decides which ones it pings.
type RangeSource struct{ R Ranger }

// Bindings implements Source.
func (s RangeSource) Bindings(ctx context.Context) ([]location.Binding, error) {
	var out []location.Binding
	rangeFn := s.R.Range
	if n, ok := s.R.(NATRanger); ok {
		rangeFn = n.RangeNATed // the pinger keeps only NATed ones anyway
	}
	rangeFn(func(_ string, bs []location.Binding) bool {
		out = append(out, bs...)
		return ctx.Err() == nil
	})
	return out, ctx.Err()
}
