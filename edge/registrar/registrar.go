// Package registrar turns authenticated REGISTER requests into location
// store updates and builds the responses (RFC 3261 §10.3, with Path from RFC
// 3327 and outbound from RFC 5626). It knows nothing about transports,
// authentication or metrics: the server calls Handle after auth and sends
// what it returns; counters are exposed through Stats and an observer.
//
// The Request-URI is not checked (§10.3 step 1): the server only routes
// REGISTERs for domains it serves here, and Config.Domains checks the AoR.
// Authorization (§10.3 step 4, may this user register this AoR) is the
// auth package's job.
package registrar

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/anyedge/anyedge/edge/location"
	"github.com/emiago/sipgo/sip"
)

// Source is where a REGISTER came from, as the transport layer saw it.
type Source struct {
	Addr      string // packet source, "ip:port"
	Transport string // "udp", "tcp", "tls"
	Socket    string // local listener, "udp:203.0.113.10:5060"
}

// Event describes one handled REGISTER, for the observer (metrics, logs).
type Event struct {
	AoR    string // canonical AoR ("" if the request was rejected before)
	Status int
	Reason string
	Fetch  bool                 // a query without Contact
	Result *location.SaveResult // nil unless bindings were saved

	deferred bool // saved through SaveDeferred: the 200 waits for confirmed
}

// Registrar handles REGISTER requests against a location.Store. It is safe
// for concurrent use.
type Registrar struct {
	cfg      Config
	policy   location.Policy
	domains  map[string]struct{}
	store    location.Store
	clock    func() time.Time
	log      *slog.Logger
	observer func(Event)
	stats    counters
}

// Option configures optional dependencies.
type Option func(*Registrar)

// WithLogger sets the logger (default: discard).
func WithLogger(l *slog.Logger) Option { return func(r *Registrar) { r.log = l } }

// WithClock sets the time source (default time.Now).
func WithClock(now func() time.Time) Option { return func(r *Registrar) { r.clock = now } }

// WithObserver registers fn to be called, synchronously, after every
// handled REGISTER. The server uses it for metrics by outcome.
func WithObserver(fn func(Event)) Option { return func(r *Registrar) { r.observer = fn } }

// New validates cfg (zero fields take defaults) and returns a Registrar
// writing to store.
func New(cfg Config, store location.Store, opts ...Option) (*Registrar, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if store == nil {
		return nil, errors.New("registrar: nil location store")
	}
	cfg = cfg.withDefaults()
	policy, _ := parsePolicy(cfg.Policy)
	r := &Registrar{
		cfg:    cfg,
		policy: policy,
		store:  store,
		clock:  time.Now,
		log:    slog.New(slog.NewTextHandler(io.Discard, nil)),
	}
	if len(cfg.Domains) > 0 {
		r.domains = make(map[string]struct{}, len(cfg.Domains))
		for _, d := range cfg.Domains {
			r.domains[strings.ToLower(d)] = struct{}{}
		}
	}
	for _, o := range opts {
		o(r)
	}
	return r, nil
}

// supported lists the extensions we implement; a Require naming anything
// else gets 420 (RFC 3261 §10.3 step 2, §8.2.2.3).
const supported = "path, outbound"

func isSupported(tag string) bool { return tag == "path" || tag == "outbound" }

// Handle processes an authenticated REGISTER and returns the response to
// send. src is the packet source ("ip:port"), transport "udp"/"tcp"/"tls",
// socket the local listener ("udp:203.0.113.10:5060"). It never panics on
// malformed input: it returns 400 with a reason.
func (r *Registrar) Handle(ctx context.Context, req *sip.Request, src Source) *sip.Response {
	if req == nil {
		return sip.NewResponse(400, "Bad Request")
	}
	ev := Event{}
	res := r.handle(ctx, req, src, &ev, nil, nil)
	r.record(&ev, res, src)
	return res
}

