package announce

import (
	"net/netip"
	"slices"
	"testing"
	"testing/synctest"
	"time"

	"github.com/anyedge/anyedge/bgp"
)

// A reload's new prefixes and region policy reach the speaker as one
// declarative Set: the new prefix is announced, the removed one withdrawn,
// the kept one updated in place; a drained node stays drained; a bad
// config changes nothing.
func TestControllerReconfigure(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		r := newRig(t, "")
		defer r.close()
		r.waitFor(2*time.Second, plain4, plain6) // past the start hold-down
		sets := len(r.sp.Sets())

		// The same config again sends nothing.
		if err := r.c.Reconfigure(testConfig(), testPrefixes()); err != nil {
			t.Fatal(err)
		}
		synctest.Wait()
		if n := len(r.sp.Sets()); n != sets {
			t.Fatalf("an unchanged reload sent %d Sets", n-sets)
		}

		cfg := testConfig()
		cfg.Regions = append(cfg.Regions, RegionPolicy{Region: "us", MED: 30,
			Communities: []bgp.Community{bgp.MustParseCommunity("65000:7")}})
		pfx := []bgp.Advertisement{
			testPrefixes()[0],
			{Prefix: netip.MustParsePrefix("203.0.113.20/32")},
		}
		if err := r.c.Reconfigure(cfg, pfx); err != nil {
			t.Fatal(err)
		}
		want := []string{"203.0.113.10/32 med 30 communities 65000:1 65000:7", "203.0.113.20/32 med 30 communities 65000:7"}
		r.waitFor(0, want...)
		if n := len(r.sp.Sets()); n != sets+1 {
			t.Errorf("the reload took %d Sets, want 1", n-sets)
		}

		// Refused: a policy naming a prefix that is not announced.
		bad := cfg
		bad.Regions = []RegionPolicy{{Region: "us", Prefixes: []string{"198.51.100.0/24"}}}
		if err := r.c.Reconfigure(bad, pfx); err == nil {
			t.Fatal("accepted a policy for a prefix that is not announced")
		}
		synctest.Wait()
		if got := r.announced(); !slices.Equal(got, want) {
			t.Fatalf("a refused reload changed the announcements: %q", got)
		}

		// Drained: a reload keeps the node drained.
		if err := r.c.Drain(); err != nil {
			t.Fatal(err)
		}
		phase := r.c.Report().Phase
		if err := r.c.Reconfigure(testConfig(), testPrefixes()); err != nil {
			t.Fatal(err)
		}
		if got := r.c.Report().Phase; got != phase {
			t.Errorf("drain phase %v after a reload, was %v", got, phase)
		}
	})
}
