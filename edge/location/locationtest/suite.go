// Package locationtest is the behavioural test suite every location.Store
// backend passes: the in-memory store, and the Redis Cluster store against
// a real cluster. It checks what the registrar and the proxy rely on:
// RFC 3261 §10.3 as location.Apply defines it, expiry by the store's
// clock, Remove, and concurrent saves from two nodes losing nothing.
package locationtest

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/anyedge/anyedge/edge/location"
)

// Clock is a settable clock: the suite moves time instead of sleeping.
type Clock struct {
	mu sync.Mutex
	t  time.Time
}

// NewClock starts at t.
func NewClock(t time.Time) *Clock { return &Clock{t: t} }

// Now returns the current time.
func (c *Clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

// Advance moves the clock.
func (c *Clock) Advance(d time.Duration) {
	c.mu.Lock()
	c.t = c.t.Add(d)
	c.mu.Unlock()
}

// Factory returns two stores over the same, empty data (two nodes sharing
// one location; a single-node backend returns the same store twice), both
// reading now for expiry.
type Factory func(t *testing.T, now func() time.Time) (a, b location.Store)

// Run runs the suite. Each subtest gets fresh stores.
func Run(t *testing.T, newStores Factory) {
	for _, tc := range []struct {
		name string
		fn   func(*testing.T, *env)
	}{
		{"RoundTrip", testRoundTrip},
		{"RefreshAndRemoveByExpiresZero", testRefreshRemove},
		{"Wildcard", testWildcard},
		{"OutOfOrder", testOutOfOrder},
		{"InstanceReplacesContact", testInstance},
		{"CapReject", testCapReject},
		{"CapReplaceOldest", testCapReplace},
		{"Expiry", testExpiry},
		{"Remove", testRemove},
		{"Invalid", testInvalid},
		{"SortOrder", testSort},
		{"ConcurrentTwoNodes", testConcurrent},
	} {
		t.Run(tc.name, func(t *testing.T) {
			clk := NewClock(time.Now().Truncate(time.Millisecond))
			a, b := newStores(t, clk.Now)
			tc.fn(t, &env{a: a, b: b, clk: clk, ctx: context.Background()})
		})
	}
}

type env struct {
	a, b location.Store
	clk  *Clock
	ctx  context.Context
}

const aor = "sip:alice@example.com"

func (e *env) save(t *testing.T, s location.Store, req *location.SaveRequest) *location.SaveResult {
	t.Helper()
	res, err := s.Save(e.ctx, req)
	if err != nil {
		t.Fatalf("save %+v: %v", req, err)
	}
	return res
}

func (e *env) reg(callID string, cseq uint32, exp time.Duration, contacts ...string) *location.SaveRequest {
	now := e.clk.Now()
	req := &location.SaveRequest{AoR: aor, CallID: callID, CSeq: cseq, Now: now}
	for _, c := range contacts {
		req.Contacts = append(req.Contacts, location.Binding{Contact: c, Q: 1000, Expires: now.Add(exp)})
	}
	return req
}

func (e *env) lookup(t *testing.T, s location.Store) []location.Binding {
	t.Helper()
	bs, err := s.Lookup(e.ctx, aor)
	if err != nil {
		t.Fatal(err)
	}
	return bs
}

func contacts(bs []location.Binding) []string {
	var out []string
	for _, b := range bs {
		out = append(out, b.Contact)
	}
	return out
}

func counts(r *location.SaveResult) [4]int {
	return [4]int{r.Added, r.Refreshed, r.Removed, r.Evicted}
}

// same compares what a backend must keep; Home only when the caller set
// it (a backend may stamp its own node id on a binding saved with 0).
func same(a, b location.Binding) bool {
	if b.Home != 0 && a.Home != b.Home {
		return false
	}
	a.Home, b.Home = 0, 0
	return a.AoR == b.AoR && a.Contact == b.Contact && a.InstanceID == b.InstanceID && a.RegID == b.RegID &&
		a.CallID == b.CallID && a.CSeq == b.CSeq && a.Q == b.Q && a.Expires.Equal(b.Expires) &&
		a.Registered.Equal(b.Registered) && slices.Equal(a.Path, b.Path) && a.UserAgent == b.UserAgent &&
		a.Received == b.Received && a.Transport == b.Transport && a.NATed == b.NATed && a.Socket == b.Socket
}

func testRoundTrip(t *testing.T, e *env) {
	now := e.clk.Now()
	full := location.Binding{
		Contact: "sip:alice@192.0.2.1:5060;transport=tcp;ob", InstanceID: "<urn:uuid:f81d4fae-7dec-11d0-a765-00a0c91e6bf6>",
		RegID: 2, Q: 500, Expires: now.Add(time.Hour + 123*time.Nanosecond),
		Path:      []string{"<sip:p1.example.com;lr>", "<sip:p2.example.com;lr;ob>"},
		UserAgent: "Yealink SIP-T46S 66.86.0.15 \"quoted\" \\ é", Received: "198.51.100.7:40000", Transport: "tcp", NATed: true,
		Socket: "tcp:203.0.113.10:5060", Home: 7,
	}
	res := e.save(t, e.a, &location.SaveRequest{AoR: aor, CallID: "cid", CSeq: 3, Now: now,
		Contacts: []location.Binding{full, {Contact: "sip:alice@192.0.2.2", Q: 1000, Expires: now.Add(time.Minute)}}})
	if counts(res) != [4]int{2, 0, 0, 0} || len(res.Bindings) != 2 {
		t.Fatalf("result %+v", res)
	}
	want := full
	want.AoR, want.CallID, want.CSeq, want.Registered = aor, "cid", 3, now
	for _, s := range []location.Store{e.a, e.b} {
		got := e.lookup(t, s)
		if len(got) != 2 || !same(got[1], want) || got[0].Contact != "sip:alice@192.0.2.2" || got[0].Path != nil {
			t.Fatalf("round trip lost data:\n got %+v\nwant %+v", got, want)
		}
		if !slices.EqualFunc(got, res.Bindings, same) {
			t.Fatalf("lookup %+v\n != save result %+v", got, res.Bindings)
		}
	}
}

func testRefreshRemove(t *testing.T, e *env) {
	e.save(t, e.a, e.reg("c1", 1, time.Hour, "sip:a@h1", "sip:a@h2"))
	e.clk.Advance(time.Minute)
	res := e.save(t, e.b, e.reg("c1", 2, 2*time.Hour, "sip:a@h1"))
	if counts(res) != [4]int{0, 1, 0, 0} {
		t.Fatalf("refresh counts %v", counts(res))
	}
	bs := e.lookup(t, e.a)
	if len(bs) != 2 || bs[0].Contact != "sip:a@h1" || !bs[0].Expires.Equal(e.clk.Now().Add(2*time.Hour)) || bs[0].CSeq != 2 {
		t.Fatalf("after refresh: %+v", bs)
	}
	res = e.save(t, e.a, e.reg("c1", 3, 0, "sip:a@h2"))
	if counts(res) != [4]int{0, 0, 1, 0} || !slices.Equal(contacts(res.Bindings), []string{"sip:a@h1"}) {
		t.Fatalf("remove: %v %v", counts(res), contacts(res.Bindings))
	}
	// Removing what is not there changes nothing.
	res = e.save(t, e.a, e.reg("c1", 4, 0, "sip:a@nowhere"))
	if counts(res) != [4]int{} || len(res.Bindings) != 1 {
		t.Fatalf("no-op remove: %+v", res)
	}
}

func testWildcard(t *testing.T, e *env) {
	e.save(t, e.a, e.reg("c1", 1, time.Hour, "sip:a@h1", "sip:a@h2"))
	res := e.save(t, e.b, &location.SaveRequest{AoR: aor, CallID: "c2", CSeq: 1, Wildcard: true, Now: e.clk.Now()})
	if counts(res) != [4]int{0, 0, 2, 0} || len(res.Bindings) != 0 {
		t.Fatalf("wildcard %+v", res)
	}
	if bs := e.lookup(t, e.a); len(bs) != 0 {
		t.Fatalf("after wildcard: %+v", bs)
	}
	e.save(t, e.a, e.reg("c1", 5, time.Hour, "sip:a@h1"))
	_, err := e.b.Save(e.ctx, &location.SaveRequest{AoR: aor, CallID: "c1", CSeq: 5, Wildcard: true, Now: e.clk.Now()})
	if !errors.Is(err, location.ErrOutOfOrder) {
		t.Fatalf("wildcard out of order: %v", err)
	}
	if bs := e.lookup(t, e.a); len(bs) != 1 {
		t.Fatalf("failed wildcard changed bindings: %+v", bs)
	}
}

func testOutOfOrder(t *testing.T, e *env) {
	e.save(t, e.a, e.reg("c1", 5, time.Hour, "sip:a@h1"))
	for _, cseq := range []uint32{5, 4} {
		if _, err := e.b.Save(e.ctx, e.reg("c1", cseq, 2*time.Hour, "sip:a@h1", "sip:a@h9")); !errors.Is(err, location.ErrOutOfOrder) {
			t.Fatalf("cseq %d: %v", cseq, err)
		}
	}
	if bs := e.lookup(t, e.a); len(bs) != 1 || bs[0].CSeq != 5 {
		t.Fatalf("failed request changed bindings: %+v", bs)
	}
	// Another Call-ID: the UA rebooted, the binding is replaced.
	res := e.save(t, e.b, e.reg("rebooted", 1, time.Hour, "sip:a@h1"))
	if counts(res) != [4]int{0, 1, 0, 0} || res.Bindings[0].CallID != "rebooted" {
		t.Fatalf("reboot: %+v", res)
	}
	// A key repeated in one request is not an out-of-order retry.
	res = e.save(t, e.a, e.reg("rebooted", 2, time.Hour, "sip:a@h2", "sip:a@h2"))
	if counts(res) != [4]int{1, 0, 0, 0} || len(res.Bindings) != 2 {
		t.Fatalf("repeated key: %+v", res)
	}
}

func testInstance(t *testing.T, e *env) {
	now := e.clk.Now()
	ob := func(contact string) location.Binding {
		return location.Binding{Contact: contact, InstanceID: "<urn:uuid:1>", RegID: 1, Q: 1000, Expires: now.Add(time.Hour)}
	}
	e.save(t, e.a, &location.SaveRequest{AoR: aor, CallID: "c1", CSeq: 1, Now: now, Contacts: []location.Binding{ob("sip:a@192.0.2.1;ob")}})
	res := e.save(t, e.b, &location.SaveRequest{AoR: aor, CallID: "c2", CSeq: 1, Now: now, Contacts: []location.Binding{ob("sip:a@192.0.2.99;ob")}})
	if counts(res) != [4]int{0, 1, 0, 0} || !slices.Equal(contacts(e.lookup(t, e.a)), []string{"sip:a@192.0.2.99;ob"}) {
		t.Fatalf("moved phone: %+v", res)
	}
	// Another reg-id is another flow of the same instance.
	b := ob("sip:a@192.0.2.99;ob")
	b.RegID = 2
	res = e.save(t, e.a, &location.SaveRequest{AoR: aor, CallID: "c2", CSeq: 2, Now: now, Contacts: []location.Binding{b}})
	if counts(res) != [4]int{1, 0, 0, 0} || len(res.Bindings) != 2 {
		t.Fatalf("second flow: %+v", res)
	}
}

func testCapReject(t *testing.T, e *env) {
	req := e.reg("c1", 1, time.Hour, "sip:a@1", "sip:a@2")
	req.MaxContacts = 2
	e.save(t, e.a, req)
	req = e.reg("c1", 2, time.Hour, "sip:a@3")
	req.MaxContacts = 2
	if _, err := e.b.Save(e.ctx, req); !errors.Is(err, location.ErrTooManyContacts) {
		t.Fatalf("over the cap: %v", err)
	}
	// A pure refresh of an AoR over a lowered cap is accepted.
	req = e.reg("c1", 3, time.Hour, "sip:a@1")
	req.MaxContacts = 1
	if res := e.save(t, e.b, req); len(res.Bindings) != 2 || res.Refreshed != 1 {
		t.Fatalf("refresh over a lowered cap: %+v", res)
	}
}

func testCapReplace(t *testing.T, e *env) {
	capped := func(r *location.SaveRequest) *location.SaveRequest {
		r.MaxContacts, r.Policy = 2, location.PolicyReplaceOldest
		return r
	}
	e.save(t, e.a, capped(e.reg("c1", 1, time.Hour, "sip:a@1", "sip:a@2")))
	e.clk.Advance(time.Second)
	e.save(t, e.b, capped(e.reg("c1", 2, time.Hour, "sip:a@1")))
	e.clk.Advance(time.Second)
	res := e.save(t, e.a, capped(e.reg("c1", 3, time.Hour, "sip:a@3")))
	if counts(res) != [4]int{1, 0, 0, 1} || !slices.Equal(contacts(res.Bindings), []string{"sip:a@3", "sip:a@1"}) {
		t.Fatalf("replace oldest: %v %v", counts(res), contacts(res.Bindings))
	}
	// More new contacts than the cap in one request: the lowest q goes.
	req := capped(e.reg("c1", 4, time.Hour, "sip:a@4", "sip:a@5", "sip:a@6"))
	req.Contacts[1].Q = 100
	res = e.save(t, e.b, req)
	if got := contacts(res.Bindings); len(got) != 2 || slices.Contains(got, "sip:a@5") {
		t.Fatalf("cap within one request: %v (%+v)", got, counts(res))
	}
}

func testExpiry(t *testing.T, e *env) {
	e.save(t, e.a, e.reg("c1", 1, time.Minute, "sip:a@short"))
	e.save(t, e.a, e.reg("c1", 2, time.Hour, "sip:a@long"))
	e.clk.Advance(time.Minute) // expiry == now: expired
	for _, s := range []location.Store{e.a, e.b} {
		if got := contacts(e.lookup(t, s)); !slices.Equal(got, []string{"sip:a@long"}) {
			t.Fatalf("after expiry: %v", got)
		}
	}
	// An expired binding does not count: re-adding it is an add, and
	// its old CSeq does not make the request out of order.
	res := e.save(t, e.b, e.reg("c1", 1, time.Hour, "sip:a@short"))
	if counts(res) != [4]int{1, 0, 0, 0} {
		t.Fatalf("re-add after expiry: %v", counts(res))
	}
	e.clk.Advance(2 * time.Hour)
	if bs := e.lookup(t, e.b); len(bs) != 0 {
		t.Fatalf("all expired, still %+v", bs)
	}
}

func testRemove(t *testing.T, e *env) {
	now := e.clk.Now()
	e.save(t, e.a, &location.SaveRequest{AoR: aor, CallID: "c", CSeq: 1, Now: now, Contacts: []location.Binding{
		{Contact: "sip:a@1", Q: 1000, Expires: now.Add(time.Hour)},
		{Contact: "sip:a@2", InstanceID: "<urn:uuid:2>", Q: 1000, Expires: now.Add(time.Hour)},
	}})
	bs := e.lookup(t, e.b)
	var key string
	for _, b := range bs {
		if b.InstanceID != "" {
			key = b.Key()
		}
	}
	if err := e.b.Remove(e.ctx, aor, key); err != nil {
		t.Fatal(err)
	}
	if err := e.a.Remove(e.ctx, aor, "c:sip:not-there"); err != nil {
		t.Fatalf("removing what is not there: %v", err)
	}
	if err := e.a.Remove(e.ctx, "sip:nobody@example.com", "c:sip:x"); err != nil {
		t.Fatalf("removing from an unknown AoR: %v", err)
	}
	if got := contacts(e.lookup(t, e.a)); !slices.Equal(got, []string{"sip:a@1"}) {
		t.Fatalf("after Remove: %v", got)
	}
	if err := e.a.Remove(e.ctx, aor, "c:sip:a@1"); err != nil {
		t.Fatal(err)
	}
	if bs := e.lookup(t, e.b); len(bs) != 0 {
		t.Fatalf("after removing all: %+v", bs)
	}
}

func testInvalid(t *testing.T, e *env) {
	now := e.clk.Now()
	for i, req := range []*location.SaveRequest{
		nil,
		{CallID: "c", CSeq: 1, Now: now},
		{AoR: aor, CallID: "c", CSeq: 1, Now: now, Wildcard: true, Contacts: []location.Binding{{Contact: "sip:a@h", Expires: now.Add(time.Hour)}}},
		{AoR: aor, CallID: "c", CSeq: 1, Now: now, Contacts: []location.Binding{{Contact: "sip:a@h", Q: 1001, Expires: now.Add(time.Hour)}}},
		{AoR: aor, CallID: "c", CSeq: 1, Now: now, Contacts: []location.Binding{{Contact: "sip:a@h", RegID: -1, Q: 1, Expires: now.Add(time.Hour)}}},
	} {
		if _, err := e.a.Save(e.ctx, req); !errors.Is(err, location.ErrInvalid) {
			t.Fatalf("request %d: %v, want ErrInvalid", i, err)
		}
	}
	if bs := e.lookup(t, e.a); len(bs) != 0 {
		t.Fatalf("invalid requests stored %+v", bs)
	}
}

func testSort(t *testing.T, e *env) {
	req := e.reg("c1", 1, time.Hour, "sip:a@b", "sip:a@a", "sip:a@c")
	req.Contacts[2].Q = 500
	e.save(t, e.a, req)
	e.clk.Advance(time.Second)
	e.save(t, e.a, e.reg("c1", 2, time.Hour, "sip:a@z"))
	want := []string{"sip:a@z", "sip:a@a", "sip:a@b", "sip:a@c"}
	if got := contacts(e.lookup(t, e.b)); !slices.Equal(got, want) {
		t.Fatalf("order %v, want %v", got, want)
	}
}

// testConcurrent saves distinct contacts of one AoR from two stores at
// once: an atomic save loses none of them.
func testConcurrent(t *testing.T, e *env) {
	const perNode = 50
	var wg sync.WaitGroup
	errs := make(chan error, 2*perNode)
	for n, s := range []location.Store{e.a, e.b} {
		wg.Go(func() {
			for i := range perNode {
				// Each contact its own Call-ID, as separate UAs.
				req := e.reg(fmt.Sprintf("n%d-%d", n, i), 1, time.Hour, fmt.Sprintf("sip:a@n%d-%d", n, i))
				if _, err := s.Save(e.ctx, req); err != nil {
					errs <- err
					return
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	if bs := e.lookup(t, e.a); len(bs) != 2*perNode {
		t.Fatalf("%d bindings after %d concurrent saves", len(bs), 2*perNode)
	}
}
