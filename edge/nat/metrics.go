package nat

import "github.com/prometheus/client_golang/prometheus"

// metrics of the keepalive pinger, named for what happened.
type metrics struct {
	probes   prometheus.Counter
	failures prometheus.Counter
	removals prometheus.Counter
	tracked  prometheus.Gauge
}

func newMetrics(reg prometheus.Registerer) *metrics {
	m := &metrics{
		probes: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "anyedge_sip_keepalive_probes_total",
			Help: "NAT keepalive probes sent to contacts owned by this node.",
		}),
		failures: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "anyedge_sip_keepalive_failures_total",
			Help: "NAT keepalive probes that failed (no answer in time, or the send failed).",
		}),
		removals: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "anyedge_sip_keepalive_removals_total",
			Help: "Contacts removed after too many keepalive failures in a row.",
		}),
		tracked: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "anyedge_sip_keepalive_contacts",
			Help: "NATed contacts this node currently keeps alive.",
		}),
	}
	if reg != nil {
		reg.MustRegister(m.probes, m.failures, m.removals, m.tracked)
	}
	return m
}
