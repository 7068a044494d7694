package geo

import (
	"context"
	"testing"
	"time"
)

// TestAsyncSendRealPair: on real cluster nodes (an AsyncCluster), Run
// sends replication without waiting for the cluster's loop, and a change
// still resolves as replicated once the partner merged it, and as alone
// when the partner is known to be gone (the send's count comes back from
// the loop after Run moved on).
func TestAsyncSendRealPair(t *testing.T) {
	p := startPair(t, Config{})
	if p.svc[0].async == nil {
		t.Fatal("a *cluster.Node is not used as an AsyncCluster")
	}
	ctx := context.Background()
	saved := func(i int) AckResult {
		t.Helper()
		_, g, err := p.svc[0].save(ctx, realistic(i, time.Now()))
		if err != nil {
			t.Fatal(err)
		}
		if g == nil {
			t.Fatal("a new binding queued no replication")
		}
		select {
		case <-g.done:
			return g.Result()
		case <-time.After(10 * time.Second):
			t.Fatalf("save %d never resolved", i)
		}
		return AckPending
	}
	for i := range 50 {
		if r := saved(i); r != AckReplicated {
			t.Fatalf("save %d with the partner up: %v", i, r)
		}
	}
	waitCond(t, "the partner holds the 50 bindings", 5*time.Second, func() bool {
		return p.svc[1].st.replica.Load() == 50
	})

	p.nodes[1].Close()
	waitCond(t, "node 1 sees its partner down", 10*time.Second, func() bool { return !p.nodes[0].IsUp(2) })
	if r := saved(100); r != AckAlone {
		t.Fatalf("with the partner gone: %v", r)
	}
}
