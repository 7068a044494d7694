package admin

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/anyedge/anyedge/edge/location"
	"github.com/anyedge/anyedge/geo"
)

// fakeLocation answers every lookup with two routes and records the
// arguments.
type fakeLocation struct {
	err  error
	args []string
}

func (f *fakeLocation) Region() string { return "rA" }

func (f *fakeLocation) LookupRoutes(_ context.Context, aor, region string) ([]geo.Route, error) {
	f.args = append(f.args, aor+" "+region)
	if f.err != nil {
		return nil, f.err
	}
	exp := time.Date(2026, 11, 25, 16, 0, 0, 0, time.UTC)
	return []geo.Route{
		{Kind: geo.RouteLocal, Node: 1, Homes: []uint32{1}, Region: "rA",
			Binding: location.Binding{Contact: "sip:alice@198.18.1.21:5061", Received: "198.18.1.21:5061", Expires: exp}},
		{Kind: geo.RouteRelay, Node: 3, Region: "rB", RTT: 2 * time.Millisecond, Hops: 1,
			Binding: location.Binding{Contact: "sip:198.18.2.11:5060", Expires: exp}},
	}, nil
}

func TestLocation(t *testing.T) {
	loc := &fakeLocation{}
	s := New(sampleAPI(), WithLocation(loc))
	rec := do(t, s, call{method: "GET", path: "/v1/location/alice@example.com"})
	if rec.Code != 200 {
		t.Fatalf("status %d: %s", rec.Code, rec.Body)
	}
	want := `[{"kind":"local","node":1,"homes":[1],"region":"rA","contact":"sip:alice@198.18.1.21:5061",` +
		`"received":"198.18.1.21:5061","expires":"2026-11-25T16:00:00Z","rtt_ns":0,"hops":0},` +
		`{"kind":"relay","node":3,"homes":[],"region":"rB","contact":"sip:198.18.2.11:5060",` +
		`"expires":"2026-11-25T16:00:00Z","rtt_ns":2000000,"hops":1}]`
	if !jsonEqual(t, rec.Body.Bytes(), []byte(want)) {
		t.Errorf("body\n got %s\nwant %s", rec.Body, want)
	}
	do(t, s, call{method: "GET", path: "/v1/location/sip:bob@example.com?region=rB"})
	if want := []string{"sip:alice@example.com rA", "sip:bob@example.com rB"}; strings.Join(loc.args, ",") != strings.Join(want, ",") {
		t.Errorf("lookups %q, want %q", loc.args, want)
	}

	for _, tt := range []struct {
		path   string
		status int
	}{
		{"/v1/location/alice", 400},
		{"/v1/location/@example.com", 400},
		{"/v1/location/sip:alice@", 400},
		{"/v1/location/alice@example.com;transport=tcp", 400},
		{"/v1/location/" + strings.Repeat("a", 600) + "@example.com", 400},
	} {
		if rec := do(t, s, call{method: "GET", path: tt.path}); rec.Code != tt.status {
			t.Errorf("GET %.60s: %d, want %d: %s", tt.path, rec.Code, tt.status, rec.Body)
		}
	}
	if len(loc.args) != 2 {
		t.Errorf("bad AoRs reached the store: %q", loc.args[2:])
	}
	if rec := do(t, s, call{method: "POST", path: "/v1/location/alice@example.com"}); rec.Code != 405 {
		t.Errorf("POST: %d, want 405", rec.Code)
	}
	loc.err = errors.New("stopped")
	if rec := do(t, s, call{method: "GET", path: "/v1/location/alice@example.com"}); rec.Code != 500 || !strings.Contains(rec.Body.String(), "stopped") {
		t.Errorf("failed lookup: %d %s, want 500 with the reason", rec.Code, rec.Body)
	}
	if rec := do(t, New(sampleAPI()), call{method: "GET", path: "/v1/location/alice@example.com"}); rec.Code != 404 ||
		!strings.Contains(rec.Body.String(), "no geo section") {
		t.Errorf("without geo: %d %s, want 404 saying why", rec.Code, rec.Body)
	}
}
