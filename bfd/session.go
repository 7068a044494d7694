package bfd

import (
	"errors"
	"fmt"
	"time"
)

// Session is one BFD session in asynchronous mode (RFC 5880), as a pure
// state machine: it owns no socket, no timer and no clock. Time arrives
// with every call; received packets go in through Step, the passage of
// time through Tick, and both return what to transmit and which state
// changes happened. Next says when Tick is due. The I/O shell (Endpoint)
// performs the output; tests drive the machine directly.
//
// Demand mode and the Echo function are not implemented: the session never
// sets the D bit and always advertises a Required Min Echo RX of zero. A
// peer in Demand mode is honoured (periodic transmission stops, §6.8.7).
// Authentication is not implemented: packets with the A bit are dropped
// (§6.8.6).
//
// A Session is not safe for concurrent use.
type Session struct {
	cfg SessionConfig

	state        State
	diag         Diag
	remoteState  State
	remoteDiscr  uint32
	remoteMult   uint8
	remoteMinRx  time.Duration // bfd.RemoteMinRxInterval
	remoteTx     time.Duration // the peer's last Desired Min TX
	remoteDemand bool

	// Advertised values (bfd.DesiredMinTxInterval, bfd.RequiredMinRxInterval)
	// and the values in force for the local timers, which lag the
	// advertised ones during a Poll Sequence (§6.8.3).
	advTx, advRx       time.Duration
	activeTx, activeRx time.Duration

	polling     bool // a Poll Sequence is in progress: send P
	pollPending bool // parameters changed again during the poll
	sendFinal   bool // a P was received: answer with F at once

	lastRx  time.Time // last valid packet (zero: none since the last timeout)
	nextTx  time.Time // next periodic transmission
	started bool
}

// SessionConfig configures a Session.
type SessionConfig struct {
	// LocalDiscr is the session's discriminator, nonzero and unique on the
	// system (bfd.LocalDiscr).
	LocalDiscr uint32
	// DesiredMinTx is the transmit interval wanted once the session is Up.
	// Until then at least one second is advertised, as §6.8.3 requires.
	DesiredMinTx time.Duration
	// RequiredMinRx is the shortest receive interval this system supports.
	RequiredMinRx time.Duration
	// DetectMult is the detection time multiplier.
	DetectMult uint8
	// Rand draws the transmission jitter. Required; a *math/rand/v2.Rand
	// does. Tests inject a seeded or fixed source.
	Rand Rand
}

// Rand is a source of random numbers for jitter.
type Rand interface {
	// Int64N returns a number in [0, n).
	Int64N(n int64) int64
}

// slowTx is the slowest the session may transmit while not Up (§6.8.3).
const slowTx = time.Second

// Change is a state change of the session.
type Change struct {
	From, To State
	Diag     Diag // the local diagnostic: why the session changed
	At       time.Time
}

func (c Change) String() string {
	return fmt.Sprintf("%s -> %s (%s)", c.From, c.To, c.Diag)
}

// Output is what a call to the session produced: packets to transmit now,
// in order, and the state changes that happened.
type Output struct {
	Packets []Packet
	Changes []Change
}

// Info is a snapshot of the session's variables, for status pages.
type Info struct {
	State, RemoteState      State
	Diag                    Diag
	LocalDiscr, RemoteDiscr uint32
	// TxInterval is the negotiated transmit interval before jitter;
	// DetectTime the time after which the peer is declared down.
	TxInterval, DetectTime time.Duration
	Polling                bool
}

// NewSession returns a session in the Down state. It transmits its first
// packet on the first Tick.
func NewSession(cfg SessionConfig) (*Session, error) {
	switch {
	case cfg.LocalDiscr == 0:
		return nil, errors.New("bfd: local discriminator must not be zero")
	case cfg.DesiredMinTx < time.Microsecond || cfg.DesiredMinTx > Interval(1<<32-1).Duration():
		return nil, fmt.Errorf("bfd: desired min tx %v out of range", cfg.DesiredMinTx)
	case cfg.RequiredMinRx < time.Microsecond || cfg.RequiredMinRx > Interval(1<<32-1).Duration():
		return nil, fmt.Errorf("bfd: required min rx %v out of range", cfg.RequiredMinRx)
	case cfg.DetectMult == 0:
		return nil, errors.New("bfd: detect multiplier must not be zero")
	case cfg.Rand == nil:
		return nil, errors.New("bfd: no jitter source")
	}
	s := &Session{
		cfg:         cfg,
		state:       Down,
		remoteState: Down,
		remoteMinRx: time.Microsecond, // §6.8.1: initialised to 1
		advRx:       cfg.RequiredMinRx,
		activeRx:    cfg.RequiredMinRx,
	}
	s.advTx = s.idleTx()
	s.activeTx = s.advTx
	return s, nil
}

// idleTx is the Desired Min TX advertised while not Up.
func (s *Session) idleTx() time.Duration { return max(s.cfg.DesiredMinTx, slowTx) }

// State is the local session state.
func (s *Session) State() State { return s.state }

