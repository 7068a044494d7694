package daemon

import (
	"bytes"
	"context"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"syscall"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil/promlint"
	"go.uber.org/goleak"

	"github.com/anyedge/anyedge/cluster"
	"github.com/anyedge/anyedge/internal/config"
)

// fakeNode is a cluster node that records its lifecycle. With block set,
// Start behaves like a node that runs inside Start until closed.
type fakeNode struct {
	startErr error
	block    bool

	mu      sync.Mutex
	started bool
	closed  int
	done    chan struct{}
}

func newFakeNode() *fakeNode { return &fakeNode{done: make(chan struct{})} }

func (f *fakeNode) Start(ctx context.Context) error {
	f.mu.Lock()
	f.started = true
	f.mu.Unlock()
	if f.startErr != nil || !f.block {
		return f.startErr
	}
	select {
	case <-ctx.Done():
	case <-f.done:
	}
	return nil
}

func (f *fakeNode) Close() error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.closed == 0 {
		close(f.done)
	}
	f.closed++
	return nil
}

func (f *fakeNode) Nodes() []cluster.NodeView {
	return []cluster.NodeView{{ID: 7, Region: "test", State: "self"}}
}
func (f *fakeNode) Topology() cluster.TopologyView    { return cluster.TopologyView{Self: 7} }
func (f *fakeNode) Caps() []cluster.CapView           { return nil }
func (f *fakeNode) Tags() []cluster.TagView           { return nil }
func (f *fakeNode) RemoveNode(uint32) error           { return nil }
func (f *fakeNode) SetTagActive(string, uint32) error { return nil }

func (f *fakeNode) factory(gotCfg *cluster.Config) NodeFactory {
	return func(cfg cluster.Config, _ *slog.Logger, _ prometheus.Registerer) (Node, error) {
		if gotCfg != nil {
			*gotCfg = cfg
		}
		return f, nil
	}
}

// syncBuffer is a bytes.Buffer safe for the daemon's goroutines to log into.
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

const testConfig = `
admin: {listen: "127.0.0.1:0"}
cluster:
  node_id: 7
  region: test
  key: 0123456789abcdef
`

func testDaemon(t *testing.T, node *fakeNode, sigs chan os.Signal) (*Daemon, string, *syncBuffer) {
	t.Helper()
	cfg, err := config.Parse("edged.yaml", []byte(testConfig))
	if err != nil {
		t.Fatal(err)
	}
	logs := &syncBuffer{}
	var got cluster.Config
	d, err := New(cfg, WithLogOutput(logs), WithVersion("v1.2.3-test"),
		WithNodeFactory(node.factory(&got)), WithSignals(sigs))
	if err != nil {
		t.Fatal(err)
	}
	if got.NodeID != 7 || got.Region != "test" {
		t.Errorf("node built with %+v, want the cluster section", got)
	}
	addr, err := d.Listen()
	if err != nil {
		t.Fatal(err)
	}
	return d, "http://" + addr.String(), logs
}

func get(t *testing.T, c *http.Client, url string) string {
	t.Helper()
	resp, err := c.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("GET %s: %d %s", url, resp.StatusCode, b)
	}
	return string(b)
}

func TestRunServesAndStopsOnSignal(t *testing.T) {
	defer goleak.VerifyNone(t)
	for _, block := range []bool{false, true} {
		name := map[bool]string{false: "Start returns", true: "Start blocks"}[block]
		t.Run(name, func(t *testing.T) {
			node := newFakeNode()
			node.block = block
			sigs := make(chan os.Signal)
			d, base, logs := testDaemon(t, node, sigs)
			done := make(chan error, 1)
			go func() { done <- d.Run(context.Background()) }()

			c := &http.Client{Transport: &http.Transport{}}
			if got := get(t, c, base+"/healthz"); strings.TrimSpace(got) != "ok" {
				t.Errorf("healthz = %q", got)
			}
			if got := get(t, c, base+"/v1/cluster/nodes"); !strings.Contains(got, `"id": 7`) {
				t.Errorf("nodes = %s", got)
			}
			metrics := get(t, c, base+"/metrics")
			for _, want := range []string{
				`anyedge_build_info{goversion="` + runtime.Version() + `",version="v1.2.3-test"} 1`,
				"go_goroutines ",
				"process_cpu_seconds_total ",
			} {
				if !strings.Contains(metrics, want) {
					t.Errorf("metrics lack %q", want)
				}
			}
			c.CloseIdleConnections()

			sigs <- syscall.SIGHUP // logged, and the daemon keeps running
			sigs <- syscall.SIGTERM
			if err := <-done; err != nil {
				t.Errorf("Run = %v, want nil after SIGTERM", err)
			}
			if node.closed != 1 {
				t.Errorf("node closed %d times, want 1", node.closed)
			}
			for _, want := range []string{"edged started", "reload: nothing to reload", "signal=terminated", "edged stopped"} {
				if !strings.Contains(logs.String(), want) {
					t.Errorf("log lacks %q:\n%s", want, logs)
				}
			}
		})
	}
}

func TestRunStopsWhenContextEnds(t *testing.T) {
	defer goleak.VerifyNone(t)
	node := newFakeNode()
	node.block = true
	d, _, _ := testDaemon(t, node, make(chan os.Signal))
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if err := d.Run(ctx); err != nil {
		t.Errorf("Run = %v", err)
	}
	if node.closed != 1 {
		t.Errorf("node closed %d times, want 1", node.closed)
	}
}

