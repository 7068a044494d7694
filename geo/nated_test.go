package geo

import "testing"

// The per-shard NATed count follows every way a binding record changes, so
// that the keepalive listing can skip shards without NATed bindings.
func TestShardNATedCount(t *testing.T) {
	s := newStore(1, 16, 0)
	const aor = "sip:n@example.com"
	sh := s.shard(aor)
	st := sh.state(aor, true)
	s.setBind(sh, st, -1, brec{home: 1, key: "a", exp: 100, nated: true})
	s.setBind(sh, st, -1, brec{home: 1, key: "b", exp: 100})
	if sh.nated != 1 {
		t.Fatalf("after one NATed and one direct binding: %d", sh.nated)
	}
	s.setBind(sh, st, 1, brec{home: 1, key: "b", exp: 200, nated: true}) // now behind a NAT
	if sh.nated != 2 {
		t.Fatalf("after the direct one turned NATed: %d", sh.nated)
	}
	s.setBind(sh, st, 0, kill(st.binds[0])) // removed: a tombstone is never pinged
	if sh.nated != 1 {
		t.Fatalf("after a tombstone replaced a NATed binding: %d", sh.nated)
	}
	s.delBind(sh, st, 1)
	if sh.nated != 0 {
		t.Fatalf("after the last NATed binding was deleted: %d", sh.nated)
	}
	for i := range s.shards {
		if o := &s.shards[i]; o != sh && o.nated != 0 {
			t.Fatalf("shard %d counts %d", i, o.nated)
		}
	}
}
