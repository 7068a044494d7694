package bfd

import (
	"github.com/prometheus/client_golang/prometheus"
)

// Metrics are the BFD series. One Metrics serves any number of endpoints
// (a node with IPv4 and IPv6 peers has two). Label values are bounded:
// peers come from config, drop reasons from a fixed list. A nil *Metrics
// records nothing.
type Metrics struct {
	sessionUp *prometheus.GaugeVec
	dropped   *prometheus.CounterVec
	changes   *prometheus.CounterVec
}

// Reasons a received packet is dropped (the values of the reason label).
const (
	dropTTL       = "ttl"        // not sent with TTL 255 (GTSM)
	dropMalformed = "malformed"  // refused by Decode
	dropUnknown   = "unknown"    // no session for the source address
	dropQueue     = "queue_full" // the session is not keeping up
)

// NewMetrics creates the series and registers them on reg (when not nil).
func NewMetrics(reg prometheus.Registerer) *Metrics {
	m := &Metrics{
		sessionUp: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Namespace: "anyedge", Subsystem: "bfd", Name: "session_up",
			Help: "1 when the BFD session with the peer is Up.",
		}, []string{"peer"}),
		dropped: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: "anyedge", Subsystem: "bfd", Name: "packets_dropped_total",
			Help: "Received BFD packets dropped, by reason (ttl, malformed, unknown, queue_full).",
		}, []string{"reason"}),
		changes: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: "anyedge", Subsystem: "bfd", Name: "session_state_changes_total",
			Help: "BFD session state changes, by peer and new state.",
		}, []string{"peer", "state"}),
	}
	for _, r := range []string{dropTTL, dropMalformed, dropUnknown, dropQueue} {
		m.dropped.WithLabelValues(r)
	}
	if reg != nil {
		reg.MustRegister(m.sessionUp, m.dropped, m.changes)
	}
	return m
}

func (m *Metrics) sessionAdded(peer string) {
	if m != nil {
		m.sessionUp.WithLabelValues(peer).Set(0)
	}
}

func (m *Metrics) sessionRemoved(peer string) {
	if m != nil {
		m.sessionUp.DeleteLabelValues(peer)
	}
}

func (m *Metrics) stateChanged(peer string, to State) {
	if m == nil {
		return
	}
	up := 0.0
	if to == Up {
		up = 1
	}
	m.sessionUp.WithLabelValues(peer).Set(up)
	m.changes.WithLabelValues(peer, to.String()).Inc()
}

func (m *Metrics) packetDropped(reason string) {
	if m != nil {
		m.dropped.WithLabelValues(reason).Inc()
	}
}
