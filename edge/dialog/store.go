package dialog

import (
	"container/heap"
	"errors"
	"slices"
	"time"
)

// State is a dialog's (or a call's) state.
type State uint8

// States, in the order a dialog goes through them (RFC 3261 §12).
const (
	Early      State = iota + 1 // INVITE sent on, no 2xx yet
	Confirmed                   // a 2xx was passed on
	Terminated                  // ended; kept for Linger, then forgotten
)

func (s State) String() string {
	switch s {
	case Early:
		return "early"
	case Confirmed:
		return "confirmed"
	case Terminated:
		return "terminated"
	}
	return "unknown"
}

// Errors of the store's operations.
var (
	ErrInvalid  = errors.New("dialog: Call-ID and From tag are required")
	ErrLimit    = errors.New("dialog: the user's concurrent-call limit is reached")
	ErrFull     = errors.New("dialog: the dialog table is full (max_dialogs)")
	ErrExists   = errors.New("dialog: the call is already in progress")
	ErrNotFound = errors.New("dialog: no such call")
)

// Key identifies a call: the node that tracks it (its owner) and the
// Call-ID and From tag of its INVITE. A call holds one dialog per To tag
// (forking makes several early dialogs; RFC 3261 §12.1). The owner is part
// of the key because a call relayed between two nodes is tracked on both.
type Key struct {
	Owner   uint32
	CallID  string
	FromTag string
}

// Version orders the writes of one call: the highest Seq wins, then the
// highest writer id. The owner bumps it on every change; a partner that
// takes the call over (its owner is down) bumps it too.
type Version struct {
	Seq  uint64
	Node uint32
}

func (v Version) newer(o Version) bool {
	return v.Seq > o.Seq || (v.Seq == o.Seq && v.Node > o.Node)
}

// Leg is one dialog of a call, identified by the callee's To tag.
type Leg struct {
	ToTag string
	State State
	// Route is the Record-Route of the response that created or
	// confirmed the dialog, as seen (top first).
	Route []string
	// CalleeCSeq is the highest CSeq seen in a request from the callee.
	CalleeCSeq uint32
	// Confirmed is when the 2xx was passed on.
	Confirmed time.Time
}

// Call is one INVITE's dialogs and what is known of the caller.
type Call struct {
	Key
	// User is the digest user that authenticated the INVITE ("" if none):
	// the per-user limit counts calls by it.
	User string
	// Caller and Callee are the From and To AoRs of the INVITE.
	Caller, Callee string
	// Created is when the INVITE was sent on; Updated the last request or
	// provisional response, from which the timeouts run.
	Created, Updated time.Time
	// Ended is when the call terminated (zero while it is active).
	Ended time.Time
	// CallerCSeq is the highest CSeq seen in a request from the caller.
	CallerCSeq uint32
	// Pending: the INVITE's transaction is still in progress.
	Pending bool
	Legs    []Leg
	Ver     Version
}

// State is the call's state: confirmed when one dialog is, early while the
// INVITE is pending or a dialog is early, terminated otherwise.
func (c *Call) State() State {
	st := Terminated
	if c.Pending {
		st = Early
	}
	for i := range c.Legs {
		switch c.Legs[i].State {
		case Confirmed:
			return Confirmed
		case Early:
			st = Early
		}
	}
	return st
}

func (c *Call) leg(toTag string) *Leg {
	for i := range c.Legs {
		if c.Legs[i].ToTag == toTag {
			return &c.Legs[i]
		}
	}
	return nil
}

func (c *Call) clone() Call {
	o := *c
	o.Legs = slices.Clone(c.Legs)
	for i := range o.Legs {
		o.Legs[i].Route = slices.Clone(o.Legs[i].Route)
	}
	return o
}

// entry is a held call with its bookkeeping.
type entry struct {
	Call
	state    State
	deadline time.Time
	hidx     int // index in the expiry heap
	hash     uint64
}

