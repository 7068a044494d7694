package redisloc

import (
	"context"
	"errors"
	"fmt"
	"net"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/emiago/sipgo/sip"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/anyedge/anyedge/edge/location"
	"github.com/anyedge/anyedge/edge/registrar"
	"github.com/anyedge/anyedge/internal/redistest"
)

func saveOne(ctx context.Context, s *Store, aor string, now time.Time) error {
	_, err := s.Save(ctx, &location.SaveRequest{AoR: aor, CallID: "c-" + aor, CSeq: 1, Now: now,
		Contacts: []location.Binding{{Contact: "sip:" + strings.TrimPrefix(aor, "sip:") + ";ua", Q: 1000, Expires: now.Add(time.Hour)}}})
	return err
}

func registerReq(t *testing.T, user string) *sip.Request {
	t.Helper()
	raw := "REGISTER sip:example.com SIP/2.0\r\n" +
		"Via: SIP/2.0/UDP 198.51.100.7:5060;branch=z9hG4bK776asdhds;rport\r\n" +
		"Max-Forwards: 70\r\n" +
		"To: <sip:" + user + "@example.com>\r\n" +
		"From: <sip:" + user + "@example.com>;tag=1928301774\r\n" +
		"Call-ID: reg-" + user + "\r\n" +
		"CSeq: 1 REGISTER\r\n" +
		"Contact: <sip:" + user + "@198.51.100.7:5060>\r\n" +
		"Content-Length: 0\r\n\r\n"
	msg, err := sip.ParseMessage([]byte(raw))
	if err != nil {
		t.Fatal(err)
	}
	return msg.(*sip.Request)
}

// TestRegistrarOnRedis drives the registrar over this store: REGISTER,
// refresh, fetch, removal, as the SIP edge does.
func TestRegistrarOnRedis(t *testing.T) {
	c := sharedRedis(t)
	s := newStore(t, c, 3, freshPrefix())
	r, err := registrar.New(registrar.Config{}, s)
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	src := registrar.Source{Addr: "198.51.100.7:5060", Transport: "udp", Socket: "udp:203.0.113.10:5060"}
	res := r.Handle(ctx, registerReq(t, "alice"), src)
	if res.StatusCode != 200 || len(res.GetHeaders("Contact")) != 1 {
		t.Fatalf("REGISTER: %s", res)
	}
	res = r.Handle(ctx, registerReq(t, "alice"), src) // same CSeq again
	if res.StatusCode != 400 {
		t.Fatalf("replayed REGISTER: %d, want 400", res.StatusCode)
	}
	bs, err := s.Lookup(ctx, "sip:alice@example.com")
	if err != nil || len(bs) != 1 || bs[0].Home != 3 || bs[0].Received != "198.51.100.7:5060" || bs[0].Socket != src.Socket {
		t.Fatalf("stored %+v, %v", bs, err)
	}
}

