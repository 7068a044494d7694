package ctl

import (
	"errors"
	"fmt"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/anyedge/anyedge/edge/cps"
	"github.com/anyedge/anyedge/internal/admin"
)

// modules fakes the daemon's modules: CPS limits, a BGP speaker whose
// routes disappear a few polls after a drain, readiness and drain.
type modules struct {
	mu       sync.Mutex
	calls    []string
	drained  bool
	reasons  []string // why not ready besides the drain
	routesIn int      // Routes calls after a drain that still list routes; -1: forever
	cpsErr   error
}

func (m *modules) record(format string, a ...any) {
	m.calls = append(m.calls, fmt.Sprintf(format, a...))
}

func (m *modules) Status() []cps.LimitStatus {
	return []cps.LimitStatus{
		{Name: "platform", Algorithm: cps.Sliding, Selector: cps.Global, Window: time.Second,
			Limit: 200, Share: 1, Rate: 150.25, Offered: 180, Rejected: 12},
		{Name: "per-ip", Algorithm: cps.Sliding, Selector: cps.SourceIP, Window: 10 * time.Second,
			Limit: 0.5, Share: 1, Rate: 0.3, Offered: 0.4, Rejected: 3, Keys: 2},
		{Name: "us-east", Algorithm: cps.RED, Selector: cps.Global, Region: "us-east", Window: time.Second,
			Limit: 50, Share: 2.0 / 3, Rate: 0, Offered: 0},
	}
}

func (m *modules) Top(limit string, n int) ([]cps.KeyRate, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.record("top %s %d", limit, n)
	if m.cpsErr != nil {
		return nil, m.cpsErr
	}
	if limit == "quiet" {
		return nil, nil
	}
	return []cps.KeyRate{{Key: "192.0.2.7", Rate: 0.2}, {Key: "2001:db8::9", Rate: 0.1}}[:min(n, 2)], nil
}

func (m *modules) SetRate(limit string, rate float64) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.record("set-rate %s %v", limit, rate)
	return m.cpsErr
}

func (m *modules) Peers() []admin.BGPPeer {
	return []admin.BGPPeer{
		{Address: "198.18.0.253", ASN: 65000, State: "active", LastError: "connect: connection refused"},
		{Address: "198.18.0.254", ASN: 65000, State: "established", Uptime: 3723*time.Second + 400*time.Millisecond,
			PrefixesSent: 2, PrefixesReceived: 0, BFD: "up"},
	}
}

func (m *modules) Routes() []admin.BGPRoute {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.drained {
		if m.routesIn == 0 {
			return nil
		}
		if m.routesIn > 0 {
			m.routesIn--
		}
	}
	return []admin.BGPRoute{
		{Prefix: "203.0.113.10/32", Communities: []string{"65000:100", "65535:65281"}, Peers: []string{"198.18.0.254"}},
		{Prefix: "2001:db8:1::/48", NextHop: "2001:db8::1", MED: 10, LocalPref: 200, Prepend: 2},
	}
}

func (m *modules) ready() (bool, []string) {
	m.mu.Lock()
	defer m.mu.Unlock()
	var why []string
	if m.drained {
		why = append(why, "drained")
	}
	why = append(why, m.reasons...)
	return len(why) == 0, why
}

func (m *modules) SetDrained(d bool) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.record("drained %v", d)
	m.drained = d
	return nil
}

// runModules runs edgectl against the admin handler with the modules
// given (nil: not configured).
func runModules(t *testing.T, m *modules, withBGP bool, args ...string) result {
	t.Helper()
	opts := []admin.Option{admin.WithToken("s3cret")}
	if m != nil {
		opts = append(opts, admin.WithCPS(m), admin.WithReadiness(m.ready), admin.WithDrainer(m))
		if withBGP {
			opts = append(opts, admin.WithBGP(m))
		}
	}
	srv := httptest.NewServer(admin.New(&fakeAPI{}, opts...))
	defer srv.Close()
	return runEnv(map[string]string{"EDGECTL_ADMIN": srv.URL, "EDGECTL_TOKEN": "s3cret"}, args...)
}

