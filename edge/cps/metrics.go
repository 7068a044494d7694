package cps

import "github.com/prometheus/client_golang/prometheus"

// collector exports the service's state at scrape time, read through the
// limiter's public API (GoBGP's pkg/metrics style). Label values are
// bounded: limit names come from the config. Keys (source IPs, domains,
// users) are unbounded, so they never become labels: Top serves them.
type collector struct {
	s *Service

	rejected, rate, offered, limit, share, keys *prometheus.Desc
	replBytes, replFrames, recvBytes, bad       *prometheus.Desc
	evicted, expired, clock                     *prometheus.Desc
}

func newCollector(s *Service) *collector {
	d := func(name, help string, labels ...string) *prometheus.Desc {
		return prometheus.NewDesc("anyedge_cps_"+name, help, labels, nil)
	}
	return &collector{
		s:          s,
		rejected:   d("rejected_total", "New calls this node refused, by the limit that refused them.", "limit"),
		rate:       d("rate", "Platform-wide rate of accepted new calls over the limit's window, calls per second (keyed limits: all keys).", "limit"),
		offered:    d("offered_rate", "Platform-wide rate of new calls offered to the limit, accepted or not, calls per second (estimate).", "limit"),
		limit:      d("limit", "The limit's configured or run-time rate, calls per second.", "limit"),
		share:      d("limit_share", "Share of the limit in force: 1, or under the split policy the visible share of the limit's nodes.", "limit"),
		keys:       d("keys", "Keys held by a keyed limit.", "limit"),
		replBytes:  d("replication_bytes_total", "Counter replication bytes sent (frame bodies times recipients)."),
		replFrames: d("replication_frames_total", "Counter replication frames sent (one per recipient)."),
		recvBytes:  d("replication_received_bytes_total", "Counter replication bytes received and applied."),
		bad:        d("bad_updates_total", "Replication frames and snapshot records refused, by reason.", "reason"),
		evicted:    d("keys_evicted_total", "Keys dropped because a keyed limit held max_keys."),
		expired:    d("keys_expired_total", "Keys dropped after key_idle without calls."),
		clock:      d("clock_correction_seconds", "What this node adds to its clock to line up its slots with the cluster."),
	}
}

func (c *collector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{c.rejected, c.rate, c.offered, c.limit, c.share, c.keys,
		c.replBytes, c.replFrames, c.recvBytes, c.bad, c.evicted, c.expired, c.clock} {
		ch <- d
	}
}

func (c *collector) Collect(ch chan<- prometheus.Metric) {
	l := c.s.lim
	for _, st := range l.status(0) {
		ch <- prometheus.MustNewConstMetric(c.rejected, prometheus.CounterValue, float64(st.Rejected), st.Name)
		ch <- prometheus.MustNewConstMetric(c.rate, prometheus.GaugeValue, st.Rate, st.Name)
		ch <- prometheus.MustNewConstMetric(c.offered, prometheus.GaugeValue, st.Offered, st.Name)
		ch <- prometheus.MustNewConstMetric(c.limit, prometheus.GaugeValue, st.Limit, st.Name)
		ch <- prometheus.MustNewConstMetric(c.share, prometheus.GaugeValue, st.Share, st.Name)
		if st.Selector != Global {
			ch <- prometheus.MustNewConstMetric(c.keys, prometheus.GaugeValue, float64(st.Keys), st.Name)
		}
	}
	s := l.Stats()
	ch <- prometheus.MustNewConstMetric(c.replBytes, prometheus.CounterValue, float64(c.s.sentBytes.Load()))
	ch <- prometheus.MustNewConstMetric(c.replFrames, prometheus.CounterValue, float64(c.s.sentFrames.Load()))
	ch <- prometheus.MustNewConstMetric(c.recvBytes, prometheus.CounterValue, float64(s.BytesApplied))
	ch <- prometheus.MustNewConstMetric(c.bad, prometheus.CounterValue, float64(s.BadFrames), "malformed")
	ch <- prometheus.MustNewConstMetric(c.bad, prometheus.CounterValue, float64(s.SkewedFrames), "clock")
	ch <- prometheus.MustNewConstMetric(c.evicted, prometheus.CounterValue, float64(s.KeysEvicted))
	ch <- prometheus.MustNewConstMetric(c.expired, prometheus.CounterValue, float64(s.KeysExpired))
	ch <- prometheus.MustNewConstMetric(c.clock, prometheus.GaugeValue, s.ClockCorrection.Seconds())
}
