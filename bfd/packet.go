package bfd

import (
	"encoding/binary"
	"errors"
	"fmt"
	"time"
)

// Version is the BFD protocol version this package speaks (RFC 5880 §4.1).
const Version = 1

// HeaderLen is the length of the mandatory section of a Control packet.
const HeaderLen = 24

// State is a session state as carried in the Sta field. The numeric values
// are part of the protocol (RFC 5880 §4.1).
type State uint8

const (
	AdminDown State = 0
	Down      State = 1
	Init      State = 2
	Up        State = 3
)

func (s State) String() string {
	switch s {
	case AdminDown:
		return "admindown"
	case Down:
		return "down"
	case Init:
		return "init"
	case Up:
		return "up"
	}
	return fmt.Sprintf("state(%d)", uint8(s))
}

// Diag is a diagnostic code (RFC 5880 §4.1): why the sender's session last
// changed state. The numeric values are part of the protocol.
type Diag uint8

const (
	DiagNone                  Diag = 0
	DiagControlDetectExpired  Diag = 1
	DiagEchoFailed            Diag = 2
	DiagNeighborDown          Diag = 3
	DiagForwardingReset       Diag = 4
	DiagPathDown              Diag = 5
	DiagConcatenatedPathDown  Diag = 6
	DiagAdminDown             Diag = 7
	DiagReverseConcatPathDown Diag = 8
)

var diagNames = [...]string{
	"none", "control detection time expired", "echo function failed", "neighbor signaled session down",
	"forwarding plane reset", "path down", "concatenated path down", "administratively down",
	"reverse concatenated path down",
}

func (d Diag) String() string {
	if int(d) < len(diagNames) {
		return diagNames[d]
	}
	return fmt.Sprintf("diag(%d)", uint8(d))
}

// Interval is a BFD timer value as carried on the wire: microseconds.
type Interval uint32

// Duration converts i to a time.Duration.
func (i Interval) Duration() time.Duration { return time.Duration(i) * time.Microsecond }

// IntervalOf converts d to microseconds, rounding up so that a positive
// duration never becomes 0, and saturating at the largest wire value.
func IntervalOf(d time.Duration) Interval {
	if d <= 0 {
		return 0
	}
	us := (d + time.Microsecond - 1) / time.Microsecond
	if us > 1<<32-1 {
		return 1<<32 - 1
	}
	return Interval(us)
}

// Auth is the optional authentication section (RFC 5880 §4.2). This
// package does not authenticate; it only parses the section so that such
// packets are recognised (and then refused by the session).
type Auth struct {
	Type uint8
	Data []byte // the section after the Auth Type and Auth Len bytes
}

// Packet is a BFD Control packet (RFC 5880 §4.1).
type Packet struct {
	Diag  Diag
	State State
	// Flags.
	Poll                    bool // P: the sender asks for verification of a parameter change
	Final                   bool // F: the answer to a Poll
	ControlPlaneIndependent bool // C
	Demand                  bool // D
	// DetectMult is the sender's detection time multiplier.
	DetectMult uint8
	// MyDiscr is the sender's discriminator, YourDiscr the one it has
	// learnt for the receiver (0 while unknown).
	MyDiscr, YourDiscr uint32
	// Timers.
	DesiredMinTx      Interval
	RequiredMinRx     Interval
	RequiredMinEchoRx Interval
	// Auth is the authentication section; nil when the A bit is clear.
	Auth *Auth
}

// Flag bits of the second octet.
const (
	flagPoll       = 0x20
	flagFinal      = 0x10
	flagCPI        = 0x08
	flagAuth       = 0x04
	flagDemand     = 0x02
	flagMultipoint = 0x01
)

// Decode errors. Each names a reception check of RFC 5880 §6.8.6 (or §6.5
// for the P and F bits), so that a dropped packet can be counted by cause.
var (
	ErrShort       = errors.New("bfd: packet shorter than the mandatory section")
	ErrVersion     = errors.New("bfd: unsupported version")
	ErrLength      = errors.New("bfd: bad length field")
	ErrDetectMult  = errors.New("bfd: detect multiplier is zero")
	ErrMultipoint  = errors.New("bfd: multipoint bit set")
	ErrMyDiscr     = errors.New("bfd: my discriminator is zero")
	ErrYourDiscr   = errors.New("bfd: your discriminator is zero in a state other than down or admindown")
	ErrPollFinal   = errors.New("bfd: both poll and final bits set")
	ErrAuthSection = errors.New("bfd: malformed authentication section")
)

