package registrar

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/anyedge/anyedge/edge/location"
	"github.com/emiago/sipgo/sip"
)

var t0 = time.Date(2026, 3, 4, 5, 6, 7, 0, time.UTC)

var udpSrc = Source{Addr: "198.51.100.7:5060", Transport: "udp", Socket: "udp:203.0.113.10:5060"}

// register renders a REGISTER. The default headers are replaced by a line
// with the same name in lines ("To: ..."), removed by "-Name", and any other
// line is appended.
func register(lines ...string) string {
	hdrs := []string{
		"Via: SIP/2.0/UDP 198.51.100.7:5060;branch=z9hG4bK776asdhds;rport",
		"Max-Forwards: 70",
		"To: Alice <sip:alice@example.com>",
		"From: Alice <sip:alice@example.com>;tag=1928301774",
		"Call-ID: a84b4c76e66710@pc33",
		"CSeq: 1 REGISTER",
		"Contact: <sip:alice@198.51.100.7:5060>",
	}
	start := "REGISTER sip:example.com SIP/2.0"
	seen := map[string]bool{}
	for _, l := range lines {
		if strings.HasPrefix(l, "REGISTER ") || strings.HasPrefix(l, "INVITE ") {
			start = l
			continue
		}
		name, _, _ := strings.Cut(l, ":")
		remove := strings.HasPrefix(name, "-")
		name = strings.TrimPrefix(name, "-")
		replaced := false
		for i, h := range hdrs {
			if strings.HasPrefix(h, name+":") && !seen[name] {
				if remove {
					hdrs = slices.Delete(hdrs, i, i+1)
				} else {
					hdrs[i] = l
				}
				replaced = true
				break
			}
		}
		if !replaced && !remove {
			hdrs = append(hdrs, l)
		}
		seen[name] = true
	}
	return start + "\r\n" + strings.Join(hdrs, "\r\n") + "\r\nContent-Length: 0\r\n\r\n"
}

func parse(t testing.TB, raw string) *sip.Request {
	t.Helper()
	msg, err := sip.ParseMessage([]byte(raw))
	if err != nil {
		t.Fatalf("parse: %v\n%s", err, raw)
	}
	req, ok := msg.(*sip.Request)
	if !ok {
		t.Fatalf("not a request")
	}
	return req
}

type fixture struct {
	r     *Registrar
	store *location.Memory
	clk   *time.Time
}

func newFixture(t testing.TB, cfg Config, opts ...Option) *fixture {
	t.Helper()
	f := &fixture{clk: new(time.Time)}
	*f.clk = t0
	now := func() time.Time { return *f.clk }
	f.store = location.NewMemory(location.WithClock(now))
	r, err := New(cfg, f.store, append([]Option{WithClock(now)}, opts...)...)
	if err != nil {
		t.Fatal(err)
	}
	f.r = r
	return f
}

func (f *fixture) do(t testing.TB, lines ...string) *sip.Response {
	t.Helper()
	return f.r.Handle(context.Background(), parse(t, register(lines...)), udpSrc)
}

func values(res *sip.Response, name string) []string {
	var out []string
	for _, h := range res.GetHeaders(name) {
		out = append(out, h.Value())
	}
	return out
}

