package edge

import "github.com/prometheus/client_golang/prometheus"

// txMetrics count the anycast transaction relay (anycast.go). Labels are
// fixed sets: kind is response, cancel or ack; reason one of the drop
// reasons named where they are counted.
type txMetrics struct {
	relayed  *prometheus.CounterVec
	injected *prometheus.CounterVec
	dropped  *prometheus.CounterVec
	ignored  prometheus.Counter
	latency  prometheus.Histogram
}

func newTxMetrics(reg prometheus.Registerer) *txMetrics {
	m := &txMetrics{
		relayed: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "anyedge_sip_misdelivered_relayed_total",
			Help: "Messages that reached this node but belong to another node's transaction, relayed over the cluster: responses to their owner, CANCELs and non-2xx ACKs to every node.",
		}, []string{"kind"}),
		injected: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "anyedge_sip_misdelivered_injected_total",
			Help: "Relayed messages that this node, the owner, handed to its transaction (or absorbed, for a response with none left).",
		}, []string{"kind"}),
		dropped: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "anyedge_sip_misdelivered_dropped_total",
			Help: "Misdelivered messages dropped, by reason: unknown_node, node_down, send_failed, no_node_up, no_cluster, malformed, not_owner, not_running, overload.",
		}, []string{"reason"}),
		ignored: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "anyedge_sip_misdelivered_ignored_total",
			Help: "Relayed CANCELs and ACKs that matched no transaction here (they go to every node; only the owner has one).",
		}),
		latency: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "anyedge_sip_misdelivered_relay_seconds",
			Help:    "Time from relaying a misdelivered message to handing it to the owner's transaction, by the two nodes' clocks.",
			Buckets: []float64{0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1},
		}),
	}
	for _, k := range []txKind{txResponse, txCancel, txAck} {
		m.relayed.WithLabelValues(k.String())
		m.injected.WithLabelValues(k.String())
	}
	reg.MustRegister(m.relayed, m.injected, m.dropped, m.ignored, m.latency)
	return m
}

func (m *txMetrics) relay(k txKind)     { m.relayed.WithLabelValues(k.String()).Inc() }
func (m *txMetrics) inject(k txKind)    { m.injected.WithLabelValues(k.String()).Inc() }
func (m *txMetrics) drop(reason string) { m.dropped.WithLabelValues(reason).Inc() }
