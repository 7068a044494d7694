package cps

import (
	"fmt"
	"slices"
)

// newLimit builds limit i of a validated cfg, with empty counters.
func newLimit(cfg Config, i int, lc LimitConfig) *limit {
	lim := &limit{
		idx: i, name: lc.Name, cfg: lc, algo: lc.Algorithm, sel: lc.Selector, region: lc.Region,
		w: int(lc.Window / cfg.Slot), secs: lc.Window.Seconds(), code: lc.Response.Code,
		retry: max(lc.Response.RetryAfter, 0), rate: lc.Rate, share: 1,
	}
	if lc.Selector == Global {
		lim.global = newCounter("", lim.w+1, true)
	} else {
		lim.keys = newKeyTable(cfg.MaxKeys, int64(cfg.KeyIdle/cfg.Slot), lim.w+1)
	}
	return lim
}

// Changes is what Reconfigure did, each list in config order.
type Changes struct {
	Added, Removed []string
	// Rates are limits whose configured rate changed: the new rate is set
	// as SetRate would, and reaches every node.
	Rates []string
	// Replaced are limits whose window, selector or region changed: they
	// start again with empty counters.
	Replaced []string
	// Updated are limits whose algorithm or response changed, in place.
	Updated []string
}

// Empty reports whether nothing changed.
func (c Changes) Empty() bool {
	return len(c.Added)+len(c.Removed)+len(c.Rates)+len(c.Replaced)+len(c.Updated) == 0
}

// RestartError names a setting that differs between two configs and only
// takes effect at a restart: every node counts in the same slots, and the
// broadcast, key table sizes and idle time are fixed when they start.
type RestartError struct{ Key string }

func (e *RestartError) Error() string { return e.Key + ": cannot change without a restart" }

// Reconfigure applies a new config at run time (a config reload), keeping
// the counters of every limit whose definition did not change, so that a
// reload neither forgets the calls in the window nor lets a burst through.
// A limit whose configured rate changed gets it as a versioned run-time
// rate (see SetRate); a limit whose configured rate did not change keeps
// its run-time rate, so a reload does not undo `edgectl cps set`. New
// limits start empty; removed limits are dropped (their peers' records
// count as unknown until they reload too). The partition policy applies
// at once. slot, interval, max_keys and key_idle cannot change
// (*RestartError). cfg is validated; on error nothing changes.
func (l *Limiter) Reconfigure(cfg Config) (Changes, error) {
	if err := cfg.Validate(); err != nil {
		return Changes{}, err
	}
	now := l.now()
	l.mu.Lock()
	defer l.mu.Unlock()
	old := l.cfg
	switch {
	case cfg.Slot != old.Slot:
		return Changes{}, &RestartError{Key: "slot"}
	case cfg.Interval != old.Interval:
		return Changes{}, &RestartError{Key: "interval"}
	case cfg.MaxKeys != old.MaxKeys:
		return Changes{}, &RestartError{Key: "max_keys"}
	case cfg.KeyIdle != old.KeyIdle:
		return Changes{}, &RestartError{Key: "key_idle"}
	}
	var ch Changes
	limits := make([]*limit, 0, len(cfg.Limits))
	byName := make(map[string]*limit, len(cfg.Limits))
	for i, lc := range cfg.Limits {
		lim := l.byName[lc.Name]
		switch {
		case lim == nil:
			lim = newLimit(cfg, i, lc)
			ch.Added = append(ch.Added, lc.Name)
		case lc.Window != lim.cfg.Window || lc.Selector != lim.cfg.Selector || lc.Region != lim.cfg.Region:
			lim = newLimit(cfg, i, lc)
			ch.Replaced = append(ch.Replaced, lc.Name)
		default:
			if lc.Algorithm != lim.cfg.Algorithm || lc.Response != lim.cfg.Response {
				lim.algo, lim.code, lim.retry = lc.Algorithm, lc.Response.Code, max(lc.Response.RetryAfter, 0)
				ch.Updated = append(ch.Updated, lc.Name)
			}
			if lc.Rate != lim.cfg.Rate {
				v := version{ts: now.UnixNano(), node: l.self}
				if !v.newer(lim.ver) {
					v.ts = lim.ver.ts + 1
				}
				lim.rate, lim.ver, lim.rateDirty = lc.Rate, v, true
				ch.Rates = append(ch.Rates, lc.Name)
			}
			lim.idx, lim.cfg = i, lc
		}
		limits = append(limits, lim)
		byName[lc.Name] = lim
	}
	for _, lc := range old.Limits {
		if byName[lc.Name] == nil {
			ch.Removed = append(ch.Removed, lc.Name)
		}
	}
	if ch.Empty() && cfg.PartitionPolicy == old.PartitionPolicy {
		return ch, nil
	}
	// Keep the configured limits' definitions for the snapshot and status.
	cfg.Limits = slices.Clone(cfg.Limits)
	l.cfg, l.limits, l.byName = cfg, limits, byName
	l.bump()
	return ch, nil
}

// Reconfigure applies a new config to the service's limiter (see
// Limiter.Reconfigure) and sends new rates to every node at once.
func (s *Service) Reconfigure(cfg Config) (Changes, error) {
	ch, err := s.lim.Reconfigure(cfg)
	if err != nil {
		return ch, fmt.Errorf("cps: %w", err)
	}
	if len(ch.Rates) > 0 {
		s.send(s.lim.FlushNow())
	}
	return ch, nil
}