// Info returns a snapshot of the session's variables.
func (s *Session) Info() Info {
	return Info{
		State: s.state, RemoteState: s.remoteState, Diag: s.diag,
		LocalDiscr: s.cfg.LocalDiscr, RemoteDiscr: s.remoteDiscr,
		TxInterval: s.txInterval(), DetectTime: s.detectTime(), Polling: s.polling,
	}
}

// txInterval is the interval between periodic packets before jitter
// (§6.8.7): the larger of our Desired Min TX and the peer's Required Min
// RX. Zero means the peer wants no periodic packets.
func (s *Session) txInterval() time.Duration {
	if s.remoteMinRx == 0 {
		return 0
	}
	return max(s.activeTx, s.remoteMinRx)
}

// detectTime is the time without packets after which the peer is declared
// down (§6.8.4, asynchronous mode): the peer's multiplier times the larger
// of our Required Min RX and its Desired Min TX. Zero until a packet has
// been received.
func (s *Session) detectTime() time.Duration {
	if s.remoteMult == 0 {
		return 0
	}
	return time.Duration(s.remoteMult) * max(s.activeRx, s.remoteTx)
}

// detectDeadline is when the peer is declared down, or zero.
func (s *Session) detectDeadline() time.Time {
	if s.lastRx.IsZero() || s.remoteMult == 0 {
		return time.Time{}
	}
	return s.lastRx.Add(s.detectTime())
}

// periodic reports whether periodic transmission is on (§6.8.7): the peer
// must want packets, and a peer in Demand mode gets none while both ends
// are Up.
func (s *Session) periodic() bool {
	if s.txInterval() == 0 {
		return false
	}
	return !(s.remoteDemand && s.state == Up && s.remoteState == Up)
}

// Next returns when Tick must next be called: the next periodic
// transmission or the detection deadline, whichever comes first. It is
// zero before the first Tick.
func (s *Session) Next() time.Time {
	if !s.started {
		return time.Time{}
	}
	var next time.Time
	if s.periodic() {
		next = s.nextTx
	}
	if d := s.detectDeadline(); !d.IsZero() && (next.IsZero() || d.Before(next)) {
		next = d
	}
	return next
}

// jitter returns the delay to the next periodic packet (§6.8.7): 75% to
// 100% of the interval, or 75% to 90% when the detect multiplier is 1.
func (s *Session) jitter(interval time.Duration) time.Duration {
	lo := interval * 3 / 4
	hi := interval
	if s.cfg.DetectMult == 1 {
		hi = interval * 9 / 10
	}
	if hi <= lo {
		return lo
	}
	return lo + time.Duration(s.cfg.Rand.Int64N(int64(hi-lo)+1))
}

// Tick advances time: it declares the peer down when the detection time
// has passed, and transmits the periodic packet when it is due.
func (s *Session) Tick(now time.Time) Output {
	var out Output
	if !s.started {
		s.started = true
		s.nextTx = now
	}
	if d := s.detectDeadline(); !d.IsZero() && !now.Before(d) {
		s.timeout(now, &out)
	}
	s.transmitDue(now, &out)
	return out
}

// timeout handles the expiry of the detection time: the session goes down
// if it was Init or Up, and what was learnt about the peer is forgotten
// (§6.8.1: bfd.RemoteDiscr is reset; §6.8.4).
func (s *Session) timeout(now time.Time, out *Output) {
	s.lastRx = time.Time{}
	s.remoteDiscr = 0
	s.remoteState = Down
	s.remoteMult = 0
	s.remoteTx = 0
	s.remoteMinRx = time.Microsecond
	s.remoteDemand = false
	if s.state == Init || s.state == Up {
		s.setState(Down, DiagControlDetectExpired, now, out)
	}
}

// transmitDue sends the periodic packet if it is due, and the answer to a
// Poll if one is owed.
func (s *Session) transmitDue(now time.Time, out *Output) {
	if s.sendFinal {
		s.sendFinal = false
		p := s.packet()
		p.Poll, p.Final = false, true
		out.Packets = append(out.Packets, p)
	}
	if !s.started || !s.periodic() || now.Before(s.nextTx) {
		return
	}
	out.Packets = append(out.Packets, s.packet())
	s.nextTx = now.Add(s.jitter(s.txInterval()))
}

// packet builds a Control packet from the session's variables (§6.8.7).
func (s *Session) packet() Packet {
	return Packet{
		Diag:          s.diag,
		State:         s.state,
		Poll:          s.polling,
		DetectMult:    s.cfg.DetectMult,
		MyDiscr:       s.cfg.LocalDiscr,
		YourDiscr:     s.remoteDiscr,
		DesiredMinTx:  IntervalOf(s.advTx),
		RequiredMinRx: IntervalOf(s.advRx),
	}
}