// TestModuleShowCommands pins both output modes of the CPS, BGP and
// readiness views.
func TestModuleShowCommands(t *testing.T) {
	defer goleak.VerifyNone(t)
	for _, tt := range []struct {
		name string
		args []string
		code int
	}{
		{"cps", []string{"cps"}, 0},
		{"cps-top", []string{"cps", "top", "per-ip"}, 0},
		{"bgp-peers", []string{"bgp", "peers"}, 0},
		{"bgp-routes", []string{"bgp", "routes"}, 0},
		{"ready-not", []string{"ready"}, 1},
	} {
		for _, mode := range []string{"table", "json"} {
			t.Run(tt.name+"/"+mode, func(t *testing.T) {
				m := &modules{reasons: []string{"sip: listeners not up", "cluster: capability cps is syncing"}}
				r := runModules(t, m, true, append([]string{"-o", mode}, tt.args...)...)
				if r.code != tt.code || r.stderr != "" {
					t.Fatalf("exit %d (want %d), stderr %q", r.code, tt.code, r.stderr)
				}
				golden(t, tt.name+"."+mode, r.stdout)
			})
		}
	}
}

func TestModuleCommands(t *testing.T) {
	defer goleak.VerifyNone(t)
	tests := []struct {
		name      string
		m         *modules // nil: modules not configured
		noBGP     bool
		args      []string
		code      int
		stdout    string
		stderrHas string
		calls     []string
	}{
		{name: "ready", m: &modules{}, args: []string{"ready"}, stdout: "ready\n"},
		{name: "ready json", m: &modules{}, args: []string{"ready", "-o", "json"}, stdout: "{\n  \"ready\": true\n}\n"},
		{name: "not ready", m: &modules{drained: true}, args: []string{"ready"}, code: 1, stdout: "not ready\n  - drained\n"},
		{name: "readiness not reported", args: []string{"ready"}, code: 1,
			stderrHas: "edgectl: GET /readyz: unexpected reply: 404 {\n  \"error\": \"readiness is not reported by this server\"\n}"},

		{name: "cps top with N", m: &modules{}, args: []string{"cps", "top", "per-ip", "1"},
			stdout: "KEY        RATE NOW\n192.0.2.7  0.2/s\n", calls: []string{"top per-ip 1"}},
		{name: "cps top of a quiet limit", m: &modules{}, args: []string{"cps", "top", "quiet"},
			stdout: "no calls in quiet's window\n", calls: []string{"top quiet 10"}},
		{name: "cps top of a global limit", m: &modules{cpsErr: errors.New(`cps: limit "platform" is not keyed`)},
			args: []string{"cps", "top", "platform"}, code: 1,
			stderrHas: "edgectl: GET /v1/cps/top?limit=platform&n=10: 400 Bad Request: cps: limit \"platform\" is not keyed\n",
			calls:     []string{"top platform 10"}},
		{name: "cps top bad N", m: &modules{}, args: []string{"cps", "top", "per-ip", "ten"}, code: 2,
			stderrHas: "edgectl: bad N \"ten\": want a count 1..1000\nusage: edgectl cps top LIMIT [N]\n"},
		{name: "cps top without a limit", m: &modules{}, args: []string{"cps", "top"}, code: 2,
			stderrHas: "usage: edgectl cps top LIMIT [N]\n"},
		{name: "cps top too many arguments", m: &modules{}, args: []string{"cps", "top", "a", "1", "2"}, code: 2,
			stderrHas: "usage: edgectl cps top LIMIT [N]\n"},
		{name: "cps set", m: &modules{}, args: []string{"cps", "set", "platform", "250.5"},
			stdout: "cps limit platform: rate set to 250.5/s, cluster-wide\n", calls: []string{"set-rate platform 250.5"}},
		{name: "cps set json", m: &modules{}, args: []string{"-o", "json", "cps", "set", "platform", "300"},
			stdout: "{\n  \"status\": \"ok\"\n}\n", calls: []string{"set-rate platform 300"}},
		{name: "cps set an unknown limit", m: &modules{cpsErr: fmt.Errorf("%w %q", cps.ErrUnknownLimit, "nope")},
			args: []string{"cps", "set", "nope", "1"}, code: 1,
			stderrHas: "edgectl: POST /v1/cps/rate: 404 Not Found: cps: unknown limit \"nope\"\n",
			calls:     []string{"set-rate nope 1"}},
		{name: "cps set bad rate", m: &modules{}, args: []string{"cps", "set", "platform", "0"}, code: 2,
			stderrHas: "edgectl: bad RATE \"0\": want calls per second, > 0\nusage: edgectl cps set LIMIT RATE\n"},
		{name: "cps not configured", args: []string{"cps"}, code: 1,
			stderrHas: "edgectl: GET /v1/cps: 404 Not Found: cps is not configured on this node (no cps section in edged.yaml)\n"},
		{name: "bgp not configured", m: &modules{}, noBGP: true, args: []string{"bgp", "routes"}, code: 1,
			stderrHas: "edgectl: GET /v1/bgp/routes: 404 Not Found: bgp is not configured on this node (no bgp section in edged.yaml)\n"},

		{name: "drain", m: &modules{}, args: []string{"drain"},
			stdout: "node drained: it stops being ready and its prefixes are withdrawn (drain -wait waits for it)\n",
			calls:  []string{"drained true"}},
		{name: "drain and wait for the withdrawal", m: &modules{routesIn: 2}, args: []string{"drain", "--wait"},
			stdout: "node drained: not ready, nothing announced\n", calls: []string{"drained true"}},
		{name: "drain and wait without bgp", m: &modules{}, noBGP: true, args: []string{"drain", "-wait"},
			stdout: "node drained: not ready, nothing announced\n", calls: []string{"drained true"}},
		{name: "drain and wait in vain", m: &modules{routesIn: -1}, args: []string{"drain", "-wait", "-wait-timeout", "500ms"},
			code: 1, stderrHas: "edgectl: drained, but after 500ms the node is still serving: 2 prefixes still announced\n",
			calls: []string{"drained true"}},
		{name: "wait with another command", m: &modules{}, args: []string{"undrain", "-wait"}, code: 2,
			stderrHas: "edgectl: -wait only applies to drain\n"},
		{name: "undrain", m: &modules{drained: true}, args: []string{"undrain"},
			stdout: "node undrained: it announces its prefixes again once ready\n", calls: []string{"drained false"}},
		{name: "undrain json", m: &modules{drained: true}, args: []string{"undrain", "-o", "json"},
			stdout: "{\n  \"status\": \"ok\"\n}\n", calls: []string{"drained false"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := runModules(t, tt.m, !tt.noBGP, tt.args...)
			if r.code != tt.code {
				t.Errorf("exit %d, want %d; stderr: %s", r.code, tt.code, r.stderr)
			}
			if r.stdout != tt.stdout {
				t.Errorf("stdout = %q, want %q", r.stdout, tt.stdout)
			}
			if !strings.Contains(r.stderr, tt.stderrHas) || (tt.stderrHas == "" && r.stderr != "") {
				t.Errorf("stderr = %q, want it to contain %q", r.stderr, tt.stderrHas)
			}
			var calls []string
			if tt.m != nil {
				calls = tt.m.calls
			}
			if strings.Join(calls, "|") != strings.Join(tt.calls, "|") {
				t.Errorf("calls %q, want %q", calls, tt.calls)
			}
		})
	}
}

// TestDrainNeedsAToken: drain changes state, so it needs the token.
func TestDrainNeedsAToken(t *testing.T) {
	defer goleak.VerifyNone(t)
	m := &modules{}
	srv := httptest.NewServer(admin.New(&fakeAPI{}, admin.WithToken("s3cret"), admin.WithDrainer(m)))
	defer srv.Close()
	r := runEnv(map[string]string{"EDGECTL_ADMIN": srv.URL}, "drain")
	if r.code != 1 || !strings.Contains(r.stderr, "POST /v1/drain: 401 Unauthorized") || len(m.calls) != 0 {
		t.Errorf("exit %d, stderr %q, calls %v", r.code, r.stderr, m.calls)
	}
}
