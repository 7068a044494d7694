package nat

import (
	"time"

	"github.com/anyedge/anyedge/edge/location"
)

// schedule is the pure core of the keepalive pinger: which binding is due
// when, and how many probes in a row each has failed. It has no clock, no
// goroutines and no I/O; time comes in as arguments, randomness from rnd.
//
// A binding seen for the first time is first due at a uniformly random
// point of the next interval, so that after a restart or a sync of many
// bindings the probes are spread across the interval instead of all going
// out at once. Each later probe is one interval on, ±jitter, so that
// bindings registered in a burst drift apart rather than stay in lockstep.
type schedule struct {
	interval time.Duration
	jitter   float64        // fraction of interval, e.g. 0.1 for ±10 %
	failures int            // consecutive failures that remove a binding
	rnd      func() float64 // uniform in [0, 1)
	entries  map[string]*entry
}

type entry struct {
	b        location.Binding
	due      time.Time
	failed   int
	inflight bool
}

func newSchedule(interval time.Duration, jitter float64, failures int, rnd func() float64) *schedule {
	return &schedule{interval: interval, jitter: jitter, failures: failures, rnd: rnd, entries: map[string]*entry{}}
}

func entryKey(b *location.Binding) string { return b.AoR + "\x00" + b.Key() }

// sync makes the schedule hold exactly bs: new bindings are added, known
// ones updated (a re-REGISTER may have moved the received address), and
// the rest forgotten (unregistered, expired, or no longer ours).
func (s *schedule) sync(bs []location.Binding, now time.Time) {
	seen := make(map[string]struct{}, len(bs))
	for _, b := range bs {
		k := entryKey(&b)
		seen[k] = struct{}{}
		if e, ok := s.entries[k]; ok {
			e.b = b
			continue
		}
		s.entries[k] = &entry{b: b, due: now.Add(time.Duration(s.rnd() * float64(s.interval)))}
	}
	for k := range s.entries {
		if _, ok := seen[k]; !ok {
			delete(s.entries, k)
		}
	}
}

// take returns the bindings due at now that have no probe in flight, and
// schedules their next probe.
func (s *schedule) take(now time.Time) []location.Binding {
	var out []location.Binding
	for _, e := range s.entries {
		if e.inflight || e.due.After(now) {
			continue
		}
		e.inflight = true
		j := 1 + s.jitter*(2*s.rnd()-1)
		e.due = now.Add(time.Duration(j * float64(s.interval)))
		out = append(out, e.b)
	}
	return out
}

// result records a probe's outcome and reports whether the binding must
// be removed (failures in a row reached the limit). A binding forgotten
// by sync meanwhile is ignored.
func (s *schedule) result(b location.Binding, ok bool) (remove bool) {
	k := entryKey(&b)
	e, found := s.entries[k]
	if !found {
		return false
	}
	e.inflight = false
	if ok {
		e.failed = 0
		return false
	}
	e.failed++
	if e.failed >= s.failures {
		delete(s.entries, k)
		return true
	}
	return false
}

func (s *schedule) len() int { return len(s.entries) }

// release gives back a binding take returned but that could not be probed
// (too many in flight): it is due again at once, with no failure counted.
func (s *schedule) release(b location.Binding, now time.Time) {
	if e, ok := s.entries[entryKey(&b)]; ok {
		e.inflight = false
		e.due = now
	}
}
