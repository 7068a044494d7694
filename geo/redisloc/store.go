package redisloc

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/redis/go-redis/v9"
	"github.com/redis/go-redis/v9/maintnotifications"

	"github.com/anyedge/anyedge/edge/location"
)

// Store is the DB-driven location.Store: every node of a site reads and
// writes the same Redis Cluster. See the package doc for the data model.
type Store struct {
	cfg   Config
	node  uint32
	rdb   *redis.ClusterClient
	clock func() time.Time
	log   *slog.Logger
	m     *metrics

	idx  homeIndex
	up   atomic.Bool  // the last health checks passed
	fail atomic.Int32 // consecutive failed health checks
	home atomic.Int64 // AoRs in this node's home index, at the last check

	lastReload atomic.Int64 // unix ns of the last slot map reload failed() asked for
	lastOK     atomic.Int64 // unix ns of the last operation Redis answered
	natIndexed atomic.Bool  // rebuildNATIndex ran
}

// Option sets an optional dependency.
type Option func(*Store)

// WithLogger sets the logger (default: discard).
func WithLogger(l *slog.Logger) Option { return func(s *Store) { s.log = l } }

// WithRegistry registers the store's metrics on reg.
func WithRegistry(reg prometheus.Registerer) Option { return func(s *Store) { s.m = newMetrics(reg) } }

// WithClock sets the clock Lookup filters expiry with, and Save's when the
// request has no Now (default time.Now). Redis's own key expiry runs on
// Redis's clock: keep a fake clock near real time.
func WithClock(now func() time.Time) Option { return func(s *Store) { s.clock = now } }

// WithHook adds a go-redis hook to the client of every cluster node (the
// benchmark counts round trips with one).
func WithHook(h redis.Hook) Option {
	return func(s *Store) { s.rdb.OnNewNode(func(c *redis.Client) { c.AddHook(h) }) }
}

// New validates cfg and returns a store for the node with id node (the
// Home written into the bindings it saves; 0 for a single node). It does
// not dial: Run checks the cluster and keeps the home index.
func New(cfg Config, node uint32, opts ...Option) (*Store, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	o := &redis.ClusterOptions{
		Addrs:    cfg.Addrs,
		Username: cfg.Username,
		Password: cfg.Password,
		// Bounded everywhere: a dead cluster must answer errors, fast.
		DialTimeout:           cfg.Timeout,
		ReadTimeout:           cfg.Timeout,
		WriteTimeout:          cfg.Timeout,
		PoolTimeout:           cfg.Timeout,
		ContextTimeoutEnabled: true,
		MaxRetries:            2,
		DialerRetries:         1, // a refused dial is an answer: do not retry it five times
		// A dead master refuses connections rather than answering MOVED,
		// so the client would keep its old slot map until the periodic
		// reload: failed() reloads at once, this bounds the rest.
		ClusterStateReloadInterval: 5 * time.Second,
		MaxRedirects:               3,
		PoolSize:                   cfg.PoolSize,
		DisableIdentity:            true, // CLIENT SETINFO is Redis 7.2+: one wasted round trip per dial on 7.0
		MaintNotificationsConfig: &maintnotifications.Config{
			Mode: maintnotifications.ModeDisabled,
		},
	}
	if cfg.TLS != nil {
		t, err := cfg.TLS.build()
		if err != nil {
			return nil, err
		}
		o.TLSConfig = t
	}
	s := &Store{
		cfg:   cfg,
		node:  node,
		rdb:   redis.NewClusterClient(o),
		clock: time.Now,
		log:   slog.New(slog.NewTextHandler(io.Discard, nil)),
	}
	s.idx.init()
	for _, opt := range opts {
		opt(s)
	}
	if s.m == nil {
		s.m = newMetrics(nil)
	}
	return s, nil
}

var _ location.Store = (*Store)(nil)

// Close closes the connections.
func (s *Store) Close() error { return s.rdb.Close() }

// Keys. The AoR is the hash tag, so both keys of an AoR are in one slot and
// every AoR operation is a single-slot script.
func (s *Store) hashKey(aor string) string { return s.cfg.KeyPrefix + "{" + aor + "}:b" }
func (s *Store) zsetKey(aor string) string { return s.cfg.KeyPrefix + "{" + aor + "}:x" }