func TestHandle(t *testing.T) {
	type step struct {
		after  time.Duration // advance the clock first
		lines  []string
		code   int
		reason string   // substring of the reason phrase, if set
		want   []string // exact Contact values of the response, if set
		hdrs   map[string][]string
	}
	tests := []struct {
		name  string
		cfg   Config
		steps []step
	}{
		{name: "register with default expiry", steps: []step{{
			code: 200, want: []string{"<sip:alice@198.51.100.7:5060>;expires=3600"},
			hdrs: map[string][]string{"Date": {"Wed, 04 Mar 2026 05:06:07 GMT"}, "Supported": {"path, outbound"}}}}},
		{name: "Expires header", steps: []step{{lines: []string{"Expires: 120"}, code: 200,
			want: []string{"<sip:alice@198.51.100.7:5060>;expires=120"}}}},
		{name: "contact expires param wins over the header", steps: []step{{
			lines: []string{"Expires: 120", "Contact: <sip:alice@198.51.100.7:5060>;expires=300"}, code: 200,
			want: []string{"<sip:alice@198.51.100.7:5060>;expires=300"}}}},
		{name: "several Contact headers and comma lists", steps: []step{{
			lines: []string{"Contact: <sip:alice@198.51.100.7:5060>;q=0.5, \"A, B\" <sip:alice@198.51.100.7:5062>;q=0.25",
				"Contact: sip:alice@198.51.100.7:5064;expires=600"}, code: 200,
			want: []string{"<sip:alice@198.51.100.7:5064>;expires=600",
				"<sip:alice@198.51.100.7:5060>;expires=3600;q=0.5", "<sip:alice@198.51.100.7:5062>;expires=3600;q=0.25"}}}},
		{name: "q=1 is not echoed, q=0 is", steps: []step{{
			lines: []string{"Contact: <sip:alice@198.51.100.7:5060>;q=1.000, <sip:alice@198.51.100.7:5062>;q=0"}, code: 200,
			want: []string{"<sip:alice@198.51.100.7:5060>;expires=3600", "<sip:alice@198.51.100.7:5062>;expires=3600;q=0"}}}},
		{name: "q above 1", steps: []step{{lines: []string{"Contact: <sip:alice@h>;q=1.5"}, code: 400, reason: "q-value"}}},
		{name: "q with 4 decimals", steps: []step{{lines: []string{"Contact: <sip:alice@h>;q=0.1234"}, code: 400, reason: "q-value"}}},
		{name: "q not a number", steps: []step{{lines: []string{"Contact: <sip:alice@h>;q=high"}, code: 400}}},
		{name: "below MinExpires is 423", steps: []step{{lines: []string{"Expires: 30"}, code: 423,
			hdrs: map[string][]string{"Min-Expires": {"60"}}}}},
		{name: "contact param below MinExpires is 423", steps: []step{{
			lines: []string{"Contact: <sip:alice@h>;expires=1"}, code: 423}}},
		{name: "above MaxExpires is clamped", steps: []step{{lines: []string{"Expires: 86400"}, code: 200,
			want: []string{"<sip:alice@198.51.100.7:5060>;expires=3600"}}}},
		{name: "absurd Expires is clamped", steps: []step{{lines: []string{"Expires: 99999999999999999999"}, code: 200,
			want: []string{"<sip:alice@198.51.100.7:5060>;expires=3600"}}}},
		{name: "Expires 0 removes", steps: []step{
			{lines: []string{"Contact: <sip:alice@198.51.100.7:5060>, <sip:alice@198.51.100.7:5062>"}, code: 200},
			{lines: []string{"CSeq: 2 REGISTER", "Expires: 0"}, code: 200,
				want: []string{"<sip:alice@198.51.100.7:5062>;expires=3600"}}}},
		{name: "wildcard with Expires 0 removes all", steps: []step{
			{lines: []string{"Contact: <sip:alice@198.51.100.7:5060>, <sip:alice@198.51.100.7:5062>"}, code: 200},
			{lines: []string{"CSeq: 2 REGISTER", "Contact: *", "Expires: 0"}, code: 200, want: []string{}}}},
		{name: "wildcard without Expires", steps: []step{{lines: []string{"Contact: *"}, code: 400, reason: "Wildcard"}}},
		{name: "wildcard with non-zero Expires", steps: []step{{lines: []string{"Contact: *", "Expires: 60"}, code: 400}}},
		{name: "wildcard with another contact", steps: []step{{
			lines: []string{"Contact: *, <sip:alice@h>", "Expires: 0"}, code: 400, reason: "only Contact"}}},
		{name: "out-of-order CSeq", steps: []step{
			{lines: []string{"CSeq: 5 REGISTER"}, code: 200},
			{lines: []string{"CSeq: 5 REGISTER"}, code: 400, reason: "Out of order CSeq"},
			{lines: []string{"CSeq: 4 REGISTER"}, code: 400, reason: "Out of order CSeq"},
			{lines: []string{"CSeq: 1 REGISTER", "Call-ID: rebooted@pc33"}, code: 200}}},
		{name: "too many contacts with reject", cfg: Config{MaxContacts: 2, Policy: PolicyReject}, steps: []step{
			{lines: []string{"Contact: <sip:alice@198.51.100.7:1>, <sip:alice@198.51.100.7:2>"}, code: 200},
			{lines: []string{"CSeq: 2 REGISTER", "Contact: <sip:alice@198.51.100.7:3>"}, code: 403,
				reason: "Too many registered contacts"}}},
		{name: "too many contacts with replace-oldest", cfg: Config{MaxContacts: 2}, steps: []step{
			{lines: []string{"Contact: <sip:alice@198.51.100.7:1>, <sip:alice@198.51.100.7:2>"}, code: 200},
			{lines: []string{"CSeq: 2 REGISTER", "Contact: <sip:alice@198.51.100.7:2>"}, after: time.Second, code: 200},
			{lines: []string{"CSeq: 3 REGISTER", "Contact: <sip:alice@198.51.100.7:3>;q=0.9"}, after: time.Second, code: 200,
				want: []string{"<sip:alice@198.51.100.7:2>;expires=3599", "<sip:alice@198.51.100.7:3>;expires=3600;q=0.9"}}}},
		{name: "more contacts in one request than the cap", cfg: Config{MaxContacts: 2}, steps: []step{{
			lines: []string{"Contact: <sip:a@h:1>, <sip:a@h:2>, <sip:a@h:3>"}, code: 403}}},
		{name: "Path is echoed when supported", steps: []step{{
			lines: []string{"Path: <sip:p1.example.net;lr>", "Path: <sip:p2.example.net;lr>, <sip:p3.example.net;lr>",
				"Supported: path, outbound"}, code: 200,
			hdrs: map[string][]string{"Path": {"<sip:p1.example.net;lr>", "<sip:p2.example.net;lr>", "<sip:p3.example.net;lr>"}}}}},
		{name: "Path without Supported is stored, not echoed", steps: []step{{
			lines: []string{"Path: <sip:p1.example.net;lr>"}, code: 200, hdrs: map[string][]string{"Path": nil}}}},
		{name: "outbound: instance and reg-id", steps: []step{
			{lines: []string{`Contact: <sip:alice@198.51.100.7:5060;ob>;+sip.instance="<urn:uuid:00000000-0000-1000-8000-000A95A0E128>";reg-id=1`,
				"Supported: path, outbound"}, code: 200,
				want: []string{`<sip:alice@198.51.100.7:5060;ob>;expires=3600;+sip.instance="<urn:uuid:00000000-0000-1000-8000-000A95A0E128>";reg-id=1`},
				hdrs: map[string][]string{"Require": {"outbound"}}},
			// The phone moved: same instance and reg-id, new address, new
			// Call-ID. Its old binding is replaced, not kept beside.
			{lines: []string{`Contact: <sip:alice@203.0.113.99:6000;ob>;+sip.instance="<urn:uuid:00000000-0000-1000-8000-000A95A0E128>";reg-id=1`,
				"Call-ID: new@phone"}, code: 200,
				want: []string{`<sip:alice@203.0.113.99:6000;ob>;expires=3600;+sip.instance="<urn:uuid:00000000-0000-1000-8000-000A95A0E128>";reg-id=1`}}}},
		{name: "reg-id without instance is ignored", steps: []step{{
			lines: []string{"Contact: <sip:alice@198.51.100.7:5060>;reg-id=1"}, code: 200,
			want: []string{"<sip:alice@198.51.100.7:5060>;expires=3600"}, hdrs: map[string][]string{"Require": nil}}}},
		{name: "bad instance", steps: []step{{lines: []string{`Contact: <sip:a@h>;+sip.instance="urn:uuid:1"`}, code: 400}}},
		{name: "bad reg-id", steps: []step{{lines: []string{`Contact: <sip:a@h>;+sip.instance="<urn:uuid:1>";reg-id=0`}, code: 400}}},
		{name: "fetch lists bindings without changing them", steps: []step{
			{lines: []string{"Contact: <sip:alice@198.51.100.7:5060>;expires=600"}, code: 200},
			{lines: []string{"-Contact"}, code: 200, want: []string{"<sip:alice@198.51.100.7:5060>;expires=600"}}}},
		{name: "fetch of an empty AoR", steps: []step{{lines: []string{"-Contact"}, code: 200, want: []string{}}}},
		{name: "Domains: unknown domain is 404", cfg: Config{Domains: []string{"Example.com"}}, steps: []step{
			{code: 200},
			{lines: []string{"To: <sip:alice@other.net>"}, code: 404}}},
		{name: "tel To is 416", steps: []step{{lines: []string{"To: <tel:+15551234567>"}, code: 416}}},
		{name: "unknown Require is 420", steps: []step{{lines: []string{"Require: path, foo"}, code: 420,
			hdrs: map[string][]string{"Unsupported": {"foo"}}}}},
		{name: "missing To", steps: []step{{lines: []string{"-To"}, code: 400, reason: "To"}}},
		{name: "missing From", steps: []step{{lines: []string{"-From"}, code: 400, reason: "From"}}},
		{name: "missing Call-ID", steps: []step{{lines: []string{"-Call-ID"}, code: 400, reason: "Call-ID"}}},
		{name: "missing CSeq", steps: []step{{lines: []string{"-CSeq"}, code: 400, reason: "CSeq"}}},
		{name: "CSeq of another method", steps: []step{{lines: []string{"CSeq: 1 INVITE"}, code: 400, reason: "CSeq"}}},
		{name: "To without host", steps: []step{{lines: []string{"To: <sip:alice@>"}, code: 400}}},
		{name: "tel Contact", steps: []step{{lines: []string{"Contact: <tel:+15551234567>"}, code: 400, reason: "Contact URI"}}},
		{name: "Contact without host", steps: []step{{lines: []string{"Contact: <sip:alice@>"}, code: 400}}},
		{name: "bad Expires", steps: []step{{lines: []string{"Expires: soon"}, code: 400, reason: "Expires"}}},
		{name: "negative Expires", steps: []step{{lines: []string{"Expires: -1"}, code: 400}}},
		{name: "bad expires param", steps: []step{{lines: []string{"Contact: <sip:a@h>;expires=0x10"}, code: 400}}},
		{name: "not a REGISTER", steps: []step{{lines: []string{"INVITE sip:bob@example.com SIP/2.0", "CSeq: 1 INVITE"}, code: 405,
			hdrs: map[string][]string{"Allow": {"REGISTER"}}}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := newFixture(t, tt.cfg)
			for i, s := range tt.steps {
				*f.clk = f.clk.Add(s.after)
				res := f.do(t, s.lines...)
				if res.StatusCode != s.code || !strings.Contains(res.Reason, s.reason) {
					t.Fatalf("step %d: %d %s, want %d %q\n%s", i, res.StatusCode, res.Reason, s.code, s.reason, res)
				}
				if res.To() == nil || res.CallID() == nil || res.CSeq() == nil || len(res.GetHeaders("Via")) == 0 {
					if !strings.HasPrefix(tt.name, "missing") {
						t.Fatalf("step %d: response lacks mandatory headers\n%s", i, res)
					}
				}
				if s.want != nil {
					if got := values(res, "Contact"); !slices.Equal(got, s.want) && !(len(got) == 0 && len(s.want) == 0) {
						t.Fatalf("step %d: contacts\n got %q\nwant %q", i, got, s.want)
					}
				}
				for name, want := range s.hdrs {
					if got := values(res, name); !slices.Equal(got, want) {
						t.Fatalf("step %d: %s = %q, want %q", i, name, got, want)
					}
				}
			}
		})
	}
}

