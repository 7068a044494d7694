package redisloc

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/anyedge/anyedge/edge/location"
	"github.com/anyedge/anyedge/edge/location/locationtest"
	"github.com/anyedge/anyedge/internal/redistest"
)

var prefixes atomic.Int64

// newStore returns a store on c with its own key prefix (so tests sharing
// a cluster do not see each other), closed at the end of the test.
func newStore(t testing.TB, c *redistest.Cluster, node uint32, prefix string, opts ...Option) *Store {
	t.Helper()
	cfg := Config{Addrs: c.Addrs()[:2], KeyPrefix: prefix, Timeout: 2 * time.Second}
	return newStoreCfg(t, cfg, node, opts...)
}

func newStoreCfg(t testing.TB, cfg Config, node uint32, opts ...Option) *Store {
	t.Helper()
	s, err := New(cfg, node, opts...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = s.Close() })
	return s
}

func freshPrefix() string { return fmt.Sprintf("t%d:", prefixes.Add(1)) }

// TestSuite runs the shared location behaviour suite with two stores (two
// nodes) on one real Redis Cluster.
func TestSuite(t *testing.T) {
	c := sharedRedis(t)
	locationtest.Run(t, func(t *testing.T, now func() time.Time) (location.Store, location.Store) {
		p := freshPrefix()
		return newStore(t, c, 1, p, WithClock(now)), newStore(t, c, 2, p, WithClock(now))
	})
}

// TestScriptMatchesApply runs random REGISTERs through the save script and
// through location.Apply (the reference) side by side: same errors, same
// counts, same bindings.
func TestScriptMatchesApply(t *testing.T) {
	c := sharedRedis(t)
	clk := locationtest.NewClock(time.Now().Truncate(time.Millisecond))
	s := newStore(t, c, 0, freshPrefix(), WithClock(clk.Now))
	ctx := context.Background()
	rnd := rand.New(rand.NewPCG(1, 2))
	ref := map[string][]location.Binding{}
	aors := []string{"sip:a@x", "sip:b@x", "sip:c@x"}
	callIDs := []string{"c1", "c2", "c3"}
	cseq := map[string]uint32{}
	const steps = 600
	for i := range steps {
		// Time always moves and the contacts of one request have distinct
		// q-values: Apply's order (and which binding is evicted) among
		// bindings equal in q, registration time and contact is arbitrary.
		clk.Advance(time.Duration(1+rnd.IntN(40)) * time.Second)
		now := clk.Now()
		aor := aors[rnd.IntN(len(aors))]
		cid := callIDs[rnd.IntN(len(callIDs))]
		// Mostly increasing CSeqs, sometimes a replay.
		cs := cseq[aor+cid]
		if rnd.IntN(8) > 0 {
			cs++
			cseq[aor+cid] = cs
		}
		req := &location.SaveRequest{AoR: aor, CallID: cid, CSeq: cs, Now: now, MaxContacts: rnd.IntN(4)}
		if rnd.IntN(2) == 0 {
			req.Policy = location.PolicyReplaceOldest
		}
		if rnd.IntN(25) == 0 {
			req.Wildcard = true
		} else {
			qs := []int{1000, 500, 0}
			rnd.Shuffle(len(qs), func(i, j int) { qs[i], qs[j] = qs[j], qs[i] })
			for j := range 1 + rnd.IntN(3) {
				b := location.Binding{Contact: fmt.Sprintf("sip:u@h%d", rnd.IntN(5)), Q: qs[j],
					Expires: now.Add(time.Duration(rnd.IntN(5)*30) * time.Second), UserAgent: "ua"}
				if rnd.IntN(3) == 0 {
					b.InstanceID = fmt.Sprintf("<urn:uuid:%d>", rnd.IntN(3))
					b.RegID = rnd.IntN(2)
				}
				req.Contacts = append(req.Contacts, b)
			}
		}
		next, want, wantErr := location.Apply(ref[aor], req)
		got, err := s.Save(ctx, req)
		if !errors.Is(err, wantErr) || (err != nil) != (wantErr != nil) {
			t.Fatalf("step %d: %+v\nscript err %v, Apply err %v", i, req, err, wantErr)
		}
		if err != nil {
			continue
		}
		ref[aor] = slices.Clone(next)
		if counts(got) != counts(want) {
			t.Fatalf("step %d: %+v\nscript counts %v, Apply %v", i, req, counts(got), counts(want))
		}
		if !slices.EqualFunc(got.Bindings, want.Bindings, sameBinding) {
			t.Fatalf("step %d: %+v\nscript %+v\nApply  %+v", i, req, got.Bindings, want.Bindings)
		}
	}
}

