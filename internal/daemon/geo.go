package daemon

import (
	"fmt"
	"net/netip"

	"github.com/anyedge/anyedge/cluster"
	"github.com/anyedge/anyedge/edge"
	"github.com/anyedge/anyedge/geo"
)

// geoNode is what the user-facing location needs from the cluster node;
// *cluster.Node is one.
type geoNode interface {
	geo.Cluster
	Register(cluster.Capability) error
	Subscribe(func(cluster.Event))
	NodeBySIPHost(netip.Addr) (uint32, bool)
}

// newGeo builds the distributed location on the node (its capabilities
// must be registered before the node starts) and points the SIP hooks at
// it: relays go to a home node's SIP address, and only cluster nodes'
// relay marks are believed.
func (d *Daemon) newGeo(hooks *edge.Hooks) error {
	gn, ok := d.node.(geoNode)
	if !ok {
		return fmt.Errorf("the cluster node (%T) cannot carry capabilities", d.node)
	}
	svc, err := geo.New(*d.cfg.Geo, gn, geo.WithLogger(d.log.With("component", "geo")), geo.WithRegistry(d.reg))
	if err != nil {
		return err
	}
	for _, c := range svc.Capabilities() {
		if err := gn.Register(c); err != nil {
			return err
		}
	}
	gn.Subscribe(svc.HandleEvent)
	relayHooks(hooks, gn)
	d.geo = svc
	return nil
}
