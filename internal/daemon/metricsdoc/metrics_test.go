package metricsdoc

import (
	"bytes"
	"context"
	"flag"
	"fmt"
	"go/ast"
	"go/parser"
	"go/token"
	"io/fs"
	"net"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	dto "github.com/prometheus/client_model/go"

	"github.com/anyedge/anyedge/internal/config"
	"github.com/anyedge/anyedge/internal/daemon"
	"github.com/anyedge/anyedge/vip"
)

var update = flag.Bool("update", false, "rewrite docs/METRICS.md")

// A node with every module that runs unprivileged on loopback. The BGP
// router's port is closed: the session never comes up, the metrics exist.
const nodeConfig = `
admin: {listen: "127.0.0.1:0"}
cluster:
  node_id: 1
  region: r1
  key: 0123456789abcdef
  listen: 127.0.0.1:0
  seed: true
  seed_sync_delay: 100ms
  tags: [{name: home-r1, region: r1}, {name: vip1, region: r1}]
sip:
  listeners: [{transport: udp, addr: "127.0.0.1:SIP_PORT"}]
  domains: [example.com]
cps:
  limits: [{name: platform, rate: 100}, {name: per-ip, rate: 10, selector: source_ip}]
bgp:
  asn: 65001
  router_id: 198.18.0.1
  peers: [{address: 127.0.0.1, port: BGP_PORT, asn: 65000}]
  prefixes: [{prefix: 203.0.113.10/32}]
vips: [{tag: vip1, address: 203.0.113.21/32, mode: l3}]
geo: {}
dialog: {}
`

// metric is one row of the reference.
type metric struct {
	name, typ, help string
	labels          []string
}

var descRE = regexp.MustCompile(`^Desc\{fqName: ("(?:[^"\\]|\\.)*"), help: ("(?:[^"\\]|\\.)*"), constLabels: \{([^}]*)\}, variableLabels: \{([^}]*)\}\}$`)

// metrics runs the daemon and returns its anyedge_ metrics, sorted.
func metrics(t *testing.T) []metric {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port := l.Addr().(*net.TCPAddr).Port
	l.Close()
	uc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	sipPort := uc.LocalAddr().(*net.UDPAddr).Port
	uc.Close()
	src := strings.NewReplacer("BGP_PORT", strconv.Itoa(port), "SIP_PORT", strconv.Itoa(sipPort)).Replace(nodeConfig)
	cfg, err := config.Parse("edged.yaml", []byte(src))
	if err != nil {
		t.Fatal(err)
	}
	sigs := make(chan os.Signal, 1)
	d, err := daemon.New(cfg, daemon.WithLogOutput(&bytes.Buffer{}), daemon.WithSignals(sigs),
		daemon.WithVIPRouterFactory(func([]vip.VIP, func(vip.VIP)) (vip.Router, error) { return &vip.Recorder{}, nil }))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := d.Listen(); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- d.Run(context.Background()) }()
	defer func() {
		sigs <- syscall.SIGTERM
		if err := <-done; err != nil {
			t.Errorf("Run: %v", err)
		}
	}()
	reg := d.Registry()
	// Run registers the speaker's and the controller's metrics as it
	// starts them.
	deadline := time.Now().Add(20 * time.Second)
	for {
		mfs, err := reg.Gather()
		if err != nil {
			t.Fatal(err)
		}
		if slices.ContainsFunc(mfs, func(mf *dto.MetricFamily) bool { return mf.GetName() == "anyedge_vip_held" }) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the daemon did not start its modules")
		}
		time.Sleep(20 * time.Millisecond)
	}
	// One request and one malformed message, so that the SIP vectors
	// have series and their types show.
	sipTraffic(t, sipPort)
	if problems, err := testutil.GatherAndLint(reg); err != nil || len(problems) > 0 {
		t.Errorf("promlint: %v %v", err, problems)
	}
	types := map[string]string{}
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		types[mf.GetName()] = strings.ToLower(mf.GetType().String())
	}
	ch := make(chan *prometheus.Desc, 100)
	go func() { reg.Describe(ch); close(ch) }()
	byName := map[string]*metric{}
	for desc := range ch {
		m := descRE.FindStringSubmatch(desc.String())
		if m == nil {
			t.Fatalf("cannot read %s", desc)
		}
		name, _ := strconv.Unquote(m[1])
		help, _ := strconv.Unquote(m[2])
		if !strings.HasPrefix(name, "anyedge_") {
			continue
		}
		mt := byName[name]
		if mt == nil {
			mt = &metric{name: name, typ: types[name], help: help}
			byName[name] = mt
		}
		// Variable labels, then the names of constant ones (a metric
		// registered once per value, such as role="home" and "replica").
		for _, l := range strings.Split(m[4], ",") {
			if l = strings.TrimSpace(l); l != "" && !slices.Contains(mt.labels, l) {
				mt.labels = append(mt.labels, l)
			}
		}
		for _, kv := range strings.Split(m[3], ",") {
			l, _, _ := strings.Cut(strings.TrimSpace(kv), "=")
			if l != "" && !slices.Contains(mt.labels, l) {
				mt.labels = append(mt.labels, l)
			}
		}
	}
	var out []metric
	for _, m := range byName {
		out = append(out, *m)
	}
	slices.SortFunc(out, func(a, b metric) int { return strings.Compare(a.name, b.name) })
	// A vector with no series yet has no type on the wire: the source
	// that defines it says.
	var missing []string
	for _, m := range out {
		if m.typ == "" {
			missing = append(missing, m.help)
		}
	}
	byHelp := sourceTypes(t, missing)
	for i, m := range out {
		if m.typ == "" {
			if out[i].typ = byHelp[m.help]; out[i].typ == "" {
				t.Errorf("%s: no series and no definition found in the source", m.name)
			}
		}
	}
	return out
}