// indexKey is this node's home index: AoR → the earliest expiry (ms) of
// its bindings homed here. It lives in its own slot ("{node-N}").
func (s *Store) indexKey() string { return s.nodeKey("home") }

// natKey is the part of the home index behind a NAT: AoR → the earliest
// expiry (ms) of its NATed bindings homed here. The keepalive pinger reads
// only this one. Same slot as the home index, so a flush of both is one
// round trip.
func (s *Store) natKey() string { return s.nodeKey("nat") }

func (s *Store) nodeKey(name string) string {
	return s.cfg.KeyPrefix + "{node-" + strconv.FormatUint(uint64(s.node), 10) + "}:" + name
}

// Save implements location.Store: location.Apply's rules, run by the save
// script in one round trip (two with WaitReplicas: the script and WAIT are
// pipelined on one connection, so it is still one network round trip).
func (s *Store) Save(ctx context.Context, req *location.SaveRequest) (*location.SaveResult, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	if req == nil || req.AoR == "" || (req.Wildcard && len(req.Contacts) > 0) {
		return nil, location.ErrInvalid
	}
	now := req.Now
	if now.IsZero() {
		now = s.clock()
	}
	maxc := max(req.MaxContacts, 0)
	args := make([]any, 0, 8+6*len(req.Contacts))
	args = append(args, padNanos(now), millis(now), req.CallID, req.CSeq, flag(req.Wildcard), maxc,
		flag(req.Policy == location.PolicyReplaceOldest), len(req.Contacts))
	for i := range req.Contacts {
		c := req.Contacts[i]
		if c.RegID < 0 || c.RegID > 1<<31-1 || c.Q < 0 || c.Q > 1000 {
			return nil, location.ErrInvalid
		}
		var data []byte
		if c.Expires.After(now) {
			c.AoR, c.CallID, c.CSeq, c.Registered = req.AoR, req.CallID, req.CSeq, now
			if c.Home == 0 {
				c.Home = s.node
			}
			var err error
			if data, err = encodeBinding(&c); err != nil {
				return nil, fmt.Errorf("%w: %v", location.ErrInvalid, err)
			}
		}
		args = append(args, c.Key(), padNanos(c.Expires), millis(c.Expires), c.Q, c.Contact, data)
	}

	start := time.Now()
	octx, cancel := context.WithTimeout(ctx, s.cfg.Timeout)
	defer cancel()
	keys := []string{s.hashKey(req.AoR), s.zsetKey(req.AoR)}
	var reply []any
	var err error
	if s.cfg.WaitReplicas > 0 {
		reply, err = s.saveWait(octx, keys, args)
	} else {
		reply, err = saveScript.Run(octx, s.rdb, keys, args...).Slice()
	}
	if err != nil {
		return nil, s.failed(ctx, "save", start, err)
	}
	res, err := parseSave(req.AoR, reply)
	if err != nil {
		s.m.op("save", resultError, start)
		return nil, err
	}
	s.m.op("save", resultOK, start)
	s.lastOK.Store(time.Now().UnixNano())
	s.noteHome(req.AoR, res.Bindings)
	return res, nil
}

// saveWait runs the script and WAIT pipelined on one connection to the
// AoR's master: WAIT counts the replicas that have the writes of its own
// connection.
func (s *Store) saveWait(ctx context.Context, keys []string, args []any) ([]any, error) {
	var last error
	for attempt := 0; attempt < 3; attempt++ {
		master, err := s.rdb.MasterForKey(ctx, keys[0])
		if err != nil {
			return nil, err
		}
		reply, err := s.pipeWait(ctx, master, keys, args)
		if err == nil {
			return reply, nil
		}
		last = err
		if !redirected(err) {
			return nil, err
		}
		// A failover or resharding moved the slot: learn the new owner.
		s.rdb.ReloadState(ctx)
		if ctx.Err() != nil {
			break
		}
	}
	return nil, last
}

