package daemon

import (
	"context"
	"log/slog"
	"slices"
	"strings"
	"time"

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

// readyPoll is how often the announcer re-evaluates readiness. A node
// that stops being ready is withdrawn within this much (plus the routers'
// processing); 100 ms costs a few cheap reads per second.
const readyPoll = 100 * time.Millisecond

// withdrawTimeout bounds the final withdrawal at shutdown.
const withdrawTimeout = 5 * time.Second

// announcer announces the configured prefixes while the node is ready and
// withdraws them while it is not. Set is declarative, so a failed Set is
// simply tried again at the next poll.
type announcer struct {
	sp    bgp.Speaker
	advs  []bgp.Advertisement
	ready func() Readiness
	log   *slog.Logger
	every time.Duration
}

// run polls readiness until ctx ends, and calls Set when readiness
// changed or the last Set failed.
func (a *announcer) run(ctx context.Context) {
	t := time.NewTicker(a.every)
	defer t.Stop()
	known, have := false, false // known: the last Set succeeded and announced had
	for {
		if r := a.ready(); !known || r.Ready != have {
			var err error
			if r.Ready {
				err = a.sp.Set(ctx, a.advs...)
			} else {
				err = a.sp.Set(ctx)
			}
			switch {
			case err != nil:
				if ctx.Err() == nil {
					a.log.Error("bgp: could not update the announcements; retrying", "ready", r.Ready, "err", err)
				}
				known = false
			case r.Ready:
				a.log.Info("bgp: node ready, prefixes announced", "prefixes", len(a.advs))
			default:
				a.log.Warn("bgp: node not ready, prefixes withdrawn", "reasons", strings.Join(r.Reasons, "; "))
			}
			if err == nil {
				known, have = true, r.Ready
			}
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// withdraw takes every prefix back: the first step of a shutdown.
func (a *announcer) withdraw() error {
	ctx, cancel := context.WithTimeout(context.Background(), withdrawTimeout)
	defer cancel()
	return a.sp.Set(ctx)
}

// bgpAPI is the admin API's view of the speaker.
type bgpAPI struct {
	sp  bgp.Speaker
	cfg bgp.Config
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
	for _, p := range a.cfg.Peers {
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