// sipTraffic sends an OPTIONS (answered 200) and a malformed message to
// the node, and waits for the answer.
func sipTraffic(t *testing.T, port int) {
	t.Helper()
	c, err := net.Dial("udp", fmt.Sprintf("127.0.0.1:%d", port))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	local := c.LocalAddr().String()
	opts := strings.Join([]string{
		fmt.Sprintf("OPTIONS sip:127.0.0.1:%d SIP/2.0", port),
		"Via: SIP/2.0/UDP " + local + ";branch=z9hG4bK-metricsdoc;rport",
		"From: <sip:probe@example.com>;tag=m1",
		fmt.Sprintf("To: <sip:127.0.0.1:%d>", port),
		"Call-ID: metricsdoc@test",
		"CSeq: 1 OPTIONS",
		"Max-Forwards: 70",
		"Content-Length: 0",
		"", "",
	}, "\r\n")
	if _, err := c.Write([]byte("NOT SIP AT ALL\r\n\r\n")); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Write([]byte(opts)); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 4096)
	_ = c.SetReadDeadline(time.Now().Add(10 * time.Second))
	for {
		n, err := c.Read(buf)
		if err != nil {
			t.Fatalf("no answer to OPTIONS: %v", err)
		}
		if strings.HasPrefix(string(buf[:n]), "SIP/2.0 200") {
			return
		}
	}
}

