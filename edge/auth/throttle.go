package auth

import (
	"net/netip"
	"sync"
	"time"
)

// throttle is the pike-style brake on sources that keep failing: password
// guessing and misconfigured phones retrying forever. A source that fails
// maxFailures times within window is blocked for blockFor: its next request
// gets one 403 (so a human looking at a phone sees why), later ones are
// dropped without an answer (so scanners learn nothing and cost nothing).
// When the block ends the source starts clean.
type throttle struct {
	maxFailures int
	window      time.Duration
	blockFor    time.Duration

	mu      sync.Mutex
	sources *lru[string, srcState]
}

type srcState struct {
	failures     int
	windowStart  time.Time
	blockedUntil time.Time
	told         bool // the 403 announcing the block was sent
}

type verdict uint8

const (
	allow verdict = iota
	forbid
	drop
)

func (t *throttle) check(key string, now time.Time) verdict {
	t.mu.Lock()
	defer t.mu.Unlock()
	st, ok := t.sources.get(key)
	if !ok || st.blockedUntil.IsZero() {
		return allow
	}
	if now.Before(st.blockedUntil) {
		if !st.told {
			st.told = true
			return forbid
		}
		return drop
	}
	t.sources.remove(key) // served its time
	return allow
}

// fail counts a failure and reports whether it blocked the source.
func (t *throttle) fail(key string, now time.Time) bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	st, ok := t.sources.get(key)
	if !ok {
		t.sources.put(key, srcState{})
		st, _ = t.sources.get(key)
	}
	if now.Sub(st.windowStart) > t.window {
		st.failures, st.windowStart = 0, now
	}
	st.failures++
	if st.failures >= t.maxFailures && st.blockedUntil.IsZero() {
		st.blockedUntil = now.Add(t.blockFor)
		return true
	}
	return false
}

// success forgets a source's failures: a user who typed the password wrong
// twice and then right should not be one slip away from a block.
func (t *throttle) success(key string) {
	t.mu.Lock()
	t.sources.remove(key)
	t.mu.Unlock()
}

func (t *throttle) blocked(now time.Time) int {
	t.mu.Lock()
	defer t.mu.Unlock()
	n := 0
	t.sources.each(func(_ string, st *srcState) {
		if now.Before(st.blockedUntil) {
			n++
		}
	})
	return n
}

// sourceKey is what failures are counted by: the source IP without port,
// and for IPv6 its /64, since one subscriber line gets a whole /64 and
// could otherwise rotate through addresses.
func sourceKey(src string) string {
	ap, err := netip.ParseAddrPort(src)
	var ip netip.Addr
	if err == nil {
		ip = ap.Addr()
	} else if ip, err = netip.ParseAddr(src); err != nil {
		return src
	}
	ip = ip.Unmap()
	if ip.Is6() {
		p, _ := ip.Prefix(64)
		return p.String()
	}
	return ip.String()
}