// Store is the dialog table: a pure state machine. It has no lock, no
// clock and no goroutine: every operation is told the time, and Tick
// expires what is due. Expiry uses a heap of deadlines, so a tick costs
// O(expired · log n), never a scan of the table.
type Store struct {
	cfg   Config
	self  uint32
	calls map[Key]*entry
	byID  map[string][]*entry // Call-ID → calls (in-dialog lookups)
	users map[string]int      // active calls per user, own and replicas
	count [4][2]int           // [state][role: 0 home, 1 replica]
	exp   expiryHeap
	dig   []uint64
	dirty []Key
	isDty map[Key]bool
}

// NewStore makes an empty table for node self. cfg must be validated.
func NewStore(cfg Config, self uint32) *Store {
	return &Store{
		cfg: cfg, self: self,
		calls: map[Key]*entry{}, byID: map[string][]*entry{}, users: map[string]int{},
		dig: make([]uint64, cfg.Buckets), isDty: map[Key]bool{},
	}
}

// Start is a new INVITE about to be sent on.
type Start struct {
	CallID, FromTag string
	User            string
	Caller, Callee  string
	CSeq            uint32
}

// Begin records a new call, owned by this node, in the early state. It
// refuses it with ErrLimit when its user has reached the limit (counting
// the partners' calls), and with ErrFull when the table is full. A call
// that ended (a new INVITE after a 407 or a failure, same Call-ID and
// From tag) starts over; one still active gets ErrExists.
func (s *Store) Begin(now time.Time, st Start) error {
	if st.CallID == "" || st.FromTag == "" {
		return ErrInvalid
	}
	k := Key{Owner: s.self, CallID: st.CallID, FromTag: st.FromTag}
	e := s.calls[k]
	if e != nil && e.state != Terminated {
		return ErrExists
	}
	if st.User != "" {
		if lim := s.cfg.limitFor(st.User); lim > 0 && s.users[st.User] >= lim {
			return ErrLimit
		}
	}
	if e == nil && len(s.calls) >= s.cfg.MaxDialogs {
		return ErrFull
	}
	c := Call{
		Key: k, User: st.User, Caller: st.Caller, Callee: st.Callee,
		Created: now, Updated: now, CallerCSeq: st.CSeq, Pending: true,
	}
	if e != nil {
		s.unaccount(e)
		c.Ver = e.Ver
		e.Call = c
	} else {
		e = &entry{Call: c, hidx: -1}
		s.calls[k] = e
		s.byID[k.CallID] = append(s.byID[k.CallID], e)
	}
	s.settle(e, now, true)
	return nil
}

// Provisional is a provisional response to the call's INVITE passed on.
// With a To tag it makes (or refreshes) an early dialog; either way it
// restarts the early timeout.
func (s *Store) Provisional(now time.Time, k Key, toTag string, route []string) error {
	e := s.calls[k]
	if e == nil || !e.Pending {
		return ErrNotFound
	}
	s.unaccount(e)
	e.Updated = now
	if toTag != "" && e.leg(toTag) == nil && len(e.Legs) < s.cfg.MaxForks {
		e.Legs = append(e.Legs, Leg{ToTag: toTag, State: Early, Route: slices.Clone(route)})
	}
	s.settle(e, now, true)
	return nil
}

// Answer is a 2xx to the call's INVITE passed on: the dialog of its To
// tag is confirmed. Several forks may answer; each is confirmed (the
// caller hangs up the ones it does not want).
func (s *Store) Answer(now time.Time, k Key, toTag string, route []string) error {
	e := s.calls[k]
	if e == nil || e.state == Terminated {
		return ErrNotFound
	}
	s.unaccount(e)
	e.Updated = now
	// The answer ends the wait for a first dialog; forks still early end
	// with the transaction (InviteEnded).
	e.Pending = false
	l := e.leg(toTag)
	if l == nil {
		if len(e.Legs) >= s.cfg.MaxForks {
			// Make room: an early fork is worth less than an answer.
			e.Legs = slices.DeleteFunc(e.Legs, func(l Leg) bool { return l.State != Confirmed })
		}
		e.Legs = append(e.Legs, Leg{ToTag: toTag, State: Early})
		l = &e.Legs[len(e.Legs)-1]
	}
	if l.State != Confirmed {
		l.State, l.Confirmed = Confirmed, now
		if route != nil {
			l.Route = slices.Clone(route)
		}
	}
	s.settle(e, now, true)
	return nil
}

