// Package redisloc is the DB-driven user location: a location.Store on a
// Redis Cluster shared by every edge node of a site (OpenSIPS calls this
// model full-sharing-cachedb). Any node serves any user from the database;
// the node that faces a UA stays the one that reaches it.
//
// # Data model
//
// Each AoR has two keys with the AoR as hash tag, so they share one slot
// and every AoR operation is a single-slot script:
//
//	al:{sip:alice@example.com}:b  hash: binding key → binding (short-key JSON)
//	al:{sip:alice@example.com}:x  sorted set: binding key → expiry (unix ms)
//
// Save runs location.Apply's rules in a Lua script (EVALSHA, EVAL on
// NOSCRIPT): one round trip per REGISTER, atomic for the AoR, so
// concurrent REGISTERs of one AoR through different nodes never lose a
// binding. Both keys get a relative TTL (PEXPIRE) of the latest binding's
// expiry, so Redis itself deletes an AoR whose bindings all expired; a
// binding that expires before its AoR's others is hidden by every lookup
// and pruned by the next save or by the reaper. Nothing needs Redis 7.4's
// per-field expiry: Redis 7.0 (Debian 12) is enough.
//
// # Home node, NAT keepalives and the reaper
//
// Each binding stores its Home: the id of the node whose SIP listener
// received the REGISTER (the NAT pinhole is towards that node). A node
// routing to a binding homed elsewhere relays the request to the home's
// SIP address, as in the user-facing model (edge Hooks.HomeAddr).
//
// Each node keeps a home index, al:{node-N}:home, a sorted set of the AoRs
// with a binding homed on it, scored by their earliest expiry. Saves update
// it in batches (flushed every reap_interval, so a REGISTER stays one
// round trip); the reaper reads only the due part of its own index
// (ZRANGEBYSCORE), never the keyspace. Its NAT part, al:{node-N}:nat,
// holds only the AoRs with a NATed binding homed on the node (same slot,
// flushed in the same pipeline). Keepalives follow the same rule: the
// edge's pinger lists the node's NATed bindings through RangeNATed (the
// NAT index, so also after a restart) once a second and pings only those
// whose Home is itself; AoRs without a NATed binding are never read for
// it. Every binding has
// exactly one home, so no binding is pinged twice and none is forgotten
// while its home runs, and it is the node that holds the pinhole that
// pings. OpenSIPS's split by AoR hash over the nodes spreads the pinging
// evenly but makes a node ping UAs whose NAT binding points at another
// node (the ping opens nothing, or goes out from the wrong address), and
// it reshuffles every AoR when a node joins or leaves. When a node dies,
// its UAs re-register through another node (anycast) and become homed
// there.
//
// # Failure
//
// Every operation is bounded by Config.Timeout. An unreachable cluster
// makes Save and Lookup fail with location.ErrUnavailable (the registrar
// answers 500 with Retry-After, the proxy 503 with Retry-After) and Ready
// false after two failed health checks (the daemon withdraws the node's
// anycast routes). A check that only timed out while saves and lookups
// were being answered does not count: a busy node must not withdraw
// itself. A refused connection makes the client reload the slot map at
// once, so a promoted replica takes writes as soon as Redis has promoted
// it. Redis's persistence (AOF) decides what survives a
// restart of the whole cluster: with appendfsync everysec, a write is in
// the file (the kernel's page cache) before Redis replies, so a killed
// redis-server loses nothing acknowledged; a host crash can lose up to one
// second.
//
// Redis Cluster replication is asynchronous. When a master dies, its
// replica is promoted with whatever it had received: REGISTERs answered
// 200 in the last moments before the failure can be lost, and the UA
// only learns at its next refresh. Config.WaitReplicas makes each save
// wait (WAIT) until that many replicas hold it before answering 200; this
// narrows the loss to saves whose WAIT timed out (counted in
// anyedge_location_redis_wait_short_total), but it is not a consensus
// protocol: Redis documents that a failover can still lose writes
// acknowledged by WAIT in rare partition cases. Measured figures are in
// docs/BENCHMARKS.md.
package redisloc
