package core

import (
	"flag"
	"fmt"
	"math/rand"
	"os"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"github.com/anyedge/anyedge/cluster/wire"
)

var updateCorpus = flag.Bool("update-corpus", false, "rewrite testdata/fuzz/FuzzRecv seed files")

// fixtureReq is the request id of the fixture's sync from node 2 (node 1's
// first request), fixtureStream the id of the snapshot it streams to 3.
const (
	fixtureReq    = uint64(1)<<32 | 1
	fixtureStream = uint64(3)<<32 | 77
)

// recvFixture is a core with something for every system message to act
// on: neighbour 2 is its donor for "log" (a sync in progress, request
// fixtureReq), neighbour 3 is fetching a "kv" snapshot from it (stream
// fixtureStream), kv has Digest and Bucket for anti-entropy, there is a tag
// for overrides and a known down node 4 to remove.
func recvFixture() *Core {
	now := labEpoch
	cfg := syncConfig(1, "r1")
	cfg.Tags = []TagSpec{{Name: "vip", Region: "r1"}}
	cfg.Known = []NodeMeta{peerMeta(4, "r1")}
	c := New(cfg, now)
	store := newKV()
	for i := 0; i < 50; i++ {
		store.merge(kvRec{Key: fmt.Sprintf("k%d", i), Val: uint64(i), Ver: 1, Node: 1})
	}
	kvc := store.capability()
	kvc.NeedsSync = false
	c.Register(kvc)
	c.Register((&logCap{name: "log"}).capability(true))
	neighbour(c, now, peerMeta(2, "r1", "kv", "log"), 10, 1, 3)
	neighbour(c, now, peerMeta(3, "r1", "kv"), 10, 1, 2)
	c.Tick(now)
	c.Recv(now, 3, syncRequest(fixtureStream, "kv", 3, 1))
	c.Ready()
	return c
}

// validBodies are well-formed bodies of every system message the core
// takes, aimed at the fixture's state.
func validBodies() map[wire.MsgType][]byte {
	w := func(fn func(w *wire.Writer)) []byte { var w wire.Writer; fn(&w); return w.B }
	rec := kvRec{Key: "k1", Val: 99, Ver: 5, Node: 2}.encode()
	return map[wire.MsgType][]byte{
		wire.MsgPing:        w(func(w *wire.Writer) { w.I64(labEpoch.UnixNano()) }),
		wire.MsgPong:        w(func(w *wire.Writer) { w.I64(labEpoch.Add(-time.Millisecond).UnixNano()) }),
		wire.MsgLSA:         lsaFrame(peerMeta(5, "r1", "kv"), 10, 2, 3).Body,
		wire.MsgRemoveNode:  w(func(w *wire.Writer) { w.U32(4); w.U64(4000) }),
		wire.MsgTagOverride: override{Tag: "vip", Node: 2, Version: 5, Issuer: 2}.encode(),
		wire.MsgSyncRequest: w(func(w *wire.Writer) { w.U64(2<<32 | 9); w.String("kv") }),
		wire.MsgSyncChunk: w(func(w *wire.Writer) {
			w.U64(fixtureReq)
			w.U32(1)
			w.Bool(false)
			w.U32(2)
			w.Bytes([]byte("rec-a"))
			w.Bytes([]byte("rec-b"))
		}),
		wire.MsgSyncAck:   w(func(w *wire.Writer) { w.U64(fixtureStream); w.U32(1) }),
		wire.MsgSyncAbort: w(func(w *wire.Writer) { w.U64(fixtureReq) }),
		wire.MsgDigest: w(func(w *wire.Writer) {
			w.String("kv")
			w.U32(kvBuckets)
			for i := 0; i < kvBuckets; i++ {
				w.U64(uint64(i))
			}
		}),
		wire.MsgDelta:        w(func(w *wire.Writer) { w.String("kv"); w.U32(1); w.Bytes(rec) }),
		wire.MsgDeltaRequest: w(func(w *wire.Writer) { w.String("kv"); w.U32(2); w.U32(0); w.U32(1 << 30) }),
		msgTagClaim:          claim{Tag: "vip", Node: 2, Inc: 1, Seq: 5, Active: true}.encode(),
	}
}

