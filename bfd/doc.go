// Package bfd implements Bidirectional Forwarding Detection (RFC 5880) for
// single-hop IP sessions (RFC 5881), asynchronous mode, so that routers drop
// a dead edge node in under a second: with the default 300 ms timers and a
// multiplier of 3 a silent node is declared down after at most 900 ms,
// where BGP hold timers take seconds.
//
// The package has three layers:
//
//   - packet.go: the Control packet codec, with the reception checks of
//     RFC 5880 §6.8.6 (fuzzed by FuzzDecode).
//   - session.go: Session, a pure state machine (Down, Init, Up, AdminDown;
//     timer negotiation, detection time, Poll/Final, jitter). Time and
//     randomness are injected; Step and Tick return packets to send and
//     state changes.
//   - endpoint.go and conn_linux.go: the I/O shell. An Endpoint listens on
//     UDP port 3784 of one local address and runs one session per peer.
//     Packets are sent from a source port in 49152–65535 with TTL (hop
//     limit) 255, and only packets that arrive with TTL 255 are accepted
//     (GTSM, RFC 5881 §5). Other systems get a stub that refuses to listen.
package bfd