func TestHandleStoresNATInfo(t *testing.T) {
	f := newFixture(t, Config{})
	src := Source{Addr: "203.0.113.50:40123", Transport: "TCP", Socket: "tcp:203.0.113.10:5060"}
	req := parse(t, register(
		"Via: SIP/2.0/TCP 192.168.1.20:5060;branch=z9hG4bK1;rport",
		"Contact: <sip:alice@192.168.1.20:5060;transport=tcp>",
		"User-Agent: Yealink SIP-T46S 66.86.0.15",
		"Path: <sip:edge.example.net;lr>"))
	if res := f.r.Handle(context.Background(), req, src); res.StatusCode != 200 {
		t.Fatalf("%d %s", res.StatusCode, res.Reason)
	}
	bs, _ := f.store.Lookup(context.Background(), "sip:alice@example.com")
	if len(bs) != 1 {
		t.Fatalf("bindings %+v", bs)
	}
	b := bs[0]
	if !b.NATed || b.Received != src.Addr || b.Transport != "tcp" || b.Socket != src.Socket ||
		b.UserAgent != "Yealink SIP-T46S 66.86.0.15" || !slices.Equal(b.Path, []string{"<sip:edge.example.net;lr>"}) ||
		b.Contact != "sip:alice@192.168.1.20:5060;transport=tcp" || b.CallID != "a84b4c76e66710@pc33" || b.CSeq != 1 {
		t.Fatalf("stored %+v", b)
	}
}

