package daemon

import (
	"context"
	"log/slog"
	"net/http"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/anyedge/anyedge/bgp"
	"github.com/anyedge/anyedge/internal/admin"
	"github.com/anyedge/anyedge/internal/config"
)

// reloadBase is modulesConfig with the parts a reload changes as markers.
const reloadBase = `
admin: {listen: "127.0.0.1:0", token: s3cret}
log: {level: LEVEL}
cluster:
  node_id: NODE_ID
  region: test
  seed: true
  key: 0123456789abcdef
sip:
  listeners: [{transport: udp, addr: "127.0.0.1:0"}]
  domains: [example.com]
cps:
  limits:
    - {name: platform, rate: RATE}
EXTRA_LIMIT
bgp:
  asn: 65001
  router_id: 198.18.0.1
  peers:
    - {address: 198.18.0.254, asn: 65000}
EXTRA_PEER
  prefixes:
    - {prefix: 203.0.113.10/32}
EXTRA_PREFIX
announce:
  hold_down: 200ms
REGIONS
`

type reloadVars struct {
	level, nodeID, rate, limit, peer, prefix, regions string
}

func (v reloadVars) render() string {
	return strings.NewReplacer(
		"LEVEL", v.level, "NODE_ID", v.nodeID, "RATE", v.rate, "EXTRA_LIMIT", v.limit,
		"EXTRA_PEER", v.peer, "EXTRA_PREFIX", v.prefix, "REGIONS", v.regions,
	).Replace(reloadBase)
}

var baseVars = reloadVars{level: "info", nodeID: "7", rate: "100"}

// startReload runs the daemon on fakes from a config file, as edged
// -config does, and returns the fixture and the file.
func startReload(t *testing.T) (*modulesFixture, string) {
	t.Helper()
	return startReloadWith(t, baseVars.render())
}

