package daemon

import (
	"fmt"

	"github.com/anyedge/anyedge/cluster"
)

// Readiness is whether the node should take traffic now and, when not,
// every reason why. It gates the BGP announcements and is what /readyz
// reports.
type Readiness struct {
	Ready   bool
	Reasons []string
}

// readyGate is the simple readiness gate: the node is ready when it is not
// shutting down, not drained, its SIP listeners are up (when it runs SIP)
// and every capability registered on the cluster node is synced, so that
// a node that has just joined does not attract calls before it knows the
// platform's state (for example the CPS windows).
//
// It has no memory: no hold-down, no flap damping. The announcement
// controller in bgp/announce is meant to replace it.
type readyGate struct {
	stopping func() bool
	drained  func() bool
	sipReady func() bool // nil: the node runs no SIP
	caps     func() []cluster.CapView
}

// check evaluates the gate now.
func (g readyGate) check() Readiness {
	var reasons []string
	if g.stopping() {
		reasons = append(reasons, "shutting down")
	}
	if g.drained() {
		reasons = append(reasons, "drained")
	}
	if g.sipReady != nil && !g.sipReady() {
		reasons = append(reasons, "sip: listeners not up")
	}
	for _, c := range g.caps() {
		if c.State != "synced" {
			reasons = append(reasons, fmt.Sprintf("cluster: capability %s is %s", c.Name, c.State))
		}
	}
	return Readiness{Ready: len(reasons) == 0, Reasons: reasons}
}
