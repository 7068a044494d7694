package admin

import (
	"bytes"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/anyedge/anyedge/cluster"
	"github.com/anyedge/anyedge/edge/cps"
)

// fakeCPS is a CPS with two limits, one keyed, that records SetRate.
type fakeCPS struct {
	err     error // returned by Top and SetRate
	topArgs []string
	rates   []SetRateRequest
}

func (f *fakeCPS) Status() []cps.LimitStatus {
	return []cps.LimitStatus{
		{Name: "platform", Algorithm: cps.Sliding, Selector: cps.Global, Window: time.Second,
			Limit: 200, Share: 1, Rate: 150.5, Offered: 180, Rejected: 12},
		{Name: "per-ip", Algorithm: cps.Sliding, Selector: cps.SourceIP, Region: "eu-west", Window: time.Second,
			Limit: 5, Share: 1, Rate: 7, Offered: 9, Rejected: 3, Keys: 2,
			Top: []cps.KeyRate{{Key: "192.0.2.7", Rate: 5}, {Key: "192.0.2.8", Rate: 2}}},
	}
}

func (f *fakeCPS) Top(limit string, n int) ([]cps.KeyRate, error) {
	f.topArgs = append(f.topArgs, fmt.Sprintf("%s %d", limit, n))
	if f.err != nil {
		return nil, f.err
	}
	return []cps.KeyRate{{Key: "192.0.2.7", Rate: 5}, {Key: "192.0.2.8", Rate: 2}}[:min(n, 2)], nil
}

func (f *fakeCPS) SetRate(limit string, rate float64) error {
	f.rates = append(f.rates, SetRateRequest{Name: limit, Rate: rate})
	return f.err
}

type fakeBGP struct {
	peers  []BGPPeer
	routes []BGPRoute
}

func (f *fakeBGP) Peers() []BGPPeer   { return f.peers }
func (f *fakeBGP) Routes() []BGPRoute { return f.routes }

type fakeDrainer struct {
	err   error
	calls []bool
}

func (f *fakeDrainer) SetDrained(d bool) error { f.calls = append(f.calls, d); return f.err }

func TestReadyz(t *testing.T) {
	for _, tt := range []struct {
		name     string
		ready    ReadyFunc
		status   int
		wantBody string
	}{
		{"ready", func() (bool, []string) { return true, nil }, 200, `{"ready":true}`},
		{"not ready", func() (bool, []string) { return false, []string{"drained", "sip: listeners not up"} },
			503, `{"ready":false,"reasons":["drained","sip: listeners not up"]}`},
		{"not ready without a reason", func() (bool, []string) { return false, nil },
			503, `{"ready":false,"reasons":["not ready"]}`},
		{"not reported", nil, 404, `{"error":"readiness is not reported by this server"}`},
	} {
		t.Run(tt.name, func(t *testing.T) {
			var opts []Option
			if tt.ready != nil {
				opts = append(opts, WithReadiness(tt.ready))
			}
			rec := do(t, New(&fakeAPI{}, opts...), call{method: "GET", path: "/readyz"})
			if rec.Code != tt.status || !jsonEqual(t, rec.Body.Bytes(), []byte(tt.wantBody)) {
				t.Errorf("readyz = %d %s, want %d %s", rec.Code, rec.Body, tt.status, tt.wantBody)
			}
		})
	}
}

func TestCPSAndBGPReads(t *testing.T) {
	b := &fakeBGP{
		peers: []BGPPeer{{Address: "198.18.0.254", ASN: 65000, State: "established", Uptime: time.Minute,
			PrefixesSent: 1, BFD: "up"}},
		routes: []BGPRoute{{Prefix: "203.0.113.10/32", Communities: []string{"65000:100"}}},
	}
	s := New(&fakeAPI{}, WithCPS(&fakeCPS{}), WithBGP(b))
	for _, tt := range []struct{ path, want string }{
		{"/v1/cps", `[
			{"name":"platform","algorithm":"sliding","selector":"global","window_ns":1000000000,
			 "limit":200,"share":1,"rate":150.5,"offered":180,"rejected":12},
			{"name":"per-ip","algorithm":"sliding","selector":"source_ip","region":"eu-west","window_ns":1000000000,
			 "limit":5,"share":1,"rate":7,"offered":9,"rejected":3,"keys":2,
			 "top":[{"key":"192.0.2.7","rate":5},{"key":"192.0.2.8","rate":2}]}]`},
		{"/v1/cps/top?limit=per-ip", `[{"key":"192.0.2.7","rate":5},{"key":"192.0.2.8","rate":2}]`},
		{"/v1/cps/top?limit=per-ip&n=1", `[{"key":"192.0.2.7","rate":5}]`},
		{"/v1/bgp/peers", `[{"address":"198.18.0.254","asn":65000,"state":"established","uptime_ns":60000000000,
			"prefixes_sent":1,"prefixes_received":0,"bfd":"up"}]`},
		// A route announced to nobody yet lists no peers as [], not null.
		{"/v1/bgp/routes", `[{"prefix":"203.0.113.10/32","communities":["65000:100"],"peers":[]}]`},
	} {
		rec := do(t, s, call{method: "GET", path: tt.path})
		if rec.Code != 200 || !jsonEqual(t, rec.Body.Bytes(), []byte(tt.want)) {
			t.Errorf("GET %s = %d %s\nwant %s", tt.path, rec.Code, rec.Body, tt.want)
		}
	}
	// Nothing announced, no peers: lists, not null.
	s = New(&fakeAPI{}, WithBGP(&fakeBGP{}))
	for _, path := range []string{"/v1/bgp/peers", "/v1/bgp/routes"} {
		if rec := do(t, s, call{method: "GET", path: path}); rec.Code != 200 || strings.TrimSpace(rec.Body.String()) != "[]" {
			t.Errorf("GET %s = %d %s, want []", path, rec.Code, rec.Body)
		}
	}
}