func counts(r *location.SaveResult) [4]int { return [4]int{r.Added, r.Refreshed, r.Removed, r.Evicted} }

func sameBinding(a, b location.Binding) bool {
	a.Home, b.Home = 0, 0
	return a.Contact == b.Contact && a.InstanceID == b.InstanceID && a.RegID == b.RegID && a.CallID == b.CallID &&
		a.CSeq == b.CSeq && a.Q == b.Q && a.Expires.Equal(b.Expires) && a.Registered.Equal(b.Registered) &&
		a.UserAgent == b.UserAgent && a.AoR == b.AoR
}

// TestHomeAndReaper: a save stamps the node's id as Home; the reaper,
// driven by the node's home index, prunes expired bindings; Redis's key
// expiry removes an AoR whose bindings all expired.
func TestHomeAndReaper(t *testing.T) {
	c := sharedRedis(t)
	p := freshPrefix()
	clk := locationtest.NewClock(time.Now())
	a := newStore(t, c, 1, p, WithClock(clk.Now))
	b := newStore(t, c, 2, p, WithClock(clk.Now))
	ctx := context.Background()
	now := clk.Now()
	save := func(s *Store, aor, contact string, exp time.Duration) {
		t.Helper()
		_, err := s.Save(ctx, &location.SaveRequest{AoR: aor, CallID: contact, CSeq: 1, Now: now,
			Contacts: []location.Binding{{Contact: contact, Q: 1000, Expires: now.Add(exp)}}})
		if err != nil {
			t.Fatal(err)
		}
	}
	save(a, "sip:x@h", "sip:x@1", time.Minute)
	save(a, "sip:x@h", "sip:x@2", time.Hour)
	save(b, "sip:x@h", "sip:x@3", time.Minute)
	// Node 3 never reaps: only Redis's key expiry (real time) removes it.
	c3 := newStore(t, c, 3, p, WithClock(clk.Now))
	save(c3, "sip:gone@h", "sip:g@1", 1500*time.Millisecond)
	bs, err := b.Lookup(ctx, "sip:x@h")
	if err != nil {
		t.Fatal(err)
	}
	homes := map[string]uint32{}
	for _, x := range bs {
		homes[x.Contact] = x.Home
	}
	if homes["sip:x@1"] != 1 || homes["sip:x@2"] != 1 || homes["sip:x@3"] != 2 {
		t.Fatalf("homes %v", homes)
	}
	a.Tick(ctx)
	b.Tick(ctx)
	if a.Len() != 1 || b.Len() != 1 {
		t.Fatalf("home AoRs: node 1 %d, node 2 %d, want 1 each", a.Len(), b.Len())
	}
	clk.Advance(2 * time.Minute)
	n, err := a.Reap(ctx)
	if err != nil || n != 1 { // x@h (x@1 due)
		t.Fatalf("reap: %d %v", n, err)
	}
	// The reaper pruned x@1 from Redis itself, not only from lookups, and
	// x@3 with it (expired is expired, whoever is its home).
	raw, err := a.rdb.HKeys(ctx, a.hashKey("sip:x@h")).Result()
	if err != nil {
		t.Fatal(err)
	}
	slices.Sort(raw)
	if !slices.Equal(raw, []string{"c:sip:x@2"}) {
		t.Fatalf("stored after node 1's reap: %v", raw)
	}
	if n, _ := b.Reap(ctx); n != 1 {
		t.Fatalf("node 2 reaped %d AoRs, want 1", n)
	}
	b.Tick(ctx)
	if b.Len() != 0 {
		t.Fatalf("node 2 still indexes %d AoRs with no binding homed there", b.Len())
	}
	// Redis expired the short AoR's keys on its own (real time).
	deadline := time.Now().Add(10 * time.Second)
	for {
		n, err := a.rdb.Exists(ctx, a.hashKey("sip:gone@h"), a.zsetKey("sip:gone@h")).Result()
		if err != nil {
			t.Fatal(err)
		}
		if n == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("Redis did not expire the keys of an AoR whose bindings all expired")
		}
		time.Sleep(50 * time.Millisecond) // poll interval
	}
}

