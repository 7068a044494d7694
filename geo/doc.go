// Package geo is the distributed user location in the "user facing"
// model: a binding lives on the node that received its REGISTER (its home)
// and on the other nodes of the home's region (its HA partners), and small
// AoR→home metadata lives on every node of every region. There is no
// external database: both are cluster capabilities, synced to joining
// nodes and repaired by anti-entropy. (OpenSIPS's federation mode writes
// AoR→home rows to a NoSQL store only when an AoR is created and never
// republishes them after an outage, issue #1749.)
//
// # Data and merge rule
//
// A binding record is identified by (AoR, home, binding key); a metadata
// entry by (AoR, home) and says whether the home holds live bindings for
// the AoR, until when (the latest absolute expiry), and which UAs it holds
// or held ("claims": a hash of the RFC 5626 instance, or of the Call-ID
// without one, with the version the home had it at). Every record carries
// a version, and everywhere the newest registration wins, by (registration
// time, CSeq, node id); a home stamps its writes with a per-AoR time that
// never goes backwards. Expiry is absolute, so every node drops a binding
// at the same instant without a message. A removal leaves a tombstone
// until the removed binding (or any older version of it seen) would have
// expired, so a stale copy arriving late cannot win.
//
// # Capabilities
//
//   - geo.meta: every metadata entry, on every node. NeedsSync (from any
//     synced node; the cluster's seed rule applies), anti-entropy over
//     Buckets digest buckets.
//   - geo.bind.<region> (geo.bind with replicate_contacts_cross_region):
//     the region's binding records, on every node of the region. NeedsSync
//     with Donors restricted to the region and SnapshotFor sending only
//     the asking node's region; anti-entropy only ever compares nodes of
//     the same region, because only they register the capability.
//
// A change at the home goes to its region in one geo.bind update (the
// binding records and the AoR's whole metadata row) and to the other
// regions in one geo.meta update (the metadata row only: contacts do not
// cross regions). Updates are batched (group commit: while a batch waits
// for its ack the next one fills, for at most batch_delay).
//
// # What Save's nil means (the guarantee)
//
// Save applies the REGISTER to the bindings homed on this node and returns
// nil when the change is on the home and either
//
//   - replicated: another node of the home's region merged it and
//     acknowledged it; or, when that did not happen,
//   - degraded: no partner acknowledged within ack_timeout (a partner
//     dying, or cut off without the cluster having noticed yet), or
//   - alone: no partner was reachable (a single-node region, a partner
//     known down).
//
// anyedge_geo_save_acks_total{result} counts each outcome. A replicated
// change survives the loss of any one node of its region: as long as a
// region never has two nodes down at once, and a node goes down only after
// its region has been up, synced and connected for a while (one
// anti-entropy round; the simulation uses 3 s), an acknowledged
// registration is found by a lookup from every node (locally, as a replica
// served for a dead home, or through one relay) until it expires or is
// replaced, and an acknowledged unregister is never undone. A degraded or
// alone change lives on the home only: it is kept as long as the home
// lives and reaches the partners by anti-entropy once they are back, but it
// dies with the home if the home crashes first. Waiting for a partner costs
// a REGISTER one LAN round trip of latency, not throughput (one ack per
// batch); not waiting at all (what Kamailio and OpenSIPS do) loses
// acknowledged REGISTERs whenever the home dies within the replication
// window, which a silent partition stretches to the failure detection
// time. Waiting without a bound would make one dead partner stop every
// REGISTER, hence ack_timeout. TestSimulation checks exactly this,
// under random load, crashes, partitions and heals.
//
// SaveDeferred gives the same guarantee without a goroutine waiting: it
// returns at once and calls back when Save would have returned. The
// registrar sends the 200 from that callback, so on a busy node the
// response leaves as soon as the partner's ack is read, instead of after
// its handler goroutine has queued for the CPU a second time.
//
// # Lookups
//
// Lookup / LookupFrom (a request that entered the platform here) return,
// in order: the bindings homed here, the bindings of down homes this node
// serves because it owns their region's sharing tag (both with Home = this
// node: deliver them directly), then one relay entry per node to relay to
// (Home = that node, Contact = its SIP URI), the caller's region first,
// then by RTT. A home that is down, or up but not yet synced, is replaced
// by the owner of its tag (TagPrefix+region), which serves its replicas.
// LookupLocal is for a request another node relayed here: it never returns
// a relay, so a request is relayed at most once and cannot loop.
// LookupRoutes gives the same with each route's kind, node, RTT and hops.
//
// # Moving home
//
// A UA that registers at another node makes that node its home; the new
// home's metadata claims the UA, and every node of the old home's region
// retires the old binding (by instance, or by Call-ID without one) once
// it holds that claim and move_grace has passed since the new
// registration, all at the same version, without a message. The old home
// keeps answering during the grace, and a node that learns the old home's
// entry died learns the new one in the same message, so a lookup never
// finds nothing for a registered user while metadata takes less than
// move_grace to spread (TestMoveHome* check this after every delivered
// message).
//
// # Limits
//
//   - Save's result lists the bindings homed on this node only, and the
//     registrar's max_contacts applies per home node.
//   - "Contact: *" and an unregister remove the bindings the receiving
//     node holds for the UA, and retire its older bindings elsewhere; a
//     node that holds nothing for the UA has nothing to remove (the other
//     home's binding then expires).
//   - A UA without an instance that registers a new contact with the same
//     Call-ID at the same node keeps both bindings (RFC 3261 §10.3), until
//     it registers elsewhere or they expire.
//   - Times come from the home's clock (nodes are NTP-synced).
//
// # Wiring
//
// The daemon builds the cluster node, then New(cfg.Geo, node), registers
// Capabilities() on the node, subscribes HandleEvent, starts the node and
// runs Run; the SIP server uses the Service as its location.Store.
// cluster.tags must declare, on every node, {name: home-<R>, region: <R>}
// for every region R (CheckClusterTags checks what one file can).
package geo
