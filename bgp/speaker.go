// Package bgp announces the node's prefixes to its routers over BGP.
//
// Speaker is a small declarative interface in the manner of MetalLB's
// Session: Set replaces the whole announced set, so the caller states what
// should be announced and never tracks what was. GoBGP (gobgp.go) is the
// real implementation, an embedded GoBGP v3 server that only dials out;
// Fake (fake.go) records every Set for the tests of the packages that
// decide what to announce.
//
// Peers may run BFD (package bfd) so that routers drop a dead node in under
// a second.
package bgp

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"time"

	"github.com/anyedge/anyedge/bfd"
)

// Speaker announces prefixes to the configured routers.
type Speaker interface {
	// Set replaces the whole announced set with advs. It is idempotent:
	// announcing the same set again sends nothing. A prefix whose
	// attributes changed is re-announced, and the new path replaces the
	// old one at the routers in a single UPDATE (implicit withdraw), with
	// no moment without a path. Prefixes not in advs are withdrawn. An
	// invalid or duplicate advertisement fails the whole call before
	// anything is sent. Set() withdraws everything.
	Set(ctx context.Context, advs ...Advertisement) error
	// Peers reports the sessions with the routers, sorted by address.
	Peers() []PeerStatus
	// Announced returns the announced set, sorted by prefix.
	Announced() []Advertisement
	// Close ends every session (the routers drop the paths at once) and
	// releases the speaker. Later calls to Set fail with ErrClosed.
	Close() error
}

// ErrClosed is returned by Set after Close.
var ErrClosed = errors.New("bgp: speaker closed")

// SessionState is the BGP finite state machine's state (RFC 4271 §8.2.2).
type SessionState uint8

const (
	StateUnknown SessionState = iota
	StateIdle
	StateConnect
	StateActive
	StateOpenSent
	StateOpenConfirm
	StateEstablished
)

var stateNames = [...]string{"unknown", "idle", "connect", "active", "opensent", "openconfirm", "established"}

func (s SessionState) String() string {
	if int(s) < len(stateNames) {
		return stateNames[s]
	}
	return fmt.Sprintf("state(%d)", uint8(s))
}

// PeerStatus is the state of the session with one router.
type PeerStatus struct {
	Address netip.Addr
	ASN     uint32
	State   SessionState
	// Uptime is how long the session has been established (0 when not).
	Uptime time.Duration
	// PrefixesSent and PrefixesReceived count the paths advertised to and
	// accepted from the router.
	PrefixesSent, PrefixesReceived uint64
	// LastError is the last reason the session failed or could not be
	// made, for example "hold timer expired" or "connect: connection
	// refused"; empty if none yet.
	LastError string
	// BFDEnabled tells whether BFD runs with this router; BFD is then the
	// state of its session.
	BFDEnabled bool
	BFD        bfd.State
}

// Established reports whether the session is established.
func (p PeerStatus) Established() bool { return p.State == StateEstablished }
