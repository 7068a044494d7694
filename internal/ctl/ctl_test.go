package ctl

import (
	"bytes"
	"context"
	"errors"
	"flag"
	"fmt"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/anyedge/anyedge/cluster"
	"github.com/anyedge/anyedge/internal/admin"
)

var update = flag.Bool("update", false, "rewrite the golden files in testdata/")

// fakeAPI serves a fixed four-node picture from node 1: node 2 is a direct
// neighbour, node 3 is reached through 2, node 4 is down.
type fakeAPI struct {
	err error // returned by the state-changing calls

	mu    sync.Mutex
	calls []string
}

func (f *fakeAPI) Nodes() []cluster.NodeView {
	return []cluster.NodeView{
		{ID: 1, Region: "eu-west", ClusterAddr: "198.18.1.1:5600", SIPAddr: "198.18.1.1:5060", Priority: 100, Seed: true, State: "self", Incarnation: 7, Synced: []string{"location", "cps"}},
		{ID: 3, Region: "us-east", ClusterAddr: "198.18.2.1:5600", Priority: 100, State: "up", NextHop: 2, Hops: 2, Incarnation: 5},
		{ID: 2, Region: "eu-west", ClusterAddr: "198.18.1.2:5600", SIPAddr: "198.18.1.2:5060", Priority: 200, State: "up", Direct: true, NextHop: 2, Hops: 1, RTT: 420 * time.Microsecond, Incarnation: 9, Synced: []string{"location"}},
		{ID: 4, Region: "us-east", ClusterAddr: "198.18.2.2:5600", Priority: 100, State: "down", Drained: true},
	}
}

func (f *fakeAPI) Topology() cluster.TopologyView {
	return cluster.TopologyView{
		Self:  1,
		Nodes: f.Nodes(),
		Links: []cluster.LinkView{
			{A: 2, B: 3, State: "up", RTT: 81234567 * time.Nanosecond},
			{A: 1, B: 2, State: "up", RTT: 420 * time.Microsecond},
			{A: 1, B: 4, State: "half"},
		},
		Routes: []cluster.RouteView{
			{Dst: 3, NextHop: 2, Path: []uint32{2, 3}},
			{Dst: 2, NextHop: 2, Path: []uint32{2}},
		},
	}
}

func (f *fakeAPI) Caps() []cluster.CapView {
	return []cluster.CapView{
		{Name: "location", State: "synced", Donor: 2, Records: 1000000, Attempts: 1},
		{Name: "cps", State: "syncing", Donor: 2, Records: 42, Attempts: 2},
		{Name: "dialog", State: "not-synced"},
	}
}

func (f *fakeAPI) Tags() []cluster.TagView {
	return []cluster.TagView{
		{Name: "vip-eu", Owner: 1, Active: true, Eligible: []uint32{1, 2}, Quorum: true},
		{Name: "vip-us", Owner: 3, Eligible: []uint32{3, 4}, Override: 3, Quorum: true},
		{Name: "vip-lost", Eligible: []uint32{4}},
	}
}

func (f *fakeAPI) RemoveNode(id uint32) error {
	f.record("remove %d", id)
	return f.err
}

func (f *fakeAPI) SetTagActive(tag string, node uint32) error {
	f.record("set-active %s %d", tag, node)
	return f.err
}

func (f *fakeAPI) record(format string, a ...any) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.calls = append(f.calls, fmt.Sprintf(format, a...))
}

type result struct {
	code           int
	stdout, stderr string
}

// run runs edgectl against a daemon serving api through the real admin
// handler, with the given environment.
func run(t *testing.T, api cluster.API, token string, env map[string]string, args ...string) result {
	t.Helper()
	srv := httptest.NewServer(admin.New(api, admin.WithToken(token)))
	defer srv.Close()
	if env == nil {
		env = map[string]string{}
	}
	if _, ok := env["EDGECTL_ADMIN"]; !ok {
		env["EDGECTL_ADMIN"] = srv.URL
	}
	return runEnv(env, args...)
}

func runEnv(env map[string]string, args ...string) result {
	var stdout, stderr bytes.Buffer
	code := Main(context.Background(), args, func(k string) string { return env[k] }, &stdout, &stderr)
	return result{code, stdout.String(), stderr.String()}
}

