package location

import (
	"errors"
	"slices"
	"testing"
	"time"
)

var t0 = time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)

// stored builds a binding as Apply would have stored it.
func stored(contact, callID string, cseq uint32, registered, expires time.Duration) Binding {
	return Binding{AoR: "sip:alice@example.com", Contact: contact, CallID: callID, CSeq: cseq,
		Q: 1000, Registered: t0.Add(registered), Expires: t0.Add(expires)}
}

// contact builds a requested contact expiring after exp (0: remove).
func contact(uri string, exp time.Duration) Binding {
	return Binding{Contact: uri, Q: 1000, Expires: t0.Add(exp)}
}

func withInstance(b Binding, inst string, regID int) Binding {
	b.InstanceID, b.RegID = inst, regID
	return b
}

func withQ(b Binding, q int) Binding { b.Q = q; return b }

func saveReq(callID string, cseq uint32, cs ...Binding) *SaveRequest {
	return &SaveRequest{AoR: "sip:alice@example.com", CallID: callID, CSeq: cseq, Contacts: cs, Now: t0}
}

func TestApply(t *testing.T) {
	const (
		a = "sip:alice@192.0.2.1:5060"
		b = "sip:alice@192.0.2.2:5060"
		c = "sip:alice@192.0.2.3:5060"
	)
	inst := "<urn:uuid:00000000-0000-1000-8000-000A95A0E128>"
	type want struct {
		contacts                           []string // in result order
		added, removed, refreshed, evicted int
		err                                error
	}
	tests := []struct {
		name string
		cur  []Binding
		req  *SaveRequest
		want want
	}{
		{"add to empty AoR", nil, saveReq("c1", 1, contact(a, time.Hour)),
			want{contacts: []string{a}, added: 1}},
		{"refresh same Call-ID higher CSeq", []Binding{stored(a, "c1", 1, -time.Minute, time.Hour)},
			saveReq("c1", 2, contact(a, 2*time.Hour)), want{contacts: []string{a}, refreshed: 1}},
		{"same Call-ID same CSeq is out of order", []Binding{stored(a, "c1", 5, -time.Minute, time.Hour)},
			saveReq("c1", 5, contact(a, time.Hour)), want{err: ErrOutOfOrder}},
		{"same Call-ID lower CSeq is out of order", []Binding{stored(a, "c1", 5, -time.Minute, time.Hour)},
			saveReq("c1", 4, contact(a, time.Hour)), want{err: ErrOutOfOrder}},
		{"out of order on one contact fails the whole request",
			[]Binding{stored(a, "c1", 5, -time.Minute, time.Hour)},
			saveReq("c1", 5, contact(b, time.Hour), contact(a, time.Hour)), want{err: ErrOutOfOrder}},
		{"different Call-ID with lower CSeq replaces (UA rebooted)",
			[]Binding{stored(a, "c1", 9, -time.Minute, time.Hour)},
			saveReq("c2", 1, contact(a, time.Hour)), want{contacts: []string{a}, refreshed: 1}},
		{"expires 0 removes", []Binding{stored(a, "c1", 1, -time.Minute, time.Hour), stored(b, "c1", 1, -time.Minute, time.Hour)},
			saveReq("c1", 2, contact(a, 0)), want{contacts: []string{b}, removed: 1}},
		{"removing an unknown contact is a no-op", []Binding{stored(a, "c1", 1, -time.Minute, time.Hour)},
			saveReq("c1", 2, contact(b, 0)), want{contacts: []string{a}}},
		{"remove with out-of-order CSeq fails", []Binding{stored(a, "c1", 3, -time.Minute, time.Hour)},
			saveReq("c1", 3, contact(a, 0)), want{err: ErrOutOfOrder}},
		{"add and remove in one request",
			[]Binding{stored(a, "c1", 1, -time.Minute, time.Hour), stored(b, "c9", 1, -time.Minute, time.Hour)},
			saveReq("c1", 2, contact(a, 0), contact(c, time.Hour), contact(b, time.Hour)),
			want{contacts: []string{b, c}, added: 1, removed: 1, refreshed: 1}},
		{"wildcard removes all",
			[]Binding{stored(a, "c1", 1, -time.Minute, time.Hour), stored(b, "c2", 7, -time.Minute, time.Hour)},
			&SaveRequest{AoR: "sip:alice@example.com", CallID: "c1", CSeq: 2, Wildcard: true, Now: t0},
			want{contacts: []string{}, removed: 2}},
		{"wildcard with out-of-order CSeq fails",
			[]Binding{stored(a, "c1", 1, -time.Minute, time.Hour), stored(b, "c2", 7, -time.Minute, time.Hour)},
			&SaveRequest{AoR: "sip:alice@example.com", CallID: "c2", CSeq: 7, Wildcard: true, Now: t0},
			want{err: ErrOutOfOrder}},
		{"wildcard with contacts is invalid", nil,
			&SaveRequest{AoR: "sip:alice@example.com", CallID: "c1", CSeq: 2, Wildcard: true, Now: t0,
				Contacts: []Binding{contact(a, time.Hour)}}, want{err: ErrInvalid}},
		{"instance+reg-id from a new address replaces the old binding",
			[]Binding{withInstance(stored(a, "c1", 1, -time.Minute, time.Hour), inst, 1)},
			saveReq("c2", 1, withInstance(contact(b, time.Hour), inst, 1)),
			want{contacts: []string{b}, refreshed: 1}},
		{"instance without reg-id from a new address replaces too",
			[]Binding{withInstance(stored(a, "c1", 1, -time.Minute, time.Hour), inst, 0)},
			saveReq("c1", 2, withInstance(contact(b, time.Hour), inst, 0)),
			want{contacts: []string{b}, refreshed: 1}},
		{"same instance, another reg-id is a second flow",
			[]Binding{withInstance(stored(a, "c1", 1, -time.Minute, time.Hour), inst, 1)},
			saveReq("c2", 1, withInstance(contact(b, time.Hour), inst, 2)),
			want{contacts: []string{b, a}, added: 1}},
		{"instance binding removed by instance key",
			[]Binding{withInstance(stored(a, "c1", 1, -time.Minute, time.Hour), inst, 1)},
			saveReq("c1", 2, withInstance(contact(c, 0), inst, 1)),
			want{contacts: []string{}, removed: 1}},
		{"expired bindings are dropped and not counted",
			[]Binding{stored(a, "c1", 1, -2*time.Hour, -time.Second), stored(b, "c1", 1, -time.Minute, 0)},
			&SaveRequest{AoR: "sip:alice@example.com", CallID: "c1", CSeq: 2, Now: t0, MaxContacts: 1,
				Contacts: []Binding{contact(c, time.Hour)}},
			want{contacts: []string{c}, added: 1}},
		{"reject policy refuses a new binding over the cap",
			[]Binding{stored(a, "c1", 1, -time.Minute, time.Hour), stored(b, "c2", 1, -time.Minute, time.Hour)},
			&SaveRequest{AoR: "sip:alice@example.com", CallID: "c3", CSeq: 1, Now: t0, MaxContacts: 2,
				Policy: PolicyReject, Contacts: []Binding{contact(c, time.Hour)}},
			want{err: ErrTooManyContacts}},
		{"reject policy allows a swap within the cap",
			[]Binding{stored(a, "c1", 1, -time.Minute, time.Hour), stored(b, "c2", 1, -time.Minute, time.Hour)},
			&SaveRequest{AoR: "sip:alice@example.com", CallID: "c1", CSeq: 2, Now: t0, MaxContacts: 2,
				Policy: PolicyReject, Contacts: []Binding{contact(a, 0), contact(c, time.Hour)}},
			want{contacts: []string{c, b}, added: 1, removed: 1}},
		{"reject policy still allows refreshes when the cap was lowered",
			[]Binding{stored(a, "c1", 1, -time.Minute, time.Hour), stored(b, "c2", 1, -time.Minute, time.Hour)},
			&SaveRequest{AoR: "sip:alice@example.com", CallID: "c1", CSeq: 2, Now: t0, MaxContacts: 1,
				Policy: PolicyReject, Contacts: []Binding{contact(a, time.Hour)}},
			want{contacts: []string{a, b}, refreshed: 1}},
		{"replace-oldest evicts the oldest registration",
			[]Binding{stored(a, "c1", 1, -2*time.Minute, time.Hour), stored(b, "c2", 1, -time.Minute, time.Hour)},
			&SaveRequest{AoR: "sip:alice@example.com", CallID: "c3", CSeq: 1, Now: t0, MaxContacts: 2,
				Policy: PolicyReplaceOldest, Contacts: []Binding{contact(c, time.Hour)}},
			want{contacts: []string{c, b}, added: 1, evicted: 1}},
		{"replace-oldest with more contacts than the cap keeps the cap",
			nil,
			&SaveRequest{AoR: "sip:alice@example.com", CallID: "c3", CSeq: 1, Now: t0, MaxContacts: 2,
				Policy: PolicyReplaceOldest, Contacts: []Binding{withQ(contact(a, time.Hour), 100),
					contact(b, time.Hour), contact(c, time.Hour)}},
			want{contacts: []string{b, c}, added: 2, evicted: 1}},
		{"sorted by q then most recent",
			[]Binding{stored(a, "c1", 1, -2*time.Minute, time.Hour), withQ(stored(b, "c2", 1, -time.Minute, time.Hour), 500)},
			saveReq("c3", 1, withQ(contact(c, time.Hour), 1000)),
			want{contacts: []string{c, a, b}, added: 1}},
		{"a key repeated within a request: last wins, no out-of-order",
			[]Binding{stored(a, "c1", 1, -time.Minute, time.Hour)},
			saveReq("c1", 2, contact(a, time.Hour), withQ(contact(a, 2*time.Hour), 700)),
			want{contacts: []string{a}, refreshed: 1}},
		{"added then removed within a request",
			nil, saveReq("c1", 1, contact(a, time.Hour), contact(a, 0)),
			want{contacts: []string{}}},
		{"no AoR is invalid", nil, &SaveRequest{CallID: "c1", CSeq: 1, Now: t0}, want{err: ErrInvalid}},
		{"nil request is invalid", nil, nil, want{err: ErrInvalid}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			before := slices.Clone(tt.cur)
			next, res, err := Apply(tt.cur, tt.req)
			if !slices.EqualFunc(before, tt.cur, bindingEqual) {
				t.Fatalf("Apply modified cur")
			}
			if tt.want.err != nil {
				if !errors.Is(err, tt.want.err) || next != nil || res != nil {
					t.Fatalf("got (%v, %v, %v), want error %v and nothing else", next, res, err, tt.want.err)
				}
				return
			}
			if err != nil {
				t.Fatalf("Apply: %v", err)
			}
			got := []string{}
			for _, b := range res.Bindings {
				got = append(got, b.Contact)
			}
			if !slices.Equal(got, tt.want.contacts) {
				t.Errorf("bindings %q, want %q", got, tt.want.contacts)
			}
			if !slices.EqualFunc(next, res.Bindings, bindingEqual) {
				t.Errorf("next and result differ")
			}
			if res.Added != tt.want.added || res.Removed != tt.want.removed ||
				res.Refreshed != tt.want.refreshed || res.Evicted != tt.want.evicted {
				t.Errorf("added/removed/refreshed/evicted = %d/%d/%d/%d, want %d/%d/%d/%d",
					res.Added, res.Removed, res.Refreshed, res.Evicted,
					tt.want.added, tt.want.removed, tt.want.refreshed, tt.want.evicted)
			}
			for _, b := range next {
				if b.AoR != "sip:alice@example.com" || !b.Expires.After(t0) {
					t.Errorf("bad stored binding %+v", b)
				}
			}
		})
	}
}

