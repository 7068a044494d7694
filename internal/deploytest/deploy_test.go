// Package deploytest checks the deployment assets in deploy/ against the
// code: the Prometheus alert rules and the Grafana dashboard may only query
// metrics that edged exports (or that deploy/metrics-planned.txt lists as
// planned), every alert's runbook exists in docs/RUNBOOKS.md, the dashboard
// is valid, and the metrics a running edged exports pass
// `promtool check metrics`.
//
// The metric names are found by reading the Go sources, not by running
// every module: a name is known when a non-test Go file spells it, whole
// ("anyedge_sip_bindings"), as a prefix and a name in the same file
// ("anyedge_cps_" + "rejected_total"), or as the Namespace and Subsystem of
// prometheus Opts plus a name in the same file (cluster, bgp, bfd). That
// over-approximates a little (any two strings of a file may combine) and
// never misses a metric registered in one of these ways.
package deploytest

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"go/ast"
	"go/parser"
	"go/token"
	"io/fs"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"go.yaml.in/yaml/v3"
)

// repoRoot is the directory of the main module's go.mod.
func repoRoot(t *testing.T) string {
	t.Helper()
	dir, err := os.Getwd()
	if err != nil {
		t.Fatal(err)
	}
	for {
		if b, err := os.ReadFile(filepath.Join(dir, "go.mod")); err == nil && bytes.Contains(b, []byte("module github.com/anyedge/anyedge\n")) {
			return dir
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			t.Fatal("go.mod of github.com/anyedge/anyedge not found above the test's directory")
		}
		dir = parent
	}
}

var (
	fullName   = regexp.MustCompile(`^anyedge_[a-z0-9_]*[a-z0-9]$`)
	namePrefix = regexp.MustCompile(`^anyedge_[a-z0-9_]*_$`)
	namePart   = regexp.MustCompile(`^[a-z][a-z0-9_]*$`)
	// Names queried by the rules and the dashboard. Recording rules
	// (anyedge:...) are not metrics of the code.
	queried = regexp.MustCompile(`\banyedge_[a-z0-9_]+\b`)
)

