package redisloc

import (
	"bytes"
	"encoding/json"
	"fmt"
	"strconv"
	"time"

	"github.com/anyedge/anyedge/edge/location"
)

// blob is how a binding is stored: JSON with one-letter keys, because the
// save script reads c, s, e, x, r, q and u with cjson, and short keys keep
// a binding small (every byte is paid once per binding in Redis's memory).
// The AoR is not stored: it is in the key.
type blob struct {
	Contact    string   `json:"u"`
	CallID     string   `json:"c"`
	CSeq       uint32   `json:"s"`
	Expires    string   `json:"e"` // padNanos, compared as strings by the script
	ExpiresMs  int64    `json:"x"`
	Registered string   `json:"r"` // padNanos
	Q          int      `json:"q"`
	InstanceID string   `json:"i,omitempty"`
	RegID      int      `json:"g,omitempty"`
	Path       []string `json:"p,omitempty"`
	UserAgent  string   `json:"a,omitempty"`
	Received   string   `json:"v,omitempty"`
	Transport  string   `json:"t,omitempty"`
	NATed      bool     `json:"n,omitempty"`
	Socket     string   `json:"k,omitempty"`
	Home       uint32   `json:"h,omitempty"`
}

// padNanos writes t as 20 zero-padded digits of unix nanoseconds, so that
// string order is time order. The zero time (and anything before 1970) is
// all zeros.
func padNanos(t time.Time) string {
	var n int64
	if !t.IsZero() && t.UnixNano() > 0 {
		n = t.UnixNano()
	}
	return fmt.Sprintf("%020d", n)
}

func parseNanos(s string) (time.Time, error) {
	n, err := strconv.ParseInt(s, 10, 64)
	if err != nil {
		return time.Time{}, err
	}
	if n == 0 {
		return time.Time{}, nil
	}
	return time.Unix(0, n), nil
}

// millis is t in unix milliseconds, rounded up so that a key or score never
// expires before the binding does.
func millis(t time.Time) int64 {
	if t.IsZero() || t.UnixNano() <= 0 {
		return 0
	}
	n := t.UnixNano()
	return (n + int64(time.Millisecond) - 1) / int64(time.Millisecond)
}

func encodeBinding(b *location.Binding) ([]byte, error) {
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false) // "<urn:uuid:…>" stays 2 bytes shorter per bracket
	err := enc.Encode(blob{
		Contact: b.Contact, CallID: b.CallID, CSeq: b.CSeq,
		Expires: padNanos(b.Expires), ExpiresMs: millis(b.Expires), Registered: padNanos(b.Registered),
		Q: b.Q, InstanceID: b.InstanceID, RegID: b.RegID, Path: b.Path, UserAgent: b.UserAgent,
		Received: b.Received, Transport: b.Transport, NATed: b.NATed, Socket: b.Socket, Home: b.Home,
	})
	return bytes.TrimSuffix(buf.Bytes(), []byte("\n")), err
}

func decodeBinding(aor string, data []byte) (location.Binding, error) {
	var s blob
	if err := json.Unmarshal(data, &s); err != nil {
		return location.Binding{}, fmt.Errorf("redisloc: bad binding of %s: %w", aor, err)
	}
	exp, err := parseNanos(s.Expires)
	if err != nil {
		return location.Binding{}, fmt.Errorf("redisloc: bad expiry of a binding of %s: %w", aor, err)
	}
	reg, err := parseNanos(s.Registered)
	if err != nil {
		return location.Binding{}, fmt.Errorf("redisloc: bad registration time of a binding of %s: %w", aor, err)
	}
	return location.Binding{
		AoR: aor, Contact: s.Contact, InstanceID: s.InstanceID, RegID: s.RegID, CallID: s.CallID,
		CSeq: s.CSeq, Q: s.Q, Expires: exp, Registered: reg, Path: s.Path, UserAgent: s.UserAgent,
		Received: s.Received, Transport: s.Transport, NATed: s.NATed, Socket: s.Socket, Home: s.Home,
	}, nil
}
