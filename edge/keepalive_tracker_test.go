package edge

import (
	"context"
	"testing"
	"time"

	"github.com/emiago/sipgo/sip"
	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/goleak"

	"github.com/anyedge/anyedge/edge/location"
	"github.com/anyedge/anyedge/edge/nat"
)

// listless is a store that cannot list its bindings (like a distributed
// one): the pinger then learns the AoRs from the REGISTERs it handled.
type listless struct{ location.Store }

// TestKeepaliveWithoutListing: with a store that cannot list, REGISTERs
// are tracked and their NATed contacts get keepalives.
func TestKeepaliveWithoutListing(t *testing.T) {
	ign := goleak.IgnoreCurrent()
	t.Cleanup(func() { goleak.VerifyNone(t, ign) })
	trap, _ := deadPeer(t)
	cfg := Config{
		Listeners: []Listener{{Transport: "udp", Addr: "127.0.0.1:0"}},
		Domains:   []string{domain},
		Timeouts:  Timeouts{NoResponse: 500 * time.Millisecond},
		Keepalive: nat.Config{Interval: 200 * time.Millisecond, Failures: 2, Timeout: 100 * time.Millisecond},
	}
	reg := prometheus.NewRegistry()
	srv, err := New(cfg, listless{location.NewMemory()}, WithLogger(testLog()), WithRegistry(reg))
	if err != nil {
		t.Fatal(err)
	}
	if err := srv.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = srv.Close() })
	if !srv.trackAoRs {
		t.Fatal("REGISTERs not tracked for a store that cannot list")
	}
	bob := newUA(t, "bob", "udp", srv.Addr("udp").String())
	var u sip.Uri
	_ = sip.ParseUri("sip:bob@"+trap, &u)
	bob.contact.Address.Port = u.Port // looks NATed: Contact ≠ source
	bob.resetDialogs()
	mustStatus(t, bob.register(300), 200)
	eventually(t, 5*time.Second, func() error {
		if n := counter(t, reg, "anyedge_sip_keepalive_probes_total", nil); n < 2 {
			return errorf("%v probes", n)
		}
		return nil
	})
}

// TestNoTrackingWithListing: a store that lists its bindings feeds the
// pinger itself; REGISTERs are not tracked twice.
func TestNoTrackingWithListing(t *testing.T) {
	f := startServer(t, nil)
	bob := newUA(t, "bob", "udp", f.udp)
	mustStatus(t, bob.register(300), 200)
	if f.srv.trackAoRs || f.srv.tracker.Len() != 0 {
		t.Fatalf("tracked %d AoRs with a listing store", f.srv.tracker.Len())
	}
}
