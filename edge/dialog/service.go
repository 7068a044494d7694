package dialog

import (
	"context"
	"errors"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/anyedge/anyedge/cluster"
	"github.com/anyedge/anyedge/cluster/core"
	"github.com/anyedge/anyedge/cluster/wire"
)

// CapPrefix names the capability: dialog.<region>. Only the nodes of a
// region hold (and sync, and repair) each other's calls.
const CapPrefix = "dialog"

// CapName is the capability of region.
func CapName(region string) string { return CapPrefix + "." + region }

// Message types of the capability. ONLY APPEND: the values are protocol.
const (
	msgUpdate cluster.MsgType = 1 // encodeFrame: changed calls
)

// tickEvery is the expiry granularity: timeouts are seconds to hours.
const tickEvery = 250 * time.Millisecond

// Cluster is what the service needs from the cluster node; *cluster.Node
// is one, and tests adapt core.Sim to it.
type Cluster interface {
	Self() cluster.NodeMeta
	SendMatching(capName string, typ cluster.MsgType, f cluster.Filter, body []byte) int
}

// Option sets an optional dependency of a Service.
type Option func(*Service)

// WithLogger sets the logger (default: discard).
func WithLogger(l *slog.Logger) Option { return func(s *Service) { s.log = l } }

// WithRegistry registers the metrics on reg (default: none).
func WithRegistry(reg prometheus.Registerer) Option { return func(s *Service) { s.reg = reg } }

// WithClock sets the clock (default time.Now).
func WithClock(now func() time.Time) Option { return func(s *Service) { s.now = now } }

// Service is the node's call state: the Store behind a lock, fed by the
// SIP edge, replicated to the region partners over the cluster, synced
// from one of them on startup.
type Service struct {
	cfg     Config
	cl      Cluster
	self    uint32
	region  string
	capName string
	log     *slog.Logger
	reg     prometheus.Registerer
	now     func() time.Time
	m       *metrics

	mu sync.Mutex
	st *Store

	kick   chan struct{}
	synced atomic.Bool
	// inline sends changes from the caller's goroutine (simulations).
	inline bool
}

// New validates cfg and builds the service for the node cl is.
func New(cfg Config, cl Cluster, opts ...Option) (*Service, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if cl == nil {
		return nil, errors.New("dialog: a cluster node is required")
	}
	self := cl.Self()
	s := &Service{
		cfg: cfg, cl: cl, self: self.ID, region: self.Region, capName: CapName(self.Region),
		log: slog.New(slog.DiscardHandler), now: time.Now, kick: make(chan struct{}, 1),
	}
	for _, o := range opts {
		o(s)
	}
	s.st = NewStore(cfg, s.self)
	s.m = newMetrics(s.reg, s)
	return s, nil
}

// CapName is the name of the service's capability.
func (s *Service) CapName() string { return s.capName }

// Synced reports whether the startup sync from a partner is done.
func (s *Service) Synced() bool { return s.synced.Load() }

// HandleEvent follows the capability's sync state; subscribe it on the
// node.
func (s *Service) HandleEvent(e cluster.Event) {
	if e.Kind == cluster.EventSyncState && e.Cap == s.capName {
		s.synced.Store(e.State == core.Synced)
	}
}

// Capability is the cluster capability; register it before the node
// starts. A starting node syncs its region's calls from a partner before
// it counts as synced (and so before it announces anycast), and
// anti-entropy repairs what live updates missed.
func (s *Service) Capability() cluster.Capability {
	return cluster.Capability{
		Name:      s.capName,
		NeedsSync: true,
		Handle:    s.handle,
		Snapshot:  func() cluster.SnapshotReader { return s.reader(-1) },
		Donors:    func(m cluster.NodeMeta) bool { return m.Region == s.region },
		Apply:     func(from uint32, recs [][]byte) { s.apply(recs, true) },
		Digest: func() []uint64 {
			s.mu.Lock()
			defer s.mu.Unlock()
			return s.st.Digest()
		},
		Bucket: func(i int) cluster.SnapshotReader {
			if i < 0 || i >= s.cfg.Buckets {
				return &reader{}
			}
			return s.reader(i)
		},
	}
}

