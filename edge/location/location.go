// Package location is the SIP user-location service: the bindings of
// addresses-of-record (AoRs) to contacts, kept by the registrar and read by
// the proxy.
//
// Store is the seam between the SIP code and where bindings live: the
// in-memory store here (one node), the replicated user-facing store (geo/,
// bindings on their home node and its HA partner, AoR→home metadata on every
// node) and the DB-driven store (Redis Cluster). The registrar's RFC 3261
// §10.3 rules live in Apply, a pure function every backend runs inside its
// own atomic section, so all backends behave the same.
//
// Memory keeps its bindings off the Go heap. As Go objects a million
// bindings cost up to twice their size in RSS (the collector lets the heap
// grow to twice what it marked live, and the scavenger returns freed pages
// slowly: 607–738 B of RSS per binding at 1,000,000 against a live heap
// of 315–405 B; off the heap it is 311 B, docs/BENCHMARKS.md). So each
// AoR, with all its bindings, is one blob in an arena of anonymous mmap'd
// memory with its own size-class allocator, as Kamailio keeps usrloc in its
// shared-memory allocator; the Go heap holds only small pointer-free
// indexes, about 40 B per AoR. Freed blocks are reused, never returned to
// the OS, so the arena stays at its high-water mark (MemoryStats.ArenaBytes).
// Everything handed out (Lookup, Range, hooks) is copied out of the arena
// first: arena bytes are reused, so nothing may alias them.
package location

import (
	"context"
	"errors"
	"strconv"
	"time"
)

// Binding is one registered contact of an AoR.
type Binding struct {
	AoR        string    // canonical AoR, "sip:user@domain" (no params)
	Contact    string    // Contact URI as registered, params included
	InstanceID string    // RFC 5626 +sip.instance ("" if none)
	RegID      int       // RFC 5626 reg-id (0 if none)
	CallID     string    // of the REGISTER that created/refreshed it
	CSeq       uint32    // of that REGISTER
	Q          int       // q-value ×1000 (1000 when absent)
	Expires    time.Time // absolute expiry
	Registered time.Time // when the last refresh was accepted (merge rule)
	Path       []string  // RFC 3327 Path header values, in order
	UserAgent  string
	// Where the REGISTER came from: the address requests must go to when
	// the UA is behind NAT (OpenSIPS fix_nated_register, Kamailio received).
	Received  string // "ip:port" of the source
	Transport string // "udp", "tcp", "tls"
	NATed     bool   // Contact/Via differ from the source, or are private
	// Socket is the local listener ("transport:ip:port") that received the
	// REGISTER: requests go out from it, and over the same connection for
	// TCP/TLS.
	Socket string
	// Home is the cluster node id that faces the UA (0: this node, or a
	// single-node setup). The geo layer fills it in.
	Home uint32
}

// Key identifies a binding within its AoR: the instance (and reg-id) when
// the UA sent one, else the contact URI. A re-REGISTER with the same key
// refreshes the binding instead of adding one.
func (b *Binding) Key() string {
	var buf [128]byte
	return string(AppendKey(buf[:0], b.InstanceID, b.RegID, b.Contact))
}

// AppendKey appends the Key of a binding with these fields to dst, for
// callers that keep keys in memory of their own (geo's sync).
func AppendKey(dst []byte, instance string, regID int, contact string) []byte {
	if instance == "" {
		return append(append(dst, "c:"...), contact...)
	}
	dst = append(append(dst, "i:"...), instance...)
	if regID != 0 {
		dst = strconv.AppendInt(append(dst, ';'), int64(regID), 10)
	}
	return dst
}

// Policy is what to do when an AoR is at its contact cap.
type Policy uint8

const (
	PolicyReject        Policy = iota // refuse the REGISTER (403 with a reason)
	PolicyReplaceOldest               // evict the binding with the oldest refresh
)

// SaveRequest is a REGISTER, already parsed and authenticated.
type SaveRequest struct {
	AoR      string
	CallID   string
	CSeq     uint32
	Wildcard bool      // "Contact: *" (only valid with Expires: 0)
	Contacts []Binding // Expires holds the requested absolute expiry (== now means remove)
	Now      time.Time
	// Limits, from the registrar's config.
	MaxContacts int
	Policy      Policy
}

// SaveResult is what the 200 OK lists: every current binding.
type SaveResult struct {
	Bindings []Binding
	Added    int
	Removed  int // removed by the request (expires=0, "*"), not by the cap
	// Refreshed counts existing bindings the request re-registered.
	Refreshed int
	// Evicted counts bindings dropped by PolicyReplaceOldest to make room.
	Evicted int
}

// Errors that map to SIP responses.
var (
	// ErrOutOfOrder: a refresh with the same Call-ID and a CSeq not higher
	// than the stored one (RFC 3261 §10.3 step 7: "the request fails"). The
	// registrar answers 400.
	ErrOutOfOrder = errors.New("location: out-of-order CSeq for this Call-ID")
	// ErrTooManyContacts: the AoR is at its cap and the policy is reject.
	ErrTooManyContacts = errors.New("location: too many contacts for this AoR")
	// ErrUnavailable: the backend can't be reached (DB-driven mode): 500
	// with Retry-After.
	ErrUnavailable = errors.New("location: backend unavailable")
	// ErrInvalid: the SaveRequest itself is malformed (no AoR, a wildcard
	// with contacts, a field a backend cannot hold). The registrar validates
	// REGISTERs first, so this is a bug upstream; it answers 400.
	ErrInvalid = errors.New("location: invalid save request")
)

// Store keeps bindings. Implementations are safe for concurrent use.
type Store interface {
	// Save applies a REGISTER atomically for its AoR (via Apply) and
	// returns the bindings now current.
	Save(ctx context.Context, req *SaveRequest) (*SaveResult, error)
	// Lookup returns the unexpired bindings of an AoR, highest q first.
	Lookup(ctx context.Context, aor string) ([]Binding, error)
	// Remove deletes one binding by key (keepalive failure, moved home).
	Remove(ctx context.Context, aor, key string) error
	// Len is the number of stored bindings.
	Len() int
}

// DeferredSaver is a Store whose changes are confirmed after Save could
// return (geo: the HA partner's ack). SaveDeferred applies req like Save
// and returns its result at once; on success it calls confirmed exactly
// once, when the change may be acknowledged to the UA: possibly before it
// returns, possibly later on another goroutine. The registrar then sends
// its 200 from there instead of keeping a goroutine parked per REGISTER,
// which under a backlog had to wait its turn on the CPU a second time
// after the ack.
type DeferredSaver interface {
	SaveDeferred(ctx context.Context, req *SaveRequest, confirmed func()) (*SaveResult, error)
}
