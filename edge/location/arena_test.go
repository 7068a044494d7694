package location

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"
)

func arenaBytes(m *Memory) int64 { return m.Stats().ArenaBytes }

func TestArenaClasses(t *testing.T) {
	if len(classSize) > 255 || classSize[len(classSize)-1] != maxBlock {
		t.Fatalf("%d classes, largest %d", len(classSize), classSize[len(classSize)-1])
	}
	for n := 1; n <= maxBlock; n++ {
		c := classOf[(n+blockAlign-1)/blockAlign]
		if size := classSize[c]; size < n || size%blockAlign != 0 || (c > 0 && classSize[c-1] >= n) || size-n > n/8+blockAlign {
			t.Fatalf("size %d: class %d of %d bytes", n, c, size)
		}
	}
	var a arena
	defer a.unmap()
	var refs []ref
	sizes := []int{1, 16, 17, 200, 4000, maxBlock, maxBlock + 1, 100_000}
	for _, n := range sizes {
		r, b, err := a.alloc(n)
		if err != nil {
			t.Fatal(err)
		}
		if len(b) < n || len(a.bytes(r)) != len(b) {
			t.Fatalf("alloc(%d): %d bytes, bytes(ref) %d", n, len(b), len(a.bytes(r)))
		}
		for i := 1; i < n; i++ {
			b[i] = byte(n) // must not overlap another block
		}
		refs = append(refs, r)
	}
	for i, r := range refs {
		b := a.bytes(r)
		if n := sizes[i]; n > 1 && (b[n-1] != byte(n) || b[1] != byte(n)) {
			t.Fatalf("block %d overwritten", i)
		}
	}
	carved := a.carved
	for _, r := range refs {
		a.release(r)
	}
	if a.inUse != 0 || a.lgUse != 0 {
		t.Fatalf("in use after freeing all: %d, large %d", a.inUse, a.lgUse)
	}
	for _, n := range sizes {
		if _, _, err := a.alloc(n); err != nil {
			t.Fatal(err)
		}
	}
	if a.carved != carved || len(a.large) != 2 {
		t.Fatalf("reallocating the same sizes carved %d more bytes, %d large slots", a.carved-carved, len(a.large))
	}
}

func TestIndexInsertRemove(t *testing.T) {
	var x index
	ref := map[uint32]uint32{} // slot → hash
	// Few distinct hashes, so that probe chains are long and wrap.
	for slot := uint32(1); slot <= 5000; slot++ {
		h := slot * 2654435761 % 64
		x.insert(h, slot)
		ref[slot] = h
		if slot%3 == 0 {
			victim := slot - 1 - slot%7
			if hv, ok := ref[victim]; ok {
				x.remove(hv, victim)
				delete(ref, victim)
			}
		}
	}
	check := func() {
		t.Helper()
		if x.n != len(ref) {
			t.Fatalf("n %d, want %d", x.n, len(ref))
		}
		mask := uint32(len(x.ents) - 1)
		for slot, h := range ref {
			for i := h & mask; ; i = (i + 1) & mask {
				if x.ents[i].slot == slot {
					break
				}
				if x.ents[i].slot == 0 {
					t.Fatalf("slot %d (hash %d) not reachable", slot, h)
				}
			}
		}
	}
	check()
	for slot, h := range ref {
		if slot%2 == 0 {
			x.remove(h, slot)
			delete(ref, slot)
		}
	}
	check()
	for slot, h := range ref {
		x.remove(h, slot)
		delete(ref, slot)
	}
	check()
	if len(x.ents) > 4*minIndex {
		t.Fatalf("index of %d entries after removing everything", len(x.ents))
	}
}

// TestMemoryResultsOwnTheirMemory: what Lookup, Range, Save and the hooks
// return must not alias arena bytes, which are reused once the AoR is
// rewritten. Churn every AoR many times after taking the results and
// check that none of them changed.
func TestMemoryResultsOwnTheirMemory(t *testing.T) {
	ctx := context.Background()
	clk := &fakeClock{t: t0}
	var hooked [][]Binding
	var expired []Binding
	m := NewMemory(WithClock(clk.Now),
		OnChange(func(_ string, bs []Binding) { hooked = append(hooked, bs) }),
		OnExpire(func(b Binding) { expired = append(expired, b) }))
	path := []string{"<sip:p1.example.com;lr>", "<sip:p2.example.com;lr>"}
	save := func(i, round int, exp time.Duration) *SaveResult {
		req := reg(fmt.Sprintf("sip:u%d@x", i), fmt.Sprintf("sip:u%d@192.0.2.%d:%d", i, round%250, 5060+round), fmt.Sprintf("cid-%d-%d", i, round), uint32(round+1), t0, exp)
		req.Contacts[0].Path = path
		req.Contacts[0].Received = fmt.Sprintf("198.51.100.%d:%d", round%250, 4000+i)
		res, err := m.Save(ctx, req)
		if err != nil {
			t.Fatal(err)
		}
		return res
	}
	var got [][]Binding
	for i := range 50 {
		got = append(got, save(i, 0, time.Hour).Bindings)
	}
	for i := range 50 {
		bs, _ := m.Lookup(ctx, fmt.Sprintf("sip:u%d@x", i))
		got = append(got, bs)
	}
	m.Range(func(_ string, bs []Binding) bool { got = append(got, bs); return true })
	got = append(got, hooked...)
	want := make([][]Binding, len(got))
	for i, bs := range got {
		for _, b := range bs {
			b.AoR = strings.Clone(b.AoR)
			b.Contact, b.CallID, b.Received = strings.Clone(b.Contact), strings.Clone(b.CallID), strings.Clone(b.Received)
			b.Path = slices.Clone(b.Path)
			want[i] = append(want[i], b)
		}
	}
	// Rewrite, remove and re-add every AoR many times, with bindings of
	// other lengths, so that their old blocks are reused by other data.
	for round := 1; round < 40; round++ {
		for i := range 50 {
			save(i, round, time.Minute)
			if round%5 == 0 {
				if err := m.Remove(ctx, fmt.Sprintf("sip:u%d@x", i), fmt.Sprintf("c:sip:u%d@192.0.2.%d:%d", i, round%250, 5060+round)); err != nil {
					t.Fatal(err)
				}
			}
		}
		if round%10 == 0 {
			m.Expire(t0.Add(time.Minute))
		}
	}
	for i := range got {
		if !slices.EqualFunc(got[i], want[i], bindingEqual) {
			t.Fatalf("result %d changed under churn:\n got %+v\nwant %+v", i, got[i], want[i])
		}
	}
	if len(expired) == 0 {
		t.Fatal("nothing expired: the test did not churn through the reaper")
	}
}

