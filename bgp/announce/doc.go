// Package announce decides what the node announces over BGP: its anycast
// prefixes when, and only when, it is fit to serve, and the steps of a
// graceful drain.
//
// The decisions are a pure state machine (Machine): inputs arrive as
// readiness Signals, drain and undrain commands, the node's load (how many
// transactions it has started, how many are in flight) and the current
// time; the output is the desired advertisement set for bgp.Speaker.Set,
// whether the node should be marked drained in the cluster (which hands
// its sharing tags over), and the drain state to persist. Controller is
// the thin runner around it: it polls the inputs, steps the machine and
// applies the outputs declaratively, retrying what failed on the next
// poll.
//
// # Health gating
//
// The node announces only when all of these hold:
//
//   - its SIP listeners are up;
//   - every required cluster capability is synced (a node that has not
//     got its snapshot yet would answer from empty state);
//   - it is not isolated: it reaches a majority of the known nodes of its
//     region (exactly half counts when it also reaches a majority of all
//     known nodes, the tie-break of the cluster's tag quorum, so that the
//     survivor of a two-node region keeps announcing when its partner
//     dies);
//   - it is not drained and not shutting down.
//
// The paths are withdrawn at the poll on which a condition fails (the
// default poll is 100 ms, so well within a second). After a failure the
// node announces again only once it has been healthy for the hold-down
// (default 3 s), which damps flapping. A freshly started process announces
// once it has been healthy for start_hold_down (default 1 s); a start that
// follows n unclean stops (crashes) within restart_window waits
// hold_down x 2^(n-1) instead, capped at max_hold_down, so a crash loop
// does not flap the routes at every restart. The starts are counted in the
// state file; a clean stop (Shutdown) clears them.
//
// # Drain
//
// Drain moves the node out of service without losing anything in flight:
//
//  1. shifting: the prefixes are re-announced with GRACEFUL_SHUTDOWN
//     (65535:0, RFC 8326) and an optional AS-path prepend, so that routers
//     prefer the other nodes while this node's paths still exist;
//  2. when the node has started no new transaction for drain.quiet, or
//     after drain.shift_timeout, the prefixes are withdrawn (the BGP
//     sessions stay up) — finishing;
//  3. when no transaction is in flight, or after drain.finish_timeout, the
//     node is marked drained in the cluster, which makes it ineligible for
//     sharing tags: they, and their VIPs, move to the partner — drained.
//
// Undrain reverses it: the node is eligible again and announces as soon
// as it is healthy. The drain request is persisted (drain.json in the
// state directory) as soon as it is made, so a node drained before a
// restart or crash comes back drained and withdrawn.
//
// On SIGTERM the daemon calls Controller.Shutdown: every path is withdrawn
// first, then in-flight transactions get up to shutdown_timeout to finish,
// then the daemon exits.
//
// # Metrics
//
//   - anyedge_bgp_announce_ready: 1 while the anycast prefixes are announced
//     normally;
//   - anyedge_drain_state: 0 active, 1 shifting, 2 finishing, 3 drained;
//   - anyedge_readiness{reason}: 1 for each reason that currently keeps the
//     node from announcing (listeners_down, not_synced, isolated, drained,
//     hold_down, shutting_down).
package announce