// InviteEnded says the call's INVITE transaction is over: a failure
// response was sent, it was cancelled, or every branch has ended. Early
// dialogs that were not answered end; without a confirmed one the call
// terminates.
func (s *Store) InviteEnded(now time.Time, k Key) error {
	e := s.calls[k]
	if e == nil {
		return ErrNotFound
	}
	if !e.Pending && !hasEarly(&e.Call) {
		return nil
	}
	s.unaccount(e)
	e.Pending = false
	for i := range e.Legs {
		if e.Legs[i].State == Early {
			e.Legs[i].State = Terminated
		}
	}
	s.settle(e, now, true)
	return nil
}

func hasEarly(c *Call) bool {
	for i := range c.Legs {
		if c.Legs[i].State == Early {
			return true
		}
	}
	return false
}

// DialogID is what an in-dialog request carries: its Call-ID, From tag
// and To tag. The request may come from either end.
type DialogID struct {
	CallID, FromTag, ToTag string
}

// find returns the call and dialog a request belongs to: a call of ours
// first, else a partner's replica; an active one before a terminated one.
func (s *Store) find(id DialogID) (*entry, *Leg, bool) {
	var best *entry
	var bestLeg *Leg
	var fromCaller bool
	score := func(e *entry) int {
		n := 0
		if e.Owner == s.self {
			n += 2
		}
		if e.state != Terminated {
			n += 4
		}
		return n
	}
	for _, e := range s.byID[id.CallID] {
		var l *Leg
		caller := false
		switch {
		case e.FromTag == id.FromTag:
			l, caller = e.leg(id.ToTag), true
		case e.FromTag == id.ToTag:
			l = e.leg(id.FromTag)
		}
		if l == nil {
			continue
		}
		if best == nil || score(e) > score(best) {
			best, bestLeg, fromCaller = e, l, caller
		}
	}
	return best, bestLeg, fromCaller
}

// Request is an in-dialog request sent on (re-INVITE, UPDATE, INFO, BYE,
// ...). It refreshes the inactivity timeout and the CSeq of its sender.
// On a partner's replica (the owner failed over here) it makes this node
// the writer of the call from now on. It returns the call's owner, or
// ErrNotFound when no dialog matches.
func (s *Store) Request(now time.Time, id DialogID, cseq uint32) (Key, error) {
	e, l, caller := s.find(id)
	if e == nil {
		return Key{}, ErrNotFound
	}
	if l.State == Terminated {
		return e.Key, nil // a late retransmission: nothing to change
	}
	s.unaccount(e)
	e.Updated = now
	if caller {
		e.CallerCSeq = max(e.CallerCSeq, cseq)
	} else {
		l.CalleeCSeq = max(l.CalleeCSeq, cseq)
	}
	s.settle(e, now, true)
	return e.Key, nil
}

// Bye terminates the dialog of a BYE (from either end) once it has been
// answered, or at once. It returns the call's owner, or ErrNotFound.
func (s *Store) Bye(now time.Time, id DialogID) (Key, error) {
	e, l, _ := s.find(id)
	if e == nil {
		return Key{}, ErrNotFound
	}
	if l.State == Terminated {
		return e.Key, nil
	}
	s.unaccount(e)
	e.Updated = now
	l.State = Terminated
	s.settle(e, now, true)
	return e.Key, nil
}

// Expired counts what one Tick ended.
type Expired struct {
	Early   int // early calls past early_timeout
	Timeout int // confirmed calls past the inactivity timeout
	Removed int // terminated calls forgotten after linger
}

