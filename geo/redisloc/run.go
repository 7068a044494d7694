package redisloc

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/anyedge/anyedge/edge/location"
)

// failsToDown is how many consecutive failed health checks mark the cluster
// unreachable: one lost check (a dropped packet, a GC pause) must not
// withdraw the node's routes.
const failsToDown = 2

// Run checks the cluster's health, flushes the home index and reaps the
// AoRs homed here that have a binding due, every ReapInterval, until ctx
// ends. The first check runs at once.
func (s *Store) Run(ctx context.Context) error {
	t := time.NewTicker(s.cfg.ReapInterval)
	defer t.Stop()
	for {
		s.Tick(ctx)
		select {
		case <-ctx.Done():
			// Keep what this node learnt: a restart reaps from it.
			fctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), s.cfg.Timeout)
			_ = s.flush(fctx)
			cancel()
			return nil
		case <-t.C:
		}
	}
}

// Tick runs one round of Run: health check, index flush (and its size,
// for Len), reap.
func (s *Store) Tick(ctx context.Context) {
	s.check(ctx)
	if err := s.flush(ctx); err != nil {
		s.log.Debug("location: home index flush failed", "err", err)
		return
	}
	if !s.natIndexed.Load() {
		if err := s.rebuildNATIndex(); err != nil {
			s.log.Debug("location: re-reading the home index failed", "err", err)
		} else {
			s.natIndexed.Store(true)
		}
	}
	cctx, cancel := context.WithTimeout(ctx, s.cfg.Timeout)
	if n, err := s.rdb.ZCard(cctx, s.indexKey()).Result(); err == nil {
		s.home.Store(n)
		s.m.homeAoRs.Set(float64(n))
	}
	cancel()
	if n, err := s.Reap(ctx); err != nil {
		s.log.Debug("location: reap failed", "err", err)
	} else if n > 0 {
		s.log.Debug("location: reaped", "aors", n)
	}
}

// check asks a cluster node for CLUSTER INFO: reachable while it answers
// cluster_state:ok, or while the check only timed out but operations were
// answered within the last ReapInterval.
func (s *Store) check(ctx context.Context) {
	cctx, cancel := context.WithTimeout(ctx, s.cfg.Timeout)
	defer cancel()
	info, err := s.rdb.ClusterInfo(cctx).Result()
	ok := err == nil && strings.Contains(info, "cluster_state:ok")
	if !ok && errors.Is(err, context.DeadlineExceeded) && time.Since(time.Unix(0, s.lastOK.Load())) < s.cfg.ReapInterval {
		// A slow check while saves and lookups are being answered is load,
		// not an outage: withdrawing the node would move that load onto
		// the others.
		ok = true
	}
	switch {
	case ok:
		s.fail.Store(0)
		if !s.up.Swap(true) {
			s.log.Info("location: redis cluster reachable")
		}
		s.m.up.Set(1)
	case s.fail.Add(1) >= failsToDown || !s.up.Load():
		if s.up.Swap(false) {
			s.log.Warn("location: redis cluster unreachable", "err", err, "state_ok", ok)
		}
		s.m.up.Set(0)
	}
}

// flush writes the buffered home index updates: a ZADD and a ZREM on the
// home index and on its NAT part, pipelined (one slot, one round trip). On
// failure they are kept for the next round.
func (s *Store) flush(ctx context.Context) error {
	batch := s.idx.take()
	if len(batch) == 0 {
		return nil
	}

	var add, addNAT []redis.Z
	var rem, remNAT []any
	for aor, e := range batch {
		if e.home == 0 {
			rem = append(rem, aor)
		} else {
			add = append(add, redis.Z{Score: float64(e.home), Member: aor})
		}
		if e.nat == 0 {
			remNAT = append(remNAT, aor)
		} else {
			addNAT = append(addNAT, redis.Z{Score: float64(e.nat), Member: aor})
		}
	}
	fctx, cancel := context.WithTimeout(ctx, s.cfg.Timeout)
	defer cancel()
	_, err := s.rdb.Pipelined(fctx, func(p redis.Pipeliner) error {
		for _, k := range []struct {
			key string
			add []redis.Z
			rem []any
		}{{s.indexKey(), add, rem}, {s.natKey(), addNAT, remNAT}} {
			if len(k.add) > 0 {
				p.ZAdd(fctx, k.key, k.add...)
			}
			if len(k.rem) > 0 {
				p.ZRem(fctx, k.key, k.rem...)
			}
		}
		return nil
	})
	if err != nil {
		// Put back what a newer Save has not replaced meanwhile.
		s.idx.putBack(batch)
	}
	return err
}

