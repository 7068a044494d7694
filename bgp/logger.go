package bgp

import (
	"context"
	"fmt"
	"log/slog"
	"sort"

	gobgplog "github.com/osrg/gobgp/v3/pkg/log"
)

// gobgpLogger adapts GoBGP's logger to slog, and picks out of GoBGP's log
// the reasons sessions fail (GoBGP's API does not report them).
type gobgpLogger struct {
	log *slog.Logger
	// peerError is called with a peer address and a reason.
	peerError func(peer, reason string)
}

var _ gobgplog.Logger = gobgpLogger{}

func (g gobgpLogger) emit(level slog.Level, msg string, fields gobgplog.Fields) {
	g.notePeerError(level, msg, fields)
	if !g.log.Enabled(context.Background(), level) {
		return
	}
	keys := make([]string, 0, len(fields))
	for k := range fields {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	args := make([]any, 0, 2*len(keys))
	for _, k := range keys {
		args = append(args, k, fields[k])
	}
	g.log.Log(context.Background(), level, "gobgp: "+msg, args...)
}

// notePeerError records session failures: the "Peer Down" reason, failed
// connection attempts, and warnings about a peer (notifications sent and
// received, hold timer expiry).
func (g gobgpLogger) notePeerError(level slog.Level, msg string, fields gobgplog.Fields) {
	if g.peerError == nil {
		return
	}
	peer, ok := fields["Key"].(string)
	if !ok || fields["Topic"] != "Peer" {
		return
	}
	switch {
	case msg == "Peer Down":
		g.peerError(peer, fmt.Sprintf("peer down: %v", fields["Reason"]))
	case msg == "failed to connect":
		g.peerError(peer, fmt.Sprintf("connect: %v", fields["Error"]))
	case level >= slog.LevelWarn:
		if d, ok := fields["Data"]; ok {
			g.peerError(peer, fmt.Sprintf("%s: %v", msg, d))
		} else if e, ok := fields["Error"]; ok {
			g.peerError(peer, fmt.Sprintf("%s: %v", msg, e))
		} else {
			g.peerError(peer, msg)
		}
	}
}

func (g gobgpLogger) Panic(msg string, fields gobgplog.Fields) {
	g.emit(slog.LevelError, msg, fields)
	panic("gobgp: " + msg)
}

// Fatal is only called by GoBGP for failures of parts we do not use
// (gRPC, zebra); it must not return.
func (g gobgpLogger) Fatal(msg string, fields gobgplog.Fields) {
	g.emit(slog.LevelError, msg, fields)
	panic("gobgp: fatal: " + msg)
}

func (g gobgpLogger) Error(msg string, fields gobgplog.Fields) { g.emit(slog.LevelError, msg, fields) }
func (g gobgpLogger) Warn(msg string, fields gobgplog.Fields)  { g.emit(slog.LevelWarn, msg, fields) }
func (g gobgpLogger) Info(msg string, fields gobgplog.Fields)  { g.emit(slog.LevelInfo, msg, fields) }
func (g gobgpLogger) Debug(msg string, fields gobgplog.Fields) { g.emit(slog.LevelDebug, msg, fields) }

func (g gobgpLogger) SetLevel(gobgplog.LogLevel) {}

// GetLevel says Debug so that GoBGP reports failed connection attempts,
// which it only logs at that level; emit drops what slog does not want.
func (g gobgpLogger) GetLevel() gobgplog.LogLevel { return gobgplog.DebugLevel }