func (s *Store) pipeWait(ctx context.Context, c *redis.Client, keys []string, args []any) ([]any, error) {
	for _, load := range []bool{false, true} {
		pipe := c.Pipeline()
		var script *redis.Cmd
		if load {
			script = saveScript.Eval(ctx, pipe, keys, args...)
		} else {
			script = saveScript.EvalSha(ctx, pipe, keys, args...)
		}
		wait := pipe.Do(ctx, "wait", s.cfg.WaitReplicas, s.cfg.WaitTimeout.Milliseconds())
		_, _ = pipe.Exec(ctx)
		reply, err := script.Slice()
		if err != nil {
			if !load && redis.HasErrorPrefix(err, "NOSCRIPT") {
				continue
			}
			return nil, err
		}
		if n, err := wait.Int64(); err != nil || n < int64(s.cfg.WaitReplicas) {
			// Written on the master but not (yet) on enough replicas: the
			// REGISTER is still answered, and the shortfall counted.
			s.m.waitShort.Inc()
			s.log.Debug("location: WAIT short", "acked", n, "want", s.cfg.WaitReplicas, "err", err)
		}
		return reply, nil
	}
	return nil, errors.New("redisloc: script not loadable")
}

// redirected reports a reply that names another owner for the slot.
func redirected(err error) bool {
	return redis.HasErrorPrefix(err, "MOVED") || redis.HasErrorPrefix(err, "ASK") ||
		redis.HasErrorPrefix(err, "READONLY") || redis.HasErrorPrefix(err, "TRYAGAIN")
}

func flag(b bool) string {
	if b {
		return "1"
	}
	return "0"
}

// parseSave reads the save script's reply.
func parseSave(aor string, reply []any) (*location.SaveResult, error) {
	if len(reply) == 0 {
		return nil, errors.New("redisloc: empty reply from the save script")
	}
	switch reply[0] {
	case "ooo":
		return nil, location.ErrOutOfOrder
	case "tmc":
		return nil, location.ErrTooManyContacts
	case "ok":
	default:
		return nil, fmt.Errorf("redisloc: unexpected reply %v from the save script", reply[0])
	}
	if len(reply) < 5 {
		return nil, fmt.Errorf("redisloc: short reply from the save script (%d items)", len(reply))
	}
	var n [4]int
	for i := range n {
		v, ok := reply[1+i].(int64)
		if !ok {
			return nil, fmt.Errorf("redisloc: bad count %v in the save script's reply", reply[1+i])
		}
		n[i] = int(v)
	}
	res := &location.SaveResult{Added: n[0], Refreshed: n[1], Removed: n[2], Evicted: n[3]}
	bs, err := decodeAll(aor, reply[5:])
	if err != nil {
		return nil, err
	}
	location.SortBindings(bs)
	res.Bindings = bs
	return res, nil
}

func decodeAll(aor string, items []any) ([]location.Binding, error) {
	bs := make([]location.Binding, 0, len(items))
	for _, it := range items {
		str, ok := it.(string)
		if !ok {
			return nil, fmt.Errorf("redisloc: binding of %s is %T, not a string", aor, it)
		}
		b, err := decodeBinding(aor, []byte(str))
		if err != nil {
			return nil, err
		}
		bs = append(bs, b)
	}
	return bs, nil
}

// Lookup implements location.Store: one HVALS, filtered by the store's
// clock (a binding past its expiry is never returned, reaped or not).
func (s *Store) Lookup(ctx context.Context, aor string) ([]location.Binding, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	start := time.Now()
	octx, cancel := context.WithTimeout(ctx, s.cfg.Timeout)
	defer cancel()
	vals, err := s.rdb.HVals(octx, s.hashKey(aor)).Result()
	if err != nil {
		return nil, s.failed(ctx, "lookup", start, err)
	}
	now := s.clock()
	out := make([]location.Binding, 0, len(vals))
	for _, v := range vals {
		b, err := decodeBinding(aor, []byte(v))
		if err != nil {
			s.m.op("lookup", resultError, start)
			return nil, err
		}
		if b.Expires.After(now) {
			out = append(out, b)
		}
	}
	s.m.op("lookup", resultOK, start)
	s.lastOK.Store(time.Now().UnixNano())
	location.SortBindings(out)
	return out, nil
}

// Remove implements location.Store. Removing a binding that is not there
// is not an error.
func (s *Store) Remove(ctx context.Context, aor, key string) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	start := time.Now()
	_, err := s.prune(ctx, aor, key)
	if err != nil {
		return s.failed(ctx, "remove", start, err)
	}
	s.m.op("remove", resultOK, start)
	return nil
}