// TestApplyStampsRefresh checks what a refresh writes: the request's
// Call-ID, CSeq, Now and the new contact data.
func TestApplyStampsRefresh(t *testing.T) {
	cur := []Binding{stored("sip:a@192.0.2.1", "c1", 1, -time.Hour, time.Minute)}
	nc := contact("sip:a@192.0.2.1", 2*time.Hour)
	nc.Received, nc.NATed, nc.Path = "198.51.100.7:4000", true, []string{"<sip:edge;lr>"}
	next, _, err := Apply(cur, saveReq("c1", 2, nc))
	if err != nil {
		t.Fatal(err)
	}
	b := next[0]
	if b.CallID != "c1" || b.CSeq != 2 || !b.Registered.Equal(t0) || !b.Expires.Equal(t0.Add(2*time.Hour)) ||
		b.Received != "198.51.100.7:4000" || !b.NATed || len(b.Path) != 1 {
		t.Fatalf("refresh stored %+v", b)
	}
}

func bindingEqual(a, b Binding) bool {
	return a.Key() == b.Key() && a.Contact == b.Contact && a.CallID == b.CallID && a.CSeq == b.CSeq &&
		a.Q == b.Q && a.Expires.Equal(b.Expires) && a.Registered.Equal(b.Registered) &&
		slices.Equal(a.Path, b.Path) && a.Received == b.Received && a.Transport == b.Transport &&
		a.Socket == b.Socket && a.UserAgent == b.UserAgent && a.NATed == b.NATed && a.Home == b.Home &&
		a.AoR == b.AoR && a.InstanceID == b.InstanceID && a.RegID == b.RegID
}