// Decode parses and validates a Control packet. b is the UDP payload;
// bytes past the Length field are ignored, as RFC 5880 allows.
func Decode(b []byte) (Packet, error) {
	var p Packet
	if len(b) < HeaderLen {
		return p, ErrShort
	}
	if v := b[0] >> 5; v != Version {
		return p, fmt.Errorf("%w %d", ErrVersion, v)
	}
	flags := b[1] & 0x3f
	length := int(b[3])
	minLen := HeaderLen
	if flags&flagAuth != 0 {
		minLen = HeaderLen + 2
	}
	if length < minLen || length > len(b) {
		return p, fmt.Errorf("%w: %d (payload %d bytes)", ErrLength, length, len(b))
	}
	p.Diag = Diag(b[0] & 0x1f)
	p.State = State(b[1] >> 6)
	p.Poll = flags&flagPoll != 0
	p.Final = flags&flagFinal != 0
	p.ControlPlaneIndependent = flags&flagCPI != 0
	p.Demand = flags&flagDemand != 0
	p.DetectMult = b[2]
	p.MyDiscr = binary.BigEndian.Uint32(b[4:])
	p.YourDiscr = binary.BigEndian.Uint32(b[8:])
	p.DesiredMinTx = Interval(binary.BigEndian.Uint32(b[12:]))
	p.RequiredMinRx = Interval(binary.BigEndian.Uint32(b[16:]))
	p.RequiredMinEchoRx = Interval(binary.BigEndian.Uint32(b[20:]))
	switch {
	case p.DetectMult == 0:
		return p, ErrDetectMult
	case flags&flagMultipoint != 0:
		return p, ErrMultipoint
	case p.MyDiscr == 0:
		return p, ErrMyDiscr
	case p.YourDiscr == 0 && p.State != Down && p.State != AdminDown:
		return p, ErrYourDiscr
	case p.Poll && p.Final:
		return p, ErrPollFinal
	}
	if flags&flagAuth != 0 {
		// Auth Type, Auth Len (which counts the whole section), then data.
		// Every defined type has at least one byte of data.
		authLen := int(b[HeaderLen+1])
		if authLen < 3 || HeaderLen+authLen != length {
			return p, fmt.Errorf("%w: auth len %d, packet length %d", ErrAuthSection, authLen, length)
		}
		p.Auth = &Auth{Type: b[HeaderLen], Data: append([]byte(nil), b[HeaderLen+2:length]...)}
	}
	return p, nil
}

// Len is the encoded length of p.
func (p Packet) Len() int {
	if p.Auth != nil {
		return HeaderLen + 2 + len(p.Auth.Data)
	}
	return HeaderLen
}

// Append encodes p onto b. It does not validate p: the session only
// builds valid packets, and tests need to build invalid ones. An auth
// section longer than the one-octet length allows is truncated.
func (p Packet) Append(b []byte) []byte {
	var auth *Auth
	if p.Auth != nil {
		a := *p.Auth
		if len(a.Data) > 255-2-HeaderLen {
			a.Data = a.Data[:255-2-HeaderLen]
		}
		auth = &a
	}
	length := HeaderLen
	if auth != nil {
		length += 2 + len(auth.Data)
	}
	var flags byte
	for _, f := range []struct {
		on  bool
		bit byte
	}{{p.Poll, flagPoll}, {p.Final, flagFinal}, {p.ControlPlaneIndependent, flagCPI}, {auth != nil, flagAuth}, {p.Demand, flagDemand}} {
		if f.on {
			flags |= f.bit
		}
	}
	b = append(b, Version<<5|byte(p.Diag)&0x1f, byte(p.State&3)<<6|flags, p.DetectMult, byte(length))
	b = binary.BigEndian.AppendUint32(b, p.MyDiscr)
	b = binary.BigEndian.AppendUint32(b, p.YourDiscr)
	b = binary.BigEndian.AppendUint32(b, uint32(p.DesiredMinTx))
	b = binary.BigEndian.AppendUint32(b, uint32(p.RequiredMinRx))
	b = binary.BigEndian.AppendUint32(b, uint32(p.RequiredMinEchoRx))
	if auth != nil {
		b = append(b, auth.Type, byte(2+len(auth.Data)))
		b = append(b, auth.Data...)
	}
	return b
}

// Marshal encodes p.
func (p Packet) Marshal() []byte { return p.Append(make([]byte, 0, p.Len())) }

func (p Packet) String() string {
	flags := ""
	for _, f := range []struct {
		on bool
		c  string
	}{{p.Poll, "P"}, {p.Final, "F"}, {p.ControlPlaneIndependent, "C"}, {p.Auth != nil, "A"}, {p.Demand, "D"}} {
		if f.on {
			flags += f.c
		}
	}
	return fmt.Sprintf("%s diag=%q flags=%q mult=%d my=%#x your=%#x tx=%v rx=%v",
		p.State, p.Diag, flags, p.DetectMult, p.MyDiscr, p.YourDiscr, p.DesiredMinTx.Duration(), p.RequiredMinRx.Duration())
}