// sourceTypes finds, in the module's Go sources, the metric type of each
// help text: the prometheus.XxxOpts literal it is in, or the one in the
// body of the local helper that is called with it (cluster's g, cv).
func sourceTypes(t *testing.T, helps []string) map[string]string {
	t.Helper()
	want := map[string]bool{}
	for _, h := range helps {
		want[h] = true
	}
	out := map[string]string{}
	root, _ := filepath.Abs(filepath.Join("..", "..", ".."))
	optsKind := func(n ast.Node) string {
		cl, ok := n.(*ast.CompositeLit)
		if !ok {
			return ""
		}
		sel, ok := cl.Type.(*ast.SelectorExpr)
		if !ok {
			return ""
		}
		if k, ok := strings.CutSuffix(sel.Sel.Name, "Opts"); ok {
			return strings.ToLower(k)
		}
		return ""
	}
	err := filepath.WalkDir(root, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() {
			if path != root && (strings.HasPrefix(d.Name(), ".") || d.Name() == "testdata") {
				return filepath.SkipDir
			}
			if _, err := os.Stat(filepath.Join(path, "go.mod")); err == nil && path != root {
				return filepath.SkipDir
			}
			return nil
		}
		if !strings.HasSuffix(path, ".go") || strings.HasSuffix(path, "_test.go") {
			return nil
		}
		f, err := parser.ParseFile(token.NewFileSet(), path, nil, parser.SkipObjectResolution)
		if err != nil {
			return err
		}
		// Helpers: name := func(...) { ... XxxOpts{...} ... }.
		helpers := map[string]string{}
		ast.Inspect(f, func(n ast.Node) bool {
			if as, ok := n.(*ast.AssignStmt); ok && len(as.Lhs) == 1 && len(as.Rhs) == 1 {
				if id, ok := as.Lhs[0].(*ast.Ident); ok {
					if fl, ok := as.Rhs[0].(*ast.FuncLit); ok {
						ast.Inspect(fl, func(n ast.Node) bool {
							if k := optsKind(n); k != "" {
								helpers[id.Name] = k
							}
							return true
						})
					}
				}
			}
			return true
		})
		var stack []ast.Node
		ast.Inspect(f, func(n ast.Node) bool {
			if n == nil {
				stack = stack[:len(stack)-1]
				return true
			}
			stack = append(stack, n)
			bl, ok := n.(*ast.BasicLit)
			if !ok || bl.Kind != token.STRING {
				return true
			}
			s, err := strconv.Unquote(bl.Value)
			if err != nil || !want[s] {
				return true
			}
			for i := len(stack) - 1; i >= 0; i-- {
				if k := optsKind(stack[i]); k != "" {
					out[s] = k
					break
				}
				if call, ok := stack[i].(*ast.CallExpr); ok {
					if id, ok := call.Fun.(*ast.Ident); ok && helpers[id.Name] != "" {
						out[s] = helpers[id.Name]
						break
					}
				}
			}
			return true
		})
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

func render(ms []metric) []byte {
	var b bytes.Buffer
	b.WriteString(`# Metrics reference

<!-- Generated from a running edged's registry by internal/daemon/metricsdoc:
run ` + "`go generate ./internal/daemon/metricsdoc`" + ` after changing a metric. -->

Every ` + "`anyedge_`" + ` metric edged registers, as the test of
internal/daemon/metricsdoc reads it from a daemon running the cluster, SIP,
CPS, BGP, announcement, VIP, geo and dialog modules on loopback. Besides
these edged serves the Go runtime and process collectors (` + "`go_*`" + `,
` + "`process_*`" + `). Metrics of the db-driven location (Redis, ` + "`anyedge_location_redis_*`" + `) are
registered only in that mode and are not listed here. Every series also
carries the scrape target's ` + "`instance`" + ` and ` + "`region`" + ` labels
(docs/OPERATIONS.md, "Monitoring"). The type of a vector that has no
series when the daemon starts is read from the Go source that defines it.

| Metric | Type | Labels | Help |
|---|---|---|---|
`)
	for _, m := range ms {
		labels := "—"
		if len(m.labels) > 0 {
			labels = "`" + strings.Join(m.labels, "`, `") + "`"
		}
		fmt.Fprintf(&b, "| `%s` | %s | %s | %s |\n", m.name, m.typ, labels, strings.ReplaceAll(m.help, "|", `\|`))
	}
	return b.Bytes()
}

func TestMetricsReference(t *testing.T) {
	ms := metrics(t)
	if len(ms) < 50 {
		t.Fatalf("only %d anyedge_ metrics: the daemon did not run its modules", len(ms))
	}
	for _, name := range []string{"anyedge_build_info", "anyedge_config_reload_total", "anyedge_bgp_session_up",
		"anyedge_cluster_node_up", "anyedge_cps_rejected_total", "anyedge_sip_requests_total"} {
		if !slices.ContainsFunc(ms, func(m metric) bool { return m.name == name }) {
			t.Errorf("%s missing", name)
		}
	}
	want := render(ms)
	path := filepath.Join("..", "..", "..", "docs", "METRICS.md")
	if *update {
		if err := os.WriteFile(path, want, 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	got, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("%v: run `go generate ./internal/daemon/metricsdoc`", err)
	}
	if !bytes.Equal(got, want) {
		gl, wl := strings.Split(string(got), "\n"), strings.Split(string(want), "\n")
		for i := range max(len(gl), len(wl)) {
			var g, w string
			if i < len(gl) {
				g = gl[i]
			}
			if i < len(wl) {
				w = wl[i]
			}
			if g != w {
				t.Fatalf("docs/METRICS.md is out of date: run `go generate ./internal/daemon/metricsdoc`.\nFirst difference, line %d:\n have: %s\n want: %s", i+1, g, w)
			}
		}
	}
}