// TestClusterDownThenBack: with the whole cluster killed, REGISTER gets 500
// with Retry-After quickly, lookups fail fast with ErrUnavailable, the
// store reports not ready; after a restart (AOF) every binding
// acknowledged before is there.
func TestClusterDownThenBack(t *testing.T) {
	c := redistest.Start(t, redistest.Options{})
	reg := prometheus.NewRegistry()
	s := newStoreCfg(t, Config{Addrs: c.Addrs(), KeyPrefix: freshPrefix(), Timeout: 300 * time.Millisecond}, 1, WithRegistry(reg))
	ctx := context.Background()
	// One health check can miss the 300 ms timeout on a loaded machine
	// (CI saw it at load 30); poll for readiness with a deadline instead.
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(100 * time.Millisecond) {
		if s.Tick(ctx); s.Ready() {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("not ready on a healthy cluster after 10 s")
		}
	}
	const n = 300
	now := time.Now()
	for i := range n {
		if err := saveOne(ctx, s, fmt.Sprintf("sip:u%d@x", i), now); err != nil {
			t.Fatal(err)
		}
	}
	c.KillAll()

	start := time.Now()
	err := saveOne(ctx, s, "sip:late@x", now)
	took := time.Since(start)
	if !errors.Is(err, location.ErrUnavailable) {
		t.Fatalf("save with the cluster down: %v, want ErrUnavailable", err)
	}
	// Bounded by the configured timeout, with a generous margin for a
	// loaded machine: the point is that it does not hang.
	if took > 5*time.Second {
		t.Fatalf("save with the cluster down took %v", took)
	}
	if _, err := s.Lookup(ctx, "sip:u1@x"); !errors.Is(err, location.ErrUnavailable) {
		t.Fatalf("lookup with the cluster down: %v", err)
	}
	r, err := registrar.New(registrar.Config{}, s)
	if err != nil {
		t.Fatal(err)
	}
	res := r.Handle(ctx, registerReq(t, "bob"), registrar.Source{Addr: "198.51.100.7:5060", Transport: "udp"})
	if res.StatusCode != 500 || len(res.GetHeaders("Retry-After")) != 1 {
		t.Fatalf("REGISTER with the cluster down: %s", res)
	}
	s.Tick(ctx)
	s.Tick(ctx)
	if s.Ready() {
		t.Fatal("ready with the cluster down")
	}
	if v := testutil.ToFloat64(s.m.up); v != 0 {
		t.Fatalf("anyedge_location_redis_up %v", v)
	}
	t.Logf("cluster down: save failed in %v", took)

	c.RestartAll()
	deadline := time.Now().Add(30 * time.Second)
	for {
		s.Tick(ctx)
		if s.Ready() {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("not ready 30 s after the cluster came back")
		}
		time.Sleep(100 * time.Millisecond) // poll interval
	}
	lost := 0
	for i := range n {
		bs, err := lookupRetry(ctx, s, fmt.Sprintf("sip:u%d@x", i))
		if err != nil {
			t.Fatal(err)
		}
		if len(bs) != 1 {
			lost++
		}
	}
	if lost > 0 {
		t.Fatalf("%d of %d acknowledged bindings lost across a full cluster restart", lost, n)
	}
	if err := saveOne(ctx, s, "sip:after@x", time.Now()); err != nil {
		t.Fatalf("save after the restart: %v", err)
	}
}

// lookupRetry retries while the cluster settles (a slot's master may still
// be loading its AOF).
func lookupRetry(ctx context.Context, s *Store, aor string) ([]location.Binding, error) {
	deadline := time.Now().Add(20 * time.Second)
	for {
		bs, err := s.Lookup(ctx, aor)
		if err == nil || time.Now().After(deadline) {
			return bs, err
		}
		time.Sleep(50 * time.Millisecond) // poll interval
	}
}

// TestFailoverLoss kills the master of a slot under a write load and counts
// the acknowledged bindings missing after its replica took over, without
// and with WAIT 1. With WAIT 1, only saves whose WAIT timed out may be
// lost.
func TestFailoverLoss(t *testing.T) {
	for _, wait := range []int{0, 1} {
		t.Run(fmt.Sprintf("wait=%d", wait), func(t *testing.T) {
			c := redistest.Start(t, redistest.Options{})
			reg := prometheus.NewRegistry()
			s := newStoreCfg(t, Config{Addrs: c.Addrs(), KeyPrefix: freshPrefix(), Timeout: time.Second, WaitReplicas: wait,
				// Short: once the replica is promoted its shard has no
				// replica left, and every WAIT there runs to its timeout.
				WaitTimeout: 100 * time.Millisecond},
				1, WithRegistry(reg))
			lost, acked, short, gap := failoverRun(t, c, s)
			t.Logf("WAIT %d: %d acknowledged, %d lost after failover, %d WAIT timeouts, writes to the dead master's slots failed for %v",
				wait, acked, lost, short, gap)
			if wait > 0 && lost > short {
				t.Fatalf("%d acknowledged bindings lost with WAIT %d, more than the %d saves whose WAIT timed out", lost, wait, short)
			}
		})
	}
}