// Tick expires every call whose deadline is at or before now. A timed-out
// call terminates (it lingers like any other); a terminated one is
// forgotten. Replicas expire on the same absolute deadlines as their
// owner, without a message, so these changes are not replicated.
func (s *Store) Tick(now time.Time) Expired {
	var x Expired
	for len(s.exp) > 0 && !s.exp[0].deadline.After(now) {
		e := s.exp[0]
		at := e.deadline
		if e.state == Terminated {
			s.remove(e)
			x.Removed++
			continue
		}
		if e.state == Early {
			x.Early++
		} else {
			x.Timeout++
		}
		s.unaccount(e)
		e.Pending = false
		for i := range e.Legs {
			e.Legs[i].State = Terminated
		}
		e.Ended = at // the deadline, not now: every node agrees on it
		s.settle(e, now, false)
	}
	return x
}

// Merge applies a call record from a partner (a live update, a snapshot
// or an anti-entropy delta). It changes nothing when the record is not
// newer than what is held, or when it is terminated and past its linger.
// It reports whether it changed something.
func (s *Store) Merge(now time.Time, c Call) (bool, error) {
	if c.CallID == "" || c.FromTag == "" {
		return false, ErrInvalid
	}
	e := s.calls[c.Key]
	if e != nil {
		if !c.Ver.newer(e.Ver) {
			return false, nil
		}
		s.unaccount(e)
		e.Call = c
		s.settle(e, now, false)
		return true, nil
	}
	if c.State() == Terminated && !c.Ended.Add(s.cfg.Linger).After(now) {
		return false, nil
	}
	if len(s.calls) >= s.cfg.MaxDialogs {
		return false, ErrFull
	}
	e = &entry{Call: c, hidx: -1}
	s.calls[c.Key] = e
	s.byID[c.CallID] = append(s.byID[c.CallID], e)
	s.settle(e, now, false)
	return true, nil
}

// settle recomputes a changed call's state, deadline and counts. A local
// change bumps the version and marks the call for replication.
func (s *Store) settle(e *entry, now time.Time, local bool) {
	e.state = e.Call.State()
	switch e.state {
	case Terminated:
		if e.Ended.IsZero() {
			e.Ended = now
		}
		e.deadline = e.Ended.Add(s.cfg.Linger)
	case Confirmed:
		e.Ended = time.Time{}
		e.deadline = e.Updated.Add(s.cfg.Timeout)
	default:
		e.Ended = time.Time{}
		e.deadline = e.Updated.Add(s.cfg.EarlyTimeout)
	}
	if local {
		e.Ver = Version{Seq: e.Ver.Seq + 1, Node: s.self}
		if !s.isDty[e.Key] {
			s.isDty[e.Key] = true
			s.dirty = append(s.dirty, e.Key)
		}
	}
	if e.hidx < 0 {
		heap.Push(&s.exp, e)
	} else {
		heap.Fix(&s.exp, e.hidx)
	}
	s.account(e)
}

func (s *Store) role(e *entry) int {
	if e.Owner == s.self {
		return 0
	}
	return 1
}

// account adds a call to the counts and the digest; unaccount takes it
// out before a change.
func (s *Store) account(e *entry) {
	s.count[e.state][s.role(e)]++
	if e.User != "" && e.state != Terminated {
		s.users[e.User]++
	}
	e.hash = s.recordHash(e)
	s.dig[s.bucketOf(e.Key)] ^= e.hash
}

func (s *Store) unaccount(e *entry) {
	s.count[e.state][s.role(e)]--
	if e.User != "" && e.state != Terminated {
		if s.users[e.User]--; s.users[e.User] <= 0 {
			delete(s.users, e.User)
		}
	}
	s.dig[s.bucketOf(e.Key)] ^= e.hash
}

func (s *Store) remove(e *entry) {
	s.unaccount(e)
	heap.Remove(&s.exp, e.hidx)
	delete(s.calls, e.Key)
	list := slices.DeleteFunc(s.byID[e.CallID], func(o *entry) bool { return o == e })
	if len(list) == 0 {
		delete(s.byID, e.CallID)
	} else {
		s.byID[e.CallID] = list
	}
}