// HandleAsync is Handle for a store that confirms changes after saving
// them (location.DeferredSaver, geo's replication to the HA partner): send
// is called exactly once with the response, at once for anything but a
// saved change, else when the store confirms it, possibly on another
// goroutine after HandleAsync has returned. With any other store it is
// Handle followed by send.
func (r *Registrar) HandleAsync(ctx context.Context, req *sip.Request, src Source, send func(*sip.Response)) {
	ds, ok := r.store.(location.DeferredSaver)
	if !ok || req == nil {
		send(r.Handle(ctx, req, src))
		return
	}
	g := &gate{send: send}
	ev := Event{}
	res := r.handle(ctx, req, src, &ev, ds, g.arrive)
	r.record(&ev, res, src)
	if !ev.deferred {
		send(res)
		return
	}
	g.res = res
	g.arrive()
}

// gate sends a deferred response once it is built and the store has
// confirmed its change, whichever comes last.
type gate struct {
	n    atomic.Int32
	res  *sip.Response // set before the builder's arrive
	send func(*sip.Response)
}

func (g *gate) arrive() {
	if g.n.Add(1) == 2 {
		g.send(g.res)
	}
}

// record counts, logs and reports a handled REGISTER.
func (r *Registrar) record(ev *Event, res *sip.Response, src Source) {
	ev.Status, ev.Reason = res.StatusCode, res.Reason
	r.stats.record(ev)
	if res.StatusCode >= 300 {
		r.log.Debug("registrar: rejected REGISTER", "aor", ev.AoR, "status", res.StatusCode,
			"reason", res.Reason, "src", src.Addr)
	}
	if r.observer != nil {
		r.observer(*ev)
	}
}