func startReloadWith(t *testing.T, src string) (*modulesFixture, string) {
	t.Helper()
	path := filepath.Join(t.TempDir(), "edged.yaml")
	writeFile(t, path, src)
	cfg, err := config.Load(path)
	if err != nil {
		t.Fatal(err)
	}
	f := &modulesFixture{ev: &events{}, logs: &syncBuffer{}, sigs: make(chan os.Signal), done: make(chan error, 1),
		http: &http.Client{Transport: &http.Transport{}}}
	f.node = newFakeClusterNode(f.ev)
	f.speaker = &recSpeaker{Fake: bgp.NewFake(bgp.PeerStatus{
		Address: netip.MustParseAddr("198.18.0.254"), ASN: 65000, State: bgp.StateEstablished}), ev: f.ev}
	if _, err := f.speaker.UpdatePeers(context.Background(), cfg.BGP.Peers); err != nil {
		t.Fatal(err)
	}
	f.d, err = New(cfg, WithLogOutput(f.logs), WithNodeFactory(f.node.factory()), WithSignals(f.sigs),
		WithConfigPath(path),
		WithSpeakerFactory(func(bgp.Config, *slog.Logger, prometheus.Registerer) (bgp.Speaker, error) {
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
	return f, path
}

func writeFile(t *testing.T, path, data string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(data), 0o600); err != nil {
		t.Fatal(err)
	}
}

// hup sends SIGHUP and waits until the reload counted result.
func (f *modulesFixture) hup(t *testing.T, result string) {
	t.Helper()
	c := f.d.rl.total.WithLabelValues(result)
	before := testutil.ToFloat64(c)
	f.sigs <- syscall.SIGHUP
	eventually(t, "reload counted as "+result, func() bool { return testutil.ToFloat64(c) == before+1 })
}

func (f *modulesFixture) announcedPrefixes() []string {
	var out []string
	for _, a := range f.speaker.Announced() {
		out = append(out, a.String())
	}
	return out
}

func peerAddrs(ps []bgp.PeerConfig) []string {
	var out []string
	for _, p := range ps {
		out = append(out, p.Address)
	}
	return out
}

// A SIGHUP applies the reloadable parts (log level, CPS limits, BGP peers,
// prefixes and region policy) to the running daemon; a file that does not
// validate, or that changes a key only a restart applies, is refused
// whole with the key named, and the old config stays in force.
func TestReloadAppliesAndRefuses(t *testing.T) {
	f, path := startReload(t)
	defer f.stop(t)
	eventually(t, "announced", func() bool {
		return slices.Equal(f.announcedPrefixes(), []string{"203.0.113.10/32"})
	})
	if got := testutil.ToFloat64(f.d.rl.lastOK); got <= 0 {
		t.Errorf("last reload success timestamp %v at start", got)
	}

	// Everything reloadable at once.
	v := baseVars
	v.level, v.rate = "debug", "50"
	v.limit = "    - {name: per-ip, rate: 5, selector: source_ip}"
	v.peer = "    - {address: 198.18.0.253, asn: 65000}"
	v.prefix = "    - {prefix: 203.0.113.20/32}"
	v.regions = "  regions: [{region: test, med: 30}]"
	writeFile(t, path, v.render())
	f.hup(t, reloadSuccess)

	if got := f.d.rl.level.Level(); got != slog.LevelDebug {
		t.Errorf("log level %v after reload, want debug", got)
	}
	var limits []admin.CPSLimit
	if code := f.call(t, "GET", "/v1/cps", &limits); code != 200 || len(limits) != 2 ||
		limits[0].Name != "platform" || limits[0].Limit != 50 || limits[1].Name != "per-ip" {
		t.Fatalf("/v1/cps after reload = %d %+v", code, limits)
	}
	if got := peerAddrs(f.speaker.PeerConfigs()); !slices.Equal(got, []string{"198.18.0.254", "198.18.0.253"}) {
		t.Errorf("speaker peers %v", got)
	}
	eventually(t, "new prefix and policy announced", func() bool {
		return slices.Equal(f.announcedPrefixes(), []string{"203.0.113.10/32 med 30", "203.0.113.20/32 med 30"})
	})
	if !strings.Contains(f.logs.String(), "reload: config applied") {
		t.Errorf("no reload log:\n%s", f.logs)
	}

	// A file that does not validate: refused, file and key named.
	bad := strings.Replace(v.render(), "hold_down: 200ms", "hold_dwn: 200ms", 1)
	writeFile(t, path, bad)
	f.hup(t, reloadInvalid)
	if !strings.Contains(f.logs.String(), path+":") || !strings.Contains(f.logs.String(), "announce.hold_dwn: unknown key (did you mean hold_down?)") {
		t.Errorf("refusal does not name the file and key:\n%s", f.logs)
	}

	// A key only a restart applies: refused whole, even with reloadable
	// changes beside it.
	v2 := v
	v2.nodeID, v2.rate = "8", "10"
	writeFile(t, path, v2.render())
	f.hup(t, reloadRestartRequired)
	if !strings.Contains(f.logs.String(), "cluster.node_id: cannot change without a restart") {
		t.Errorf("refusal does not name cluster.node_id:\n%s", f.logs)
	}
	if f.call(t, "GET", "/v1/cps", &limits); limits[0].Limit != 50 {
		t.Errorf("a refused reload changed the rate to %v", limits[0].Limit)
	}

	// Back to the start: the peer and prefix go, the limit is removed.
	writeFile(t, path, baseVars.render())
	f.hup(t, reloadSuccess)
	if got := peerAddrs(f.speaker.PeerConfigs()); !slices.Equal(got, []string{"198.18.0.254"}) {
		t.Errorf("speaker peers %v after removing one", got)
	}
	eventually(t, "prefix withdrawn", func() bool {
		return slices.Equal(f.announcedPrefixes(), []string{"203.0.113.10/32"})
	})
	if f.call(t, "GET", "/v1/cps", &limits); len(limits) != 1 || limits[0].Limit != 100 {
		t.Errorf("/v1/cps after the second reload %+v", limits)
	}
	if got := f.d.rl.level.Level(); got != slog.LevelInfo {
		t.Errorf("log level %v, want info again", got)
	}
	if problems, err := testutil.GatherAndLint(f.d.reg, "anyedge_config_reload_total", "anyedge_config_last_reload_success_timestamp_seconds"); err != nil || len(problems) > 0 {
		t.Errorf("promlint: %v %v", err, problems)
	}
}

// The reloadable keys and the restart-only ones, as Reload sorts them.
func TestReloadRestartKeys(t *testing.T) {
	f, _ := startReload(t)
	defer f.stop(t)
	repl := map[string][2]string{
		"cluster.region": {"region: test\n  seed", "region: other\n  seed"},
		"admin.listen":   {"127.0.0.1:0\", token", "127.0.0.1:1\", token"},
		"sip.domains[0]": {"domains: [example.com]", "domains: [example.org]"},
		"bgp.router_id":  {"router_id: 198.18.0.1", "router_id: 198.18.0.2"},
		// A section added or removed.
		"cps": {"cps:\n  limits:\n    - {name: platform, rate: 100}\n", ""},
	}
	for key, r := range repl {
		cfg, err := config.Parse("edged.yaml", []byte(strings.Replace(baseVars.render(), r[0], r[1], 1)))
		if err != nil {
			t.Fatal(err)
		}
		err = f.d.Reload(cfg)
		re, ok := err.(*RestartRequiredError)
		if !ok || !slices.Equal(re.Keys, []string{key}) {
			t.Errorf("changing %s: %v", key, err)
		}
	}
}

// The subscribers file is re-read at every reload; a bad one fails the
// reload, names the key, and keeps the old list.
func TestReloadSubscribers(t *testing.T) {
	subs := filepath.Join(t.TempDir(), "subscribers")
	writeFile(t, subs, "alice example.com password=s3cret\n")
	src := strings.Replace(baseVars.render(), "  domains: [example.com]",
		"  domains: [example.com]\n  auth: {enabled: true, subscribers_file: "+subs+"}", 1)
	f, _ := startReloadWith(t, src)
	defer f.stop(t)

	writeFile(t, subs, "alice example.com password=s3cret\nbob example.com password=other\n")
	f.hup(t, reloadSuccess)

	writeFile(t, subs, "alice example.com nothex\n")
	f.hup(t, reloadFailed)
	if !strings.Contains(f.logs.String(), "sip.auth.subscribers_file: ") {
		t.Errorf("the failure does not name the key:\n%s", f.logs)
	}
}