// recvOne feeds one system frame to the fixture and checks what comes out.
func recvOne(t testing.TB, c *Core, at time.Time, from NodeID, typ wire.MsgType, body []byte) {
	t.Helper()
	c.Recv(at, from, &wire.Frame{Version: wire.Version, Type: typ, Src: from, TTL: wire.DefaultTTL, Body: body})
	c.Tick(at.Add(10 * time.Millisecond))
	for _, s := range c.Ready().Sends {
		if _, err := wire.AppendFrame(nil, s.Frame); err != nil {
			t.Fatalf("type %d body %x: core produced an unencodable frame: %v", typ, body, err)
		}
	}
}

func TestRecvFixture(t *testing.T) {
	c := recvFixture()
	if ci := capInfo(c, "log"); ci.State != Syncing || ci.Donor != 2 || c.caps["log"].req != fixtureReq {
		t.Fatalf("log %+v req %x, want syncing from 2 with request %x", ci, c.caps["log"].req, fixtureReq)
	}
	if _, ok := c.streams[fixtureStream]; !ok {
		t.Fatal("no stream to node 3")
	}
	// Every valid body is taken without complaint.
	for typ, body := range validBodies() {
		c := recvFixture()
		recvOne(t, c, labEpoch, 2, typ, body)
		if n := c.Stats().BadMessages; n != 0 {
			t.Fatalf("valid type %d counted %d bad messages", typ, n)
		}
	}
}

func TestRecvEmptyBodyCountsBadMessage(t *testing.T) {
	for typ := wire.MsgType(0); typ <= 20; typ++ {
		want := uint64(0)
		if typ >= wire.MsgPong && typ <= wire.MsgDeltaRequest || typ == msgTagClaim {
			want = 1 // every system message but ping (echoed as is) has fields
		}
		c := recvFixture()
		recvOne(t, c, labEpoch, 2, typ, nil)
		if got := c.Stats().BadMessages; got != want {
			t.Errorf("type %d with an empty body: BadMessages %d, want %d", typ, got, want)
		}
	}
}

// garbage makes a hostile body: random bytes, or a valid body cut short,
// corrupted or extended.
func garbage(rnd *rand.Rand, valid []byte) []byte {
	k := rnd.Intn(4)
	if len(valid) == 0 {
		k = 0
	}
	switch k {
	case 0:
		b := make([]byte, rnd.Intn(100))
		rnd.Read(b)
		return b
	case 1:
		return valid[:rnd.Intn(len(valid))]
	case 2:
		b := append([]byte(nil), valid...)
		for i := 1 + rnd.Intn(3); i > 0; i-- {
			b[rnd.Intn(len(b))] = byte(rnd.Intn(256))
		}
		return b
	default:
		b := append([]byte(nil), valid...)
		tail := make([]byte, 1+rnd.Intn(20))
		rnd.Read(tail)
		return append(b, tail...)
	}
}

func TestRecvGarbageNeverPanics(t *testing.T) {
	rnd := rand.New(rand.NewSource(1))
	valid := validBodies()
	for typ := wire.MsgType(0); typ <= 20; typ++ {
		// One core takes all of a type's garbage, so damage done by one
		// frame meets the next.
		c := recvFixture()
		at := labEpoch
		for i := 0; i < 500; i++ {
			from := NodeID(2 + rnd.Intn(2))
			at = at.Add(10 * time.Millisecond)
			c.Heard(2, at)
			c.Heard(3, at)
			recvOne(t, c, at, from, typ, garbage(rnd, valid[typ]))
		}
		// Ping bodies are echoed unread; types the core does not take are
		// ignored, not counted.
		_, taken := valid[typ]
		if wantBad, bad := taken && typ != wire.MsgPing, c.Stats().BadMessages; wantBad != (bad > 0) {
			t.Errorf("type %d: %d bad messages counted from 500 garbage bodies", typ, bad)
		}
	}
}

