package daemon

import (
	"fmt"
	"net/netip"
	"strconv"
	"strings"
	"time"

	"github.com/emiago/sipgo/sip"

	"github.com/anyedge/anyedge/edge"
	"github.com/anyedge/anyedge/edge/cps"
)

// ClusterNode is a Node that modules can be built on: it carries their
// capabilities and membership events. *cluster.Node is one. The daemon
// needs it only when a module is configured, so a NodeFactory for tests
// may return a plain Node otherwise.
type ClusterNode interface {
	Node
	cps.Cluster   // Self, Broadcast, Nodes
	cps.Registrar // Register, Subscribe
}

// newCPS builds the CPS service on the node and registers its capability.
// It must run before the node starts.
func (d *Daemon) newCPS() error {
	cn, ok := d.node.(ClusterNode)
	if !ok {
		return fmt.Errorf("the cluster node (%T) cannot carry capabilities", d.node)
	}
	svc, err := cps.NewService(*d.cfg.CPS, cn,
		cps.WithLogger(d.log.With("component", "cps")),
		cps.WithRegistry(d.reg))
	if err != nil {
		return err
	}
	if err := svc.Attach(cn); err != nil {
		return err
	}
	d.cps = svc
	return nil
}

// cpsHook is the SIP server's BeforeNewDialog hook: every initial INVITE
// is checked against the limits, and a refused one is answered with the
// limit's response (503 with Retry-After by default).
func cpsHook(lim *cps.Limiter) func(*sip.Request, edge.CallInfo) *sip.Response {
	return func(req *sip.Request, info edge.CallInfo) *sip.Response {
		if to := req.To(); to != nil && to.Params.Has("tag") {
			return nil // in-dialog: never limited (the edge only calls us for initial requests)
		}
		dec := lim.Check(cpsRequest(req, info))
		if dec.Allowed {
			return nil
		}
		res := sip.NewResponseFromRequest(req, dec.Code, reasonPhrase(dec.Code), nil)
		if dec.RetryAfter > 0 {
			secs := (dec.RetryAfter + time.Second - 1) / time.Second
			res.AppendHeader(sip.NewHeader("Retry-After", strconv.FormatInt(int64(secs), 10)))
		}
		return res
	}
}

// cpsRequest is what a new call is limited by. The user is the one the
// server authenticated, never the Proxy-Authorization username as sent
// (unverified on paths that skip authentication).
func cpsRequest(req *sip.Request, info edge.CallInfo) cps.Request {
	r := cps.Request{AuthUser: info.AuthUser}
	if info.Source.IsValid() {
		r.SourceIP = info.Source.Unmap().String()
	} else if ap, err := netip.ParseAddrPort(req.Source()); err == nil {
		r.SourceIP = ap.Addr().Unmap().String()
	}
	if from := req.From(); from != nil {
		r.FromDomain = strings.ToLower(from.Address.Host)
	}
	return r
}

func reasonPhrase(code int) string {
	switch code {
	case sip.StatusBusyHere:
		return "Busy Here"
	case sip.StatusTemporarilyUnavailable:
		return "Temporarily Unavailable"
	}
	return "Service Unavailable"
}

// cpsAPI is the admin API's view of the CPS service.
type cpsAPI struct{ svc *cps.Service }

func (a cpsAPI) Status() []cps.LimitStatus { return a.svc.Limiter().Status() }

func (a cpsAPI) Top(limit string, n int) ([]cps.KeyRate, error) {
	return a.svc.Limiter().Top(limit, n)
}

func (a cpsAPI) SetRate(limit string, rate float64) error { return a.svc.SetRate(limit, rate) }