// prune runs the prune script: removes keys and what expired, returns the
// bindings left (the index is updated from them).
func (s *Store) prune(ctx context.Context, aor string, keys ...string) ([]location.Binding, error) {
	octx, cancel := context.WithTimeout(ctx, s.cfg.Timeout)
	defer cancel()
	args := make([]any, 0, 1+len(keys))
	args = append(args, millis(s.clock()))
	for _, k := range keys {
		args = append(args, k)
	}
	reply, err := pruneScript.Run(octx, s.rdb, []string{s.hashKey(aor), s.zsetKey(aor)}, args...).Slice()
	if err != nil && !errors.Is(err, redis.Nil) {
		return nil, err
	}
	bs, err := decodeAll(aor, reply)
	if err != nil {
		return nil, err
	}
	s.noteHome(aor, bs)
	return bs, nil
}

// Len implements location.Store. A global count would need a scan of the
// cluster: this is the number of AoRs with a binding homed on this node,
// as of the last health check (Run).
func (s *Store) Len() int { return int(s.home.Load()) }

// Ready reports whether the cluster answered the last health check. It is
// false until Run's first check passes.
func (s *Store) Ready() bool { return s.up.Load() }

// failed maps an error to what the SIP layer answers: the caller's own
// cancellation as is, a reply error that is a bug (a script error) as an
// internal error, anything else (timeouts, refused connections, a cluster
// that is down, a slot without a master) as location.ErrUnavailable.
func (s *Store) failed(ctx context.Context, op string, start time.Time, err error) error {
	if ctx.Err() != nil {
		s.m.op(op, resultError, start)
		return ctx.Err()
	}
	if unavailable(err) {
		s.reloadSoon()
		s.m.op(op, resultUnavailable, start)
		return fmt.Errorf("%w: %s: %v", location.ErrUnavailable, op, err)
	}
	s.m.op(op, resultError, start)
	s.log.Warn("location: redis failed", "op", op, "err", err)
	return fmt.Errorf("redisloc: %s: %w", op, err)
}

// reloadSoon asks the client to reload the slot map (a failover may have
// moved a slot to a promoted replica), at most every reloadEvery.
func (s *Store) reloadSoon() {
	now := time.Now().UnixNano()
	last := s.lastReload.Load()
	if now-last < int64(reloadEvery) || !s.lastReload.CompareAndSwap(last, now) {
		return
	}
	s.rdb.ReloadState(context.Background())
}

const reloadEvery = 250 * time.Millisecond

func unavailable(err error) bool {
	var re redis.Error
	if errors.As(err, &re) {
		msg := re.Error()
		for _, p := range []string{"CLUSTERDOWN", "LOADING", "READONLY", "MASTERDOWN", "TRYAGAIN", "MOVED", "ASK", "NOREPLICAS", "BUSY"} {
			if strings.HasPrefix(msg, p) {
				return true
			}
		}
		return false
	}
	var ne net.Error
	return errors.As(err, &ne) || errors.Is(err, context.DeadlineExceeded) || errors.Is(err, redis.ErrClosed) ||
		errors.Is(err, redis.ErrPoolTimeout) || errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) || isConnErr(err)
}

// isConnErr catches the dial and reset errors go-redis returns unwrapped.
func isConnErr(err error) bool {
	msg := err.Error()
	return strings.Contains(msg, "connection refused") || strings.Contains(msg, "connection reset") ||
		strings.Contains(msg, "broken pipe") || strings.Contains(msg, "i/o timeout") ||
		strings.Contains(msg, "no such host") || strings.Contains(msg, "cluster has no nodes")
}

// noteHome records the earliest expiry of aor's bindings homed on this
// node, and of the NATed ones among them (or that it has none), for the
// next flush.
func (s *Store) noteHome(aor string, bs []location.Binding) { s.idx.note(aor, s.homeEntry(bs)) }

func (s *Store) homeEntry(bs []location.Binding) homeEntry {
	var e homeEntry
	for i := range bs {
		if bs[i].Home != s.node {
			continue
		}
		ms := millis(bs[i].Expires)
		if e.home == 0 || ms < e.home {
			e.home = ms
		}
		if bs[i].NATed && (e.nat == 0 || ms < e.nat) {
			e.nat = ms
		}
	}
	return e
}
