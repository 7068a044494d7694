package geo

import (
	"context"
	"testing"
	"time"

	"github.com/anyedge/anyedge/edge/location"
)

func TestRecAllocKey(t *testing.T) {
	var a recAlloc
	for _, b := range []location.Binding{
		{Contact: "sip:a@198.18.0.1"},
		{Contact: "sip:a@198.18.0.1", InstanceID: "<urn:uuid:1>"},
		{Contact: "sip:a@198.18.0.1", InstanceID: "<urn:uuid:1>", RegID: 1},
		{Contact: "sip:a@198.18.0.1", InstanceID: "<urn:uuid:1>", RegID: 10},
		{Contact: "sip:a@198.18.0.1", InstanceID: "<urn:uuid:1>", RegID: 2147483647},
	} {
		if got, want := a.key(b.InstanceID, b.RegID, b.Contact), b.Key(); got != want {
			t.Errorf("key %q, want %q", got, want)
		}
	}
	big := string(make([]byte, allocStrBlock))
	if a.str(big) != big || a.str("") != "" {
		t.Error("str does not copy")
	}
}

// TestMergeOwnsItsRecords: merged records keep nothing of the caller's
// buffers (the cluster reuses them), and a binding that moves out of its
// first slot leaves nothing behind in the slab.
func TestMergeOwnsItsRecords(t *testing.T) {
	src, err := New(Config{}, newFake(1, map[uint32]string{1: "eu", 2: "eu"}))
	if err != nil {
		t.Fatal(err)
	}
	src.inline = true
	now := time.Now()
	ctx := context.Background()
	for i := range 50 {
		if _, err := src.Save(ctx, realistic(i, now)); err != nil {
			t.Fatal(err)
		}
	}
	dst, err := New(Config{}, newFake(2, map[uint32]string{1: "eu", 2: "eu"}))
	if err != nil {
		t.Fatal(err)
	}
	dst.inline = true
	for _, kind := range []uint8{recMeta, recBind} {
		capName := MetaCap
		if kind == recBind {
			capName = dst.bindCap
		}
		for _, c := range snapshotChunks(src, kind) {
			dst.apply(capName, c)
			for _, r := range c {
				clear(r) // the frame's buffer, reused
			}
		}
	}
	for i := range 50 {
		want, _ := src.Lookup(ctx, realistic(i, now).AoR)
		if len(want) != 1 {
			t.Fatalf("source lost AoR %d", i)
		}
		sh := dst.st.shard(want[0].AoR)
		sh.mu.Lock()
		st := sh.state(want[0].AoR, false)
		if st == nil || len(st.binds) != 1 || len(st.metas) != 1 {
			sh.mu.Unlock()
			t.Fatalf("AoR %d not synced: %+v", i, st)
		}
		got := st.binds[0].binding(st.aor)
		if st.metas[0].region != "eu" || got.Contact != want[0].Contact || got.InstanceID != want[0].InstanceID || got.Received != want[0].Received {
			t.Errorf("AoR %d: got %+v (region %q), want %+v", i, got, st.metas[0].region, want[0])
		}
		// A second binding moves the first out of its slot.
		old := st.binds[:1]
		r := st.binds[0]
		r.key = "c:other"
		dst.st.setBind(sh, st, -1, r)
		if len(st.binds) != 2 || old[0].enc != "" || old[0].key != "" {
			t.Errorf("AoR %d: the slot left behind still holds %q", i, old[0].key)
		}
		sh.mu.Unlock()
	}
}