// recvSeeds are the named seeds checked into testdata/fuzz/FuzzRecv.
func recvSeeds() map[string]struct {
	typ      wire.MsgType
	viaThree bool
	body     []byte
} {
	type seed = struct {
		typ      wire.MsgType
		viaThree bool
		body     []byte
	}
	names := map[wire.MsgType]string{
		wire.MsgPing: "ping", wire.MsgPong: "pong", wire.MsgLSA: "lsa", wire.MsgRemoveNode: "remove_node",
		wire.MsgTagOverride: "tag_override", wire.MsgSyncRequest: "sync_request", wire.MsgSyncChunk: "sync_chunk",
		wire.MsgSyncAck: "sync_ack", wire.MsgSyncAbort: "sync_abort", wire.MsgDigest: "digest",
		wire.MsgDelta: "delta", wire.MsgDeltaRequest: "delta_request", msgTagClaim: "tag_claim",
	}
	out := map[string]seed{}
	for typ, body := range validBodies() {
		out[names[typ]] = seed{typ, typ == wire.MsgSyncAck, body}
	}
	out["unknown_type"] = seed{99, false, []byte("from a newer peer")}
	out["empty_lsa"] = seed{wire.MsgLSA, false, nil}
	return out
}

func corpusFile(typ wire.MsgType, viaThree bool, body []byte) string {
	return fmt.Sprintf("go test fuzz v1\nuint16(%d)\nbool(%v)\n[]byte(%q)\n", uint16(typ), viaThree, body)
}

// TestRecvSeedCorpus keeps the checked-in seeds in step with recvSeeds.
// Regenerate with: go test ./cluster/core -run TestRecvSeedCorpus -update-corpus
func TestRecvSeedCorpus(t *testing.T) {
	dir := filepath.Join("testdata", "fuzz", "FuzzRecv")
	for name, s := range recvSeeds() {
		path := filepath.Join(dir, name)
		want := corpusFile(s.typ, s.viaThree, s.body)
		if *updateCorpus {
			if err := os.MkdirAll(dir, 0o755); err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(path, []byte(want), 0o644); err != nil {
				t.Fatal(err)
			}
			continue
		}
		got, err := os.ReadFile(path)
		if err != nil {
			t.Fatalf("%v (run with -update-corpus)", err)
		}
		if string(got) != want {
			t.Errorf("%s is stale (run with -update-corpus)", path)
		}
	}
}

// FuzzRecv feeds one system frame from neighbour 2 or 3 to a core that has
// a sync, a snapshot stream, anti-entropy and a tag going. It must never
// panic, and whatever it sends in answer must be encodable.
func FuzzRecv(f *testing.F) {
	f.Fuzz(func(t *testing.T, typ uint16, viaThree bool, body []byte) {
		from := NodeID(2)
		if viaThree {
			from = 3
		}
		c := recvFixture()
		recvOne(t, c, labEpoch, from, wire.MsgType(typ), body)
		recvOne(t, c, labEpoch.Add(time.Second), from, wire.MsgType(typ), body)
	})
}

func TestLSAOfNodeZeroIsRefused(t *testing.T) {
	now := labEpoch
	cfg := labConfig(1, "r1")
	cfg.Tags = []TagSpec{{Name: "vip", Region: "r1"}}
	a := New(cfg, now)
	neighbour(a, now, peerMeta(2, "r1"), 10, 1)
	a.Recv(now, 2, lsaFrame(peerMeta(0, "r1"), 10, 2))
	if _, ok := a.Meta(0); ok {
		t.Fatal("node 0 is in the database")
	}
	if elig := tagOf(a, "vip").Eligible; slices.Contains(elig, 0) {
		t.Fatalf("node 0 is eligible for a tag: %v", elig)
	}
	if a.Stats().BadMessages != 1 {
		t.Fatalf("BadMessages %d, want 1", a.Stats().BadMessages)
	}
}

// The draining flag (bit 2) survives an LSA round trip and leaves the
// older flags alone.
func TestMetaDrainingFlagRoundTrip(t *testing.T) {
	for _, m := range []NodeMeta{
		{ID: 1, Region: "r1", Draining: true},
		{ID: 2, Region: "r1", Drained: true, Seed: true},
		{ID: 3, Region: "r1", Drained: true, Draining: true},
	} {
		var w wire.Writer
		m.encode(&w)
		r := wire.Reader{B: w.B}
		got := decodeMeta(&r)
		if r.Err != nil || got.Draining != m.Draining || got.Drained != m.Drained || got.Seed != m.Seed {
			t.Fatalf("%+v came back as %+v (%v)", m, got, r.Err)
		}
	}
}
