package daemon

import (
	"context"
	"io"
	"os"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/anyedge/anyedge/internal/config"
	"github.com/anyedge/anyedge/internal/redistest"
)

// TestDBDrivenLocation runs edged with location.mode: db-driven on a real
// Redis Cluster: the node is ready while the cluster answers, not ready
// with "location: redis unreachable" while it is down (so the controller
// withdraws the anycast routes), and ready again once it is back.
func TestDBDrivenLocation(t *testing.T) {
	c := redistest.Start(t, redistest.Options{})
	yaml := `
admin: {listen: "127.0.0.1:0", token: s3cret}
cluster: {node_id: 7, region: test, seed: true, key: 0123456789abcdef, state_dir: ` + t.TempDir() + `}
sip:
  listeners: [{transport: udp, addr: "127.0.0.1:0"}]
announce: {hold_down: 100ms}
location:
  mode: db-driven
  redis: {addrs: ["` + strings.Join(c.Addrs()[:2], `", "`) + `"], timeout: 300ms, reap_interval: 100ms}
`
	cfg, err := config.Parse("edged.yaml", []byte(yaml))
	if err != nil {
		t.Fatal(err)
	}
	node := newFakeClusterNode(&events{})
	sigs := make(chan os.Signal)
	d, err := New(cfg, WithLogOutput(io.Discard), WithNodeFactory(node.factory()), WithSignals(sigs))
	if err != nil {
		t.Fatal(err)
	}
	if d.redisloc == nil || d.store != nil || d.geo != nil {
		t.Fatalf("db-driven mode built redis %v, memory %v, geo %v", d.redisloc != nil, d.store != nil, d.geo != nil)
	}
	done := make(chan error, 1)
	go func() { done <- d.Run(context.Background()) }()
	defer func() {
		sigs <- syscall.SIGTERM
		if err := <-done; err != nil {
			t.Errorf("Run = %v", err)
		}
	}()
	eventually(t, "ready with the cluster up", func() bool { return d.Readiness().Ready })

	c.KillAll()
	eventually(t, "not ready with the cluster down", func() bool {
		r := d.Readiness()
		return !r.Ready && slices.ContainsFunc(r.Reasons, func(s string) bool { return strings.Contains(s, ReasonRedisUnreachable) })
	})
	c.RestartAll()
	deadline := time.Now().Add(30 * time.Second)
	for !d.Readiness().Ready {
		if time.Now().After(deadline) {
			t.Fatalf("not ready 30 s after the cluster came back: %v", d.Readiness().Reasons)
		}
		time.Sleep(20 * time.Millisecond) // poll interval
	}
}
