package cluster

import (
	"strconv"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/anyedge/anyedge/cluster/core"
	"github.com/anyedge/anyedge/cluster/wire"
)

// metrics are the node's Prometheus series. Label values are bounded: node
// ids (the cluster size), capability names and tag names from config.
type metrics struct {
	nodes         *prometheus.GaugeVec
	nodeUp        *prometheus.GaugeVec
	nodeDirect    *prometheus.GaugeVec
	rtt           *prometheus.GaugeVec
	links         *prometheus.GaugeVec
	framesSent    *prometheus.CounterVec
	framesRecv    *prometheus.CounterVec
	bytesSent     *prometheus.CounterVec
	bytesRecv     *prometheus.CounterVec
	authFailures  prometheus.Counter
	badFrames     prometheus.Counter
	refused       prometheus.Counter
	sendDropped   prometheus.Counter
	forwarded     prometheus.Counter
	noRoute       prometheus.Counter
	linksDead     prometheus.Counter
	probes        prometheus.Counter
	probesFailed  prometheus.Counter
	aeTruncated   prometheus.Counter
	aeUnconfirmed prometheus.Counter
	syncState     *prometheus.GaugeVec
	syncRecords   *prometheus.GaugeVec
	repairs       *prometheus.GaugeVec
	tagOwner      *prometheus.GaugeVec
	tagActive     *prometheus.GaugeVec

	last core.Stats
}

func newMetrics(reg prometheus.Registerer) *metrics {
	const ns, sub = "anyedge", "cluster"
	g := func(name, help string, labels ...string) *prometheus.GaugeVec {
		return prometheus.NewGaugeVec(prometheus.GaugeOpts{Namespace: ns, Subsystem: sub, Name: name, Help: help}, labels)
	}
	cv := func(name, help string, labels ...string) *prometheus.CounterVec {
		return prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: ns, Subsystem: sub, Name: name, Help: help}, labels)
	}
	c := func(name, help string) prometheus.Counter {
		return prometheus.NewCounter(prometheus.CounterOpts{Namespace: ns, Subsystem: sub, Name: name, Help: help})
	}
	m := &metrics{
		nodes:         g("nodes", "Known nodes by state (self, up, down).", "state"),
		nodeUp:        g("node_up", "1 when the node is reachable by any path.", "node"),
		nodeDirect:    g("node_direct", "1 when a direct link to the node is up.", "node"),
		rtt:           g("node_rtt_seconds", "Heartbeat round-trip time of the direct link.", "node"),
		links:         g("links", "Links of the link-state database by state (up: both ends, half: one end).", "state"),
		framesSent:    cv("frames_sent_total", "Frames sent, by capability.", "cap"),
		framesRecv:    cv("frames_received_total", "Frames received, by capability.", "cap"),
		bytesSent:     cv("sent_bytes_total", "Frame body bytes sent, by capability.", "cap"),
		bytesRecv:     cv("received_bytes_total", "Frame body bytes received, by capability.", "cap"),
		authFailures:  c("auth_failures_total", "Links refused because the peer failed authentication."),
		badFrames:     c("bad_frames_total", "Malformed frames dropped (the link was kept)."),
		refused:       c("links_refused_total", "Links refused after authentication (duplicate or removed node id)."),
		sendDropped:   c("send_dropped_total", "Frames dropped because a link's send queue was full."),
		forwarded:     c("frames_forwarded_total", "Frames relayed for other nodes."),
		noRoute:       c("no_route_total", "Frames dropped for want of a route."),
		linksDead:     c("links_dead_total", "Direct links declared dead because the peer went silent (heartbeat timeout or failed probe)."),
		probes:        c("link_probes_total", "Links probed at once because another link to the same peer, or another of this node's links, died."),
		probesFailed:  c("link_probes_failed_total", "Probed links declared dead because the peer did not answer in time."),
		aeTruncated:   c("anti_entropy_truncated_total", "Anti-entropy rounds cut at anti_entropy_bytes; another round with the same peer follows 250 ms later."),
		aeUnconfirmed: c("anti_entropy_unconfirmed_buckets_total", "Buckets that differed in one anti-entropy comparison and were not sent: they are sent only if they still differ 500 ms later (replication in flight makes recently written buckets differ)."),
		syncState:     g("capability_sync_state", "1 for the capability's current sync state.", "cap", "state"),
		syncRecords:   g("capability_sync_records", "Records received by the current or last sync.", "cap"),
		repairs:       g("capability_repaired_records", "Records received through anti-entropy.", "cap"),
		tagOwner:      g("tag_owner", "Node id of the tag's owner as seen here (0: none).", "tag"),
		tagActive:     g("tag_active", "1 when this node is the tag's active owner.", "tag"),
	}
	if reg != nil {
		for _, col := range []prometheus.Collector{m.nodes, m.nodeUp, m.nodeDirect, m.rtt, m.links, m.framesSent, m.framesRecv,
			m.bytesSent, m.bytesRecv, m.authFailures, m.badFrames, m.refused, m.sendDropped, m.forwarded, m.noRoute, m.linksDead, m.probes, m.probesFailed, m.aeTruncated, m.aeUnconfirmed,
			m.syncState, m.syncRecords, m.repairs, m.tagOwner, m.tagActive} {
			reg.MustRegister(col)
		}
	}
	return m
}

