package edge

import (
	"bytes"
	"context"
	"log/slog"
	"net"
	"net/netip"
	"strconv"
	"strings"
	"sync"

	"github.com/emiago/sipgo/sip"
)

// readFilter sees every UDP datagram before sipgo parses it. sipgo drops
// what it cannot parse with only a log line, so a UA with a broken header
// would retransmit for 32 s; here a datagram that is too large gets 513,
// and one that sipgo fails to parse gets 400 when it is a request with
// enough headers to answer (RFC 3261 §18.3, §21.5.14); both are counted.
//
// The message is parsed once, by sipgo: the filter keeps a copy of the
// datagram and its addresses per listener, and sipgo's "failed to parse"
// log line, written on the same read loop before the next datagram is
// read, is matched against that copy to answer it (udpParseFailed).
// Parsing twice cost about a tenth of the CPU of a REGISTER.
//
// Stream transports cannot be filtered per message (the filter sees
// chunks); their parse errors are counted through sipgo's log (see
// sipgoLogHandler) and cost the sender its connection.
func (s *Server) readFilter(props sip.TransportReadProps, data []byte) ([]byte, error) {
	if props.Transport != "UDP" {
		return data, nil
	}
	if len(bytes.Trim(data, "\r\n")) == 0 {
		return data, nil // CRLF keepalive
	}
	// A datagram filling sipgo's read buffer was cut by the read.
	if len(data) > s.cfg.MaxMessageSize || len(data) >= int(sip.TransportBufferReadSize) {
		s.m.malformed.WithLabelValues("too_large").Inc()
		s.rawReply(props, data, sip.StatusMessageTooLarge, "Message Too Large")
		return nil, nil
	}
	if s.fastRegister(props, data) || s.fastAck(props, data) || s.fastBye(props, data) {
		return nil, nil
	}
	s.lastDatagram(props).set(props, data)
	return data, nil
}

// lastRead is the last datagram one UDP listener's read loop handed to
// sipgo, kept until the next one.
type lastRead struct {
	mu    sync.Mutex
	laddr net.Addr
	props sip.TransportReadProps
	data  []byte
}

func (l *lastRead) set(props sip.TransportReadProps, data []byte) {
	l.mu.Lock()
	l.props = props
	l.data = append(l.data[:0], data...)
	l.mu.Unlock()
}

// lastDatagram is the lastRead of the listener props.LocalAddr names.
func (s *Server) lastDatagram(props sip.TransportReadProps) *lastRead {
	s.lastMu.Lock()
	defer s.lastMu.Unlock()
	for _, l := range s.lastReads {
		if l.laddr == props.LocalAddr { // the listener's own net.Addr value
			return l
		}
	}
	la := props.LocalAddr.String()
	for _, l := range s.lastReads {
		if l.laddr.String() == la {
			return l
		}
	}
	l := &lastRead{laddr: props.LocalAddr}
	s.lastReads = append(s.lastReads, l)
	return l
}

// udpParseFailed answers the UDP datagram sipgo just failed to parse, if
// data is the last datagram of one of our listeners; a stream's failure
// matches none and is only counted.
func (s *Server) udpParseFailed(data string) {
	s.m.malformed.WithLabelValues("unparsable").Inc()
	s.lastMu.Lock()
	reads := append([]*lastRead(nil), s.lastReads...)
	s.lastMu.Unlock()
	for _, l := range reads {
		l.mu.Lock()
		match := string(l.data) == data
		props := l.props
		l.mu.Unlock()
		if match {
			s.rawReply(props, []byte(data), sip.StatusBadRequest, "Bad Request")
			return
		}
	}
}

// rawReply answers a request that sipgo cannot parse, from the raw
// bytes: the status line, then the request's Via, From, To, Call-ID and
// CSeq lines copied as they are, to the packet's source. Nothing is sent
// for a response, an ACK, or a request without a Via. The reply is never
// larger than the request, so it cannot amplify a spoofed flood.
func (s *Server) rawReply(props sip.TransportReadProps, data []byte, code int, reason string) {
	head, _, _ := bytes.Cut(data, []byte("\r\n\r\n"))
	lines := strings.Split(string(head), "\r\n")
	if len(lines) < 2 || strings.HasPrefix(lines[0], "SIP/") || strings.HasPrefix(lines[0], "ACK ") ||
		!strings.HasSuffix(lines[0], " SIP/2.0") {
		return
	}
	var b strings.Builder
	b.WriteString("SIP/2.0 " + strconv.Itoa(code) + " " + reason + "\r\n")
	hasVia := false
	for _, l := range lines[1:] {
		name, _, ok := strings.Cut(l, ":")
		if !ok {
			continue
		}
		switch strings.ToLower(strings.TrimSpace(name)) {
		case "via", "v":
			hasVia = true
		case "from", "f", "to", "t", "call-id", "i", "cseq":
		default:
			continue
		}
		if len(l) > 1024 {
			continue // not echoing a giant header
		}
		b.WriteString(l + "\r\n")
	}
	if !hasVia {
		return
	}
	b.WriteString("Content-Length: 0\r\n\r\n")
	if b.Len() > len(data) {
		return
	}
	for _, sock := range s.sockets {
		if sock.pc != nil && sock.pc.LocalAddr().String() == props.LocalAddr.String() {
			_, _ = sock.pc.WriteTo([]byte(b.String()), props.RemoteAddr)
			s.m.response(code)
			return
		}
	}
}

