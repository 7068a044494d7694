package daemon

import "github.com/prometheus/client_golang/prometheus"

// Registry is the daemon's metrics registry, what /metrics serves: for
// the tools that document and check the metrics (docs/METRICS.md).
func (d *Daemon) Registry() *prometheus.Registry { return d.reg }
