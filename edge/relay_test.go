package edge

import (
	"context"
	"net/netip"
	"testing"
	"time"

	"github.com/emiago/sipgo/sip"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/anyedge/anyedge/edge/location"
)

// relayStore answers every lookup with one relay entry to node home, the
// way the user-facing location does for a binding homed elsewhere.
type relayStore struct {
	location.Store
	home uint32
}

func (r relayStore) Lookup(ctx context.Context, aor string) ([]location.Binding, error) {
	return []location.Binding{{AoR: aor, Contact: "sip:home.invalid", Home: r.home, Q: 1000, Expires: time.Now().Add(time.Hour)}}, nil
}

func startRelayServer(t *testing.T, node uint32, store location.Store, hooks Hooks) string {
	t.Helper()
	cfg := Config{
		Listeners: []Listener{{Transport: "udp", Addr: "127.0.0.1:0"}},
		Domains:   []string{domain},
		Timeouts:  Timeouts{NoResponse: 500 * time.Millisecond},
	}
	srv, err := New(cfg, store, WithLogger(testLog()), WithRegistry(prometheus.NewRegistry()), WithNodeID(node), WithHooks(hooks))
	if err != nil {
		t.Fatal(err)
	}
	if err := srv.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = srv.Close() })
	return srv.Addr("udp").String()
}

// A call at node 1 for a user homed on node 2 is relayed there with the
// Request-URI unchanged and a relay mark; node 2 delivers it from its own
// bindings.
func TestRelayToHomeNode(t *testing.T) {
	peer := func(netip.Addr) bool { return true } // both nodes on loopback
	home := startServer(t, nil, WithNodeID(2), WithHooks(Hooks{RelayPeer: peer}))
	bob := newUA(t, "bob", "udp", home.udp)
	mustStatus(t, bob.register(300), 200)

	entry := startRelayServer(t, 1, relayStore{Store: location.NewMemory(), home: 2}, Hooks{
		HomeAddr:  func(n uint32) (string, bool) { return home.udp, n == 2 },
		RelayPeer: peer,
	})
	alice := newUA(t, "alice", "udp", entry)
	sess, err := invite(t, alice, bob.uri())
	if err != nil {
		t.Fatalf("relayed call failed: %v", err)
	}
	got := recv(t, bob.invites, "relayed INVITE")
	if h := got.GetHeader(RelayHeader); h == nil || h.Value() != "1" {
		t.Fatalf("relay mark = %v, want node 1's", h)
	}
	// ACK and BYE follow the route set through both nodes.
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := sess.Ack(ctx); err != nil {
		t.Fatal(err)
	}
	if err := sess.Bye(ctx); err != nil {
		t.Fatal(err)
	}
	recv(t, bob.byes, "BYE at bob through both nodes")
}

// A relayed request is never relayed again, even if the receiving node's
// store points elsewhere: no loops between nodes.
func TestRelayedNeverRelayedAgain(t *testing.T) {
	peer := func(netip.Addr) bool { return true }
	var relays int
	third := startRelayServer(t, 3, location.NewMemory(), Hooks{RelayPeer: peer})
	second := startRelayServer(t, 2, relayStore{Store: location.NewMemory(), home: 3}, Hooks{
		HomeAddr:  func(n uint32) (string, bool) { relays++; return third, true },
		RelayPeer: peer,
	})
	entry := startRelayServer(t, 1, relayStore{Store: location.NewMemory(), home: 2}, Hooks{
		HomeAddr:  func(n uint32) (string, bool) { return second, n == 2 },
		RelayPeer: peer,
	})
	alice := newUA(t, "alice", "udp", entry)
	_, err := invite(t, alice, sip.Uri{Scheme: "sip", User: "bob", Host: domain})
	if c := finalCode(t, err); c != 480 && c != 404 {
		t.Fatalf("got %d, want 480/404 from node 2 (nothing local)", c)
	}
	if relays != 0 {
		t.Fatalf("node 2 relayed a relayed request %d times", relays)
	}
}
