package announce

import (
	"slices"

	"github.com/prometheus/client_golang/prometheus"
)

// metrics are the controller's series. Label values are bounded: reasons
// come from the closed list Reasons.
type metrics struct {
	ready     prometheus.Gauge
	drain     prometheus.Gauge
	readiness *prometheus.GaugeVec
	changes   *prometheus.CounterVec
}

func newMetrics(reg prometheus.Registerer) *metrics {
	m := &metrics{
		ready: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "anyedge_bgp_announce_ready",
			Help: "1 while the anycast prefixes are announced normally (healthy, past the hold-down, not draining).",
		}),
		drain: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "anyedge_drain_state",
			Help: "Drain phase: 0 active, 1 shifting (GRACEFUL_SHUTDOWN), 2 finishing (withdrawn), 3 drained (tags handed over).",
		}),
		readiness: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "anyedge_readiness",
			Help: "1 for each reason that currently keeps the node from announcing its anycast prefixes.",
		}, []string{"reason"}),
		changes: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "anyedge_bgp_announce_changes_total",
			Help: "Changes of the announced set applied to the speaker, by kind (announce, withdraw, update).",
		}, []string{"kind"}),
	}
	for _, r := range Reasons {
		m.readiness.WithLabelValues(r).Set(0)
	}
	for _, k := range []string{"announce", "withdraw", "update"} {
		m.changes.WithLabelValues(k)
	}
	if reg != nil {
		reg.MustRegister(m.ready, m.drain, m.readiness, m.changes)
	}
	return m
}

func (m *metrics) status(s Status) {
	v := 0.0
	if s.Announcing {
		v = 1
	}
	m.ready.Set(v)
	m.drain.Set(float64(s.Phase))
	for _, r := range Reasons {
		v := 0.0
		if slices.Contains(s.Reasons, r) {
			v = 1
		}
		m.readiness.WithLabelValues(r).Set(v)
	}
}

func (m *metrics) changed(kind string) { m.changes.WithLabelValues(kind).Inc() }
