package geo

import (
	"context"
	"slices"
	"testing"
	"time"
	"unsafe"

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

// The record slabs fill their allocator size class: a field added to a
// record type moves it to a bigger class (up to a quarter more memory per
// replica) unless the slab's count is tuned again.
func TestSlabsFillSizeClasses(t *testing.T) {
	// Go's size classes from 2 KiB to 8 KiB (runtime sizeclasses.go).
	classes := []uintptr{2048, 2304, 2688, 3072, 3200, 3456, 4096, 4864, 5376, 6144, 6528, 6784, 6912, 8192}
	const header = 8 // the allocator's type header of an object with pointers
	for _, c := range []struct {
		name       string
		size, want uintptr
		n          int
	}{
		{"brec", unsafe.Sizeof(brec{}), 104, allocBindBlock},
		{"aorState", unsafe.Sizeof(aorState{}), 72, allocStateBlock},
		{"mrec", unsafe.Sizeof(mrec{}), 88, allocMetaBlock},
	} {
		if c.size != c.want {
			t.Errorf("%s is %d bytes, was %d: check its slab count", c.name, c.size, c.want)
			continue
		}
		used := c.size*uintptr(c.n) + header
		i := slices.IndexFunc(classes, func(cl uintptr) bool { return cl >= used })
		if i < 0 {
			t.Errorf("%s slab of %d: %d bytes, past the classes listed", c.name, c.n, used)
			continue
		}
		if waste := classes[i] - used; waste >= c.size {
			t.Errorf("%s slab of %d: %d bytes in class %d, %d wasted: room for another record", c.name, c.n, used, classes[i], waste)
		}
	}
}