func (r *Registrar) handle(ctx context.Context, req *sip.Request, src Source, ev *Event, ds location.DeferredSaver, confirmed func()) *sip.Response {
	if req.Method != sip.REGISTER {
		res := sip.NewResponseFromRequest(req, 405, "Method Not Allowed", nil)
		res.AppendHeader(sip.NewHeader("Allow", "REGISTER"))
		return res
	}
	to, callID, cseq := req.To(), req.CallID(), req.CSeq()
	switch {
	case to == nil:
		return r.reply(req, badRequest("Missing or invalid To header"))
	case req.From() == nil:
		return r.reply(req, badRequest("Missing or invalid From header"))
	case callID == nil || strings.TrimSpace(string(*callID)) == "":
		return r.reply(req, badRequest("Missing Call-ID header"))
	case cseq == nil || cseq.MethodName != sip.REGISTER:
		return r.reply(req, badRequest("Missing or invalid CSeq header"))
	}
	if bad := unsupported(optionTags(req, "require")); len(bad) > 0 {
		res := r.reply(req, &reject{420, "Bad Extension"})
		res.AppendHeader(sip.NewHeader("Unsupported", strings.Join(bad, ", ")))
		return res
	}
	aor, err := CanonicalAoR(&to.Address)
	if errors.Is(err, errScheme) {
		return r.reply(req, &reject{416, "Unsupported URI Scheme"})
	} else if err != nil {
		return r.reply(req, badRequest("Invalid To URI"))
	}
	ev.AoR = aor
	if r.domains != nil {
		if _, ok := r.domains[strings.ToLower(to.Address.Host)]; !ok {
			return r.reply(req, &reject{404, "Not Found"}) // §10.3 step 3
		}
	}

	headerExp := int64(-1)
	if hs := headers(req, "expires"); len(hs) > 0 {
		v, ok := parseDelta(hs[0].Value())
		if !ok {
			return r.reply(req, badRequest("Invalid Expires header"))
		}
		headerExp = v
	}
	contacts, wildcard, rej := parseContacts(req, r.cfg.MaxContacts)
	if rej != nil {
		return r.reply(req, rej)
	}
	now := r.clock()
	if !wildcard && len(contacts) == 0 { // a query: list the bindings
		ev.Fetch = true
		bs, err := r.store.Lookup(ctx, aor)
		if err != nil {
			return r.storeError(req, aor, err)
		}
		return r.ok(req, bs, now, false)
	}
	if wildcard && headerExp != 0 { // §10.3 step 6
		return r.reply(req, badRequest("Wildcard Contact requires Expires: 0"))
	}

	sreq := &location.SaveRequest{
		AoR: aor, CallID: string(*callID), CSeq: cseq.SeqNo, Wildcard: wildcard, Now: now,
		MaxContacts: r.cfg.MaxContacts, Policy: r.policy,
	}
	if sreq.MaxContacts < 0 {
		sreq.MaxContacts = 0
	}
	path := pathValues(req)
	ua := userAgent(req)
	if src.Addr == "" { // a server that did not say: what sipgo recorded
		src.Addr = req.Source()
	}
	if src.Transport == "" {
		src.Transport = req.Transport()
	}
	outbound := false
	via := req.Via()
	for _, c := range contacts {
		exp := c.expires
		if exp < 0 {
			exp = headerExp
		}
		if exp < 0 {
			exp = int64(r.cfg.DefaultExpires / time.Second)
		}
		if exp > 0 && exp < int64(r.cfg.MinExpires/time.Second) {
			res := r.reply(req, &reject{423, "Interval Too Brief"})
			res.AppendHeader(sip.NewHeader("Min-Expires", fmt.Sprint(int64(r.cfg.MinExpires/time.Second))))
			return res
		}
		exp = min(exp, int64(r.cfg.MaxExpires/time.Second))
		outbound = outbound || (c.regID != 0 && exp > 0)
		sreq.Contacts = append(sreq.Contacts, location.Binding{
			Contact: c.str, InstanceID: c.instance, RegID: c.regID, Q: c.q,
			Expires:   now.Add(time.Duration(exp) * time.Second),
			Path:      path,
			UserAgent: ua,
			Received:  src.Addr,
			Transport: strings.ToLower(src.Transport),
			Socket:    src.Socket,
			NATed:     DetectNAT(c.uri.Host, c.uri.Port, via, src.Addr),
		})
	}
	var res *location.SaveResult
	if ds != nil {
		res, err = ds.SaveDeferred(ctx, sreq, confirmed)
		ev.deferred = err == nil
	} else {
		res, err = r.store.Save(ctx, sreq)
	}
	if err != nil {
		return r.storeError(req, aor, err)
	}
	ev.Result = res
	ok := r.ok(req, res.Bindings, now, outbound)
	if len(path) > 0 && containsTag(optionTags(req, "supported", "k"), "path") {
		for _, p := range path { // RFC 3327 §5.3: echo the Path we stored
			ok.AppendHeader(sip.NewHeader("Path", p))
		}
	}
	return ok
}

// storeError maps location errors to responses.
func (r *Registrar) storeError(req *sip.Request, aor string, err error) *sip.Response {
	switch {
	case errors.Is(err, location.ErrOutOfOrder):
		return r.reply(req, badRequest("Out of order CSeq"))
	case errors.Is(err, location.ErrTooManyContacts):
		return r.reply(req, &reject{403, "Too many registered contacts"})
	case errors.Is(err, location.ErrInvalid):
		return r.reply(req, badRequest("Invalid registration"))
	case errors.Is(err, location.ErrUnavailable):
		res := r.reply(req, &reject{500, "Location Service Unavailable"})
		res.AppendHeader(sip.NewHeader("Retry-After", "5"))
		return res
	}
	r.log.Warn("registrar: location store failed", "aor", aor, "err", err)
	return r.reply(req, &reject{500, "Server Internal Error"})
}

func (r *Registrar) reply(req *sip.Request, rej *reject) *sip.Response {
	return sip.NewResponseFromRequest(req, rej.code, rej.reason, nil)
}

// dateLayout is the SIP-date of RFC 3261 §20.17 (RFC 1123, always GMT).
const dateLayout = "Mon, 02 Jan 2006 15:04:05 GMT"