func (s *Service) handle(from uint32, typ cluster.MsgType, body []byte) {
	if typ != msgUpdate {
		return // a newer peer's message
	}
	stamp, recs, err := decodeFrame(body)
	if err != nil {
		s.m.bad.Inc()
		s.log.Warn("malformed dialog frame dropped", "from", from, "err", err)
		return
	}
	s.apply(recs, false)
	s.m.records.WithLabelValues("received").Add(float64(len(recs)))
	if d := s.now().UnixNano() - stamp; stamp != 0 && d >= 0 {
		s.m.lag.Observe(float64(d) / 1e9)
	}
}

// apply merges records; from a snapshot or anti-entropy (repair) once
// synced, a change counts as a repair.
func (s *Service) apply(recs [][]byte, repair bool) {
	now := s.now()
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, raw := range recs {
		c, err := DecodeCall(raw)
		if err != nil {
			s.m.bad.Inc()
			continue
		}
		ok, err := s.st.Merge(now, c)
		if errors.Is(err, ErrFull) {
			s.m.dropped.Inc()
		}
		if ok && repair && s.synced.Load() {
			s.m.repairs.Inc()
		}
	}
}

// reader streams the encoded calls of bucket b (all when b < 0). The
// records are encoded under the lock at once: a call is ~200 bytes, and
// the table is bounded by max_dialogs.
func (s *Service) reader(b int) *reader {
	s.mu.Lock()
	defer s.mu.Unlock()
	r := &reader{}
	var w wire.Writer
	var ends []int
	s.st.Each(b, func(c *Call) bool {
		encodeCall(&w, c)
		ends = append(ends, len(w.B))
		return true
	})
	start := 0
	for _, e := range ends {
		r.recs = append(r.recs, w.B[start:e:e])
		start = e
	}
	return r
}

type reader struct{ recs [][]byte }

func (r *reader) Next(dst [][]byte, maxBytes int) ([][]byte, bool) {
	n := 0
	for len(r.recs) > 0 && n < maxBytes {
		dst = append(dst, r.recs[0])
		n += len(r.recs[0])
		r.recs = r.recs[1:]
	}
	return dst, len(r.recs) == 0
}

// Run expires calls and sends changes to the partners until ctx ends.
func (s *Service) Run(ctx context.Context) error {
	t := time.NewTicker(tickEvery)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			s.Flush()
			return nil
		case <-t.C:
			s.Tick()
		case <-s.kick:
			// Group commit: changes of the next FlushInterval leave together.
			timer := time.NewTimer(s.cfg.FlushInterval)
			select {
			case <-ctx.Done():
				timer.Stop()
				s.Flush()
				return nil
			case <-timer.C:
			}
			s.Flush()
		}
	}
}

// Tick expires what is due.
func (s *Service) Tick() {
	now := s.now()
	s.mu.Lock()
	x := s.st.Tick(now)
	s.mu.Unlock()
	if x.Early > 0 {
		s.m.expired.WithLabelValues("early").Add(float64(x.Early))
	}
	if x.Timeout > 0 {
		s.m.expired.WithLabelValues("timeout").Add(float64(x.Timeout))
	}
}

// Flush sends the changes made here to the region partners now.
func (s *Service) Flush() {
	s.mu.Lock()
	calls := s.st.TakeDirty()
	s.mu.Unlock()
	if len(calls) == 0 {
		return
	}
	var recs [][]byte
	size := 0
	send := func() {
		if len(recs) == 0 {
			return
		}
		s.cl.SendMatching(s.capName, msgUpdate, s.partners, encodeFrame(s.now().UnixNano(), recs))
		s.m.records.WithLabelValues("sent").Add(float64(len(recs)))
		recs, size = nil, 0
	}
	for i := range calls {
		b := EncodeCall(&calls[i])
		if size+len(b)+4 > s.cfg.MaxFrameBytes-16 {
			send()
		}
		recs = append(recs, b)
		size += len(b) + 4
	}
	send()
}

func (s *Service) partners(m cluster.NodeMeta) bool { return m.Region == s.region && m.ID != s.self }

// changed schedules the replication of a local change.
func (s *Service) changed() {
	if s.inline {
		s.Flush()
		return
	}
	select {
	case s.kick <- struct{}{}:
	default:
	}
}

