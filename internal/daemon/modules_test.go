package daemon

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/goleak"

	"github.com/anyedge/anyedge/bgp"
	"github.com/anyedge/anyedge/bgp/announce"
	"github.com/anyedge/anyedge/cluster"
	"github.com/anyedge/anyedge/internal/admin"
	"github.com/anyedge/anyedge/internal/config"
)

// events records what happened in which order, across fakes.
type events struct {
	mu sync.Mutex
	l  []string
}

func (e *events) add(s string) {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.l = append(e.l, s)
}

func (e *events) list() []string {
	e.mu.Lock()
	defer e.mu.Unlock()
	return slices.Clone(e.l)
}

// fakeClusterNode is a fakeNode that modules can be built on: it records
// registered capabilities (reported in Caps with capState), subscriptions
// and the drain flag.
type fakeClusterNode struct {
	*fakeNode
	ev *events

	mu       sync.Mutex
	caps     []string
	capState string
	subs     int
	drained  []bool
}

func newFakeClusterNode(ev *events) *fakeClusterNode {
	return &fakeClusterNode{fakeNode: newFakeNode(), ev: ev, capState: "synced"}
}

func (f *fakeClusterNode) Register(c cluster.Capability) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.caps = append(f.caps, c.Name)
	return nil
}

func (f *fakeClusterNode) Subscribe(func(cluster.Event)) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.subs++
}

func (f *fakeClusterNode) Self() cluster.NodeMeta { return cluster.NodeMeta{ID: 7, Region: "test"} }

// Meta and NodeBySIPHost: a cluster of this node alone, without a SIP
// address.
func (f *fakeClusterNode) Meta(id uint32) (cluster.NodeMeta, bool) {
	return f.Self(), id == 7
}

func (f *fakeClusterNode) NodeBySIPHost(netip.Addr) (uint32, bool) { return 0, false }

func (f *fakeClusterNode) Broadcast(string, cluster.MsgType, []byte) int { return 0 }

func (f *fakeClusterNode) Caps() []cluster.CapView {
	f.mu.Lock()
	defer f.mu.Unlock()
	var out []cluster.CapView
	for _, c := range f.caps {
		out = append(out, cluster.CapView{Name: c, State: f.capState})
	}
	return out
}

func (f *fakeClusterNode) setCapState(s string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.capState = s
}

func (f *fakeClusterNode) SetDrained(d bool) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.drained = append(f.drained, d)
	return nil
}

func (f *fakeClusterNode) drainCalls() []bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	return slices.Clone(f.drained)
}

func (f *fakeClusterNode) Close() error {
	f.ev.add("node closed")
	return f.fakeNode.Close()
}

func (f *fakeClusterNode) factory() NodeFactory {
	return func(cluster.Config, *slog.Logger, prometheus.Registerer) (Node, error) { return f, nil }
}

// recSpeaker is a bgp.Fake that logs its Sets and Close into events.
type recSpeaker struct {
	*bgp.Fake
	ev *events
}

func (r *recSpeaker) Set(ctx context.Context, advs ...bgp.Advertisement) error {
	err := r.Fake.Set(ctx, advs...)
	if err == nil {
		r.ev.add(fmt.Sprintf("bgp set %d", len(advs)))
	}
	return err
}

func (r *recSpeaker) Close() error {
	r.ev.add("bgp closed")
	return r.Fake.Close()
}

const modulesConfig = `
admin: {listen: "127.0.0.1:0", token: s3cret}
cluster:
  node_id: 7
  region: test
  seed: true
  key: 0123456789abcdef
  state_dir: STATE_DIR
sip:
  listeners: [{transport: udp, addr: "127.0.0.1:0"}]
  domains: [example.com]
cps:
  limits:
    - {name: platform, rate: 100}
    - {name: per-ip, rate: 5, selector: source_ip}
bgp:
  asn: 65001
  router_id: 198.18.0.1
  peers: [{address: 198.18.0.254, asn: 65000}]
  prefixes: [{prefix: 203.0.113.10/32}]
announce:
  hold_down: 200ms
  start_hold_down: 10ms
  drain: {prepend: 1, quiet: 200ms}
`

type modulesFixture struct {
	d       *Daemon
	base    string
	node    *fakeClusterNode
	speaker *recSpeaker
	ev      *events
	logs    *syncBuffer
	sigs    chan os.Signal
	done    chan error
	http    *http.Client
	state   string
}

