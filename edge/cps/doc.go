// Package cps limits new calls per second platform-wide: every node of
// every region counts against the same limits, with the counters shared
// over the cluster protocol.
//
// # What is limited
//
// Named limits ("pipes") from Config: a global one on every new INVITE,
// keyed ones per source IP, From domain or authenticated user (Rate per
// key), and per-region ones (only the nodes of that region count and are
// limited). The SIP layer calls Limiter.Check for each initial INVITE
// only: requests inside a dialog (a To tag present: re-INVITE, UPDATE,
// BYE, ACK, ...) must never be limited, or established calls would break
// when the platform is busy. A refused call gets the limit's response: 503
// with Retry-After (default), or 486 or 480.
//
// # Why not OpenSIPS's way
//
// OpenSIPS's ratelimit counts each interval locally, replicates every
// repl_timer_interval the count of its previous interval, and checks its
// own current count plus the peers' previous ones. Intervals start when
// each process started, so the sum mixes windows that do not overlap, and
// under a burst every node admits against counts a second old (issue
// #2900). TestSimVsOpenSIPS runs that design next to this one: its 1 s
// windows are off by about 30% at p99, ours by about 1%.
//
// # How it works
//
// Slots. Each node counts accepted calls in slots (Config.Slot, 100 ms)
// numbered on a clock shared by the cluster: slot j is the same 100 ms on
// every node, so counts from different nodes add up over the same window.
// Clocks are lined up on the cluster's mean: every frame carries its send
// time, and each node estimates each peer's clock offset (the largest
// send-minus-receive over recent frames, plus half the link RTT when the
// cluster knows it) and corrects its own clock by the mean offset. Clock
// skew of ±50 ms thus costs nothing (TestSimClockSkew); without the
// correction it costs several percent.
//
// Sliding window. A limit holds over any window of Window (1 s): slots
// k-W+1..k in full, and of the slot sliding out, the calls that came in
// its part still inside the window. For global limits each node records
// where in a slot its calls came (tenths of a slot) and sends that profile
// with each closed slot, so capacity comes back the way it was used: after
// a burst that filled the first 10 ms of a slot, 10 ms into the next
// window. Taildrop uses fixed windows instead; RED is the sliding window
// with early random drops from 80% of the limit.
//
// Replication. Every Interval (50 ms) a node sends one frame carrying
// every counter that changed: the slot open at its last frame (final
// count, profile) and the current one (running count), with its demand
// (calls offered per slot, over the last 30 ms, or over the last two
// slots when the node is offered under about 100 calls/s: over 30 ms its
// count would be mostly 0 or 1). A sharp change of demand on a global
// limit (a burst starting or ending) sends a frame early, at most every
// Interval/5. Rate changes ride in the same frames. With nothing to
// report a node still sends its frame's header, so its peers know their
// view of it is fresh (see Stalls).
//
// Prediction and sharing. A node adds up its own exact counts and the
// peers' reported ones. For a slot a peer has not reported finished yet
// (delay), it counts at least what the peer is predicted to take: its
// share, and in the slot of its last frame no more than an interval's
// worth of its demand on top of what that frame said. The free
// capacity of the current instant is shared by demand: each node reserves
// for each peer its share (its demand over the sum of demands), capped at
// what the peer can take before its next frame, and may itself take what
// is left. Every node uses the same weights, switching to a node's new
// demand at the same instant (its send time plus the delivery delay), so
// nodes do not claim the same capacity twice and a burst does not
// overshoot (at most +2.3% over any 1 s window in the simulations): a node
// with 80% of the calls gets 80% of the capacity, one with 10% gets 10%.
// The cost is a few tens of ms, after a node's burst ends, during which
// capacity held for it stays idle; the simulations measure it
// (TestSimRandomArrivals, docs/BENCHMARKS.md).
//
// Low limits. At 150–300 CPS a node takes a few calls per interval, and
// what a node holds for its peers is whole percents of the limit. Two
// things keep it small. A node admits a call when a whole call is free
// once its peers' shares are held, or, when only a fraction f of one is
// free but the reported counts leave a whole call, when f passes a random
// threshold drawn afresh after each such call: waiting for a whole call
// kept about half a call per node idle at every instant (3% of 150 CPS
// over 9 nodes), and the threshold makes it admit as much on average,
// however many calls come. And slow nodes' demand is estimated over two
// slots (above), so their peers hold for them what they use, not several
// times it. The simulations run at 150, 300, 1000 and 5000 CPS.
//
// # Failures
//
// A node that dies is noticed by the cluster (EventNodeDown, 0.5 s on a
// LAN). From then on its demand is no longer predicted, so its share
// returns to the others; the calls it had already accepted stay in the
// window until they age out, because they happened: dropping them would
// let the survivors exceed the limit by as much. So do the calls it may
// have accepted after its last frame (an interval's worth of its demand):
// forgetting those let the platform go 3.3% over when the 80% node died.
//
// Stalls. A node the machine's scheduler froze for a while (a loaded
// host) comes back with a view of its peers as old as the stall, while
// they, not hearing from it, took its share; the calls queued meanwhile
// would pass at once on that view (17–36% over the limit in
// TestSimStall's control). So a node that sees a gap of over 100 ms
// between two calls into its limiter (the service flushes every 10 ms)
// refuses new calls until each peer it has heard from has sent a frame
// from at most 100 ms before it resumed (the frames queued during the
// stall usually do), or for a second at most. Stats.Stalls counts them.
//
// A node that joins fetches the current windows from a donor (the
// cluster's snapshot sync): every node's counts and the run-time rates.
// Without it, it would believe the window empty and overshoot
// (TestSimJoin).
//
// Partitions. A node cannot tell a dead node from one behind a partition,
// so Config.PartitionPolicy decides what a limit holds on a node that
// sees only part of the limit's nodes:
//
//   - split (default): the visible share of the nodes, each side of a
//     partition holding its part (2 of 3 nodes: 2/3 of the limit). The
//     platform never exceeds the limit, whatever the cut. The price: a
//     dead node's share is lost until it returns or the operator removes
//     it from the cluster (then Forget gives it back), so one of three
//     nodes down means two thirds of the limit.
//   - full: every side holds the whole limit. A dead node costs nothing,
//     but a partition into k sides admits up to k times the limit.
//
// Choose split when the limit protects something that must not be
// exceeded (a carrier's CPS contract, a licence); full when refusing
// calls is worse than exceeding the limit for the length of a partition.
//
// # Keys
//
// Keyed limits can see unbounded keys (a flood from many source IPs).
// Memory is bounded: at most MaxKeys keys per keyed limit, the least
// recently used dropped first, and keys idle for KeyIdle dropped. Keys
// are never metric labels; Limiter.Top lists the busiest.
//
// # Layout
//
// Limiter is the pure core: no goroutines, an injected clock, input
// through Check, Apply, NodeUp and NodeDown, output from Flush. Service is
// the shell on a cluster node: it registers the "cps" capability, runs the
// flush ticker, follows membership and exports the metrics. The
// simulation (sim_test.go) runs up to nine limiters in one goroutine on a
// virtual clock with per-message delay, clock skew, deaths and
// partitions.
package cps