// TestACL: the store authenticates as an ACL user; a wrong password is
// refused and the store reports the cluster unreachable.
func TestACL(t *testing.T) {
	c := redistest.Start(t, redistest.Options{User: "edge", Password: "s3cret"})
	ctx := context.Background()
	good := newStoreCfg(t, Config{Addrs: c.Addrs(), Username: "edge", Password: "s3cret", KeyPrefix: freshPrefix()}, 1)
	now := time.Now()
	if _, err := good.Save(ctx, &location.SaveRequest{AoR: "sip:a@h", CallID: "c", CSeq: 1, Now: now,
		Contacts: []location.Binding{{Contact: "sip:a@1", Q: 1000, Expires: now.Add(time.Hour)}}}); err != nil {
		t.Fatal(err)
	}
	good.Tick(ctx)
	if !good.Ready() {
		t.Fatal("not ready with the right password")
	}
	bad := newStoreCfg(t, Config{Addrs: c.Addrs(), Username: "edge", Password: "wrong", KeyPrefix: freshPrefix()}, 1)
	if _, err := bad.Lookup(ctx, "sip:a@h"); err == nil || !strings.Contains(err.Error(), "WRONGPASS") {
		t.Fatalf("lookup with a wrong password: %v", err)
	}
	bad.Tick(ctx)
	if bad.Ready() {
		t.Fatal("ready with a wrong password")
	}
}

// TestTLS: the store talks TLS to a cluster that serves only TLS and
// requires client certificates; without the certificate it cannot.
func TestTLS(t *testing.T) {
	c := redistest.Start(t, redistest.Options{TLS: true})
	ctx := context.Background()
	f := c.TLS
	good := newStoreCfg(t, Config{Addrs: c.Addrs(), KeyPrefix: freshPrefix(),
		TLS: &TLSConfig{CA: f.CA, Cert: f.Cert, Key: f.Key}}, 1)
	now := time.Now()
	if _, err := good.Save(ctx, &location.SaveRequest{AoR: "sip:a@h", CallID: "c", CSeq: 1, Now: now,
		Contacts: []location.Binding{{Contact: "sip:a@1", Q: 1000, Expires: now.Add(time.Hour)}}}); err != nil {
		t.Fatal(err)
	}
	if bs, err := good.Lookup(ctx, "sip:a@h"); err != nil || len(bs) != 1 {
		t.Fatalf("lookup over TLS: %+v %v", bs, err)
	}
	good.Tick(ctx)
	if !good.Ready() {
		t.Fatal("not ready over TLS")
	}
	for name, cfg := range map[string]*TLSConfig{"no client certificate": {CA: f.CA}, "plain TCP": nil} {
		s := newStoreCfg(t, Config{Addrs: c.Addrs(), KeyPrefix: freshPrefix(), Timeout: 300 * time.Millisecond, TLS: cfg}, 1)
		if _, err := s.Lookup(ctx, "sip:a@h"); err == nil {
			t.Errorf("%s: lookup succeeded", name)
		}
	}
}