func capLabel(f *wire.Frame) string {
	if f.Cap == wire.SystemCap {
		return "cluster"
	}
	return f.Cap
}

func (m *metrics) sentFrame(f *wire.Frame) {
	l := capLabel(f)
	m.framesSent.WithLabelValues(l).Inc()
	m.bytesSent.WithLabelValues(l).Add(float64(len(f.Body)))
}

func (m *metrics) recvFrame(f *wire.Frame) {
	l := capLabel(f)
	m.framesRecv.WithLabelValues(l).Inc()
	m.bytesRecv.WithLabelValues(l).Add(float64(len(f.Body)))
}

// observe refreshes the gauges from the core (on the loop goroutine).
func (m *metrics) observe(n *Node) {
	c := n.core
	counts := map[string]float64{"self": 0, "up": 0, "down": 0}
	m.nodeUp.Reset()
	m.nodeDirect.Reset()
	m.rtt.Reset()
	half, up := 0.0, 0.0
	db := c.Database()
	for _, a := range db {
		id := strconv.FormatUint(uint64(a.Origin), 10)
		switch {
		case a.Origin == n.cfg.NodeID:
			counts["self"]++
		case c.IsUp(a.Origin):
			counts["up"]++
			m.nodeUp.WithLabelValues(id).Set(1)
		default:
			counts["down"]++
			m.nodeUp.WithLabelValues(id).Set(0)
		}
		if a.Origin != n.cfg.NodeID {
			direct := 0.0
			if c.Linked(a.Origin) {
				direct = 1
				m.rtt.WithLabelValues(id).Set(c.RTT(a.Origin).Seconds())
			}
			m.nodeDirect.WithLabelValues(id).Set(direct)
		}
	}
	adv := map[[2]uint32]bool{}
	for _, a := range db {
		for _, l := range a.Links {
			adv[[2]uint32{a.Origin, l.Peer}] = true
		}
	}
	for k := range adv {
		if adv[[2]uint32{k[1], k[0]}] {
			up += 0.5
		} else {
			half++
		}
	}
	m.links.WithLabelValues("up").Set(up)
	m.links.WithLabelValues("half").Set(half)
	for s, v := range counts {
		m.nodes.WithLabelValues(s).Set(v)
	}
	for _, ci := range c.Caps() {
		for _, s := range []core.SyncState{core.NotSynced, core.Pending, core.Syncing, core.Synced} {
			v := 0.0
			if ci.State == s {
				v = 1
			}
			m.syncState.WithLabelValues(ci.Name, s.String()).Set(v)
		}
		m.syncRecords.WithLabelValues(ci.Name).Set(float64(ci.Records))
		m.repairs.WithLabelValues(ci.Name).Set(float64(ci.Repairs))
	}
	for _, t := range c.Tags() {
		m.tagOwner.WithLabelValues(t.Name).Set(float64(t.Owner))
		a := 0.0
		if t.Active {
			a = 1
		}
		m.tagActive.WithLabelValues(t.Name).Set(a)
	}
	s := c.Stats()
	m.forwarded.Add(float64(s.Forwarded - m.last.Forwarded))
	m.noRoute.Add(float64(s.NoRoute - m.last.NoRoute))
	m.probes.Add(float64(s.Probes - m.last.Probes))
	m.probesFailed.Add(float64(s.ProbesFailed - m.last.ProbesFailed))
	m.aeTruncated.Add(float64(s.AntiEntropyTruncated - m.last.AntiEntropyTruncated))
	m.aeUnconfirmed.Add(float64(s.AntiEntropyUnconfirmed - m.last.AntiEntropyUnconfirmed))
	m.last = s
}