func TestHandleCanonicalAoR(t *testing.T) {
	f := newFixture(t, Config{})
	if res := f.do(t, "To: <sips:Alice@EXAMPLE.com:5061;transport=tls>"); res.StatusCode != 200 {
		t.Fatalf("%d %s", res.StatusCode, res.Reason)
	}
	if bs, _ := f.store.Lookup(context.Background(), "sip:Alice@example.com"); len(bs) != 1 {
		t.Fatalf("not stored under the canonical AoR")
	}
}

func TestHandleRemainingExpiry(t *testing.T) {
	f := newFixture(t, Config{})
	f.do(t, "Expires: 600")
	*f.clk = t0.Add(100*time.Second + 500*time.Millisecond)
	res := f.do(t, "-Contact")
	if got := values(res, "Contact"); !slices.Equal(got, []string{"<sip:alice@198.51.100.7:5060>;expires=500"}) {
		t.Fatalf("contacts %q", got)
	}
}

// errStore fails every call with err.
type errStore struct{ err error }

func (s errStore) Save(context.Context, *location.SaveRequest) (*location.SaveResult, error) {
	return nil, s.err
}
func (s errStore) Lookup(context.Context, string) ([]location.Binding, error) { return nil, s.err }
func (s errStore) Remove(context.Context, string, string) error               { return s.err }
func (s errStore) Len() int                                                   { return 0 }

