package bgp

import (
	"strconv"

	"github.com/prometheus/client_golang/prometheus"
)

// metrics are the speaker's Prometheus series. Label values are bounded:
// peers and prefixes come from config (VIPs included), attributes from
// the few policies a prefix goes through (normal, drained).
type metrics struct {
	sessionUp  *prometheus.GaugeVec
	announced  prometheus.Gauge
	advertInfo *prometheus.GaugeVec
}

func newMetrics(reg prometheus.Registerer) *metrics {
	const ns, sub = "anyedge", "bgp"
	m := &metrics{
		sessionUp: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Namespace: ns, Subsystem: sub, Name: "session_up",
			Help: "1 when the BGP session with the router is established.",
		}, []string{"peer"}),
		announced: prometheus.NewGauge(prometheus.GaugeOpts{
			Namespace: ns, Subsystem: sub, Name: "announced_prefixes",
			Help: "Prefixes announced to the routers.",
		}),
		advertInfo: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Namespace: ns, Subsystem: sub, Name: "advertisement_info",
			Help: "1 for each announced prefix, with its attributes as labels.",
		}, []string{"prefix", "med", "communities", "prepend"}),
	}
	if reg != nil {
		reg.MustRegister(m.sessionUp, m.announced, m.advertInfo)
	}
	return m
}

func (m *metrics) peerAdded(peer string) { m.sessionUp.WithLabelValues(peer).Set(0) }

// peerRemoved drops the series of a router no longer configured.
func (m *metrics) peerRemoved(peer string) { m.sessionUp.DeleteLabelValues(peer) }

func (m *metrics) sessionChanged(peer string, established bool) {
	v := 0.0
	if established {
		v = 1
	}
	m.sessionUp.WithLabelValues(peer).Set(v)
}

func (m *metrics) announcedSet(advs []Advertisement) {
	m.announced.Set(float64(len(advs)))
	m.advertInfo.Reset()
	for _, a := range advs {
		m.advertInfo.WithLabelValues(a.Prefix.String(), strconv.FormatUint(uint64(a.MED), 10),
			communitiesString(a.Communities), strconv.Itoa(a.Prepend)).Set(1)
	}
}