func startModules(t *testing.T, state string) *modulesFixture {
	t.Helper()
	cfg, err := config.Parse("edged.yaml", []byte(strings.ReplaceAll(modulesConfig, "STATE_DIR", state)))
	if err != nil {
		t.Fatal(err)
	}
	f := &modulesFixture{ev: &events{}, logs: &syncBuffer{}, sigs: make(chan os.Signal), done: make(chan error, 1),
		http: &http.Client{Transport: &http.Transport{}}, state: state}
	f.node = newFakeClusterNode(f.ev)
	f.speaker = &recSpeaker{Fake: bgp.NewFake(bgp.PeerStatus{
		Address: netip.MustParseAddr("198.18.0.254"), ASN: 65000, State: bgp.StateEstablished}), ev: f.ev}
	f.d, err = New(cfg, WithLogOutput(f.logs), WithNodeFactory(f.node.factory()), WithSignals(f.sigs),
		WithSpeakerFactory(func(c bgp.Config, _ *slog.Logger, _ prometheus.Registerer) (bgp.Speaker, error) {
			if c.ASN != 65001 {
				t.Errorf("speaker built with %+v", c)
			}
			return f.speaker, nil
		}))
	if err != nil {
		t.Fatal(err)
	}
	addr, err := f.d.Listen()
	if err != nil {
		t.Fatal(err)
	}
	f.base = "http://" + addr.String()
	go func() { f.done <- f.d.Run(context.Background()) }()
	return f
}

// stop sends SIGTERM and waits for Run.
func (f *modulesFixture) stop(t *testing.T) {
	t.Helper()
	f.http.CloseIdleConnections()
	f.sigs <- syscall.SIGTERM
	if err := <-f.done; err != nil {
		t.Errorf("Run = %v", err)
	}
}

// call does one admin request and decodes the JSON reply into v (if not
// nil); it returns the status.
func (f *modulesFixture) call(t *testing.T, method, path string, v any) int {
	t.Helper()
	return f.send(t, method, path, "", v)
}

func (f *modulesFixture) send(t *testing.T, method, path, body string, v any) int {
	t.Helper()
	req, _ := http.NewRequest(method, f.base+path, strings.NewReader(body))
	req.Header.Set("Authorization", "Bearer s3cret")
	resp, err := f.http.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if v != nil {
		if err := json.Unmarshal(b, v); err != nil {
			t.Fatalf("%s %s: %v: %s", method, path, err, b)
		}
	}
	return resp.StatusCode
}

// eventually polls cond every 10 ms for up to 10 s (the daemon's own
// goroutines, on a loaded machine): it waits for what the daemon does,
// it does not sleep to let time pass.
func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func (f *modulesFixture) readyz(t *testing.T) admin.ReadyBody {
	t.Helper()
	var r admin.ReadyBody
	code := f.call(t, "GET", "/readyz", &r)
	if (code == 200) != r.Ready {
		t.Errorf("/readyz status %d with ready=%v", code, r.Ready)
	}
	return r
}

func (f *modulesFixture) routes(t *testing.T) []admin.BGPRoute {
	t.Helper()
	var r []admin.BGPRoute
	if code := f.call(t, "GET", "/v1/bgp/routes", &r); code != 200 {
		t.Fatalf("/v1/bgp/routes: %d", code)
	}
	return r
}