func TestHandleStoreErrors(t *testing.T) {
	tests := []struct {
		err        error
		code       int
		retryAfter []string
	}{
		{location.ErrUnavailable, 500, []string{"5"}},
		{fmt.Errorf("redis: %w", location.ErrUnavailable), 500, []string{"5"}},
		{location.ErrOutOfOrder, 400, nil},
		{location.ErrTooManyContacts, 403, nil},
		{errors.New("boom"), 500, nil},
	}
	for _, tt := range tests {
		r, err := New(Config{}, errStore{tt.err})
		if err != nil {
			t.Fatal(err)
		}
		for _, lines := range [][]string{nil, {"-Contact"}} {
			res := r.Handle(context.Background(), parse(t, register(lines...)), udpSrc)
			if lines != nil && (tt.code == 400 || tt.code == 403) {
				continue // a fetch never gets these from Lookup in practice
			}
			if res.StatusCode != tt.code || !slices.Equal(values(res, "Retry-After"), tt.retryAfter) {
				t.Errorf("%v: %d %s Retry-After %q", tt.err, res.StatusCode, res.Reason, values(res, "Retry-After"))
			}
		}
	}
}

func TestStatsAndObserver(t *testing.T) {
	var mu sync.Mutex
	var events []Event
	f := newFixture(t, Config{}, WithObserver(func(e Event) { mu.Lock(); events = append(events, e); mu.Unlock() }))
	f.do(t)
	f.do(t, "CSeq: 2 REGISTER")
	f.do(t, "-Contact")
	f.do(t, "CSeq: 3 REGISTER", "Expires: 0")
	f.do(t, "Expires: 1")
	st := f.r.Stats()
	if st.Requests != 5 || st.Saved != 3 || st.Fetches != 1 || st.Added != 1 || st.Refreshed != 1 || st.Removed != 1 ||
		st.Responses[200] != 4 || st.Responses[423] != 1 {
		t.Fatalf("stats %+v", st)
	}
	if len(events) != 5 || events[0].AoR != "sip:alice@example.com" || events[0].Result.Added != 1 ||
		!events[2].Fetch || events[4].Status != 423 {
		t.Fatalf("events %+v", events)
	}
}

