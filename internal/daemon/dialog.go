package daemon

import (
	"context"
	"fmt"

	"github.com/anyedge/anyedge/cluster"
	"github.com/anyedge/anyedge/edge"
	"github.com/anyedge/anyedge/edge/dialog"
	"github.com/anyedge/anyedge/internal/admin"
)

// dialogNode is what call state needs from the cluster node; *cluster.Node
// is one.
type dialogNode interface {
	dialog.Cluster
	Register(cluster.Capability) error
	Subscribe(func(cluster.Event))
}

// newDialog builds the call state on the node (its capability must be
// registered before the node starts, and so joins the capabilities that
// must be synced before the node is ready) and points the SIP hooks at
// it.
func (d *Daemon) newDialog(hooks *edge.Hooks) error {
	dn, ok := d.node.(dialogNode)
	if !ok {
		return fmt.Errorf("the cluster node (%T) cannot carry capabilities", d.node)
	}
	svc, err := dialog.New(*d.cfg.Dialog, dn, dialog.WithLogger(d.log.With("component", "dialog")), dialog.WithRegistry(d.reg))
	if err != nil {
		return err
	}
	if err := dn.Register(svc.Capability()); err != nil {
		return err
	}
	dn.Subscribe(svc.HandleEvent)
	hooks.Dialogs = svc
	d.dialogs = svc
	return nil
}

// startDialog runs the call state's expiry and replication until ctx ends.
func (d *Daemon) startDialog(ctx context.Context) {
	if d.dialogs != nil {
		d.bg.Go(func() { _ = d.dialogs.Run(ctx) })
	}
}

// dialogAdmin serves /v1/dialogs when call state is on.
func (d *Daemon) dialogAdmin(opts []admin.Option) []admin.Option {
	if d.dialogs != nil {
		opts = append(opts, admin.WithDialogs(d.dialogs))
	}
	return opts
}
