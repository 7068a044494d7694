package geo

import (
	"context"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/anyedge/anyedge/cluster"
	"github.com/anyedge/anyedge/cluster/core"
)

// A new node applies its snapshots on goroutines of their own (applyQueue)
// while the donor keeps changing bindings. A capability must count as
// synced only once every snapshot record is applied, and the node must end
// up with exactly the donor's data.
func TestSyncAppliesInBackgroundAndSettles(t *testing.T) {
	const n = 50_000
	sn := newSyncNodes(t)
	a1 := freeAddr(t)
	donor, _ := sn.start(1, a1, nil)
	waitCond(t, "donor synced (seed rule)", 10*time.Second, donor.Synced)
	fillDonor(t, donor, n)

	// What the receiver holds at the moment each capability turns synced
	// (its loop runs the subscribers right after).
	var rcv *Service
	var rcvReady = make(chan struct{})
	var bindAt, metaAt atomic.Int64
	bindAt.Store(-1)
	metaAt.Store(-1)
	probe := func(e cluster.Event) {
		if e.Kind != cluster.EventSyncState || e.State != core.Synced {
			return
		}
		<-rcvReady
		switch e.Cap {
		case MetaCap:
			metaAt.Store(rcv.st.metaLive.Load() + rcv.st.metaTombs.Load())
		case rcv.bindCap:
			bindAt.Store(rcv.st.replica.Load() + rcv.st.bindTombs.Load())
		}
	}

	// Refreshes at the donor during the sync: newer versions of bindings
	// the snapshot carries too, as live updates the receiver holds.
	ctx, stop := context.WithCancel(context.Background())
	defer stop()
	var wg sync.WaitGroup
	var refreshed atomic.Int64
	wg.Add(1)
	go func() {
		defer wg.Done()
		deadline := time.Now().Add(20 * time.Second)
		for i := 0; i < n && ctx.Err() == nil && time.Now().Before(deadline); i += 7 {
			req := realistic(i, time.Now())
			req.CSeq = 2
			if _, err := donor.Save(context.Background(), req); err != nil {
				t.Error(err)
				return
			}
			refreshed.Add(1)
		}
	}()
	rcv, _ = sn.start(2, freeAddr(t), []string{a1}, probe)
	close(rcvReady)
	waitCond(t, "receiver synced", 60*time.Second, rcv.Synced)
	stop()
	wg.Wait()

	if rcv.bindQ.queued.Load() == 0 || rcv.metaQ.queued.Load() == 0 {
		t.Fatalf("chunks queued: bind %d, meta %d; the background apply was not used", rcv.bindQ.queued.Load(), rcv.metaQ.queued.Load())
	}
	// Refreshes replace records, they add none: every AoR's binding and
	// metadata entry was in the snapshot.
	if got := bindAt.Load(); got != n {
		t.Errorf("binding records held when the bindings turned synced: %d, want %d", got, n)
	}
	if got := metaAt.Load(); got != n {
		t.Errorf("metadata records held when the metadata turned synced: %d, want %d", got, n)
	}
	same := func() bool {
		for _, kind := range []uint8{recBind, recMeta} {
			d, r := donor.digest(kind), rcv.digest(kind)
			for i := range d {
				if d[i] != r[i] {
					return false
				}
			}
		}
		return true
	}
	waitCond(t, "receiver holds exactly the donor's records", 20*time.Second, same)
	t.Logf("%d refreshes during the sync; chunks applied in the background: bind %d, meta %d",
		refreshed.Load(), rcv.bindQ.queued.Load(), rcv.metaQ.queued.Load())
}