// failoverRun saves distinct AoRs one after the other, kills the master of
// the first AoR's slot after 300 acknowledgements, goes on until writes
// to that slot succeed again and 100 more saves succeeded (or 60 s), and
// then looks every
// acknowledged AoR up.
func failoverRun(t *testing.T, c *redistest.Cluster, s *Store) (lost, acked, short int, gap time.Duration) {
	ctx := context.Background()
	victim, err := c.MasterOf(s.hashKey("sip:f0@x"))
	if err != nil {
		t.Fatal(err)
	}
	ranges, err := c.Slots(victim)
	if err != nil || len(ranges) == 0 {
		t.Fatalf("slots of node %d: %v %v", victim, ranges, err)
	}
	victimSlot := func(aor string) bool {
		slot, err := c.KeySlot(s.hashKey(aor))
		if err != nil {
			return false
		}
		for _, r := range ranges {
			if slot >= r[0] && slot <= r[1] {
				return true
			}
		}
		return false
	}
	var ok []string
	var killedAt, backAt time.Time
	var lastErr error
	afterKill := 0
	limit := time.Now().Add(60 * time.Second)
	for i := 0; i < 20000 && time.Now().Before(limit); i++ {
		aor := fmt.Sprintf("sip:f%d@x", i)
		err := saveOne(ctx, s, aor, time.Now())
		if err == nil {
			ok = append(ok, aor)
			if !killedAt.IsZero() && backAt.IsZero() && victimSlot(aor) {
				backAt = time.Now()
			}
			if !killedAt.IsZero() && !backAt.IsZero() {
				afterKill++
				if afterKill >= 100 {
					break
				}
			}
		} else if !errors.Is(err, location.ErrUnavailable) {
			t.Fatalf("save %s: %v", aor, err)
		} else {
			lastErr = err
		}
		if len(ok) == 300 && killedAt.IsZero() {
			c.Kill(victim)
			killedAt = time.Now()
		}
	}
	if backAt.IsZero() {
		t.Fatalf("the killed master's slots never took writes again within 60 s (%d saves acknowledged, last error: %v)", len(ok), lastErr)
	}
	c.WaitOK(time.Minute)
	for _, aor := range ok {
		bs, err := lookupRetry(ctx, s, aor)
		if err != nil {
			t.Fatal(err)
		}
		if len(bs) == 0 {
			lost++
		}
	}
	return lost, len(ok), int(testutil.ToFloat64(s.m.waitShort)), backAt.Sub(killedAt)
}

// TestSlowHealthCheckUnderLoad: a health check that times out while
// operations are being answered does not mark the cluster unreachable
// (that would withdraw a node for being busy); without recent answers,
// two timed-out checks do.
func TestSlowHealthCheckUnderLoad(t *testing.T) {
	// A "Redis" that accepts connections and never answers.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = ln.Close() })
	var conns []net.Conn
	var mu sync.Mutex
	t.Cleanup(func() {
		mu.Lock()
		defer mu.Unlock()
		for _, c := range conns {
			_ = c.Close()
		}
	})
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			conns = append(conns, c)
			mu.Unlock()
		}
	}()
	s := newStoreCfg(t, Config{Addrs: []string{ln.Addr().String()}, Timeout: 50 * time.Millisecond, ReapInterval: time.Minute}, 1)
	ctx := context.Background()
	s.up.Store(true) // as if earlier checks had passed
	s.lastOK.Store(time.Now().UnixNano())
	s.check(ctx)
	s.check(ctx)
	if !s.Ready() {
		t.Fatal("not ready after slow checks while operations were answered")
	}
	s.lastOK.Store(time.Now().Add(-2 * time.Minute).UnixNano())
	s.check(ctx)
	s.check(ctx)
	if s.Ready() {
		t.Fatal("still ready after two timed-out checks and no answered operation")
	}
}

