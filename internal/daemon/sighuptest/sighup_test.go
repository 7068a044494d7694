// Package sighuptest runs a real edged process and reloads it with
// SIGHUP: a CPS limit and a BGP peer change, and the BGP session with the
// peer that did not change stays up throughout. The routers are GoBGP
// servers inside the test process, on loopback addresses. It is a package
// of its own because GoBGP's server loop cannot be stopped: its goroutines
// would fail the leak checks of internal/daemon's tests.
package sighuptest

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	api "github.com/osrg/gobgp/v3/api"
	gobgplog "github.com/osrg/gobgp/v3/pkg/log"
	"github.com/osrg/gobgp/v3/pkg/server"
)

// edgedBinary builds cmd/edged into a temporary directory (the code under
// test, not an older bin/edged).
func edgedBinary(t *testing.T) string {
	t.Helper()
	goBin, err := exec.LookPath("go")
	if err != nil {
		t.Skipf("go not in PATH: %v", err)
	}
	out := filepath.Join(t.TempDir(), "edged")
	cmd := exec.Command(goBin, "build", "-o", out, "github.com/anyedge/anyedge/cmd/edged")
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("building edged: %v\n%s", err, b)
	}
	return out
}

func freePort(t *testing.T, host string) int {
	t.Helper()
	l, err := net.Listen("tcp", host+":0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// router is a GoBGP server standing in for an upstream router, listening
// on addr and accepting edged (from 127.0.0.1) as a passive eBGP peer.
func router(t *testing.T, addr string, port int) *server.BgpServer {
	t.Helper()
	r := server.NewBgpServer(server.LoggerOption(quietLogger{}))
	go r.Serve()
	ctx := context.Background()
	if err := r.StartBgp(ctx, &api.StartBgpRequest{Global: &api.Global{
		Asn: 65000, RouterId: "10.255.0.1", ListenPort: int32(port), ListenAddresses: []string{addr},
	}}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { r.Stop() })
	if err := r.AddPeer(ctx, &api.AddPeerRequest{Peer: &api.Peer{
		Conf:      &api.PeerConf{NeighborAddress: "127.0.0.1", PeerAsn: 65001},
		Transport: &api.Transport{PassiveMode: true},
		AfiSafis: []*api.AfiSafi{{Config: &api.AfiSafiConfig{
			Family: &api.Family{Afi: api.Family_AFI_IP, Safi: api.Family_SAFI_UNICAST}, Enabled: true}}},
	}}); err != nil {
		t.Fatal(err)
	}
	return r
}

// session is the router's view of its session with edged.
type session struct {
	up    bool
	since time.Time // start of the current established session
	paths []string
}

func sessionOf(r *server.BgpServer) session {
	var s session
	r.ListPeer(context.Background(), &api.ListPeerRequest{}, func(p *api.Peer) {
		if p.State != nil && p.State.SessionState == api.PeerState_ESTABLISHED {
			s.up = true
			if p.Timers != nil && p.Timers.State != nil && p.Timers.State.Uptime != nil {
				s.since = p.Timers.State.Uptime.AsTime()
			}
		}
	})
	r.ListPath(context.Background(), &api.ListPathRequest{TableType: api.TableType_GLOBAL,
		Family: &api.Family{Afi: api.Family_AFI_IP, Safi: api.Family_SAFI_UNICAST}}, func(d *api.Destination) {
		s.paths = append(s.paths, d.Prefix)
	})
	slices.Sort(s.paths)
	return s
}

func waitFor(t *testing.T, what string, limit time.Duration, f func() error) {
	t.Helper()
	deadline := time.Now().Add(limit)
	for {
		err := f()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: still failing after %v: %v", what, limit, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

const configTmpl = `
admin: {listen: "127.0.0.1:ADMIN_PORT"}
cluster:
  node_id: 1
  region: test
  key: 0123456789abcdef
  listen: 127.0.0.1:0
  seed: true
  seed_sync_delay: 100ms
sip:
  listeners: [{transport: udp, addr: "127.0.0.1:0"}]
  domains: [example.com]
cps:
  limits:
    - {name: platform, rate: RATE}
bgp:
  asn: 65001
  router_id: 198.18.0.1
  peers:
PEERS
  prefixes: [{prefix: 203.0.113.10/32}]
`

type cpsLimit struct {
	Name  string  `json:"name"`
	Limit float64 `json:"limit"`
}

func TestSIGHUPChangesLimitAndPeerWithoutResettingOthers(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and runs edged")
	}
	bin := edgedBinary(t)
	portA, portB := freePort(t, "127.0.0.2"), freePort(t, "127.0.0.3")
	ra, rb := router(t, "127.0.0.2", portA), router(t, "127.0.0.3", portB)
	adminPort := freePort(t, "127.0.0.1")
	peerA := fmt.Sprintf("    - {address: 127.0.0.2, port: %d, asn: 65000}", portA)
	peerB := fmt.Sprintf("    - {address: 127.0.0.3, port: %d, asn: 65000}", portB)
	render := func(rate string, peers ...string) string {
		return strings.NewReplacer("ADMIN_PORT", fmt.Sprint(adminPort), "RATE", rate,
			"PEERS", strings.Join(peers, "\n")).Replace(configTmpl)
	}
	dir := t.TempDir()
	path := filepath.Join(dir, "edged.yaml")
	write := func(data string) {
		if err := os.WriteFile(path, []byte(data), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	write(render("10", peerA))

	var logs syncBuffer
	cmd := exec.Command(bin, "-config", path)
	cmd.Stdout, cmd.Stderr = &logs, &logs
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	defer func() {
		if cmd.ProcessState == nil {
			_ = cmd.Process.Signal(syscall.SIGTERM)
			select {
			case <-exited:
			case <-time.After(20 * time.Second):
				_ = cmd.Process.Kill()
				<-exited
			}
		}
		if t.Failed() {
			t.Logf("edged log:\n%s", logs.String())
		}
	}()

	base := fmt.Sprintf("http://127.0.0.1:%d", adminPort)
	hc := &http.Client{Timeout: 5 * time.Second}
	get := func(p string, v any) error {
		resp, err := hc.Get(base + p)
		if err != nil {
			return err
		}
		defer resp.Body.Close()
		if resp.StatusCode != 200 {
			return fmt.Errorf("%s: %s", p, resp.Status)
		}
		return json.NewDecoder(resp.Body).Decode(v)
	}
	metric := func(name string) (float64, error) {
		resp, err := hc.Get(base + "/metrics")
		if err != nil {
			return 0, err
		}
		defer resp.Body.Close()
		var b bytes.Buffer
		_, _ = b.ReadFrom(resp.Body)
		m := regexp.MustCompile(`(?m)^` + regexp.QuoteMeta(name) + ` (\S+)$`).FindStringSubmatch(b.String())
		if m == nil {
			return 0, fmt.Errorf("%s not exported", name)
		}
		var v float64
		_, err = fmt.Sscan(m[1], &v)
		return v, err
	}
	limitIs := func(want float64) func() error {
		return func() error {
			var ls []cpsLimit
			if err := get("/v1/cps", &ls); err != nil {
				return err
			}
			if len(ls) != 1 || ls[0].Limit != want {
				return fmt.Errorf("limits %+v, want platform at %v", ls, want)
			}
			return nil
		}
	}
	announcedTo := func(r *server.BgpServer) func() error {
		return func() error {
			if s := sessionOf(r); !s.up || !slices.Equal(s.paths, []string{"203.0.113.10/32"}) {
				return fmt.Errorf("router session %+v", s)
			}
			return nil
		}
	}
	hups := func(result string) func() error {
		return func() error {
			v, err := metric(`anyedge_config_reload_total{result="` + result + `"}`)
			if err == nil && v != 1 {
				err = fmt.Errorf("reload_total{result=%q} = %v", result, v)
			}
			return err
		}
	}

	waitFor(t, "edged ready with the limit", 60*time.Second, limitIs(10))
	waitFor(t, "router A has the prefix", 30*time.Second, announcedTo(ra))
	sinceA := sessionOf(ra).since

	// Reload: a new rate, and router B added.
	write(render("2", peerA, peerB))
	if err := cmd.Process.Signal(syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "reload counted", 20*time.Second, hups("success"))
	waitFor(t, "new limit", 5*time.Second, limitIs(2))
	waitFor(t, "router B has the prefix", 30*time.Second, announcedTo(rb))
	if s := sessionOf(ra); !s.up || !s.since.Equal(sinceA) {
		t.Fatalf("router A's session was reset by the reload: %+v, established since %v before", s, sinceA)
	}
	sinceB := sessionOf(rb).since

	// Reload: router A removed; B's session stays.
	write(render("2", peerB))
	_ = cmd.Process.Signal(syscall.SIGHUP)
	waitFor(t, "second reload counted", 20*time.Second, func() error {
		v, err := metric(`anyedge_config_reload_total{result="success"}`)
		if err == nil && v != 2 {
			err = fmt.Errorf("reload_total{result=success} = %v", v)
		}
		return err
	})
	waitFor(t, "router A lost the session and the path", 20*time.Second, func() error {
		if s := sessionOf(ra); s.up || len(s.paths) != 0 {
			return fmt.Errorf("router A %+v", s)
		}
		return nil
	})
	if s := sessionOf(rb); !s.up || !s.since.Equal(sinceB) {
		t.Fatalf("router B's session was reset by removing A: %+v, established since %v before", s, sinceB)
	}

	// A bad file: refused, the process keeps running with the old config.
	write(strings.Replace(render("2", peerB), "rate: 2", "rate: -1", 1))
	_ = cmd.Process.Signal(syscall.SIGHUP)
	waitFor(t, "bad reload counted", 20*time.Second, hups("invalid"))
	// The log reaches us through a pipe: poll for it.
	waitFor(t, "refusal logged with the file and key", 5*time.Second, func() error {
		if l := logs.String(); !strings.Contains(l, path+":") || !strings.Contains(l, "cps.limits[0].rate") {
			return fmt.Errorf("not in the log yet")
		}
		return nil
	})
	waitFor(t, "limit kept", 5*time.Second, limitIs(2))

	_ = cmd.Process.Signal(syscall.SIGTERM)
	select {
	case err := <-exited:
		if err != nil {
			t.Errorf("edged exited with %v", err)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("edged did not stop on SIGTERM")
	}
}

type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// quietLogger drops GoBGP's log.
type quietLogger struct{}

func (quietLogger) Panic(string, gobgplog.Fields) {}
func (quietLogger) Fatal(string, gobgplog.Fields) {}
func (quietLogger) Error(string, gobgplog.Fields) {}
func (quietLogger) Warn(string, gobgplog.Fields)  {}
func (quietLogger) Info(string, gobgplog.Fields)  {}
func (quietLogger) Debug(string, gobgplog.Fields) {}
func (quietLogger) SetLevel(gobgplog.LogLevel)    {}
func (quietLogger) GetLevel() gobgplog.LogLevel   { return gobgplog.ErrorLevel }