// knownMetrics returns the metric names the Go sources define, each with
// the file that defines it.
func knownMetrics(t *testing.T, root string) map[string]string {
	t.Helper()
	known := map[string]string{}
	fset := token.NewFileSet()
	err := filepath.WalkDir(root, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() {
			name := d.Name()
			if path != root && (strings.HasPrefix(name, ".") || name == "testdata" || name == "vendor" || name == "node_modules") {
				return filepath.SkipDir
			}
			// Nested modules (terraform/testprovider) are not edged.
			if path != root {
				if _, err := os.Stat(filepath.Join(path, "go.mod")); err == nil {
					return filepath.SkipDir
				}
			}
			return nil
		}
		if !strings.HasSuffix(path, ".go") || strings.HasSuffix(path, "_test.go") {
			return nil
		}
		f, err := parser.ParseFile(fset, path, nil, parser.SkipObjectResolution)
		if err != nil {
			return fmt.Errorf("%s: %w", path, err)
		}
		rel, _ := filepath.Rel(root, path)
		for name := range fileMetrics(f) {
			if _, ok := known[name]; !ok {
				known[name] = rel
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return known
}

// fileMetrics returns the metric names one file can spell.
func fileMetrics(f *ast.File) map[string]bool {
	var lits []string
	consts := map[string]string{}
	type opts struct{ ns, sub, name ast.Expr }
	var allOpts []opts
	ast.Inspect(f, func(n ast.Node) bool {
		switch n := n.(type) {
		case *ast.BasicLit:
			if n.Kind == token.STRING {
				if s, err := strconv.Unquote(n.Value); err == nil {
					lits = append(lits, s)
				}
			}
		case *ast.GenDecl:
			if n.Tok != token.CONST {
				return true
			}
			for _, spec := range n.Specs {
				vs := spec.(*ast.ValueSpec)
				for i, id := range vs.Names {
					if i < len(vs.Values) {
						if bl, ok := vs.Values[i].(*ast.BasicLit); ok && bl.Kind == token.STRING {
							if s, err := strconv.Unquote(bl.Value); err == nil {
								consts[id.Name] = s
							}
						}
					}
				}
			}
		case *ast.CompositeLit:
			var o opts
			for _, e := range n.Elts {
				kv, ok := e.(*ast.KeyValueExpr)
				if !ok {
					continue
				}
				switch key, _ := kv.Key.(*ast.Ident); {
				case key == nil:
				case key.Name == "Namespace":
					o.ns = kv.Value
				case key.Name == "Subsystem":
					o.sub = kv.Value
				case key.Name == "Name":
					o.name = kv.Value
				}
			}
			if o.ns != nil {
				allOpts = append(allOpts, o)
			}
		}
		return true
	})
	str := func(e ast.Expr) (string, bool) {
		switch e := e.(type) {
		case *ast.BasicLit:
			s, err := strconv.Unquote(e.Value)
			return s, err == nil
		case *ast.Ident:
			s, ok := consts[e.Name]
			return s, ok
		}
		return "", false
	}
	names := map[string]bool{}
	var prefixes []string
	for _, l := range lits {
		switch {
		case fullName.MatchString(l):
			names[l] = true
		case namePrefix.MatchString(l):
			prefixes = append(prefixes, l)
		}
	}
	for _, o := range allOpts {
		ns, ok := str(o.ns)
		if !ok || ns != "anyedge" {
			continue
		}
		p := ns + "_"
		if o.sub != nil {
			sub, ok := str(o.sub)
			if !ok {
				continue
			}
			p += sub + "_"
		}
		prefixes = append(prefixes, p)
	}
	for _, p := range prefixes {
		for _, l := range lits {
			if namePart.MatchString(l) {
				names[p+l] = true
			}
		}
	}
	return names
}

// planned reads deploy/metrics-planned.txt: one name a line, then an
// optional comment after '#'.
func planned(t *testing.T, root string) map[string]string {
	t.Helper()
	f, err := os.Open(filepath.Join(root, "deploy", "metrics-planned.txt"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	out := map[string]string{}
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		line, why, _ := strings.Cut(sc.Text(), "#")
		if name := strings.TrimSpace(line); name != "" {
			out[name] = strings.TrimSpace(why)
		}
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	return out
}

// alertRules reads deploy/prometheus/alerts.yml.
type alertRules struct {
	Groups []struct {
		Name  string `yaml:"name"`
		Rules []struct {
			Alert       string            `yaml:"alert"`
			Record      string            `yaml:"record"`
			Expr        string            `yaml:"expr"`
			Annotations map[string]string `yaml:"annotations"`
		} `yaml:"rules"`
	} `yaml:"groups"`
}

func readAlerts(t *testing.T, root string) alertRules {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(root, "deploy", "prometheus", "alerts.yml"))
	if err != nil {
		t.Fatal(err)
	}
	var r alertRules
	if err := yaml.Unmarshal(b, &r); err != nil {
		t.Fatalf("alerts.yml: %v", err)
	}
	if len(r.Groups) == 0 {
		t.Fatal("alerts.yml has no rule groups")
	}
	return r
}

// readDashboard decodes deploy/grafana/anyedge.json strictly as JSON.
func readDashboard(t *testing.T, root string) map[string]any {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(root, "deploy", "grafana", "anyedge.json"))
	if err != nil {
		t.Fatal(err)
	}
	dec := json.NewDecoder(bytes.NewReader(b))
	var d map[string]any
	if err := dec.Decode(&d); err != nil {
		t.Fatalf("anyedge.json is not valid JSON: %v", err)
	}
	if dec.More() {
		t.Fatal("anyedge.json has data after the dashboard object")
	}
	return d
}

// dashboardQueries returns every query of the dashboard (panel targets'
// expr, templating queries), by where it is.
func dashboardQueries(d map[string]any) map[string]string {
	out := map[string]string{}
	var walk func(where string, v any)
	walk = func(where string, v any) {
		switch v := v.(type) {
		case map[string]any:
			for k, x := range v {
				w := where + "." + k
				if s, ok := x.(string); ok && (k == "expr" || (k == "query" && strings.Contains(where, "templating"))) {
					out[w] = s
				}
				walk(w, x)
			}
		case []any:
			for i, x := range v {
				walk(fmt.Sprintf("%s[%d]", where, i), x)
			}
		}
	}
	walk("", d)
	return out
}

// checkNames fails with every queried name the code does not define.
func checkNames(t *testing.T, what string, queries map[string]string, known map[string]string, plan map[string]string) {
	t.Helper()
	unknown := map[string][]string{}
	for where, q := range queries {
		for _, name := range queried.FindAllString(q, -1) {
			if metricKnown(name, known) {
				continue
			}
			if _, ok := plan[name]; ok {
				continue
			}
			unknown[name] = append(unknown[name], where)
		}
	}
	if len(unknown) > 0 {
		var lines []string
		for name, wheres := range unknown {
			slices.Sort(wheres)
			lines = append(lines, fmt.Sprintf("  %s (in %s)", name, strings.Join(wheres, ", ")))
		}
		slices.Sort(lines)
		t.Errorf("%s query metrics that no Go source defines and deploy/metrics-planned.txt does not list:\n%s",
			what, strings.Join(lines, "\n"))
	}
}

// metricKnown accepts a name the code defines, and the _bucket, _sum and
// _count series of one.
func metricKnown(name string, known map[string]string) bool {
	if _, ok := known[name]; ok {
		return true
	}
	for _, suffix := range []string{"_bucket", "_sum", "_count"} {
		if base, ok := strings.CutSuffix(name, suffix); ok {
			if _, ok := known[base]; ok {
				return true
			}
		}
	}
	return false
}

func TestScannerFindsMetricsOfEveryStyle(t *testing.T) {
	known := knownMetrics(t, repoRoot(t))
	// One of each way the code names metrics: Namespace/Subsystem consts
	// with helper-built names (cluster), Namespace/Subsystem literals
	// (bfd), a prefix plus names (cps), whole names (sip).
	for _, name := range []string{"anyedge_cluster_node_up", "anyedge_bfd_session_up", "anyedge_cps_rejected_total",
		"anyedge_sip_bindings", "anyedge_bgp_session_up", "anyedge_build_info"} {
		if _, ok := known[name]; !ok {
			t.Errorf("the scanner misses %s", name)
		}
	}
	if _, ok := known["anyedge_no_such_metric"]; ok {
		t.Error("the scanner invents anyedge_no_such_metric")
	}
}

func TestAlertsQueryKnownMetrics(t *testing.T) {
	root := repoRoot(t)
	known, plan := knownMetrics(t, root), planned(t, root)
	queries := map[string]string{}
	for _, g := range readAlerts(t, root).Groups {
		for i, r := range g.Rules {
			queries[fmt.Sprintf("%s/%s#%d", g.Name, r.Alert+r.Record, i)] = r.Expr
		}
	}
	checkNames(t, "alerts.yml rules", queries, known, plan)
}

func TestDashboardQueriesKnownMetrics(t *testing.T) {
	root := repoRoot(t)
	known, plan := knownMetrics(t, root), planned(t, root)
	queries := dashboardQueries(readDashboard(t, root))
	if len(queries) < 20 {
		t.Fatalf("the dashboard has %d queries; expected its panels' targets", len(queries))
	}
	checkNames(t, "anyedge.json panels", queries, known, plan)
}

func TestPlannedMetricsAreStillPlanned(t *testing.T) {
	root := repoRoot(t)
	known, plan := knownMetrics(t, root), planned(t, root)
	for name, why := range plan {
		if !fullName.MatchString(name) {
			t.Errorf("metrics-planned.txt: %q is not a metric name", name)
		}
		if why == "" {
			t.Errorf("metrics-planned.txt: %s says nothing about what it is for", name)
		}
		// Not an error: the test must not fail the commit that adds the
		// metric. It says what to clean up.
		if file, ok := known[name]; ok {
			t.Logf("metrics-planned.txt: %s now exists (%s): remove it from the list", name, file)
		}
	}
}

// TestDashboardIsValid checks the dashboard's shape: what Grafana needs to
// import it, unique panel ids, a datasource variable, and a query on every
// panel that shows data.
func TestDashboardIsValid(t *testing.T) {
	d := readDashboard(t, repoRoot(t))
	for _, k := range []string{"title", "uid", "panels", "templating", "schemaVersion"} {
		if _, ok := d[k]; !ok {
			t.Errorf("anyedge.json has no %q", k)
		}
	}
	panels, _ := d["panels"].([]any)
	ids := map[float64]bool{}
	rows := 0
	for i, p := range panels {
		pm, _ := p.(map[string]any)
		id, _ := pm["id"].(float64)
		if id == 0 || ids[id] {
			t.Errorf("panel %d (%v): missing or duplicate id %v", i, pm["title"], pm["id"])
		}
		ids[id] = true
		if pm["type"] == "row" {
			rows++
			continue
		}
		if pm["title"] == "" || pm["title"] == nil {
			t.Errorf("panel %d has no title", i)
		}
		targets, _ := pm["targets"].([]any)
		if len(targets) == 0 {
			t.Errorf("panel %d (%v) has no query", i, pm["title"])
		}
		for _, tg := range targets {
			if e, _ := tg.(map[string]any)["expr"].(string); strings.TrimSpace(e) == "" {
				t.Errorf("panel %d (%v) has an empty query", i, pm["title"])
			}
		}
		if _, ok := pm["gridPos"]; !ok {
			t.Errorf("panel %d (%v) has no gridPos", i, pm["title"])
		}
	}
	for _, want := range []string{"Region overview", "BGP", "Cluster topology", "SIP traffic", "CPS", "Replication"} {
		found := false
		for _, p := range panels {
			if pm := p.(map[string]any); pm["type"] == "row" && strings.HasPrefix(pm["title"].(string), want) {
				found = true
			}
		}
		if !found {
			t.Errorf("the dashboard has no %q row", want)
		}
	}
	b, _ := json.Marshal(d["templating"])
	for _, v := range []string{`"datasource"`, `"region"`, `"instance"`} {
		if !bytes.Contains(b, []byte(`"name":`+v)) {
			t.Errorf("the dashboard has no %s variable", v)
		}
	}
}

// TestRunbooksExist: every alert names a runbook anchor that
// docs/RUNBOOKS.md has a heading for.
func TestRunbooksExist(t *testing.T) {
	root := repoRoot(t)
	b, err := os.ReadFile(filepath.Join(root, "docs", "RUNBOOKS.md"))
	if err != nil {
		t.Fatal(err)
	}
	anchors := map[string]bool{}
	for _, line := range strings.Split(string(b), "\n") {
		if h, ok := strings.CutPrefix(line, "#"); ok {
			anchors[slug(strings.TrimLeft(h, "#"))] = true
		}
	}
	for _, g := range readAlerts(t, root).Groups {
		for _, r := range g.Rules {
			if r.Alert == "" {
				continue
			}
			rb := r.Annotations["runbook"]
			file, anchor, ok := strings.Cut(rb, "#")
			if !ok || file != "docs/RUNBOOKS.md" || !anchors[anchor] {
				t.Errorf("alert %s: runbook %q is not a heading of docs/RUNBOOKS.md", r.Alert, rb)
			}
			if r.Annotations["summary"] == "" {
				t.Errorf("alert %s has no summary", r.Alert)
			}
		}
	}
}

// slug is GitHub's heading anchor: lower case, spaces to '-', punctuation
// dropped.
func slug(h string) string {
	var b strings.Builder
	for _, r := range strings.ToLower(strings.TrimSpace(h)) {
		switch {
		case r >= 'a' && r <= 'z', r >= '0' && r <= '9', r == '-', r == '_':
			b.WriteRune(r)
		case r == ' ':
			b.WriteRune('-')
		}
	}
	return b.String()
}

// TestMetricNamesLint builds edged, runs it on loopback with every module
// that needs no privilege (cluster, sip, cps, bgp towards a closed port),
// scrapes /metrics and runs `promtool check metrics` over it. Skipped
// without promtool (make deps installs it) or in -short mode.
func TestMetricNamesLint(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and runs edged")
	}
	promtool, err := exec.LookPath("promtool")
	if err != nil {
		t.Skip("promtool not found (Debian package prometheus; make deps installs it)")
	}
	root := repoRoot(t)
	dir := t.TempDir()
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()

	edged := filepath.Join(dir, "edged")
	build := exec.CommandContext(ctx, "go", "build", "-o", edged, "./cmd/edged")
	build.Dir = root
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("go build ./cmd/edged: %v\n%s", err, out)
	}
	cfg := filepath.Join(dir, "edged.yaml")
	if err := os.WriteFile(cfg, []byte(`log: {level: info, format: text}
admin: {listen: "127.0.0.1:0"}
cluster:
  node_id: 1
  region: lab
  listen: "127.0.0.1:0"
  seed: true
  seed_sync_delay: 100ms
  key: "deploytest cluster key"
  state_dir: `+strconv.Quote(dir)+`
  tags: [{name: lab-ha, region: lab}]
sip:
  listeners:
    - {transport: udp, addr: "127.0.0.1:0"}
    - {transport: tcp, addr: "127.0.0.1:0"}
  domains: [example.com]
cps:
  limits:
    - {name: platform, rate: 100}
    - {name: per-ip, rate: 5, selector: source_ip}
bgp:
  asn: 64512
  router_id: 192.0.2.1
  peers:
    - {address: 127.0.0.1, asn: 64513, port: 1}
  prefixes:
    - prefix: 203.0.113.10/32
`), 0o600); err != nil {
		t.Fatal(err)
	}

	// edged logs the admin address it bound ("admin=127.0.0.1:PORT").
	logFile := filepath.Join(dir, "edged.log")
	logw, err := os.Create(logFile)
	if err != nil {
		t.Fatal(err)
	}
	defer logw.Close()
	cmd := exec.Command(edged, "-config", cfg)
	cmd.Stdout, cmd.Stderr = logw, logw
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	t.Cleanup(func() {
		_ = cmd.Process.Signal(os.Interrupt)
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			_ = cmd.Process.Kill()
			<-done
		}
	})
	edgedLog := func() string { b, _ := os.ReadFile(logFile); return string(b) }

	adminRe := regexp.MustCompile(`admin=(127\.0\.0\.1:[0-9]+)`)
	var metrics []byte
	deadline := time.Now().Add(time.Minute)
	for {
		if time.Now().After(deadline) {
			t.Fatalf("no complete /metrics within a minute; edged's log:\n%s", edgedLog())
		}
		select {
		case err := <-done:
			t.Fatalf("edged exited: %v\n%s", err, edgedLog())
		case <-time.After(100 * time.Millisecond):
		}
		m := adminRe.FindStringSubmatch(edgedLog())
		if m == nil {
			continue
		}
		resp, err := http.Get("http://" + m[1] + "/metrics")
		if err != nil {
			continue
		}
		body := new(bytes.Buffer)
		_, err = body.ReadFrom(resp.Body)
		resp.Body.Close()
		// Wait for the gauges that the node fills in on its loop.
		if err == nil && resp.StatusCode == 200 && bytes.Contains(body.Bytes(), []byte("anyedge_cluster_tag_active{")) {
			metrics = body.Bytes()
			break
		}
	}

	check := exec.CommandContext(ctx, promtool, "check", "metrics")
	check.Stdin = bytes.NewReader(metrics)
	out, err := check.CombinedOutput()
	if err != nil {
		t.Fatalf("promtool check metrics: %v\n%s", err, out)
	}
	// The scrape itself must only hold names the scanner knows: the
	// scanner is what the alerts and the dashboard are checked with.
	known := knownMetrics(t, root)
	var missed []string
	for _, line := range strings.Split(string(metrics), "\n") {
		if name, ok := strings.CutPrefix(line, "# TYPE "); ok {
			name, _, _ = strings.Cut(name, " ")
			if strings.HasPrefix(name, "anyedge_") && !metricKnown(name, known) {
				missed = append(missed, name)
			}
		}
	}
	if len(missed) > 0 {
		t.Errorf("edged exports metrics the source scanner does not find: %v", missed)
	}
}