// Begin records a new call owned here (see Store.Begin).
func (s *Service) Begin(st Start) error {
	s.mu.Lock()
	err := s.st.Begin(s.now(), st)
	s.mu.Unlock()
	switch {
	case err == nil:
		s.changed()
	case errors.Is(err, ErrLimit):
		s.m.rejected.WithLabelValues("user_limit").Inc()
	case errors.Is(err, ErrFull):
		s.m.untracked.WithLabelValues("table_full").Inc()
	case errors.Is(err, ErrExists):
		s.m.untracked.WithLabelValues("exists").Inc()
	case errors.Is(err, ErrInvalid):
		s.m.untracked.WithLabelValues("invalid").Inc()
	}
	return err
}

func (s *Service) own(callID, fromTag string) Key {
	return Key{Owner: s.self, CallID: callID, FromTag: fromTag}
}

// Provisional records a provisional response to a call begun here.
func (s *Service) Provisional(callID, fromTag, toTag string, route []string) {
	s.mu.Lock()
	err := s.st.Provisional(s.now(), s.own(callID, fromTag), toTag, route)
	s.mu.Unlock()
	if err == nil {
		s.changed()
	}
}

// Answer records a 2xx to a call begun here.
func (s *Service) Answer(callID, fromTag, toTag string, route []string) {
	s.mu.Lock()
	err := s.st.Answer(s.now(), s.own(callID, fromTag), toTag, route)
	s.mu.Unlock()
	if err == nil {
		s.changed()
	}
}

// InviteEnded records the end of the INVITE transaction of a call begun
// here (failure, cancel, or all branches done).
func (s *Service) InviteEnded(callID, fromTag string) {
	s.mu.Lock()
	err := s.st.InviteEnded(s.now(), s.own(callID, fromTag))
	s.mu.Unlock()
	if err == nil {
		s.changed()
	}
}

// Request records an in-dialog request; found is false when no call
// (own or replica) matches.
func (s *Service) Request(id DialogID, cseq uint32) (found bool) {
	s.mu.Lock()
	k, err := s.st.Request(s.now(), id, cseq)
	s.mu.Unlock()
	if err != nil {
		return false
	}
	if k.Owner != s.self {
		s.m.takeovers.Inc()
	}
	s.changed()
	return true
}

// Bye terminates the dialog of an answered BYE.
func (s *Service) Bye(id DialogID) (found bool) {
	s.mu.Lock()
	k, err := s.st.Bye(s.now(), id)
	s.mu.Unlock()
	if err != nil {
		return false
	}
	if k.Owner != s.self {
		s.m.takeovers.Inc()
	}
	s.changed()
	return true
}

// Lookup returns a copy of the call an in-dialog request belongs to.
func (s *Service) Lookup(id DialogID) (Call, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.st.Lookup(id)
}

// Confirmed reports whether id names a dialog that was answered with a
// 2xx (an ACK for it is end to end; an ACK for anything else is the
// hop-by-hop ACK of a failure and must not be forwarded).
func (s *Service) Confirmed(id DialogID) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	_, l, _ := s.st.find(id)
	return l != nil && !l.Confirmed.IsZero()
}

// Active is the number of active calls of user, own and the partners'.
func (s *Service) Active(user string) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.st.Active(user)
}

// Summary is what the admin API shows: counts by state and role, the
// bound, and the users with the most active calls.
type Summary struct {
	Node     uint32         `json:"node"`
	Region   string         `json:"region"`
	Synced   bool           `json:"synced"`
	Home     map[string]int `json:"home"`    // by state
	Replica  map[string]int `json:"replica"` // by state
	Total    int            `json:"total"`
	Max      int            `json:"max_dialogs"`
	PerUser  int            `json:"max_calls_per_user"`
	TopUsers []UserCount    `json:"top_users"`
}

// Summary returns the counts and the top n users by active calls.
func (s *Service) Summary(n int) Summary {
	sum := Summary{Node: s.self, Region: s.region, Synced: s.Synced(), Home: map[string]int{}, Replica: map[string]int{},
		Max: s.cfg.MaxDialogs, PerUser: s.cfg.MaxCallsPerUser}
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, st := range []State{Early, Confirmed, Terminated} {
		sum.Home[st.String()] = s.st.Count(st, false)
		sum.Replica[st.String()] = s.st.Count(st, true)
	}
	sum.Total = s.st.Len()
	if n > 0 {
		sum.TopUsers = s.st.TopUsers(n)
	}
	return sum
}