// TestMemoryArenaChurnFlat: a steady set of 10,000 AoRs registered,
// refreshed, unregistered and expired over and over (1,000,000 operations;
// 100,000 under -race) reuses the arena's free blocks: the arena's size
// after the churn is what the first rounds needed.
func TestMemoryArenaChurnFlat(t *testing.T) {
	if testing.Short() {
		t.Skip("1M operations: skipped with -short")
	}
	ops := 1_000_000
	if raceEnabled {
		ops = 100_000
	}
	const set = 10_000
	ctx := context.Background()
	clk := &fakeClock{t: t0}
	m := NewMemory(WithClock(clk.Now))
	var peak int64
	for op := range ops {
		i := op % set
		round := op / set
		now := clk.Now()
		aor := fmt.Sprintf("sip:u%d@x", i)
		switch round % 4 {
		case 0, 1: // register or refresh, one or two contacts of varying length
			req := reg(aor, fmt.Sprintf("sip:u%d@192.0.2.%d:%d", i, round%7, 5060+round%11), "c", uint32(round+1), now, time.Duration(30+op%60)*time.Second)
			if round%8 == 1 {
				req.Contacts = append(req.Contacts, Binding{Contact: "sip:second@198.51.100.1", Q: 1000, Expires: now.Add(time.Minute)})
			}
			if _, err := m.Save(ctx, req); err != nil {
				t.Fatal(err)
			}
		case 2: // unregister everything
			if _, err := m.Save(ctx, &SaveRequest{AoR: aor, CallID: "c", CSeq: uint32(round + 1), Now: now, Wildcard: true}); err != nil {
				t.Fatal(err)
			}
		case 3: // register again, then let the reaper have it
			if _, err := m.Save(ctx, reg(aor, "sip:x@192.0.2.9", "c", uint32(round+1), now, time.Second)); err != nil {
				t.Fatal(err)
			}
			if i == set-1 {
				clk.Advance(2 * time.Second)
				m.Expire(clk.Now())
			}
		}
		if op == 8*set {
			peak = m.Stats().ArenaBytes // two full cycles of every shape
		}
	}
	st := m.Stats()
	if st.ArenaBytes > peak+peak/10 {
		t.Fatalf("arena grew under churn: %d bytes after %d rounds, %d after 8", st.ArenaBytes, ops/set, peak)
	}
	if st.ArenaInUse > st.ArenaBytes || (st.AoRs == 0) != (st.ArenaInUse == 0) {
		t.Fatalf("stats %+v", st)
	}
	t.Logf("arena %d bytes (%d in use) for %d AoRs after %d operations", st.ArenaBytes, st.ArenaInUse, st.AoRs, ops)
}

// TestMemoryLargeBinding: a binding with a Path near maxField does not fit
// the arena's classes; it goes to the Go heap and round-trips, and
// removing it frees that memory.
func TestMemoryLargeBinding(t *testing.T) {
	ctx := context.Background()
	m := NewMemory()
	hop := "<sip:" + strings.Repeat("p", 1000) + ".example.com;lr>"
	var path []string
	for len(strings.Join(path, "\x00"))+len(hop)+1 <= maxField {
		path = append(path, hop)
	}
	req := reg("sip:big@x", "sip:big@192.0.2.1", "c", 1, time.Now(), time.Hour)
	req.Contacts[0].Path = path
	if _, err := m.Save(ctx, req); err != nil {
		t.Fatal(err)
	}
	got, _ := m.Lookup(ctx, "sip:big@x")
	if len(got) != 1 || !slices.Equal(got[0].Path, path) {
		t.Fatalf("large binding lost its Path (%d bindings)", len(got))
	}
	if st := m.Stats(); st.LargeBytes < maxField-maxField/10 || st.ArenaInUse != 0 {
		t.Fatalf("stats %+v", st)
	}
	if err := m.Remove(ctx, "sip:big@x", "c:sip:big@192.0.2.1"); err != nil {
		t.Fatal(err)
	}
	if st := m.Stats(); st.LargeBytes != 0 || st.AoRs != 0 {
		t.Fatalf("after remove: %+v", st)
	}
	long := strings.Repeat("a", maxField+1)
	if _, err := m.Save(ctx, reg("sip:"+long, "sip:a@h", "c", 1, time.Now(), time.Hour)); err != ErrInvalid {
		t.Fatalf("oversized AoR: %v", err)
	}
}