// sipgoLogHandler wraps the logger given to sipgo: it counts the stream
// parse failures sipgo only logs, and demotes them to debug, so that a
// peer sending junk cannot flood the operator's error log.
type sipgoLogHandler struct {
	inner       slog.Handler
	parseFailed func(data string)
}

func (h *sipgoLogHandler) Enabled(ctx context.Context, l slog.Level) bool {
	return l >= slog.LevelError || h.inner.Enabled(ctx, l)
}

func (h *sipgoLogHandler) Handle(ctx context.Context, r slog.Record) error {
	if r.Message == "failed to parse" {
		data := ""
		r.Attrs(func(a slog.Attr) bool {
			if a.Key == "data" {
				data = a.Value.String()
				return false
			}
			return true
		})
		h.parseFailed(data)
		r.Level = slog.LevelDebug
	}
	if !h.inner.Enabled(ctx, r.Level) {
		return nil
	}
	return h.inner.Handle(ctx, r)
}

func (h *sipgoLogHandler) WithAttrs(as []slog.Attr) slog.Handler {
	return &sipgoLogHandler{inner: h.inner.WithAttrs(as), parseFailed: h.parseFailed}
}

func (h *sipgoLogHandler) WithGroup(name string) slog.Handler {
	return &sipgoLogHandler{inner: h.inner.WithGroup(name), parseFailed: h.parseFailed}
}

// fixVia applies RFC 3261 §18.2.1 and RFC 3581 §4 to the top Via of a
// received request: received= when the sent-by host is not the packet's
// source, and rport= with received= when the UA asked for rport. Responses
// then go back to the NAT's public side, and a proxy downstream sees
// where the request really came from.
func fixVia(req *sip.Request) {
	v := req.Via()
	if v == nil {
		return
	}
	host, port, err := net.SplitHostPort(req.Source())
	if err != nil {
		return
	}
	if rp, ok := v.Params.Get("rport"); ok && rp == "" {
		v.Params.Add("rport", port)
		v.Params.Add("received", host)
		return
	}
	sent, err := netip.ParseAddr(strings.Trim(v.Host, "[]"))
	src, err2 := netip.ParseAddr(host)
	if err != nil || err2 != nil || sent.Unmap() != src.Unmap() {
		v.Params.Add("received", host)
	}
}

// validate checks what a proxy needs of a request (RFC 3261 §8.2, §16.3)
// beyond what the parser enforced. It returns 0 or the status to answer
// with, and a metric reason.
func (s *Server) validate(req *sip.Request) (code int, reason, metric string) {
	if req.SipVersion != "SIP/2.0" {
		return sip.StatusVersionNotSupported, "Version Not Supported", "version"
	}
	if req.From() == nil {
		return sip.StatusBadRequest, "Missing From", "missing_header"
	}
	if req.To() == nil {
		return sip.StatusBadRequest, "Missing To", "missing_header"
	}
	if req.CallID() == nil || req.CallID().Value() == "" {
		return sip.StatusBadRequest, "Missing Call-ID", "missing_header"
	}
	if cs := req.CSeq(); cs == nil || cs.MethodName != req.Method {
		return sip.StatusBadRequest, "CSeq Method Mismatch", "bad_header"
	}
	if len(req.Body()) > s.cfg.MaxBodySize {
		return sip.StatusRequestEntityTooLarge, "Request Entity Too Large", "too_large"
	}
	switch strings.ToLower(req.Recipient.Scheme) {
	case "sip", "sips", "tel", "":
	default:
		return statusUnsupportedURIScheme, "Unsupported URI Scheme", "bad_uri"
	}
	if req.Recipient.Host == "" && !strings.EqualFold(req.Recipient.Scheme, "tel") {
		return sip.StatusBadRequest, "Bad Request-URI", "bad_uri"
	}
	if len(req.GetHeaders("Proxy-Require")) > 0 && req.Method != sip.ACK && req.Method != sip.CANCEL {
		return sip.StatusBadExtension, "Bad Extension", "unsupported_extension"
	}
	return 0, "", ""
}

// statusUnsupportedURIScheme is 416 (RFC 3261 §21.4.15); sipgo names the
// code after HTTP.
const statusUnsupportedURIScheme = 416
