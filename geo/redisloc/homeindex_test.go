package redisloc

import (
	"fmt"
	"sync"
	"testing"
)

// TestHomeIndexShards: what Saves note comes out of take once, the latest
// note of an AoR wins, and a batch put back after a failed flush does not
// overwrite a newer note.
func TestHomeIndexShards(t *testing.T) {
	var h homeIndex
	h.init()
	var wg sync.WaitGroup
	for g := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range 500 {
				h.note(fmt.Sprintf("g%d-%d", g, i), homeEntry{int64(i + 1), 0})
			}
		}()
	}
	wg.Wait()
	batch := h.take()
	if len(batch) != 8*500 {
		t.Fatalf("take returned %d entries, want %d", len(batch), 8*500)
	}
	if batch["g3-41"].home != 42 {
		t.Fatalf("g3-41 = %v, want 42", batch["g3-41"])
	}
	if n := h.len(); n != 0 {
		t.Fatalf("%d entries left after take", n)
	}
	if b := h.take(); len(b) != 0 {
		t.Fatalf("second take returned %d entries", len(b))
	}

	h.note("g0-0", homeEntry{}) // unregistered after the batch was taken
	h.note("x", homeEntry{7, 7})
	h.note("x", homeEntry{9, 0}) // the latest wins
	h.putBack(batch)
	again := h.take()
	if len(again) != 8*500+1 {
		t.Fatalf("after putBack: %d entries, want %d", len(again), 8*500+1)
	}
	if v, ok := again["g0-0"]; !ok || v != (homeEntry{}) {
		t.Fatalf("g0-0 = %v, %v: the put-back batch overwrote a newer note", v, ok)
	}
	if again["x"] != (homeEntry{9, 0}) || again["g7-499"].home != 500 {
		t.Fatalf("x = %v, g7-499 = %v", again["x"], again["g7-499"])
	}
}
