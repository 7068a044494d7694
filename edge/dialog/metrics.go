package dialog

import (
	"github.com/prometheus/client_golang/prometheus"
)

// metrics of the dialog service. Labels are bounded: no user, no Call-ID
// (edgectl dialogs shows the top users instead).
type metrics struct {
	rejected  *prometheus.CounterVec
	untracked *prometheus.CounterVec
	expired   *prometheus.CounterVec
	lag       prometheus.Histogram
	records   *prometheus.CounterVec
	bad       prometheus.Counter
	dropped   prometheus.Counter
	takeovers prometheus.Counter
	repairs   prometheus.Counter
}

func newMetrics(reg prometheus.Registerer, s *Service) *metrics {
	m := &metrics{
		rejected: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "anyedge_dialog_rejected_total",
			Help: "New INVITEs refused by dialog state, by reason (user_limit: the caller's concurrent calls reached dialog.max_calls_per_user, answered 486).",
		}, []string{"reason"}),
		untracked: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "anyedge_dialog_untracked_total",
			Help: "New INVITEs forwarded without dialog state, by reason (table_full: dialog.max_dialogs reached; exists: the Call-ID and From tag are already in progress; invalid: no Call-ID or From tag).",
		}, []string{"reason"}),
		expired: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "anyedge_dialog_expired_total",
			Help: "Calls ended by a timeout rather than signalling, by reason (early: no answer within early_timeout; timeout: no in-dialog request within timeout).",
		}, []string{"reason"}),
		lag: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "anyedge_dialog_replication_lag_seconds",
			Help:    "Time from a partner sending a dialog change to this node applying it (clocks NTP-synced).",
			Buckets: []float64{0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.5, 1},
		}),
		records: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "anyedge_dialog_replication_records_total",
			Help: "Dialog records replicated to the region partners (sent) and applied from them (received), live updates only.",
		}, []string{"direction"}),
		bad: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "anyedge_dialog_replication_bad_total",
			Help: "Malformed dialog frames or records from partners, dropped.",
		}),
		dropped: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "anyedge_dialog_replicas_dropped_total",
			Help: "Partner calls not held because the table was full (dialog.max_dialogs).",
		}),
		takeovers: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "anyedge_dialog_replica_requests_total",
			Help: "In-dialog requests that matched a partner's call (the owner failed over here).",
		}),
		repairs: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "anyedge_dialog_repairs_total",
			Help: "Calls changed by anti-entropy once synced (replication had missed them).",
		}),
	}
	if reg == nil {
		return m
	}
	reg.MustRegister(m.rejected, m.untracked, m.expired, m.lag, m.records, m.bad, m.dropped, m.takeovers, m.repairs,
		&gauges{s: s,
			dialogs: prometheus.NewDesc("anyedge_dialogs", "Calls held, by state (early, confirmed, terminated and lingering) and role (home: tracked by this node; replica: a region partner's).", []string{"state", "role"}, nil),
			max:     prometheus.NewDesc("anyedge_dialogs_max", "The dialog table's bound (dialog.max_dialogs).", nil, nil),
		})
	for _, r := range []string{"table_full", "exists", "invalid"} {
		m.untracked.WithLabelValues(r)
	}
	m.rejected.WithLabelValues("user_limit")
	m.expired.WithLabelValues("early")
	m.expired.WithLabelValues("timeout")
	return m
}

// gauges reads the table's counts at scrape time.
type gauges struct {
	s            *Service
	dialogs, max *prometheus.Desc
}

func (g *gauges) Describe(ch chan<- *prometheus.Desc) { ch <- g.dialogs; ch <- g.max }

func (g *gauges) Collect(ch chan<- prometheus.Metric) {
	sum := g.s.Summary(0)
	for _, st := range []State{Early, Confirmed, Terminated} {
		ch <- prometheus.MustNewConstMetric(g.dialogs, prometheus.GaugeValue, float64(sum.Home[st.String()]), st.String(), "home")
		ch <- prometheus.MustNewConstMetric(g.dialogs, prometheus.GaugeValue, float64(sum.Replica[st.String()]), st.String(), "replica")
	}
	ch <- prometheus.MustNewConstMetric(g.max, prometheus.GaugeValue, float64(sum.Max))
}