// TestModulesWiring runs sip + cps + bgp on loopback with a fake cluster
// node and a fake speaker: the CPS capability is registered before the
// node starts, the prefixes are announced only while the node is ready
// (through the announcement controller), drain shifts then withdraws them
// and survives a restart, and SIGTERM withdraws before anything closes.
func TestModulesWiring(t *testing.T) {
	defer goleak.VerifyNone(t)
	state := t.TempDir()
	f := startModules(t, state)

	// The capability was registered, and the node is ready once it is
	// synced and SIP listens.
	if f.node.caps[0] != "cps" || f.node.subs != 2 {
		t.Errorf("caps %v, subscriptions %d: want cps registered, cps and the controller subscribed", f.node.caps, f.node.subs)
	}
	eventually(t, "ready", func() bool { return f.readyz(t).Ready })
	if !f.d.sip.Addr("udp").IsValid() {
		t.Errorf("SIP not listening")
	}
	eventually(t, "the prefix announced", func() bool { return len(f.routes(t)) == 1 })
	if r := f.routes(t)[0]; r.Prefix != "203.0.113.10/32" || !slices.Equal(r.Peers, []string{"198.18.0.254"}) {
		t.Errorf("route = %+v", r)
	}
	var peers []admin.BGPPeer
	if f.call(t, "GET", "/v1/bgp/peers", &peers); len(peers) != 1 || peers[0].State != "established" {
		t.Errorf("peers = %+v", peers)
	}

	var limits []admin.CPSLimit
	if code := f.call(t, "GET", "/v1/cps", &limits); code != 200 || len(limits) != 2 ||
		limits[0].Name != "platform" || limits[0].Limit != 100 || limits[1].Selector != "source_ip" {
		t.Errorf("/v1/cps = %d %+v", code, limits)
	}
	if code := f.send(t, "POST", "/v1/cps/rate", `{"name": "platform", "rate": 300}`, nil); code != 200 {
		t.Errorf("set rate = %d", code)
	}
	if f.call(t, "GET", "/v1/cps", &limits); limits[0].Limit != 300 {
		t.Errorf("platform limit after set = %v, want 300", limits[0].Limit)
	}

	// A capability that is not synced takes the node out.
	f.node.setCapState("syncing")
	eventually(t, "withdrawn while syncing", func() bool { return len(f.routes(t)) == 0 })
	if r := f.readyz(t); r.Ready || !slices.Equal(r.Reasons, []string{"not_synced: cps"}) {
		t.Errorf("readyz = %+v", r)
	}
	f.node.setCapState("synced")
	eventually(t, "announced again after the hold-down", func() bool { return len(f.routes(t)) == 1 })

	// Drain: GRACEFUL_SHUTDOWN and the drain prepend first, withdrawn once
	// no request has arrived for drain.quiet, then (nothing in flight)
	// drained in the cluster; saved from the start.
	if code := f.call(t, "POST", "/v1/drain", nil); code != 200 {
		t.Fatalf("drain = %d", code)
	}
	if r := f.readyz(t); r.Ready || !slices.Equal(r.Reasons, []string{"drained: shifting"}) {
		t.Errorf("readyz after drain = %+v", r)
	}
	if st, err := announce.LoadState(filepath.Join(state, announce.StateFile)); err != nil || !st.Drained {
		t.Errorf("drain state not saved: %+v %v", st, err)
	}
	if r := f.routes(t); len(r) != 1 || !slices.Equal(r[0].Communities, []string{"65535:0"}) || r[0].Prepend != 1 {
		t.Errorf("routes while shifting = %+v, want the prefix with 65535:0 and prepend 1", r)
	}
	eventually(t, "withdrawn after drain", func() bool { return len(f.routes(t)) == 0 })
	eventually(t, "drained in the cluster", func() bool { return slices.Equal(f.node.drainCalls(), []bool{true}) })
	if r := f.readyz(t); r.Ready || !slices.Equal(r.Reasons, []string{"drained"}) {
		t.Errorf("readyz once drained = %+v", r)
	}
	f.stop(t)

	// The restart comes up drained, and tells the cluster.
	f = startModules(t, state)
	eventually(t, "drain advertised after restart", func() bool { return slices.Equal(f.node.drainCalls(), []bool{true}) })
	// Once the start hold-down (10 ms here) is over, only the drain holds
	// the node back.
	eventually(t, "readyz after restart says drained only", func() bool {
		r := f.readyz(t)
		return !r.Ready && slices.Equal(r.Reasons, []string{"drained"})
	})
	if !strings.Contains(f.logs.String(), "drained before it stopped") {
		t.Errorf("restart drained without saying so:\n%s", f.logs)
	}
	if code := f.call(t, "POST", "/v1/undrain", nil); code != 200 {
		t.Fatalf("undrain = %d", code)
	}
	eventually(t, "announced after undrain", func() bool { return len(f.routes(t)) == 1 })
	if st, err := announce.LoadState(filepath.Join(state, announce.StateFile)); err != nil || st.Drained {
		t.Errorf("drain state after undrain: %+v %v", st, err)
	}

	// SIGTERM: withdraw first, then the node leaves, then the speaker
	// closes.
	f.stop(t)
	ev := f.ev.list()
	last := ev[len(ev)-3:]
	if !slices.Equal(last, []string{"bgp set 0", "node closed", "bgp closed"}) {
		t.Errorf("shutdown order %q, want withdraw, node closed, speaker closed", ev)
	}
	if f.d.sip.Ready() {
		t.Errorf("SIP still up after Run")
	}
}

// TestCPSNeedsAClusterNode: a node that cannot carry capabilities is
// refused when cps is configured, rather than running without limits.
func TestCPSNeedsAClusterNode(t *testing.T) {
	cfg, err := config.Parse("edged.yaml", []byte(strings.ReplaceAll(modulesConfig, "STATE_DIR", t.TempDir())))
	if err != nil {
		t.Fatal(err)
	}
	node := newFakeNode()
	_, err = New(cfg, WithLogOutput(io.Discard), WithNodeFactory(node.factory(nil)))
	if err == nil || err.Error() != "cps: the cluster node (*daemon.fakeNode) cannot carry capabilities" {
		t.Errorf("New = %v", err)
	}
	if node.closed != 1 {
		t.Errorf("node closed %d times, want 1", node.closed)
	}
}

// TestSpeakerFailureStopsTheDaemon: a speaker that cannot start fails Run
// and leaves nothing running.
func TestSpeakerFailureStopsTheDaemon(t *testing.T) {
	defer goleak.VerifyNone(t)
	cfg, err := config.Parse("edged.yaml", []byte(strings.ReplaceAll(modulesConfig, "STATE_DIR", t.TempDir())))
	if err != nil {
		t.Fatal(err)
	}
	node := newFakeClusterNode(&events{})
	d, err := New(cfg, WithLogOutput(io.Discard), WithNodeFactory(node.factory()), WithSignals(make(chan os.Signal)),
		WithSpeakerFactory(func(bgp.Config, *slog.Logger, prometheus.Registerer) (bgp.Speaker, error) {
			return nil, errors.New("router_id taken")
		}))
	if err != nil {
		t.Fatal(err)
	}
	if err := d.Run(context.Background()); err == nil || err.Error() != "bgp: router_id taken" {
		t.Errorf("Run = %v", err)
	}
	if node.closed != 1 {
		t.Errorf("node closed %d times, want 1", node.closed)
	}
}