// ok builds the 200: every current binding with its remaining expiry
// (§10.3 step 8), a Date header so UAs without a clock can set one, and the
// outbound Require when the request used RFC 5626 flows.
func (r *Registrar) ok(req *sip.Request, bs []location.Binding, now time.Time, outbound bool) *sip.Response {
	res := sip.NewResponseFromRequest(req, 200, "OK", nil)
	for i := range bs {
		b := &bs[i]
		left := b.Expires.Sub(now)
		if left <= 0 {
			continue
		}
		var sb strings.Builder
		sb.WriteString("<")
		sb.WriteString(b.Contact)
		sb.WriteString(">;expires=")
		sb.WriteString(strconv.FormatInt(int64((left+time.Second-1)/time.Second), 10))
		if b.Q != 1000 {
			sb.WriteString(";q=")
			sb.WriteString(formatQ(b.Q))
		}
		if b.InstanceID != "" {
			sb.WriteString(`;+sip.instance="`)
			sb.WriteString(b.InstanceID)
			sb.WriteString(`"`)
			if b.RegID != 0 {
				sb.WriteString(";reg-id=")
				sb.WriteString(strconv.Itoa(b.RegID))
			}
		}
		res.AppendHeader(sip.NewHeader("Contact", sb.String()))
	}
	if outbound {
		res.AppendHeader(sip.NewHeader("Require", "outbound"))
	}
	res.AppendHeader(sip.NewHeader("Supported", supported))
	res.AppendHeader(sip.NewHeader("Date", now.UTC().Format(dateLayout)))
	return res
}

func unsupported(required []string) []string {
	var bad []string
	for _, t := range required {
		if !isSupported(t) {
			bad = append(bad, t)
		}
	}
	return bad
}

func containsTag(tags []string, t string) bool {
	for _, x := range tags {
		if x == t {
			return true
		}
	}
	return false
}

// maxUserAgent bounds what we store per binding from a header the client
// controls.
const maxUserAgent = 256

func userAgent(req *sip.Request) string {
	hs := headers(req, "user-agent")
	if len(hs) == 0 {
		return ""
	}
	ua := strings.TrimSpace(hs[0].Value())
	if len(ua) > maxUserAgent {
		ua = ua[:maxUserAgent]
	}
	return ua
}

// Stats are cumulative counters since New, for the server's metrics.
type Stats struct {
	Requests  uint64 // REGISTERs handled
	Saved     uint64 // REGISTERs that updated bindings (200, not fetches)
	Fetches   uint64 // queries without Contact answered 200
	Added     uint64 // bindings created
	Refreshed uint64 // bindings re-registered
	Removed   uint64 // bindings removed by the UA (expires=0, "*")
	Evicted   uint64 // bindings evicted by the replace-oldest policy
	// Responses counts responses by status code (only codes seen).
	Responses map[int]uint64
}

type counters struct {
	requests, saved, fetches           atomic.Uint64
	added, refreshed, removed, evicted atomic.Uint64
	byCode                             [600]atomic.Uint64 // index: code-100
}

func (c *counters) record(ev *Event) {
	c.requests.Add(1)
	if ev.Status >= 100 && ev.Status < 700 {
		c.byCode[ev.Status-100].Add(1)
	}
	if ev.Status != 200 {
		return
	}
	if ev.Fetch {
		c.fetches.Add(1)
	}
	if res := ev.Result; res != nil {
		c.saved.Add(1)
		c.added.Add(uint64(res.Added))
		c.refreshed.Add(uint64(res.Refreshed))
		c.removed.Add(uint64(res.Removed))
		c.evicted.Add(uint64(res.Evicted))
	}
}

// Stats returns a snapshot of the counters.
func (r *Registrar) Stats() Stats {
	c := &r.stats
	s := Stats{
		Requests: c.requests.Load(), Saved: c.saved.Load(), Fetches: c.fetches.Load(),
		Added: c.added.Load(), Refreshed: c.refreshed.Load(), Removed: c.removed.Load(),
		Evicted: c.evicted.Load(), Responses: map[int]uint64{},
	}
	for i := range c.byCode {
		if n := c.byCode[i].Load(); n > 0 {
			s.Responses[i+100] = n
		}
	}
	return s
}
