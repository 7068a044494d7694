package geo

import (
	"slices"
	"sync"
	"testing"
	"time"
)

// Each lane applies its records in arrival order while the other lanes go
// on, and wait returns only once every lane is done.
func TestApplyQueueLanes(t *testing.T) {
	var mu sync.Mutex
	applied := map[byte][]byte{} // route -> records' second bytes, in order
	block := make(chan struct{})
	blocked := make(chan struct{})
	var once sync.Once
	q := newApplyQueue(func(recs [][]byte) {
		for _, r := range recs {
			if r[0] == 0 && r[1] == 0 {
				once.Do(func() { close(blocked); <-block }) // lane 0 stalls on its first record
			}
			mu.Lock()
			applied[r[0]] = append(applied[r[0]], r[1])
			mu.Unlock()
		}
	}, 2, func(rec []byte) int { return int(rec[0]) })

	// Routes 0 and 2 share lane 0, 1 and 3 lane 1.
	var want [4][]byte
	for c := range 20 {
		var recs [][]byte
		for i := range 10 {
			route := byte((c + i) % 4)
			seq := byte(len(want[route]))
			want[route] = append(want[route], seq)
			recs = append(recs, []byte{route, seq})
		}
		q.push(recs)
		if c == 0 {
			<-blocked
		}
		if c == applyDepth-2 {
			break // lane 0 is stalled: stay within its queue
		}
	}
	// Lane 1 finishes everything while lane 0 is stuck on its first record.
	deadline := time.Now().Add(10 * time.Second)
	for {
		mu.Lock()
		n1, n3, n0 := len(applied[1]), len(applied[3]), len(applied[0])
		mu.Unlock()
		if n1 == len(want[1]) && n3 == len(want[3]) {
			if n0 != 0 {
				t.Fatalf("lane 0 applied %d records while stalled", n0)
			}
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("lane 1 applied %d+%d of %d+%d records while lane 0 stalled: the lanes do not run apart", n1, n3, len(want[1]), len(want[3]))
		}
		time.Sleep(time.Millisecond)
	}
	waited := make(chan struct{})
	go func() { q.wait(); close(waited) }()
	select {
	case <-waited:
		t.Fatal("wait returned while lane 0 still had records")
	case <-time.After(20 * time.Millisecond):
	}
	close(block)
	<-waited
	for route := range want {
		mu.Lock()
		got := applied[byte(route)]
		mu.Unlock()
		if !slices.Equal(got, want[route]) {
			t.Fatalf("route %d applied %v, want %v (in order)", route, got, want[route])
		}
	}
}
