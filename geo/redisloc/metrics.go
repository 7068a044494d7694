package redisloc

import (
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

const (
	resultOK          = "ok"
	resultUnavailable = "unavailable"
	resultError       = "error"
)

type metrics struct {
	ops       *prometheus.CounterVec
	latency   *prometheus.HistogramVec
	up        prometheus.Gauge
	waitShort prometheus.Counter
	reaped    prometheus.Counter
	homeAoRs  prometheus.Gauge

	// byOp holds the children of ops and latency for the known operations
	// and results, resolved once: WithLabelValues hashes the labels and
	// takes the vector's lock on every call, and op runs per request.
	byOp map[opResult]opChildren
}

type opResult struct{ op, result string }

type opChildren struct {
	count   prometheus.Counter
	latency prometheus.Observer
}

// newMetrics registers on reg (nil: unregistered, for tests and benches).
func newMetrics(reg prometheus.Registerer) *metrics {
	m := &metrics{
		ops: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "anyedge_location_redis_operations_total",
			Help: "Location operations on Redis by operation (save, lookup, remove, reap) and result (ok, unavailable, error).",
		}, []string{"op", "result"}),
		latency: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "anyedge_location_redis_operation_duration_seconds",
			Help:    "Latency of location operations on Redis, successful or not.",
			Buckets: []float64{.0001, .00025, .0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1},
		}, []string{"op"}),
		up: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "anyedge_location_redis_up",
			Help: "1 while the Redis Cluster answers the health check with cluster_state:ok.",
		}),
		waitShort: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "anyedge_location_redis_wait_short_total",
			Help: "Saves answered before wait_replicas replicas acknowledged them (WAIT timed out).",
		}),
		reaped: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "anyedge_location_redis_reaped_aors_total",
			Help: "AoRs homed on this node that the reaper pruned because a binding was due.",
		}),
		homeAoRs: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "anyedge_location_redis_home_aors",
			Help: "AoRs with a binding homed on this node, from the home index.",
		}),
	}
	if reg != nil {
		reg.MustRegister(m.ops, m.latency, m.up, m.waitShort, m.reaped, m.homeAoRs)
	}
	m.byOp = map[opResult]opChildren{}
	for _, op := range []string{"save", "lookup", "remove", "reap"} {
		for _, r := range []string{resultOK, resultUnavailable, resultError} {
			m.byOp[opResult{op, r}] = opChildren{m.ops.WithLabelValues(op, r), m.latency.WithLabelValues(op)}
		}
	}
	return m
}

func (m *metrics) op(op, result string, start time.Time) {
	c, ok := m.byOp[opResult{op, result}]
	if !ok {
		c = opChildren{m.ops.WithLabelValues(op, result), m.latency.WithLabelValues(op)}
	}
	c.count.Inc()
	c.latency.Observe(time.Since(start).Seconds())
}