// bucketOf must agree on every node: a fixed hash, not the seeded one.
func (s *Store) bucketOf(k Key) int {
	h := uint64(14695981039346656037)
	mix := func(b string) {
		for i := 0; i < len(b); i++ {
			h ^= uint64(b[i])
			h *= 1099511628211
		}
		h ^= 0xff
		h *= 1099511628211
	}
	mix(k.CallID)
	mix(k.FromTag)
	h ^= uint64(k.Owner)
	h *= 1099511628211
	return int(h % uint64(len(s.dig)))
}

// recordHash is what the digest compares: the key and version.
func (s *Store) recordHash(e *entry) uint64 {
	h := uint64(14695981039346656037)
	for _, b := range []string{e.CallID, "\x00", e.FromTag} {
		for i := 0; i < len(b); i++ {
			h ^= uint64(b[i])
			h *= 1099511628211
		}
	}
	for _, v := range []uint64{uint64(e.Owner), e.Ver.Seq, uint64(e.Ver.Node)} {
		h ^= v
		h *= 1099511628211
	}
	return h
}

// TakeDirty returns the calls changed locally since the last call, as
// copies, for replication.
func (s *Store) TakeDirty() []Call {
	out := make([]Call, 0, len(s.dirty))
	for _, k := range s.dirty {
		delete(s.isDty, k)
		if e := s.calls[k]; e != nil {
			out = append(out, e.Call.clone())
		}
	}
	s.dirty = s.dirty[:0]
	return out
}

// Len is the number of calls held (own and replicas, any state).
func (s *Store) Len() int { return len(s.calls) }

// Count is the number of calls in state st, owned here (home) or by a
// partner (replica).
func (s *Store) Count(st State, replica bool) int {
	r := 0
	if replica {
		r = 1
	}
	return s.count[st][r]
}

// Active is the number of active calls of user, own and replicas.
func (s *Store) Active(user string) int { return s.users[user] }

// Get returns a copy of a call.
func (s *Store) Get(k Key) (Call, bool) {
	e := s.calls[k]
	if e == nil {
		return Call{}, false
	}
	return e.Call.clone(), true
}

// Lookup returns a copy of the call an in-dialog request belongs to.
func (s *Store) Lookup(id DialogID) (Call, bool) {
	e, _, _ := s.find(id)
	if e == nil {
		return Call{}, false
	}
	return e.Call.clone(), true
}

// Digest is one hash per bucket over the calls' keys and versions.
func (s *Store) Digest() []uint64 { return slices.Clone(s.dig) }

// Each calls fn with every call of bucket b (all when b < 0) until fn
// returns false. fn must not keep c's slices.
func (s *Store) Each(b int, fn func(c *Call) bool) {
	for k, e := range s.calls {
		if b >= 0 && s.bucketOf(k) != b {
			continue
		}
		if !fn(&e.Call) {
			return
		}
	}
}

// UserCount is one user's active calls.
type UserCount struct {
	User  string `json:"user"`
	Calls int    `json:"calls"`
}

// TopUsers returns the n users with the most active calls.
func (s *Store) TopUsers(n int) []UserCount {
	out := make([]UserCount, 0, len(s.users))
	for u, c := range s.users {
		out = append(out, UserCount{u, c})
	}
	slices.SortFunc(out, func(a, b UserCount) int {
		if a.Calls != b.Calls {
			return b.Calls - a.Calls
		}
		if a.User < b.User {
			return -1
		}
		return 1
	})
	if len(out) > n {
		out = out[:n]
	}
	return out
}

// expiryHeap orders calls by deadline.
type expiryHeap []*entry

func (h expiryHeap) Len() int           { return len(h) }
func (h expiryHeap) Less(i, j int) bool { return h[i].deadline.Before(h[j].deadline) }
func (h expiryHeap) Swap(i, j int) {
	h[i], h[j] = h[j], h[i]
	h[i].hidx, h[j].hidx = i, j
}
func (h *expiryHeap) Push(x any) {
	e := x.(*entry)
	e.hidx = len(*h)
	*h = append(*h, e)
}
func (h *expiryHeap) Pop() any {
	old := *h
	e := old[len(old)-1]
	old[len(old)-1] = nil
	e.hidx = -1
	*h = old[:len(old)-1]
	return e
}
