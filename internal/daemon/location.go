package daemon

import (
	"context"
	"fmt"
	"log/slog"
	"net/netip"

	"github.com/redis/go-redis/v9"

	"github.com/anyedge/anyedge/cluster"
	"github.com/anyedge/anyedge/edge"
	"github.com/anyedge/anyedge/geo/redisloc"
)

// ReasonRedisUnreachable is the readiness reason while the db-driven
// location's Redis Cluster does not answer: the node withdraws its anycast
// routes, since it could neither register nor route anyone.
const ReasonRedisUnreachable = "location: redis unreachable"

// newRedisLocation builds the db-driven location (location.mode:
// db-driven): every node of the site shares the Redis Cluster, and a
// binding homed on another node is reached by relaying to that node's SIP
// address, as in the user-facing model.
func (d *Daemon) newRedisLocation(hooks *edge.Hooks) (*redisloc.Store, error) {
	log := d.log.With("component", "location")
	// go-redis logs through a package-level logger (dial retries and
	// the like): route it to ours, at debug level, where the store's own
	// warnings say what matters.
	redis.SetLogger(redisLogger{log})
	s, err := redisloc.New(*d.cfg.Location.Redis, d.cfg.Cluster.NodeID,
		redisloc.WithLogger(log), redisloc.WithRegistry(d.reg))
	if err != nil {
		return nil, err
	}
	if d.cfg.Cluster.SIPAddr == "" {
		// Without it the other nodes cannot relay to this one: a call for
		// a UA registered here that lands elsewhere gets 480.
		log.Warn("db-driven location without cluster.sip_addr: other nodes cannot relay calls to the UAs registered here")
	}
	v, ok := d.node.(nodeView)
	if !ok {
		return nil, fmt.Errorf("the cluster node (%T) cannot tell its nodes' SIP addresses", d.node)
	}
	relayHooks(hooks, v)
	d.redisloc = s
	return s, nil
}

// nodeView is the lock-free part of the cluster node that SIP asks per
// relayed request; *cluster.Node is one.
type nodeView interface {
	Meta(id uint32) (cluster.NodeMeta, bool)
	NodeBySIPHost(a netip.Addr) (uint32, bool)
}

// relayHooks points SIP's relays at a home node's SIP address and believes
// relay marks from cluster nodes only, from the cluster's lock-free view
// (not a listing of every node through its loop, per request). Both the
// user-facing and the db-driven location use them.
func relayHooks(hooks *edge.Hooks, v nodeView) {
	hooks.HomeAddr = func(id uint32) (string, bool) {
		m, ok := v.Meta(id)
		return m.SIPAddr, ok && m.SIPAddr != ""
	}
	hooks.RelayPeer = func(src netip.Addr) bool { _, ok := v.NodeBySIPHost(src); return ok }
}

// locationUnready lists the location's readiness reasons: none unless the
// db-driven location's cluster is unreachable.
func (d *Daemon) locationUnready() []string {
	if d.redisloc == nil || d.redisloc.Ready() {
		return nil
	}
	return []string{ReasonRedisUnreachable}
}

// closeLocation closes the db-driven location's connections, after SIP.
func (d *Daemon) closeLocation() error {
	if d.redisloc == nil {
		return nil
	}
	if err := d.redisloc.Close(); err != nil {
		return fmt.Errorf("location: close: %w", err)
	}
	return nil
}

type redisLogger struct{ log *slog.Logger }

func (l redisLogger) Printf(ctx context.Context, format string, v ...any) {
	l.log.DebugContext(ctx, "redis: "+fmt.Sprintf(format, v...))
}
