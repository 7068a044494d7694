package cluster

import (
	"context"
	"log/slog"

	"github.com/prometheus/client_golang/prometheus"
)

// Option sets an optional dependency of a Node.
type Option func(*Node)

// WithLogger sets the logger (default: discard).
func WithLogger(l *slog.Logger) Option { return func(n *Node) { n.log = l } }

// WithRegistry registers the node's metrics on reg (default: none).
func WithRegistry(reg prometheus.Registerer) Option { return func(n *Node) { n.reg = reg } }

// Node is a running cluster member. (STUB: being implemented.)
type Node struct {
	cfg Config
	log *slog.Logger
	reg prometheus.Registerer
}

// New validates cfg and builds a node. Register capabilities, then Start.
func New(cfg Config, opts ...Option) (*Node, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	n := &Node{cfg: cfg, log: slog.New(slog.DiscardHandler)}
	for _, o := range opts {
		o(n)
	}
	return n, nil
}

// Start listens, joins the cluster and runs until ctx ends or Close.
func (n *Node) Start(ctx context.Context) error { return errNotRunning }

// Close leaves the cluster and stops every goroutine.
func (n *Node) Close() error { return nil }

func (n *Node) Nodes() []NodeView                          { return nil }
func (n *Node) Topology() TopologyView                     { return TopologyView{} }
func (n *Node) Caps() []CapView                            { return nil }
func (n *Node) Tags() []TagView                            { return nil }
func (n *Node) RemoveNode(id uint32) error                 { return errNotRunning }
func (n *Node) SetTagActive(tag string, node uint32) error { return errNotRunning }