func golden(t *testing.T, name, got string) {
	t.Helper()
	path := filepath.Join("testdata", name+".golden")
	if *update {
		if err := os.WriteFile(path, []byte(got), 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("%v (run go test -update to create it)", err)
	}
	if got != string(want) {
		t.Errorf("output differs from %s (go test -update rewrites it)\n got:\n%s\nwant:\n%s", path, got, want)
	}
}

// TestShowCommands pins both output modes of every read command.
func TestShowCommands(t *testing.T) {
	defer goleak.VerifyNone(t)
	for _, cmd := range []string{"nodes", "topology", "caps", "tags"} {
		for _, mode := range []string{"table", "json"} {
			t.Run(cmd+"/"+mode, func(t *testing.T) {
				r := run(t, &fakeAPI{}, "", nil, "-o", mode, "cluster", cmd)
				if r.code != 0 || r.stderr != "" {
					t.Fatalf("exit %d, stderr %q", r.code, r.stderr)
				}
				golden(t, cmd+"."+mode, r.stdout)
			})
		}
	}
}

// emptyAPI is a node that knows nothing yet.
type emptyAPI struct{ fakeAPI }

func (*emptyAPI) Nodes() []cluster.NodeView      { return nil }
func (*emptyAPI) Topology() cluster.TopologyView { return cluster.TopologyView{Self: 1} }
func (*emptyAPI) Caps() []cluster.CapView        { return nil }
func (*emptyAPI) Tags() []cluster.TagView        { return nil }

func TestShowEmpty(t *testing.T) {
	defer goleak.VerifyNone(t)
	for cmd, want := range map[string]string{
		"nodes": "no nodes known\n",
		"caps":  "no capabilities registered\n",
		"tags":  "no sharing tags configured\n",
	} {
		if r := run(t, &emptyAPI{}, "", nil, "cluster", cmd); r.code != 0 || r.stdout != want {
			t.Errorf("cluster %s: exit %d, stdout %q, want %q", cmd, r.code, r.stdout, want)
		}
	}
	r := run(t, &emptyAPI{}, "", nil, "cluster", "topology")
	if !strings.HasPrefix(r.stdout, "node 1 sees 0 nodes (0 up, 0 down), 0 links\n") {
		t.Errorf("empty topology:\n%s", r.stdout)
	}
}

func TestActions(t *testing.T) {
	defer goleak.VerifyNone(t)
	tests := []struct {
		name      string
		args      []string
		env       map[string]string
		apiErr    error
		code      int
		stdout    string
		stderrHas string
		calls     []string
	}{
		{name: "set-active", args: []string{"-token", "s3cret", "cluster", "tags", "set-active", "vip-eu", "2"},
			stdout: "sharing tag vip-eu: node 2 set as the active owner\n", calls: []string{"set-active vip-eu 2"}},
		{name: "clear override", args: []string{"cluster", "tags", "set-active", "vip-eu", "0"},
			env:    map[string]string{"EDGECTL_TOKEN": "s3cret"},
			stdout: "sharing tag vip-eu: override cleared, the cluster elects the owner\n", calls: []string{"set-active vip-eu 0"}},
		{name: "remove", args: []string{"cluster", "remove", "4", "-token", "s3cret"},
			stdout: "node 4 removed from the cluster\n", calls: []string{"remove 4"}},
		{name: "remove json", args: []string{"-o", "json", "-token", "s3cret", "cluster", "remove", "4"},
			stdout: "{\n  \"status\": \"ok\"\n}\n", calls: []string{"remove 4"}},
		{name: "refused by the cluster", args: []string{"-token", "s3cret", "cluster", "remove", "2"},
			apiErr: errors.New("node 2 is up: only a down node can be removed"), code: 1,
			stderrHas: "edgectl: POST /v1/cluster/remove: 409 Conflict: node 2 is up: only a down node can be removed\n",
			calls:     []string{"remove 2"}},
		{name: "no token", args: []string{"cluster", "remove", "4"}, code: 1,
			stderrHas: "401 Unauthorized: missing or wrong bearer token\n  (pass the admin token with -token or EDGECTL_TOKEN)"},
		{name: "bad node", args: []string{"cluster", "remove", "four"}, code: 2,
			stderrHas: "edgectl: bad NODE \"four\": want a node id 1..4294967295\nusage: edgectl cluster remove NODE"},
		{name: "remove node 0", args: []string{"cluster", "remove", "0"}, code: 2,
			stderrHas: "bad NODE \"0\""},
		{name: "missing argument", args: []string{"cluster", "tags", "set-active", "vip-eu"}, code: 2,
			stderrHas: "usage: edgectl cluster tags set-active TAG NODE"},
		{name: "extra argument", args: []string{"cluster", "nodes", "extra"}, code: 2,
			stderrHas: "usage: edgectl cluster nodes"},
		{name: "unknown command", args: []string{"cluster", "frobnicate"}, code: 2,
			stderrHas: "edgectl: unknown command \"cluster frobnicate\""},
		{name: "no command", args: nil, code: 2, stderrHas: "edgectl: no command"},
		{name: "bad output format", args: []string{"-o", "yaml", "cluster", "nodes"}, code: 2,
			stderrHas: "edgectl: -o must be table or json, not \"yaml\""},
		{name: "bad admin URL", args: []string{"-admin", "ftp://x", "cluster", "nodes"}, code: 2,
			stderrHas: "edgectl: bad -admin URL \"ftp://x\""},
		{name: "help", args: []string{"help"}, stdout: usage},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			api := &fakeAPI{err: tt.apiErr}
			r := run(t, api, "s3cret", tt.env, tt.args...)
			if r.code != tt.code {
				t.Errorf("exit %d, want %d; stderr: %s", r.code, tt.code, r.stderr)
			}
			if tt.name == "help" {
				if !strings.HasPrefix(r.stdout, tt.stdout) || !strings.Contains(r.stdout, "-admin URL") {
					t.Errorf("help:\n%s", r.stdout)
				}
			} else if r.stdout != tt.stdout {
				t.Errorf("stdout = %q, want %q", r.stdout, tt.stdout)
			}
			if !strings.Contains(r.stderr, tt.stderrHas) {
				t.Errorf("stderr = %q, want it to contain %q", r.stderr, tt.stderrHas)
			}
			if strings.Join(api.calls, "|") != strings.Join(tt.calls, "|") {
				t.Errorf("API calls %q, want %q", api.calls, tt.calls)
			}
		})
	}
}