func TestRunFailsWhenStartFails(t *testing.T) {
	defer goleak.VerifyNone(t)
	node := newFakeNode()
	node.startErr = errors.New("listen 127.0.0.1:5600: address already in use")
	d, _, _ := testDaemon(t, node, make(chan os.Signal))
	err := d.Run(context.Background())
	if err == nil || err.Error() != "cluster: listen 127.0.0.1:5600: address already in use" {
		t.Errorf("Run = %v, want the Start error", err)
	}
	if node.closed != 1 {
		t.Errorf("node closed %d times, want 1", node.closed)
	}
}

func TestRunFailsWhenAdminCannotListen(t *testing.T) {
	defer goleak.VerifyNone(t)
	busy, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer busy.Close()
	cfg, err := config.Parse("edged.yaml", []byte(testConfig))
	if err != nil {
		t.Fatal(err)
	}
	cfg.Admin.Listen = busy.Addr().String()
	node := newFakeNode()
	d, err := New(cfg, WithLogOutput(io.Discard), WithNodeFactory(node.factory(nil)), WithSignals(make(chan os.Signal)))
	if err != nil {
		t.Fatal(err)
	}
	if err := d.Run(context.Background()); err == nil || !strings.Contains(err.Error(), "admin: listen tcp") {
		t.Errorf("Run = %v, want an admin listen error", err)
	}
	if node.started {
		t.Errorf("node started although the admin API could not listen")
	}
}

func TestLoggerFormats(t *testing.T) {
	var b bytes.Buffer
	NewLogger(&b, config.LogConfig{Level: "warn", Format: "json"}).Info("hidden")
	NewLogger(&b, config.LogConfig{Level: "warn", Format: "json"}).Warn("shown", "k", 1)
	if got := b.String(); strings.Contains(got, "hidden") || !strings.Contains(got, `"msg":"shown","k":1`) {
		t.Errorf("json logger wrote %q", got)
	}
	b.Reset()
	NewLogger(&b, config.LogConfig{Level: "debug", Format: "text"}).Debug("shown")
	if got := b.String(); !strings.Contains(got, "level=DEBUG msg=shown") {
		t.Errorf("text logger wrote %q", got)
	}
}

// TestMetricNames lints the daemon's own metrics with promlint.
func TestMetricNames(t *testing.T) {
	reg, err := NewRegistry("dev")
	if err != nil {
		t.Fatal(err)
	}
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	problems, err := promlint.NewWithMetricFamilies(mfs).Lint()
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range problems {
		if strings.HasPrefix(p.Metric, "anyedge_") {
			t.Errorf("%s: %s", p.Metric, p.Text)
		}
	}
}

func TestCommandLine(t *testing.T) {
	dir := t.TempDir()
	good := filepath.Join(dir, "good.yaml")
	bad := filepath.Join(dir, "bad.yaml")
	must(t, os.WriteFile(good, []byte(testConfig), 0o600))
	must(t, os.WriteFile(bad, []byte("cluster:\n  node_id: 0\n"), 0o600))

	tests := []struct {
		name      string
		args      []string
		code      int
		stdout    string // exact
		stderrHas string
	}{
		{"check good", []string{"config", "check", good}, 0, good + ": ok\n", ""},
		{"check bad", []string{"config", "check", bad}, 1, "", bad + ":2: cluster.node_id: required, must be 1..4294967295\n"},
		{"check missing", []string{"config", "check", filepath.Join(dir, "nope.yaml")}, 1, "", "no such file or directory"},
		{"check without file", []string{"config", "check"}, 2, "", "usage:"},
		{"version", []string{"version"}, 0, "edged dev (" + runtime.Version() + ")\n", ""},
		{"no arguments", nil, 2, "", "usage:"},
		{"unknown flag", []string{"-nope"}, 2, "", "flag provided but not defined: -nope"},
		{"run with a bad config", []string{"-config", bad}, 1, "", "edged: " + bad + ":2: cluster.node_id"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var stdout, stderr bytes.Buffer
			code := Main(context.Background(), tt.args, &stdout, &stderr)
			if code != tt.code {
				t.Errorf("exit code %d, want %d; stderr: %s", code, tt.code, stderr.String())
			}
			if stdout.String() != tt.stdout {
				t.Errorf("stdout = %q, want %q", stdout.String(), tt.stdout)
			}
			if !strings.Contains(stderr.String(), tt.stderrHas) {
				t.Errorf("stderr = %q, want it to contain %q", stderr.String(), tt.stderrHas)
			}
		})
	}
}

// TestMainExitsOnStartError runs the whole command line with a node whose
// Start fails: edged must exit non-zero and say why.
func TestMainExitsOnStartError(t *testing.T) {
	defer goleak.VerifyNone(t)
	path := filepath.Join(t.TempDir(), "edged.yaml")
	must(t, os.WriteFile(path, []byte(testConfig), 0o600))
	node := newFakeNode()
	node.startErr = errors.New("boom")
	var stdout, stderr bytes.Buffer
	code := Main(context.Background(), []string{"-config", path}, &stdout, &stderr,
		WithNodeFactory(node.factory(nil)), WithSignals(make(chan os.Signal)))
	if code != 1 || !strings.Contains(stderr.String(), "edged: cluster: boom") {
		t.Errorf("exit %d, stderr %q; want 1 and the Start error", code, stderr.String())
	}
}

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}