func TestHandleNilAndProgrammatic(t *testing.T) {
	f := newFixture(t, Config{})
	if res := f.r.Handle(context.Background(), nil, udpSrc); res.StatusCode != 400 {
		t.Fatalf("nil request: %d", res.StatusCode)
	}
	// A request built in code, with a raw Contact header a reduced parser
	// would leave unparsed.
	req := sip.NewRequest(sip.REGISTER, sip.Uri{Scheme: "sip", Host: "example.com"})
	to := &sip.ToHeader{Address: sip.Uri{Scheme: "sip", User: "bob", Host: "example.com"}}
	from := to.AsFrom()
	from.Params = sip.NewParams()
	from.Params.Add("tag", "x")
	cid := sip.CallIDHeader("prog-1")
	req.AppendHeader(to)
	req.AppendHeader(&from)
	req.AppendHeader(&cid)
	req.AppendHeader(&sip.CSeqHeader{SeqNo: 1, MethodName: sip.REGISTER})
	req.AppendHeader(sip.NewHeader("Contact", "<sip:bob@198.51.100.8>;expires=120, garbage"))
	if res := f.r.Handle(context.Background(), req, udpSrc); res.StatusCode != 400 {
		t.Fatalf("raw bad Contact: %d %s", res.StatusCode, res.Reason)
	}
	req.RemoveHeader("Contact")
	req.AppendHeader(sip.NewHeader("Contact", "<sip:bob@198.51.100.8>;expires=120, <sip:bob@198.51.100.9>"))
	res := f.r.Handle(context.Background(), req, udpSrc)
	if res.StatusCode != 200 || !slices.Equal(values(res, "Contact"),
		[]string{"<sip:bob@198.51.100.8>;expires=120", "<sip:bob@198.51.100.9>;expires=3600"}) {
		t.Fatalf("raw Contact list: %d %s\n%s", res.StatusCode, res.Reason, res)
	}
}

func TestHugeContactList(t *testing.T) {
	f := newFixture(t, Config{MaxContacts: -1})
	var cs []string
	for i := range 500 {
		cs = append(cs, fmt.Sprintf("<sip:a@198.51.100.7:%d>", 1000+i))
	}
	res := f.do(t, "Contact: "+strings.Join(cs, ", "))
	if res.StatusCode != 200 || len(values(res, "Contact")) != 500 {
		t.Fatalf("unlimited: %d %s", res.StatusCode, res.Reason)
	}
	f = newFixture(t, Config{})
	if res := f.do(t, "Contact: "+strings.Join(cs, ", ")); res.StatusCode != 403 {
		t.Fatalf("default cap: %d %s", res.StatusCode, res.Reason)
	}
}

func TestConfig(t *testing.T) {
	if err := (Config{}).Validate(); err != nil {
		t.Fatalf("zero config: %v", err)
	}
	if err := DefaultConfig().Validate(); err != nil {
		t.Fatalf("default config: %v", err)
	}
	bad := []Config{
		{MinExpires: 500 * time.Millisecond},
		{MinExpires: time.Hour, MaxExpires: time.Minute},
		{DefaultExpires: 2 * time.Hour},
		{MaxContacts: -5},
		{Policy: "lru"},
		{Domains: []string{"exa mple.com"}},
	}
	for _, c := range bad {
		if err := c.Validate(); err == nil {
			t.Errorf("%+v: no error", c)
		}
		if _, err := New(c, location.NewMemory()); err == nil {
			t.Errorf("New accepted %+v", c)
		}
	}
	if _, err := New(Config{}, nil); err == nil {
		t.Error("New accepted a nil store")
	}
}

