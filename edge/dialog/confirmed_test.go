package dialog

import "testing"

// Confirmed tells the end-to-end ACK of an answered dialog from the ACK of
// a failure: a leg that was only early (180, then 486 with the same To
// tag) is not confirmed, an answered one is, from either end.
func TestServiceConfirmed(t *testing.T) {
	svc, err := New(DefaultConfig(), nopCluster{1})
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range []string{"failed", "answered"} {
		if err := svc.Begin(Start{CallID: c, FromTag: "f", Caller: "sip:a@x", Callee: "sip:b@x", CSeq: 1}); err != nil {
			t.Fatal(err)
		}
		svc.Provisional(c, "f", "t", nil)
	}
	svc.InviteEnded("failed", "f")
	svc.Answer("answered", "f", "t", nil)
	svc.InviteEnded("answered", "f")
	for _, tc := range []struct {
		id   DialogID
		want bool
	}{
		{DialogID{CallID: "failed", FromTag: "f", ToTag: "t"}, false},
		{DialogID{CallID: "answered", FromTag: "f", ToTag: "t"}, true},
		{DialogID{CallID: "answered", FromTag: "t", ToTag: "f"}, true}, // from the callee
		{DialogID{CallID: "answered", FromTag: "f", ToTag: "other"}, false},
		{DialogID{CallID: "unknown", FromTag: "f", ToTag: "t"}, false},
	} {
		if got := svc.Confirmed(tc.id); got != tc.want {
			t.Errorf("Confirmed(%+v) = %v, want %v", tc.id, got, tc.want)
		}
	}
}
