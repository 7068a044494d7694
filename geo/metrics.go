package geo

import (
	"github.com/prometheus/client_golang/prometheus"
)

// metrics are the service's Prometheus metrics, named for what happened.
// Without a registry they are kept but not exported.
type metrics struct {
	lag      *prometheus.HistogramVec
	lookups  *prometheus.CounterVec
	routes   *prometheus.CounterVec
	acks     *prometheus.CounterVec
	repairs  *prometheus.CounterVec
	moved    prometheus.Counter
	bad      *prometheus.CounterVec
	sent     *prometheus.CounterVec
	received *prometheus.CounterVec

	sentBind, sentMeta, sentAck prometheus.Counter // children, resolved once
	fresh, relayed              prometheus.Counter
	routeKind                   [RouteRelay + 1]prometheus.Counter
}

func newMetrics(reg prometheus.Registerer, st *store) *metrics {
	m := &metrics{
		lag: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: "anyedge_geo_replication_lag_seconds",
			Help: "Time from a change on its home (stamped in the message) to its merge on another node, by capability (bind: to the home's region, meta: to the other regions). Clocks are NTP-synced; on one host it is exact.",
			// Fine around the 5 ms target (issue 4), so that a p99 near it
			// is read from bucket edges rather than interpolated across a
			// doubling; coarse past 25 ms, where only outages land.
			Buckets: []float64{100e-6, 250e-6, 500e-6, 750e-6, 1e-3, 1.5e-3, 2e-3, 2.5e-3, 3e-3, 4e-3, 5e-3, 6e-3, 8e-3, 10e-3,
				15e-3, 25e-3, 50e-3, 100e-3, 250e-3, 500e-3, 1, 2.5, 10},
		}, []string{"cap"}),
		lookups: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "anyedge_geo_lookups_total",
			Help: "Location lookups: fresh (a request that entered here, may relay) or relayed (a request another node relayed here, never relayed again).",
		}, []string{"kind"}),
		routes: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "anyedge_geo_lookup_routes_total",
			Help: "Targets returned by lookups: local (homed here), replica (a down home's binding served by the owner of its tag), relay (to a remote home or its tag owner).",
		}, []string{"kind"}),
		acks: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "anyedge_geo_save_acks_total",
			Help: "How replicated changes were acknowledged: replicated (a partner merged them before Save returned), degraded (no partner answered within ack_timeout), alone (no partner reachable), stopped.",
		}, []string{"result"}),
		repairs: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "anyedge_geo_repaired_records_total",
			Help: "Records that anti-entropy changed on this node, by capability.",
		}, []string{"cap"}),
		moved: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "anyedge_geo_moved_bindings_total",
			Help: "Bindings homed here retired because the UA registered again at another node (moving home).",
		}),
		bad: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "anyedge_geo_bad_records_total",
			Help: "Frames and records refused as malformed, by capability.",
		}, []string{"cap"}),
		sent: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "anyedge_geo_frames_sent_total",
			Help: "Replication frames handed to the cluster, by capability and type (one per destination set, not per destination).",
		}, []string{"cap", "type"}),
		received: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "anyedge_geo_frames_received_total",
			Help: "Replication frames received, by capability and type.",
		}, []string{"cap", "type"}),
	}
	for _, r := range []string{"replicated", "degraded", "alone", "stopped"} {
		m.acks.WithLabelValues(r)
	}
	m.sentBind = m.sent.WithLabelValues("bind", "update")
	m.sentMeta = m.sent.WithLabelValues("meta", "update")
	m.sentAck = m.sent.WithLabelValues("bind", "ack")
	m.fresh = m.lookups.WithLabelValues("fresh")
	m.relayed = m.lookups.WithLabelValues("relayed")
	for _, k := range []RouteKind{RouteLocal, RouteReplica, RouteRelay} {
		m.routeKind[k] = m.routes.WithLabelValues(k.String())
	}
	if reg == nil {
		return m
	}
	gauge := func(name, help string, labels prometheus.Labels, f func() float64) prometheus.Collector {
		return prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: name, Help: help, ConstLabels: labels}, f)
	}
	const bhelp = "Binding records held: home (registered at this node) or replica (homed on another node of the region, held for failover)."
	const thelp = "Tombstones held until the expiry of what they removed, by kind."
	reg.MustRegister(m.lag, m.lookups, m.routes, m.acks, m.repairs, m.moved, m.bad, m.sent, m.received,
		gauge("anyedge_geo_bindings", bhelp, prometheus.Labels{"role": "home"}, func() float64 { return float64(st.home.Load()) }),
		gauge("anyedge_geo_bindings", bhelp, prometheus.Labels{"role": "replica"}, func() float64 { return float64(st.replica.Load()) }),
		gauge("anyedge_geo_tombstones", thelp, prometheus.Labels{"kind": "binding"}, func() float64 { return float64(st.bindTombs.Load()) }),
		gauge("anyedge_geo_tombstones", thelp, prometheus.Labels{"kind": "metadata"}, func() float64 { return float64(st.metaTombs.Load()) }),
		gauge("anyedge_geo_metadata_entries", "Live AoR→home metadata entries held (one per AoR and home node).", nil, func() float64 { return float64(st.metaLive.Load()) }),
	)
	return m
}
