// Package metricsdoc keeps docs/METRICS.md, the reference of every
// anyedge_ metric, in step with the code (and checks that
// docs/ARCHITECTURE.md names the packages that exist). Its test runs a real daemon
// (cluster node, SIP edge, CPS, the GoBGP speaker, announcements, VIPs on
// a recording router, geo, dialogs) in process, reads the registry's
// descriptions (name, help, labels) and the types of the series it
// exports, and compares the result with the file; -update rewrites it:
//
//	go generate ./internal/daemon/metricsdoc
//
// It is a package of its own because GoBGP's server loop cannot be
// stopped: its goroutine would fail internal/daemon's leak checks.
package metricsdoc

//go:generate go test -count=1 -run TestMetricsReference -update .