func TestCanonicalAoR(t *testing.T) {
	tests := []struct{ in, want string }{
		{"sip:alice@example.com", "sip:alice@example.com"},
		{"sips:Alice@EXAMPLE.COM:5061;transport=tls?subject=x", "sip:Alice@example.com"},
		{"sip:alice:secret@example.com", "sip:alice@example.com"},
		{"sip:example.com", "sip:example.com"},
		{"sip:bob@[2001:DB8::1]:5060", "sip:bob@[2001:db8::1]"},
		{"tel:+1555", ""},
		{"sip:bob@exa$mple.com", ""},
	}
	for _, tt := range tests {
		var u sip.Uri
		if err := sip.ParseUri(tt.in, &u); err != nil {
			t.Fatalf("%s: %v", tt.in, err)
		}
		got, err := CanonicalAoR(&u)
		if got != tt.want || (err != nil) != (tt.want == "") {
			t.Errorf("%s: %q, %v; want %q", tt.in, got, err, tt.want)
		}
	}
}

func TestQValues(t *testing.T) {
	good := map[string]int{"0": 0, "1": 1000, "0.5": 500, "0.05": 50, "0.123": 123, "1.0": 1000, "1.000": 1000, "0.": 0}
	for s, want := range good {
		if q, ok := parseQ(s); !ok || q != want {
			t.Errorf("parseQ(%q) = %d, %v", s, q, ok)
		}
		if q, _ := parseQ(s); q != 1000 {
			if back, _ := parseQ(formatQ(q)); back != q {
				t.Errorf("formatQ(%d) = %q does not round-trip", q, formatQ(q))
			}
		}
	}
	for _, s := range []string{"", "2", "1.001", "0.1234", "-0.5", ".5", "0,5", "1.5"} {
		if _, ok := parseQ(s); ok {
			t.Errorf("parseQ(%q) accepted", s)
		}
	}
}

func TestDetectNAT(t *testing.T) {
	via := func(s string) *sip.ViaHeader {
		req := parse(t, register("Via: "+s))
		return req.Via()
	}
	public := via("SIP/2.0/UDP 198.51.100.7:5060;branch=z9hG4bK1")
	tests := []struct {
		name string
		host string
		port int
		via  *sip.ViaHeader
		src  string
		want bool
	}{
		{"public and matching", "198.51.100.7", 5060, public, "198.51.100.7:5060", false},
		{"default port matches 5060", "198.51.100.7", 0, via("SIP/2.0/UDP 198.51.100.7;branch=z9hG4bK1"), "198.51.100.7:5060", false},
		{"TLS default port is 5061", "198.51.100.7", 0, via("SIP/2.0/TLS 198.51.100.7;branch=z9hG4bK1"), "198.51.100.7:5061", false},
		{"RFC 1918 contact", "192.168.1.20", 5060, public, "198.51.100.7:5060", true},
		{"10/8 contact", "10.1.2.3", 5060, nil, "10.1.2.3:5060", true},
		{"CGNAT contact", "100.64.1.1", 5060, nil, "100.64.1.1:5060", true},
		{"link-local contact", "169.254.9.9", 5060, nil, "169.254.9.9:5060", true},
		{"ULA contact", "[fd00::1]", 5060, nil, "[fd00::1]:5060", true},
		{"IPv6 link-local contact", "[fe80::1]", 5060, nil, "[fe80::1]:5060", true},
		{"public IPv6 matching", "[2001:db8::1]", 5060, nil, "[2001:db8::1]:5060", false},
		{"port rewritten by NAT", "198.51.100.7", 5060, public, "198.51.100.7:40000", true},
		{"address rewritten by NAT", "198.51.100.7", 5060, public, "203.0.113.5:5060", true},
		{"private Via, public contact", "198.51.100.7", 5060, via("SIP/2.0/UDP 192.168.0.2:5060;branch=z9hG4bK1"), "198.51.100.7:5060", true},
		{"host name contact, matching Via", "pc33.example.com", 5060, public, "198.51.100.7:5060", false},
		{"bad source: address checks only", "198.51.100.7", 5060, public, "", false},
		{"bad source, private contact", "192.168.0.1", 5060, nil, "garbage", true},
	}
	for _, tt := range tests {
		if got := DetectNAT(tt.host, tt.port, tt.via, tt.src); got != tt.want {
			t.Errorf("%s: %v, want %v", tt.name, got, tt.want)
		}
	}
}
