package edge

import (
	"bufio"
	"net"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/emiago/sipgo/sip"
)

// msg builds a request from header lines, CRLF-terminated.
func msg(lines ...string) string { return strings.Join(lines, "\r\n") + "\r\n" }

func hdrs(method string, extra ...string) []string {
	base := []string{
		method + " sip:bob@example.com SIP/2.0",
		"Via: SIP/2.0/UDP 127.0.0.1:5999;branch=z9hG4bK" + strconv.FormatInt(time.Now().UnixNano(), 36) + ";rport",
		"From: <sip:alice@example.com>;tag=f1",
		"To: <sip:bob@example.com>",
		"Call-ID: c-" + strconv.FormatInt(time.Now().UnixNano(), 36),
		"CSeq: 1 " + method,
		"Max-Forwards: 70",
	}
	return append(base, extra...)
}

type corpusEntry struct {
	name string
	data string
	want int // UDP status expected back; 0: anything or nothing
}

func corpus() []corpusEntry {
	without := func(drop string, lines []string) []string {
		var out []string
		for _, l := range lines {
			if !strings.HasPrefix(l, drop) {
				out = append(out, l)
			}
		}
		return out
	}
	huge := strings.Repeat("x", 40000)
	body := strings.Repeat("b", 20000)
	return []corpusEntry{
		{"garbage", "\x00\x01\x02\xffhello\r\n\r\n", 0},
		{"binary", string([]byte{0x16, 0x03, 0x01, 0x00, 0xa5, 0x01, 0x00}), 0},
		{"truncated", "INVITE sip:bob@example.com SIP/2.0\r\nVia: SIP/2.0/UDP 1.2.3.4", 0},
		{"start line only", "OPTIONS sip:bob@example.com\r\n\r\n", 0},
		{"bad via", msg(append([]string{"OPTIONS sip:bob@example.com SIP/2.0", "Via: garbage"}, hdrs("OPTIONS")[2:]...)...) + "Content-Length: 0\r\n\r\n", 400},
		{"missing call-id", msg(without("Call-ID", hdrs("OPTIONS", "Content-Length: 0"))...) + "\r\n", 400},
		{"cseq mismatch", msg(append(without("CSeq", hdrs("OPTIONS")), "CSeq: 1 INVITE", "Content-Length: 0")...) + "\r\n", 400},
		{"cseq not a number", msg(append(without("CSeq", hdrs("OPTIONS")), "CSeq: abc OPTIONS", "Content-Length: 0")...) + "\r\n", 400},
		{"content-length too big", msg(hdrs("MESSAGE", "Content-Length: 500")...) + "\r\nshort body", 400},
		{"content-length negative", msg(hdrs("MESSAGE", "Content-Length: -5")...) + "\r\n", 400},
		{"max-forwards junk", msg(append(without("Max-Forwards", hdrs("OPTIONS")), "Max-Forwards: lots", "Content-Length: 0")...) + "\r\n", 400},
		{"huge header", msg(hdrs("OPTIONS", "X-Junk: "+huge, "Content-Length: 0")...) + "\r\n", 513},
		{"body too large", msg(hdrs("MESSAGE", "Content-Type: text/plain", "Content-Length: "+strconv.Itoa(len(body)))...) + "\r\n" + body, 413},
		{"unsupported scheme", msg(append([]string{"OPTIONS mailto:bob@example.com SIP/2.0"}, hdrs("OPTIONS", "Content-Length: 0")[1:]...)...) + "\r\n", 416},
		{"proxy-require", msg(hdrs("OPTIONS", "Proxy-Require: foo", "Content-Length: 0")...) + "\r\n", 420},
		{"header without colon", msg(hdrs("OPTIONS", "NoColonHere", "Content-Length: 0")...) + "\r\n", 400},
		{"stray response", "SIP/2.0 200 OK\r\nVia: SIP/2.0/UDP 192.0.2.1:5060;branch=z9hG4bKzz\r\nFrom: <sip:a@b>;tag=1\r\nTo: <sip:a@b>\r\nCall-ID: x\r\nCSeq: 1 OPTIONS\r\nContent-Length: 0\r\n\r\n", 0},
		{"crlf keepalive", "\r\n\r\n", 0},
	}
}

func TestMalformedCorpus(t *testing.T) {
	f := startServer(t, func(c *Config) { c.MaxBodySize = 8192 })
	conn, err := net.ListenPacket("udp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	edge, _ := net.ResolveUDPAddr("udp", f.udp)
	buf := make([]byte, 65536)
	for _, c := range corpus() {
		if _, err := conn.WriteTo([]byte(c.data), edge); err != nil {
			t.Fatalf("%s: %v", c.name, err)
		}
		if c.want == 0 {
			continue
		}
		_ = conn.SetReadDeadline(time.Now().Add(2 * time.Second))
		n, _, err := conn.ReadFrom(buf)
		if err != nil {
			t.Errorf("UDP %s: no answer (%v), want %d", c.name, err, c.want)
			continue
		}
		line, _, _ := strings.Cut(string(buf[:n]), "\r\n")
		if !strings.HasPrefix(line, "SIP/2.0 "+strconv.Itoa(c.want)+" ") {
			t.Errorf("UDP %s: got %q, want %d", c.name, line, c.want)
		}
	}
	// Over TCP each entry gets its own connection; the answer, if any, is
	// read until the server answers or closes.
	for _, c := range corpus() {
		tc, err := net.Dial("tcp", f.tcp)
		if err != nil {
			t.Fatal(err)
		}
		data := strings.ReplaceAll(c.data, "SIP/2.0/UDP", "SIP/2.0/TCP")
		_, _ = tc.Write([]byte(data))
		_ = tc.SetReadDeadline(time.Now().Add(300 * time.Millisecond))
		line, _ := bufio.NewReader(tc).ReadString('\n')
		if c.want == 400 && strings.HasPrefix(line, "SIP/2.0 2") {
			t.Errorf("TCP %s: accepted: %q", c.name, line)
		}
		tc.Close()
	}
	if n := counter(t, f.reg, "anyedge_sip_malformed_messages_total", nil); n < 10 {
		t.Errorf("malformed counted %v times", n)
	}
	if n := counter(t, f.reg, "anyedge_sip_handler_panics_total", nil); n != 0 {
		t.Errorf("%v handler panics", n)
	}
	// Still serving, on both transports.
	a := newUA(t, "alice", "udp", f.udp)
	mustStatus(t, a.do(a.request(sip.OPTIONS, sip.Uri{Scheme: "sip", Host: domain})), 200)
	b := newUA(t, "bob", "tcp", f.tcp)
	mustStatus(t, b.register(60), 200)
}