// TestModulesNotConfigured: a node without a cps or bgp section answers
// their endpoints 404 with a reason, whatever the method's token needs.
func TestModulesNotConfigured(t *testing.T) {
	s := New(&fakeAPI{})
	for _, c := range []call{
		{method: "GET", path: "/v1/cps"},
		{method: "GET", path: "/v1/cps/top?limit=x"},
		{method: "POST", path: "/v1/cps/rate", body: `{"name":"x","rate":1}`},
		{method: "GET", path: "/v1/bgp/peers"},
		{method: "GET", path: "/v1/bgp/routes"},
		{method: "POST", path: "/v1/drain"},
	} {
		rec := do(t, s, c)
		want := "cps is not configured on this node (no cps section in edged.yaml)"
		switch {
		case strings.HasPrefix(c.path, "/v1/bgp"):
			want = "bgp is not configured on this node (no bgp section in edged.yaml)"
		case c.path == "/v1/drain":
			want = "drain is not available on this server"
		}
		if rec.Code != 404 || !jsonEqual(t, rec.Body.Bytes(), []byte(`{"error":"`+want+`"}`)) {
			t.Errorf("%s %s = %d %s, want 404 %q", c.method, c.path, rec.Code, rec.Body, want)
		}
	}
}

func TestCPSWrites(t *testing.T) {
	badRate := errors.New(`cps: rate 0.5 for "platform": must be in (0, 1e9] and admit at least one call per 1s window`)
	tests := []struct {
		name       string
		cpsErr     error
		call       call
		wantStatus int
		wantBody   string
		wantRates  []SetRateRequest
		wantTop    []string
	}{
		{name: "set rate", call: call{method: "POST", path: "/v1/cps/rate", body: `{"name":"platform","rate":300}`, token: "t0ken"},
			wantStatus: 200, wantBody: `{"status":"ok"}`, wantRates: []SetRateRequest{{"platform", 300}}},
		{name: "set rate without a token", call: call{method: "POST", path: "/v1/cps/rate", body: `{"name":"platform","rate":300}`},
			wantStatus: 401, wantBody: `{"error":"missing or wrong bearer token"}`},
		{name: "set rate without a name", call: call{method: "POST", path: "/v1/cps/rate", body: `{"rate":300}`, token: "t0ken"},
			wantStatus: 400, wantBody: `{"error":"\"name\" is required"}`},
		{name: "set rate of an unknown limit", cpsErr: fmt.Errorf("%w %q", cps.ErrUnknownLimit, "nope"),
			call:       call{method: "POST", path: "/v1/cps/rate", body: `{"name":"nope","rate":1}`, token: "t0ken"},
			wantStatus: 404, wantBody: `{"error":"cps: unknown limit \"nope\""}`, wantRates: []SetRateRequest{{"nope", 1}}},
		{name: "set a bad rate", cpsErr: badRate,
			call:       call{method: "POST", path: "/v1/cps/rate", body: `{"name":"platform","rate":0.5}`, token: "t0ken"},
			wantStatus: 400, wantBody: `{"error":` + strconv.Quote(badRate.Error()) + `}`, wantRates: []SetRateRequest{{"platform", 0.5}}},
		{name: "set rate with a string", call: call{method: "POST", path: "/v1/cps/rate", body: `{"name":"platform","rate":"fast"}`, token: "t0ken"},
			wantStatus: 400, wantBody: `{"error":"bad request body: json: cannot unmarshal string into Go struct field SetRateRequest.rate of type float64"}`},
		{name: "top without a limit", call: call{method: "GET", path: "/v1/cps/top"},
			wantStatus: 400, wantBody: `{"error":"query parameter \"limit\" is required"}`},
		{name: "top with a bad n", call: call{method: "GET", path: "/v1/cps/top?limit=per-ip&n=0"},
			wantStatus: 400, wantBody: `{"error":"query parameter \"n\" must be 1..1000, not \"0\""}`},
		{name: "top of a global limit", cpsErr: errors.New(`cps: limit "platform" is not keyed`),
			call:       call{method: "GET", path: "/v1/cps/top?limit=platform&n=5"},
			wantStatus: 400, wantBody: `{"error":"cps: limit \"platform\" is not keyed"}`, wantTop: []string{"platform 5"}},
		{name: "top of an unknown limit", cpsErr: fmt.Errorf("%w %q", cps.ErrUnknownLimit, "nope"),
			call:       call{method: "GET", path: "/v1/cps/top?limit=nope"},
			wantStatus: 404, wantBody: `{"error":"cps: unknown limit \"nope\""}`, wantTop: []string{"nope 10"}},
		{name: "rate with GET", call: call{method: "GET", path: "/v1/cps/rate"},
			wantStatus: 405, wantBody: `{"error":"method GET not allowed, use POST"}`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := &fakeCPS{err: tt.cpsErr}
			var logs bytes.Buffer
			s := New(&fakeAPI{}, WithCPS(c), WithToken("t0ken"), WithLogger(slog.New(slog.NewTextHandler(&logs, nil))))
			rec := do(t, s, tt.call)
			if rec.Code != tt.wantStatus || !jsonEqual(t, rec.Body.Bytes(), []byte(tt.wantBody)) {
				t.Errorf("= %d %s, want %d %s", rec.Code, rec.Body, tt.wantStatus, tt.wantBody)
			}
			if !equal(c.rates, tt.wantRates) {
				t.Errorf("SetRate calls %v, want %v", c.rates, tt.wantRates)
			}
			if !equal(c.topArgs, tt.wantTop) {
				t.Errorf("Top calls %v, want %v", c.topArgs, tt.wantTop)
			}
			if rec.Code == 200 && !strings.Contains(logs.String(), "cps rate set by operator") {
				t.Errorf("operator action not logged:\n%s", logs.String())
			}
		})
	}
}