// Step processes a received Control packet, which Decode has already
// checked, following the reception rules of RFC 5880 §6.8.6.
func (s *Session) Step(p Packet, now time.Time) Output {
	var out Output
	if p.Auth != nil {
		return out // A bit set and no authentication in use: discard
	}
	if p.YourDiscr != 0 && p.YourDiscr != s.cfg.LocalDiscr {
		return out // meant for another session
	}
	if p.YourDiscr == 0 && p.State != Down && p.State != AdminDown {
		return out // Decode refuses these too; Step does not rely on it
	}
	if p.DetectMult == 0 || p.MyDiscr == 0 {
		return out
	}
	if !s.started {
		s.started = true
		s.nextTx = now
	}
	oldTx := s.txInterval()

	s.remoteDiscr = p.MyDiscr
	s.remoteState = p.State
	s.remoteDemand = p.Demand
	s.remoteMinRx = p.RequiredMinRx.Duration()
	s.remoteTx = p.DesiredMinTx.Duration()
	s.remoteMult = p.DetectMult
	s.lastRx = now

	if p.Final && s.polling {
		s.finishPoll()
	}

	// A shorter transmit interval takes effect at once rather than after
	// the packet already scheduled (§6.8.7 allows either; the peer asked
	// for it).
	if tx := s.txInterval(); tx > 0 && (oldTx == 0 || tx < oldTx) {
		if next := now.Add(s.jitter(tx)); s.nextTx.After(next) {
			s.nextTx = next
		}
	}

	if s.state == AdminDown {
		return out // §6.8.6: discard, having learnt the peer's variables
	}
	switch {
	case p.State == AdminDown:
		if s.state != Down {
			s.setState(Down, DiagNeighborDown, now, &out)
		}
	case s.state == Down && p.State == Down:
		s.setState(Init, DiagNone, now, &out)
	case s.state == Down && p.State == Init,
		s.state == Init && (p.State == Init || p.State == Up):
		s.setState(Up, DiagNone, now, &out)
	case s.state == Up && p.State == Down:
		s.setState(Down, DiagNeighborDown, now, &out)
	}
	if p.Poll {
		s.sendFinal = true
	}
	s.transmitDue(now, &out)
	return out
}

// setState changes the state, records the change, makes the next periodic
// packet go out at once so that the peer learns of it quickly, and moves
// the advertised transmit interval between its idle and Up values.
func (s *Session) setState(to State, diag Diag, now time.Time, out *Output) {
	from := s.state
	if from == to {
		return
	}
	s.state = to
	s.diag = diag
	out.Changes = append(out.Changes, Change{From: from, To: to, Diag: diag, At: now})
	s.nextTx = now
	if to == Up {
		s.changeParams(s.cfg.DesiredMinTx, s.advRx)
	} else if from == Up {
		s.changeParams(s.idleTx(), s.advRx)
	}
}

// changeParams changes the advertised timers. While Up it starts a Poll
// Sequence, and keeps the old transmit interval (if it grows) and the old
// detection time (if it shrinks) in force until the peer answers (§6.8.3).
// In other states the change is immediate.
func (s *Session) changeParams(tx, rx time.Duration) {
	if tx == s.advTx && rx == s.advRx {
		return
	}
	s.advTx, s.advRx = tx, rx
	if s.state != Up {
		s.activeTx, s.activeRx = tx, rx
		s.polling, s.pollPending = false, false
		return
	}
	if tx < s.activeTx {
		s.activeTx = tx
	}
	if rx > s.activeRx {
		s.activeRx = rx
	}
	if s.polling {
		s.pollPending = true
		return
	}
	s.polling = true
}

// finishPoll ends a Poll Sequence on receipt of the Final bit.
func (s *Session) finishPoll() {
	if s.pollPending {
		// The parameters changed after this poll began: poll again before
		// relying on the peer having seen them.
		s.pollPending = false
		return
	}
	s.polling = false
	s.activeTx, s.activeRx = s.advTx, s.advRx
}

// SetIntervals changes the configured timers (for example from a config
// reload). While Up this runs a Poll Sequence.
func (s *Session) SetIntervals(desiredMinTx, requiredMinRx time.Duration, now time.Time) (Output, error) {
	var out Output
	if desiredMinTx < time.Microsecond || requiredMinRx < time.Microsecond {
		return out, errors.New("bfd: intervals must be at least 1µs")
	}
	s.cfg.DesiredMinTx, s.cfg.RequiredMinRx = desiredMinTx, requiredMinRx
	tx := s.idleTx()
	if s.state == Up {
		tx = desiredMinTx
	}
	s.changeParams(tx, requiredMinRx)
	if s.polling {
		s.nextTx = now // carry the P bit at once
	}
	s.transmitDue(now, &out)
	return out, nil
}

// SetAdminDown takes the session administratively down (true) or back to
// Down (false), for example before a planned shutdown. The peer is told at
// once; it must not treat AdminDown as a path failure (RFC 5882 §3.2).
func (s *Session) SetAdminDown(down bool, now time.Time) Output {
	var out Output
	if !s.started {
		s.started = true
		s.nextTx = now
	}
	switch {
	case down && s.state != AdminDown:
		s.setState(AdminDown, DiagAdminDown, now, &out)
	case !down && s.state == AdminDown:
		s.setState(Down, DiagNone, now, &out)
	}
	s.transmitDue(now, &out)
	return out
}