// TestAdminAddress checks where edgectl connects: the flag wins over the
// environment, which wins over the default; a bare host:port is accepted.
func TestAdminAddress(t *testing.T) {
	defer goleak.VerifyNone(t)
	srv := httptest.NewServer(admin.New(&fakeAPI{}))
	defer srv.Close()
	hostport := strings.TrimPrefix(srv.URL, "http://")

	dead := httptest.NewServer(nil)
	deadURL := dead.URL
	dead.Close()

	for _, tt := range []struct {
		name string
		env  map[string]string
		args []string
	}{
		{"flag", map[string]string{"EDGECTL_ADMIN": deadURL}, []string{"-admin", srv.URL, "cluster", "tags"}},
		{"flag after the command", map[string]string{"EDGECTL_ADMIN": deadURL}, []string{"cluster", "tags", "-admin", srv.URL}},
		{"environment", map[string]string{"EDGECTL_ADMIN": srv.URL}, []string{"cluster", "tags"}},
		{"host:port", nil, []string{"-admin", hostport, "cluster", "tags"}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			r := runEnv(tt.env, tt.args...)
			if r.code != 0 || !strings.Contains(r.stdout, "vip-eu") {
				t.Errorf("exit %d\nstdout: %s\nstderr: %s", r.code, r.stdout, r.stderr)
			}
		})
	}
}

func TestDaemonUnreachable(t *testing.T) {
	defer goleak.VerifyNone(t)
	dead := httptest.NewServer(nil)
	url := dead.URL
	dead.Close()
	r := runEnv(map[string]string{"EDGECTL_ADMIN": url}, "cluster", "nodes")
	if r.code != 1 {
		t.Errorf("exit %d, want 1", r.code)
	}
	for _, want := range []string{
		"edgectl: cannot reach edged at " + url + ": ",
		"connection refused",
		"is edged running? -admin (or EDGECTL_ADMIN) must match its admin.listen",
	} {
		if !strings.Contains(r.stderr, want) {
			t.Errorf("stderr %q lacks %q", r.stderr, want)
		}
	}
}

func TestDefaultAdmin(t *testing.T) {
	c, err := newClient(DefaultAdmin, "", time.Second)
	if err != nil || c.base.String() != "http://127.0.0.1:9090" {
		t.Errorf("default admin = %v, %v", c.base, err)
	}
}