func TestDrain(t *testing.T) {
	tests := []struct {
		name       string
		err        error
		call       call
		wantStatus int
		wantBody   string
		wantCalls  []bool
		wantLog    string
	}{
		{name: "drain", call: call{method: "POST", path: "/v1/drain", token: "t0ken"},
			wantStatus: 200, wantBody: `{"status":"ok"}`, wantCalls: []bool{true}, wantLog: "node drained by operator"},
		{name: "drain with a body", call: call{method: "POST", path: "/v1/drain", body: `{}`, token: "t0ken"},
			wantStatus: 200, wantBody: `{"status":"ok"}`, wantCalls: []bool{true}, wantLog: "node drained by operator"},
		{name: "undrain", call: call{method: "POST", path: "/v1/undrain", token: "t0ken"},
			wantStatus: 200, wantBody: `{"status":"ok"}`, wantCalls: []bool{false}, wantLog: "node undrained by operator"},
		{name: "drain without a token", call: call{method: "POST", path: "/v1/drain"},
			wantStatus: 401, wantBody: `{"error":"missing or wrong bearer token"}`},
		{name: "undrain without a token", call: call{method: "POST", path: "/v1/undrain", token: "wrong"},
			wantStatus: 401, wantBody: `{"error":"missing or wrong bearer token"}`},
		{name: "drain while the node is not running", err: cluster.ErrNotRunning,
			call:       call{method: "POST", path: "/v1/drain", token: "t0ken"},
			wantStatus: 503, wantBody: `{"error":"cluster: node not running"}`, wantCalls: []bool{true}},
		{name: "drain not saved", err: errors.New("drained, but not saved: read-only file system"),
			call:       call{method: "POST", path: "/v1/drain", token: "t0ken"},
			wantStatus: 500, wantBody: `{"error":"drained, but not saved: read-only file system"}`, wantCalls: []bool{true}},
		{name: "drain with GET", call: call{method: "GET", path: "/v1/drain"},
			wantStatus: 405, wantBody: `{"error":"method GET not allowed, use POST"}`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			d := &fakeDrainer{err: tt.err}
			var logs bytes.Buffer
			s := New(&fakeAPI{}, WithDrainer(d), WithToken("t0ken"), WithLogger(slog.New(slog.NewTextHandler(&logs, nil))))
			rec := do(t, s, tt.call)
			if rec.Code != tt.wantStatus || !jsonEqual(t, rec.Body.Bytes(), []byte(tt.wantBody)) {
				t.Errorf("= %d %s, want %d %s", rec.Code, rec.Body, tt.wantStatus, tt.wantBody)
			}
			if !equal(d.calls, tt.wantCalls) {
				t.Errorf("SetDrained calls %v, want %v", d.calls, tt.wantCalls)
			}
			if !strings.Contains(logs.String(), tt.wantLog) {
				t.Errorf("log lacks %q:\n%s", tt.wantLog, logs.String())
			}
		})
	}
}
