// Package wire is the binary cluster protocol's frame format.
//
// A frame on the wire is (network byte order):
//
//	0      4      8    9     10     12     16     20   21      22
//	+------+------+----+-----+------+------+------+----+-------+-----------+------+
//	| len  | magic| ver|flags| type | src  | dst  | ttl|caplen | cap name  | body |
//	+------+------+----+-----+------+------+------+----+-------+-----------+------+
//
// len counts every byte after itself. The body is whatever is left.
// Frames larger than MaxFrameSize are refused; bigger payloads (snapshots)
// are streamed as a sequence of frames by the sync protocol.
package wire

// Magic opens every frame: "AEDG".
const Magic uint32 = 0x41454447

// Version is the protocol version this code speaks. Decoders accept any
// version in [MinVersion, Version]; newer fields are only ever appended.
const (
	Version    uint8 = 1
	MinVersion uint8 = 1
)

// HeaderSize is the fixed part after the length prefix, without the cap name.
const HeaderSize = 4 + 1 + 1 + 2 + 4 + 4 + 1 + 1

// MaxFrameSize bounds one frame (length prefix excluded). Anything bigger
// is a protocol error: the decoder refuses it before allocating.
const MaxFrameSize = 1 << 20

// MaxCapName bounds a capability name.
const MaxCapName = 64

// DefaultTTL is the hop budget of a routed frame.
const DefaultTTL = 16

// Flags.
const (
	// FlagPriority marks control traffic (heartbeats) that the transport
	// sends ahead of queued data.
	FlagPriority uint8 = 1 << 0
)

// SystemCap is the capability name of the cluster's own messages.
const SystemCap = ""

// MsgType is a message type within a capability. Each capability owns its
// own type space.
type MsgType uint16

// System message types (capability SystemCap).
//
// ONLY APPEND TO THIS LIST! The numeric values are part of the protocol.
const (
	MsgInvalid      MsgType = 0
	MsgHello        MsgType = 1  // handshake: node meta + nonce
	MsgAuthResponse MsgType = 2  // handshake: HMAC over both nonces
	MsgAuthResult   MsgType = 3  // handshake: accept or refuse with reason
	MsgPing         MsgType = 4  // heartbeat
	MsgPong         MsgType = 5  // heartbeat reply (echoes the ping time)
	MsgLSA          MsgType = 6  // link-state advertisement
	MsgRemoveNode   MsgType = 7  // operator removed a node (tombstone)
	MsgTagOverride  MsgType = 8  // operator set a tag's active owner
	MsgSyncRequest  MsgType = 9  // ask a donor for a capability snapshot
	MsgSyncChunk    MsgType = 10 // a bounded piece of a snapshot
	MsgSyncAck      MsgType = 11 // flow-control credit for a chunk
	MsgSyncAbort    MsgType = 12 // donor or receiver gave up
	MsgDigest       MsgType = 13 // anti-entropy: bucket hashes of a capability
	MsgDelta        MsgType = 14 // anti-entropy: records of differing buckets
	MsgDeltaRequest MsgType = 15 // anti-entropy: ask for records of buckets
	MsgTagClaim     MsgType = 16 // a node became active for a tag, or released it
)

// Frame is one decoded frame.
type Frame struct {
	Version uint8
	Flags   uint8
	Type    MsgType
	Src     uint32 // originating node id
	Dst     uint32 // final destination node id (0: the link peer)
	TTL     uint8  // hops left for routed frames
	Cap     string // capability name; SystemCap for cluster messages
	Body    []byte

	// Release, when set, is not encoded: it gives Body back to whoever
	// lent it (a BufPool's Put). The transport calls it at most once,
	// after the frame is on the wire; a frame dropped on the way is left
	// to the garbage collector. A frame with Release is sent once and not
	// kept by its sender, so nothing reads Body after the call.
	Release func(body []byte)

	// big is the memory a FrameReader read a big frame into (Recycle).
	big *bigBuf
}