// TestRegistrarFlowsOnRedis runs REGISTER flows through the registrar on
// this store (with the registrar's and the store's clocks shared and
// moved by the test): what the SIP edge answers must not depend on the
// backend.
func TestRegistrarFlowsOnRedis(t *testing.T) {
	c := sharedRedis(t)
	type step struct {
		after    time.Duration
		hdrs     []string // replace the default header of the same name; "-Name" removes
		code     int
		contacts int // Contact headers in the 200 (-1: do not check)
	}
	flows := []struct {
		name  string
		cfg   registrar.Config
		steps []step
	}{
		{"expires 0 removes one", registrar.Config{}, []step{
			{hdrs: []string{"Contact: <sip:alice@198.51.100.7:5060>, <sip:alice@198.51.100.7:5062>"}, code: 200, contacts: 2},
			{hdrs: []string{"CSeq: 2 REGISTER", "Expires: 0"}, code: 200, contacts: 1}}},
		{"wildcard removes all", registrar.Config{}, []step{
			{hdrs: []string{"Contact: <sip:alice@198.51.100.7:5060>, <sip:alice@198.51.100.7:5062>"}, code: 200, contacts: 2},
			{hdrs: []string{"CSeq: 2 REGISTER", "Contact: *", "Expires: 0"}, code: 200, contacts: 0}}},
		{"out of order, then a reboot", registrar.Config{}, []step{
			{hdrs: []string{"CSeq: 5 REGISTER"}, code: 200, contacts: 1},
			{hdrs: []string{"CSeq: 4 REGISTER"}, code: 400, contacts: -1},
			{hdrs: []string{"CSeq: 1 REGISTER", "Call-ID: rebooted@pc33"}, code: 200, contacts: 1}}},
		{"cap with reject", registrar.Config{MaxContacts: 2, Policy: registrar.PolicyReject}, []step{
			{hdrs: []string{"Contact: <sip:alice@198.51.100.7:1>, <sip:alice@198.51.100.7:2>"}, code: 200, contacts: 2},
			{hdrs: []string{"CSeq: 2 REGISTER", "Contact: <sip:alice@198.51.100.7:3>"}, code: 403, contacts: -1}}},
		{"cap with replace-oldest", registrar.Config{MaxContacts: 2}, []step{
			{hdrs: []string{"Contact: <sip:alice@198.51.100.7:1>, <sip:alice@198.51.100.7:2>"}, code: 200, contacts: 2},
			{after: time.Second, hdrs: []string{"CSeq: 2 REGISTER", "Contact: <sip:alice@198.51.100.7:3>"}, code: 200, contacts: 2}}},
		{"expiry", registrar.Config{}, []step{
			{hdrs: []string{"Expires: 120"}, code: 200, contacts: 1},
			{after: 121 * time.Second, hdrs: []string{"-Contact", "CSeq: 2 REGISTER"}, code: 200, contacts: 0}}},
		{"fetch", registrar.Config{}, []step{
			{code: 200, contacts: 1},
			{hdrs: []string{"-Contact", "CSeq: 2 REGISTER"}, code: 200, contacts: 1}}},
	}
	for _, f := range flows {
		t.Run(f.name, func(t *testing.T) {
			clk := time.Now()
			var mu sync.Mutex
			now := func() time.Time { mu.Lock(); defer mu.Unlock(); return clk }
			s := newStore(t, c, 1, freshPrefix(), WithClock(now))
			r, err := registrar.New(f.cfg, s, registrar.WithClock(now))
			if err != nil {
				t.Fatal(err)
			}
			for i, st := range f.steps {
				mu.Lock()
				clk = clk.Add(st.after)
				mu.Unlock()
				res := r.Handle(context.Background(), flowReq(t, st.hdrs...), registrar.Source{Addr: "198.51.100.7:5060", Transport: "udp"})
				if res.StatusCode != st.code {
					t.Fatalf("step %d: %d %s, want %d", i, res.StatusCode, res.Reason, st.code)
				}
				if n := len(res.GetHeaders("Contact")); st.contacts >= 0 && n != st.contacts {
					t.Fatalf("step %d: %d contacts, want %d\n%s", i, n, st.contacts, res)
				}
			}
		})
	}
}

// flowReq builds alice's REGISTER with the default headers replaced by
// hdrs of the same name, removed by "-Name".
func flowReq(t *testing.T, hdrs ...string) *sip.Request {
	t.Helper()
	base := []string{
		"Via: SIP/2.0/UDP 198.51.100.7:5060;branch=z9hG4bK776asdhds;rport",
		"Max-Forwards: 70",
		"To: <sip:alice@example.com>",
		"From: <sip:alice@example.com>;tag=1928301774",
		"Call-ID: a84b4c76e66710@pc33",
		"CSeq: 1 REGISTER",
		"Contact: <sip:alice@198.51.100.7:5060>",
	}
	for _, h := range hdrs {
		name, _, _ := strings.Cut(strings.TrimPrefix(h, "-"), ":")
		i := slices.IndexFunc(base, func(b string) bool { return strings.HasPrefix(b, name+":") })
		switch {
		case strings.HasPrefix(h, "-") && i >= 0:
			base = slices.Delete(base, i, i+1)
		case i >= 0:
			base[i] = h
		default:
			base = append(base, h)
		}
	}
	raw := "REGISTER sip:example.com SIP/2.0\r\n" + strings.Join(base, "\r\n") + "\r\nContent-Length: 0\r\n\r\n"
	msg, err := sip.ParseMessage([]byte(raw))
	if err != nil {
		t.Fatal(err)
	}
	return msg.(*sip.Request)
}
