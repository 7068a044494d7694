package edge

import (
	"strconv"
	"sync/atomic"
	"time"

	"github.com/emiago/sipgo/sip"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/anyedge/anyedge/edge/location"
)

// metrics of the SIP server, with methods named for what happened. Label
// values are bounded: methods outside the known list count as "other",
// response codes only by class.
type metrics struct {
	requests  *prometheus.CounterVec
	responses *prometheus.CounterVec
	inflight  prometheus.Gauge
	authFail  *prometheus.CounterVec
	malformed *prometheus.CounterVec
	panics    prometheus.Counter
	denied    *prometheus.CounterVec
	failovers prometheus.Counter
	relayed   prometheus.Counter
	duration  *prometheus.HistogramVec

	// Children resolved on first use and kept: a label lookup hashes its
	// values on every call, and these are counted for every request. Lazy,
	// so that /metrics shows only the series seen, as before.
	reqBy [len(methodList) + 1]atomic.Pointer[prometheus.Counter]
	durBy [len(methodList) + 1]atomic.Pointer[prometheus.Observer]
	resBy [7]atomic.Pointer[prometheus.Counter] // by class, 1..6
}

// methodList indexes the known methods; index len(methodList) is "other".
var methodList = [...]sip.RequestMethod{sip.INVITE, sip.ACK, sip.CANCEL, sip.BYE, sip.REGISTER,
	sip.OPTIONS, sip.SUBSCRIBE, sip.NOTIFY, sip.REFER, sip.INFO, sip.MESSAGE, sip.PRACK, sip.UPDATE, sip.PUBLISH}

func methodIndex(m sip.RequestMethod) int {
	for i, k := range methodList {
		if k == m {
			return i
		}
	}
	return len(methodList)
}

// child returns the cached child of a vec, resolving it once.
func child[T any](p *atomic.Pointer[T], resolve func() T) T {
	if c := p.Load(); c != nil {
		return *c
	}
	c := resolve()
	p.Store(&c)
	return c
}

var knownMethods = map[sip.RequestMethod]bool{
	sip.INVITE: true, sip.ACK: true, sip.CANCEL: true, sip.BYE: true, sip.REGISTER: true,
	sip.OPTIONS: true, sip.SUBSCRIBE: true, sip.NOTIFY: true, sip.REFER: true, sip.INFO: true,
	sip.MESSAGE: true, sip.PRACK: true, sip.UPDATE: true, sip.PUBLISH: true,
}

func methodLabel(m sip.RequestMethod) string {
	if knownMethods[m] {
		return string(m)
	}
	return "other"
}

func newMetrics(reg prometheus.Registerer, store location.Store) *metrics {
	m := &metrics{
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "anyedge_sip_requests_total",
			Help: "SIP requests received, by method (retransmissions absorbed by a transaction are not counted).",
		}, []string{"method"}),
		responses: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "anyedge_sip_responses_total",
			Help: "SIP responses sent to request senders, by class (1xx..6xx), generated here or forwarded.",
		}, []string{"class"}),
		inflight: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "anyedge_sip_transactions_in_flight",
			Help: "Server transactions being processed (received, final response not sent yet).",
		}),
		authFail: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "anyedge_sip_auth_failures_total",
			Help: "Requests refused by authentication: forbidden (bad credentials) or dropped (blocked source).",
		}, []string{"reason"}),
		malformed: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "anyedge_sip_malformed_messages_total",
			Help: "Messages rejected as malformed: unparsable, too large, or missing mandatory headers.",
		}, []string{"reason"}),
		panics: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "anyedge_sip_handler_panics_total",
			Help: "Request handlers that panicked (recovered; the request got 500).",
		}),
		denied: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "anyedge_sip_relay_denied_total",
			Help: "Requests refused because the sender may not relay there (403), by reason; an ACK that may not travel on gets no response and is dropped (stray_ack) when no other node took it.",
		}, []string{"reason"}),
		failovers: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "anyedge_sip_upstream_failovers_total",
			Help: "Requests that moved on to another upstream after a timeout, transport error or 503.",
		}),
		relayed: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "anyedge_sip_relayed_requests_total",
			Help: "Request branches relayed to the home node of a binding (user-facing location).",
		}),
		duration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "anyedge_sip_request_duration_seconds",
			Help:    "Time from receiving a request to answering it locally or handing it to the proxy (routing, auth, location lookup).",
			Buckets: []float64{0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1},
		}, []string{"method"}),
	}
	bindings := prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "anyedge_sip_bindings",
		Help: "Contact bindings currently stored in the location store.",
	}, func() float64 { return float64(store.Len()) })
	reg.MustRegister(m.requests, m.responses, m.inflight, m.authFail, m.malformed, m.panics,
		m.denied, m.failovers, m.relayed, m.duration, bindings)
	if ms, ok := store.(interface{ Stats() location.MemoryStats }); ok {
		reg.MustRegister(prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "anyedge_sip_location_arena_bytes",
			Help: "Off-heap memory the in-memory location store has carved for bindings: in use plus free blocks, reused and never returned to the OS.",
		}, func() float64 { return float64(ms.Stats().ArenaBytes) }))
	}
	return m
}

func (m *metrics) request(method sip.RequestMethod) {
	child(&m.reqBy[methodIndex(method)], func() prometheus.Counter {
		return m.requests.WithLabelValues(methodLabel(method))
	}).Inc()
}

func (m *metrics) response(code int) {
	if code < 100 || code > 699 {
		return
	}
	child(&m.resBy[code/100], func() prometheus.Counter {
		return m.responses.WithLabelValues(strconv.Itoa(code/100) + "xx")
	}).Inc()
}

func (m *metrics) handled(method sip.RequestMethod, since time.Time) {
	child(&m.durBy[methodIndex(method)], func() prometheus.Observer {
		return m.duration.WithLabelValues(methodLabel(method))
	}).Observe(time.Since(since).Seconds())
}
