package daemon

import (
	"log/slog"
	"slices"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/anyedge/anyedge/bgp"
	"github.com/anyedge/anyedge/internal/admin"
)

// SpeakerFactory builds the BGP speaker. The default is bgp.New (an
// embedded GoBGP, which leaves one goroutine behind after Close: one
// speaker per process).
type SpeakerFactory func(cfg bgp.Config, log *slog.Logger, reg prometheus.Registerer) (bgp.Speaker, error)

func newGoBGP(cfg bgp.Config, log *slog.Logger, reg prometheus.Registerer) (bgp.Speaker, error) {
	return bgp.New(cfg, bgp.WithLogger(log), bgp.WithRegisterer(reg))
}

// WithSpeakerFactory replaces bgp.New, for tests.
func WithSpeakerFactory(f SpeakerFactory) Option { return func(d *Daemon) { d.newSpeaker = f } }

// bgpAPI is the admin API's view of the speaker.
type bgpAPI struct {
	sp    bgp.Speaker
	peers func() []bgp.PeerConfig // the configured routers, as reloaded
}

func (a bgpAPI) Peers() []admin.BGPPeer {
	var out []admin.BGPPeer
	for _, p := range a.sp.Peers() {
		v := admin.BGPPeer{
			Address: p.Address.String(), ASN: p.ASN, State: p.State.String(), Uptime: p.Uptime,
			PrefixesSent: p.PrefixesSent, PrefixesReceived: p.PrefixesReceived, LastError: p.LastError,
		}
		if p.BFDEnabled {
			v.BFD = p.BFD.String()
		}
		out = append(out, v)
	}
	return out
}

// Routes lists the announced prefixes, each with the routers that have it:
// those with an established session that carries the prefix's family.
func (a bgpAPI) Routes() []admin.BGPRoute {
	families := map[string][]string{}
	for _, p := range a.peers() {
		families[p.Address] = p.Families
	}
	var up []bgp.PeerStatus
	for _, p := range a.sp.Peers() {
		if p.Established() {
			up = append(up, p)
		}
	}
	var out []admin.BGPRoute
	for _, adv := range a.sp.Announced() {
		r := admin.BGPRoute{
			Prefix: adv.Prefix.String(), MED: adv.MED, LocalPref: adv.LocalPref, Prepend: adv.Prepend,
			Peers: []string{},
		}
		if adv.NextHop.IsValid() {
			r.NextHop = adv.NextHop.String()
		}
		for _, c := range adv.Communities {
			r.Communities = append(r.Communities, c.String())
		}
		fam := bgp.IPv4Unicast
		if !adv.Prefix.Addr().Is4() {
			fam = bgp.IPv6Unicast
		}
		for _, p := range up {
			if slices.Contains(families[p.Address.String()], fam) {
				r.Peers = append(r.Peers, p.Address.String())
			}
		}
		out = append(out, r)
	}
	return out
}