// Reap prunes the AoRs of this node's home index that have a binding due,
// at most DefaultReapBatch per call, and returns how many it pruned. It
// reads the index, never the keyspace.
func (s *Store) Reap(ctx context.Context) (int, error) {
	rctx, cancel := context.WithTimeout(ctx, s.cfg.Timeout)
	due, err := s.rdb.ZRangeByScore(rctx, s.indexKey(), &redis.ZRangeBy{
		Min: "-inf", Max: strconv.FormatInt(millis(s.clock()), 10), Count: DefaultReapBatch,
	}).Result()
	cancel()
	if err != nil {
		return 0, err
	}
	for i, aor := range due {
		start := time.Now()
		if _, err := s.prune(ctx, aor); err != nil {
			s.m.op("reap", resultError, start)
			return i, err
		}
		s.m.op("reap", resultOK, start)
		s.m.reaped.Inc()
	}
	if len(due) > 0 {
		return len(due), s.flush(ctx)
	}
	return 0, nil
}

// rangeBatch is how many AoRs Range reads per pipeline.
const rangeBatch = 500

// Range calls fn with the unexpired bindings of every AoR in this node's
// home index, until fn returns false. It makes the store a nat.Ranger.
// The reads are pipelined, rangeBatch AoRs at a time. Errors end the
// listing early (logged).
func (s *Store) Range(fn func(aor string, bindings []location.Binding) bool) {
	if err := s.rangeIndex(s.indexKey(), false, fn); err != nil {
		s.log.Debug("location: range failed", "err", err)
	}
}

// RangeNATed is Range for the NATed bindings of the AoRs in the NAT part
// of the home index. It makes the store a nat.NATRanger: the keepalive
// pinger lists what it pings from Redis, also after a restart, instead of
// only what was registered since, and reads no AoR without a NATed
// binding homed here (it lists once a second: reading every binding homed
// here each time cost a full pass over them per second). The pinger's
// ownership predicate (Home is this node) keeps each binding pinged by one
// node. Errors end the listing early (logged): the pinger retries at its
// next tick.
func (s *Store) RangeNATed(fn func(aor string, bindings []location.Binding) bool) {
	if err := s.rangeIndex(s.natKey(), true, fn); err != nil {
		s.log.Debug("location: range of NATed bindings failed", "err", err)
	}
}

// rangeIndex lists the AoRs of an index key (natOnly: their NATed
// bindings only).
func (s *Store) rangeIndex(key string, natOnly bool, fn func(aor string, bindings []location.Binding) bool) error {
	ctx, cancel := context.WithTimeout(context.Background(), 10*s.cfg.Timeout)
	defer cancel()
	aors, err := s.rdb.ZRange(ctx, key, 0, -1).Result()
	if err != nil {
		return fmt.Errorf("reading %s: %w", key, err)
	}
	now := s.clock()
	for start := 0; start < len(aors); start += rangeBatch {
		batch := aors[start:min(start+rangeBatch, len(aors))]
		cmds := make([]*redis.StringSliceCmd, len(batch))
		_, err := s.rdb.Pipelined(ctx, func(p redis.Pipeliner) error {
			for i, aor := range batch {
				cmds[i] = p.HVals(ctx, s.hashKey(aor))
			}
			return nil
		})
		if err != nil && !errors.Is(err, redis.Nil) {
			return fmt.Errorf("reading bindings: %w", err)
		}
		for i, aor := range batch {
			var bs []location.Binding
			for _, v := range cmds[i].Val() {
				b, err := decodeBinding(aor, []byte(v))
				if err != nil {
					s.log.Warn("location: range: bad binding", "aor", aor, "err", err)
					continue
				}
				if b.Expires.After(now) && (b.NATed || !natOnly) {
					bs = append(bs, b)
				}
			}
			if len(bs) == 0 {
				continue
			}
			location.SortBindings(bs)
			if !fn(aor, bs) {
				return nil
			}
		}
	}
	return nil
}

// rebuildNATIndex notes every AoR of the home index again, once per
// process after the first flush: the NAT part of the index did not exist
// before it was added, and a node upgraded with bindings in Redis would not
// ping them until their next REGISTER.
// A Save noted while it reads is newer than what it read, and is kept.
func (s *Store) rebuildNATIndex() error {
	seen := map[string]homeEntry{}
	err := s.rangeIndex(s.indexKey(), false, func(aor string, bs []location.Binding) bool {
		seen[aor] = s.homeEntry(bs)
		return true
	})
	if err != nil {
		return err
	}
	s.idx.putBack(seen)
	s.log.Debug("location: home index re-read", "aors", len(seen))
	return nil
}
