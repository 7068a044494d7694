//go:build e2e && linux

package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"go.yaml.in/yaml/v3"

	"github.com/anyedge/anyedge/lab"
)

// TestRollout runs ansible/playbooks/rolling-upgrade.yml, as a real
// ansible-playbook, against the lab's four edges (issue 7). One node at a
// time, regions in sequence, the playbook drains the node, checks its
// routes are withdrawn, runs the anyedge role (a new edged: a copy with
// another checksum; the config rendered from the inventory, checked by the
// new edged), restarts edged through the role's restart hook, waits until
// it is ready but for the drain, undrains it and waits for its routes.
//
// Meanwhile:
//   - a watcher reads each region router's paths to the anycast address
//     every 50 ms: the paths its own edges announce (BIRD) never drop to
//     zero;
//   - SIPp places a steady rate of calls through the anycast address
//     from each region's client to a phone registered in the other region
//     (so every call crosses the geo relay): none may fail.
//
// The restart hook is an HTTP server of this test on a unix socket: the
// role's handler curls it, and the test, which owns the edged processes,
// stops the edge and starts the installed binary with the installed
// config. At that moment the node must be drained and its path gone.
func TestRollout(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("the lab needs root (network namespaces, BIRD): go test -count=1 -tags e2e ./e2e/...")
	}
	for _, tool := range []string{"ansible-playbook", "curl", "python3"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Fatalf("%s not installed (make deps installs it)", tool)
		}
	}
	// The package's -timeout kills every test: refuse to start rather
	// than panic half-way (make e2e gives the package enough).
	const budget = 12 * time.Minute
	if d, ok := t.Deadline(); ok && time.Until(d) < budget+2*time.Minute {
		t.Skipf("only %v left before go test's -timeout; the roll-out may need %v (go test -tags e2e ./e2e -run TestRollout -timeout 15m)",
			time.Until(d).Round(time.Second), budget)
	}
	root, err := filepath.Abs("..")
	if err != nil {
		t.Fatal(err)
	}
	// Geo: a registration survives its edge's restart and is found from
	// every edge (without it, calls to a restarted edge get 480).
	l := startLab(t, lab.EnableGeo, nil)
	if keep := os.Getenv("ANYEDGE_ROLLOUT_KEEP"); keep != "" {
		// Diagnostics: the edges' and SIPp's logs outlive the lab.
		t.Cleanup(func() {
			out, err := exec.Command("cp", "-a", l.Dir(), keep).CombinedOutput()
			t.Logf("rollout: lab directory copied to %s: %v %s", keep, err, out)
		})
	}
	load0 := loadAvg()
	work := t.TempDir()

	// The new release: edged with a few bytes appended (an ELF runs the
	// same), so its checksum, and so the role's copy, differ.
	newEdged := filepath.Join(work, "release", "edged")
	b, err := os.ReadFile(bins.edged)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.MkdirAll(filepath.Dir(newEdged), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(newEdged, append(b, "\nanyedge rollout test release\n"...), 0o755); err != nil {
		t.Fatal(err)
	}

	ctx, cancel := context.WithTimeout(context.Background(), budget)
	defer cancel()
	start := time.Now()
	since := func() string {
		return time.Since(start).Round(100*time.Millisecond).String() + " (" + time.Now().UTC().Format("15:04:05.0") + ")"
	}

	hook := &restartHook{t: t, l: l, since: since, restarts: map[string]int{}, oldPID: map[string]int{}}
	for name, e := range l.Edges {
		hook.oldPID[name] = e.Proc.PID
	}
	hookSock := filepath.Join(work, "hook.sock")
	ln, err := net.Listen("unix", hookSock)
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: hook}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })

	invPath, varsPath := rolloutInventory(t, l, work, newEdged, hookSock)

	// The load: per region a phone (SIPp UAS) registered through the
	// anycast address, and a caller (SIPp UAC) that calls the other
	// region's phone at a steady rate, bounded in count and time.
	const uasPort, uacPort, rate, maxCalls = 5070, 5080, 5, 3000
	regions := l.Plan.Regions
	phone := func(r *lab.RegionPlan) string { return []string{"bob", "dave", "carol"}[r.Index-1] }
	type load struct {
		uas, uac *lab.SIPp
		callee   string
	}
	loads := map[string]*load{}
	for _, r := range regions {
		c := l.Clients[r.Name]
		user := phone(r)
		if err := c.Register(ctx, lab.AnycastSIP(), user, uasPort); err != nil {
			t.Fatalf("register %s from %s: %v", user, r.ClientName(), err)
		}
		uas, err := c.StartSIPp(ctx, "uas_answer.xml", "", "-p", strconv.Itoa(uasPort))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(uas.Stop)
		loads[r.Name] = &load{uas: uas}
	}
	for i, r := range regions {
		to := phone(regions[(i+1)%len(regions)])
		uac, err := l.Clients[r.Name].StartSIPp(ctx, "uac_call.xml", lab.AnycastSIP(), "-s", to, "-p", strconv.Itoa(uacPort),
			"-r", strconv.Itoa(rate), "-m", strconv.Itoa(maxCalls), "-timeout", strconv.Itoa(int(budget.Seconds()))+"s", "-timeout_error")
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(uac.Stop)
		loads[r.Name].uac, loads[r.Name].callee = uac, to
	}

	w := watchPaths(t, l, since)
	var aors []string
	for _, ld := range loads {
		aors = append(aors, ld.callee+"@"+lab.Domain)
	}
	stopRoutes := watchRoutes(t, l, aors, since)
	defer stopRoutes()

	cmd := exec.CommandContext(ctx, "ansible-playbook", "-i", invPath, "-e", "@"+varsPath,
		filepath.Join(root, "ansible/playbooks/rolling-upgrade.yml"))
	cmd.Env = append(os.Environ(),
		"ANSIBLE_CONFIG="+filepath.Join(root, "ansible/ansible.cfg"),
		"ANSIBLE_ROLES_PATH="+filepath.Join(root, "ansible/roles"),
		"ANSIBLE_NOCOLOR=1", "ANSIBLE_FORCE_COLOR=0",
		// Modules through the interpreter's stdin: no temporary files.
		"ANSIBLE_PIPELINING=1",
		"ANSIBLE_LOCAL_TEMP="+filepath.Join(work, "ansible-tmp"),
		"ANSIBLE_REMOTE_TEMP="+filepath.Join(work, "ansible-tmp"))
	logPath := filepath.Join(work, "playbook.log")
	logf, err := os.Create(logPath)
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stdout, cmd.Stderr = logf, logf
	t.Logf("rollout: playbook started at %s (load %s)", since(), load0)
	perr := cmd.Run()
	took := time.Since(start)
	logf.Close()
	out, _ := os.ReadFile(logPath)
	if perr != nil {
		w.stop()
		t.Fatalf("rolling-upgrade.yml failed after %v: %v\n%s", took.Round(time.Millisecond), perr, tailString(string(out), 8000))
	}
	t.Logf("rollout: rolling-upgrade.yml took %v; recap:\n%s", took.Round(time.Millisecond), recap(string(out)))

	// Stop placing calls; the ones in flight finish.
	w.stop()
	stopRoutes()
	load1 := loadAvg()
	for _, r := range regions {
		ld := loads[r.Name]
		if err := ld.uac.Interrupt(); err != nil {
			t.Errorf("region %s: interrupt SIPp: %v", r.Name, err)
		}
	}
	for _, r := range regions {
		ld := loads[r.Name]
		werr := ld.uac.Wait()
		setup, inDialog := deadCalls(ld.uac.ErrorLog())
		total, failed := sippCounts(ld.uac.Output())
		t.Logf("rollout: calls from region %s to %s: %d placed, %d failed (dead calls: %d at setup, %d in dialog)",
			r.Name, ld.callee, total, failed, setup, inDialog)
		if werr != nil || setup+inDialog > 0 || failed > 0 {
			t.Errorf("region %s: calls failed during the roll-out: %v", r.Name, werr)
		}
		if total < 10 {
			t.Errorf("region %s: only %d calls placed during a %v roll-out", r.Name, total, took.Round(time.Second))
		}
	}

	for _, r := range regions {
		s := w.stats[r.Name]
		t.Logf("rollout: region %s: min %d announcing paths (BIRD) and min %d in the kernel route, over %d samples (%d read errors)",
			r.Name, s.minBIRD, s.minKernel, s.samples, s.errs)
		if s.zeroBIRD > 0 {
			t.Errorf("region %s: no edge of the region announced %s in %d of %d samples", r.Name, lab.Anycast, s.zeroBIRD, s.samples)
		}
		// A loaded machine may stall the watcher, but not for most of the
		// roll-out.
		if s.samples < int(took/(500*time.Millisecond)) {
			t.Errorf("region %s: only %d samples in %v", r.Name, s.samples, took.Round(time.Second))
		}
	}

	hook.mu.Lock()
	defer hook.mu.Unlock()
	for _, msg := range hook.problems {
		t.Error(msg)
	}
	var want []string
	for _, e := range l.Plan.Edges() {
		want = append(want, e.Name)
	}
	if !slices.Equal(hook.order, want) {
		t.Errorf("restart order %v, want %v (one at a time, regions in sequence)", hook.order, want)
	}
	for _, name := range want {
		e := l.Edges[name]
		if hook.restarts[name] != 1 {
			t.Errorf("%s restarted %d times by the hook, want 1", name, hook.restarts[name])
		}
		if e.Proc.PID == hook.oldPID[name] || !e.Proc.Alive() {
			t.Errorf("%s: pid %d (was %d), alive %v", name, e.Proc.PID, hook.oldPID[name], e.Proc.Alive())
		}
		if exe, err := os.Readlink(fmt.Sprintf("/proc/%d/exe", e.Proc.PID)); err != nil || exe != e.Bin {
			t.Errorf("%s runs %q (%v), want the installed %s", name, exe, err, e.Bin)
		}
		var rz struct {
			Reasons []string `json:"reasons"`
		}
		if err := e.GetStatus("/readyz", &rz); err != nil || len(rz.Reasons) > 0 {
			t.Errorf("%s not ready after the roll-out: %v %v", name, err, rz.Reasons)
		}
	}
	for _, r := range regions {
		ecmp(t, l, r, 20*time.Second)
	}
	for _, name := range want {
		t.Logf("rollout: %s after the roll-out: %s", name, failureMetrics(l.Edges[name]))
	}
	t.Logf("rollout: figures: %d nodes in %v (%s), load average %s before, %s after",
		len(want), took.Round(time.Second), hook.durations(), load0, load1)
}

// restartHook restarts an edge on POST /restart/<edge> with the binary
// and config the role installed under the edge's prefix, after checking
// that the node is drained and withdrawn.
type restartHook struct {
	t     *testing.T
	l     *lab.Lab
	since func() string

	mu       sync.Mutex
	restarts map[string]int
	oldPID   map[string]int
	order    []string
	took     []string
	problems []string
}

func (h *restartHook) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	name := strings.TrimPrefix(r.URL.Path, "/restart/")
	e := h.l.Edges[name]
	if e == nil || r.Method != http.MethodPost {
		http.Error(w, "no such edge", http.StatusNotFound)
		return
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	fail := func(format string, args ...any) {
		msg := fmt.Sprintf("restart hook, %s: ", name) + fmt.Sprintf(format, args...)
		h.problems = append(h.problems, msg)
		http.Error(w, msg, http.StatusInternalServerError)
	}
	// What the playbook promised before the restart: drained, nothing
	// announced, the router has no path from the node.
	var rz struct {
		Reasons []string `json:"reasons"`
	}
	if err := e.GetStatus("/readyz", &rz); err != nil || !slices.Equal(rz.Reasons, []string{"drained"}) {
		h.problems = append(h.problems, fmt.Sprintf("%s restarted while not drained: readyz reasons %q (%v)", name, rz.Reasons, err))
	}
	if out, err := h.l.Routers[e.Region.Name].Birdc("show", "route", lab.Anycast+"/32", "protocol", name); err != nil || strings.Contains(out, "unicast") {
		h.problems = append(h.problems, fmt.Sprintf("%s restarted with its path still at the router (%v):\n%s", name, err, out))
	}
	h.t.Logf("rollout: %s: %s before its restart: %s", h.since(), name, failureMetrics(e))
	t0 := time.Now()
	if err := e.Proc.Stop(30 * time.Second); err != nil {
		fail("stop: %v", err)
		return
	}
	old := e.Proc.PID
	e.Bin = filepath.Join(rolloutPrefix(h.l, name), "usr/local/bin/edged")
	e.Config = filepath.Join(rolloutPrefix(h.l, name), "etc/anyedge/edged.yaml")
	if err := e.Start(); err != nil {
		fail("start: %v", err)
		return
	}
	if err := e.WaitHealthy(60 * time.Second); err != nil {
		fail("%v", err)
		return
	}
	h.restarts[name]++
	h.order = append(h.order, name)
	h.took = append(h.took, fmt.Sprintf("%s at %s", name, h.since()))
	h.t.Logf("rollout: %s: hook restarted %s (pid %d -> %d, %v)", h.since(), name, old, e.Proc.PID, time.Since(t0).Round(time.Millisecond))
	fmt.Fprintf(w, "%d\n", e.Proc.PID)
}

func (h *restartHook) durations() string {
	return "restarts: " + strings.Join(h.took, ", ")
}

// failureMetrics picks the edge's counters that tell where failed calls
// were refused: 4xx/5xx responses, geo's lookup routes, misdelivered
// requests.
func failureMetrics(e *lab.Edge) string {
	m, err := e.Metrics()
	if err != nil {
		return err.Error()
	}
	var out []string
	for _, line := range strings.Split(m, "\n") {
		switch {
		case strings.HasPrefix(line, "anyedge_sip_responses_total") && (strings.Contains(line, "4xx") || strings.Contains(line, "5xx")),
			strings.HasPrefix(line, "anyedge_geo_lookup_routes_total"),
			strings.HasPrefix(line, "anyedge_sip_misdelivered") && !strings.Contains(line, "_bucket"),
			strings.HasPrefix(line, "anyedge_sip_relayed_requests_total"):
			out = append(out, line)
		}
	}
	return strings.Join(out, "; ")
}

// rolloutPrefix is the root the role installs edge name into.
func rolloutPrefix(l *lab.Lab, name string) string {
	return filepath.Join(l.Dir(), "rollout", name)
}

// rolloutInventory writes the Ansible inventory of the lab's edges and the
// release's variables, and installs the old release under each edge's
// prefix. Each host's modules run in its edge's namespace (a python3
// wrapper), where the admin API and edgectl answer as on a real node. The
// role renders the lab's own config of the edge: it is passed whole as
// anyedge_config_extra, which the template merges last.
func rolloutInventory(t *testing.T, l *lab.Lab, work, newEdged, hookSock string) (inv, vars string) {
	t.Helper()
	// The system's python3, which ansible-core runs on: a python3 found
	// first on PATH may be a version manager's shim, slow to start on
	// every task.
	python, err := exec.LookPath("/usr/bin/python3")
	if err != nil {
		if python, err = exec.LookPath("python3"); err != nil {
			t.Fatal(err)
		}
	}
	groups := map[string]any{}
	for _, r := range l.Plan.Regions {
		hosts := map[string]any{}
		for _, ep := range r.Edges {
			e := l.Edges[ep.Name]
			prefix := rolloutPrefix(l, e.Name)
			for src, dst := range map[string]string{bins.edged: "edged", bins.edgectl: "edgectl"} {
				copyFile(t, src, filepath.Join(prefix, "usr/local/bin", dst))
			}
			py := filepath.Join(work, "python-"+e.Name)
			script := fmt.Sprintf("#!/bin/sh\nexec ip netns exec %s %s \"$@\"\n", e.NS, python)
			if err := os.WriteFile(py, []byte(script), 0o755); err != nil {
				t.Fatal(err)
			}
			raw, err := os.ReadFile(e.Config)
			if err != nil {
				t.Fatal(err)
			}
			var cfg map[string]any
			if err := yaml.Unmarshal(raw, &cfg); err != nil {
				t.Fatalf("%s: %v", e.Config, err)
			}
			cl, _ := cfg["cluster"].(map[string]any)
			seed, _ := cl["seed"].(bool)
			join, _ := cl["join"].([]any)
			hosts[e.Name] = map[string]any{
				"ansible_connection":         "local",
				"ansible_python_interpreter": py,
				"anyedge_prefix":             prefix,
				"anyedge_node_id":            e.ID,
				"anyedge_region":             r.Name,
				"anyedge_cluster_listen":     cl["listen"],
				"anyedge_cluster_advertise":  cl["listen"],
				"anyedge_cluster_seed":       seed,
				"anyedge_cluster_join":       join,
				"anyedge_sip_address":        e.Addr.String(),
				"anyedge_anycast_addresses":  []string{lab.Anycast, lab.Anycast6},
				// The playbook waits for these prefixes to be announced
				// again after the undrain.
				"anyedge_bgp":             cfg["bgp"],
				"anyedge_config_extra":    cfg,
				"anyedge_restart_command": []string{"curl", "-sS", "--fail-with-body", "-X", "POST", "--unix-socket", hookSock, "http://hook/restart/" + e.Name},
			}
		}
		groups["region_"+r.Name] = map[string]any{"hosts": hosts}
	}
	inventory := map[string]any{"all": map[string]any{
		"children": map[string]any{"edge": map[string]any{"children": groups}},
		"hosts":    map[string]any{"localhost": map[string]any{"ansible_connection": "local", "ansible_python_interpreter": python}},
	}}
	inv = filepath.Join(work, "inventory.json")
	writeJSON(t, inv, inventory)
	release := map[string]any{
		"ansible_become":         false,
		"anyedge_manage_service": false,
		"anyedge_manage_user":    false,
		"anyedge_user":           "root",
		"anyedge_group":          "root",
		// Required by the role; the lab's own key comes with the config.
		"anyedge_cluster_key":    "replaced by anyedge_config_extra",
		"anyedge_edged_src":      newEdged,
		"anyedge_edged_sha256":   sha256File(t, newEdged),
		"anyedge_edgectl_src":    bins.edgectl,
		"anyedge_edgectl_sha256": sha256File(t, bins.edgectl),
		"anyedge_edgectl_bin":    "{{ anyedge_prefix }}/usr/local/bin/edgectl",
		"anyedge_ready_delay":    1,
		"anyedge_ready_retries":  120,
	}
	vars = filepath.Join(work, "release.json")
	writeJSON(t, vars, release)
	return inv, vars
}

// pathStats are one region's samples of the router's paths to the
// anycast address.
type pathStats struct {
	samples, errs       int
	minBIRD, minKernel  int
	zeroBIRD, lastBIRD  int
	lastKernel, changes int
}

// pathWatch samples every region's router every 50 ms.
type pathWatch struct {
	mu    sync.Mutex
	stats map[string]*pathStats
	done  chan struct{}
	wg    sync.WaitGroup
	once  sync.Once
}

// watchPaths counts, per region, the paths to the anycast address that
// the region's own edges announce to its router (BIRD's routes from their
// protocols, a draining path with GRACEFUL_SHUTDOWN included), and the
// region's edges among the kernel route's next hops (the paths in use).
// Every change is logged with its time.
func watchPaths(t *testing.T, l *lab.Lab, since func() string) *pathWatch {
	w := &pathWatch{stats: map[string]*pathStats{}, done: make(chan struct{})}
	for _, r := range l.Plan.Regions {
		s := &pathStats{minBIRD: 1 << 30, minKernel: 1 << 30, lastBIRD: -1, lastKernel: -1}
		w.stats[r.Name] = s
		rt := l.Routers[r.Name]
		var names, addrs []string
		for _, e := range r.Edges {
			names = append(names, e.Name)
			addrs = append(addrs, e.Addr.String())
		}
		w.wg.Add(1)
		go func() {
			defer w.wg.Done()
			tick := time.NewTicker(50 * time.Millisecond)
			defer tick.Stop()
			for {
				select {
				case <-w.done:
					return
				case <-tick.C:
				}
				out, berr := rt.Birdc("show", "route", lab.Anycast+"/32")
				hops, kerr := rt.NextHops(lab.Anycast + "/32")
				w.mu.Lock()
				if berr != nil || kerr != nil {
					s.errs++
					w.mu.Unlock()
					continue
				}
				nb := birdPaths(out, names)
				nk := 0
				for _, h := range hops {
					if slices.Contains(addrs, h) {
						nk++
					}
				}
				s.samples++
				s.minBIRD, s.minKernel = min(s.minBIRD, nb), min(s.minKernel, nk)
				if nb == 0 {
					s.zeroBIRD++
				}
				if nb != s.lastBIRD || nk != s.lastKernel {
					if s.lastBIRD >= 0 {
						s.changes++
						t.Logf("rollout: %s: region %s: %d announcing, %d in use (%v)", since(), r.Name, nb, nk, hops)
					}
					s.lastBIRD, s.lastKernel = nb, nk
				}
				w.mu.Unlock()
			}
		}()
	}
	return w
}

func (w *pathWatch) stop() {
	w.once.Do(func() { close(w.done) })
	w.wg.Wait()
}

// watchRoutes logs every change of where each edge sends a call for each
// of aors (its geo lookup: local, replica or relay to a node), every
// 250 ms, until the returned stop is called.
func watchRoutes(t *testing.T, l *lab.Lab, aors []string, since func() string) (stop func()) {
	done := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		last := map[string]string{}
		tick := time.NewTicker(250 * time.Millisecond)
		defer tick.Stop()
		for {
			for _, ep := range l.Plan.Edges() {
				e := l.Edges[ep.Name]
				for _, aor := range aors {
					var rs []struct {
						Kind string `json:"kind"`
						Node uint32 `json:"node"`
					}
					now := "unknown"
					if err := e.Get("/v1/location/"+aor, &rs); err == nil {
						var parts []string
						for _, r := range rs {
							parts = append(parts, fmt.Sprintf("%s %d", r.Kind, r.Node))
						}
						now = "[" + strings.Join(parts, ", ") + "]"
					}
					if k := ep.Name + " " + aor; last[k] != now {
						t.Logf("rollout: %s: %s routes %s: %s", since(), ep.Name, aor, now)
						last[k] = now
					}
				}
			}
			select {
			case <-done:
				return
			case <-tick.C:
			}
		}
	}()
	var once sync.Once
	return func() {
		once.Do(func() { close(done) })
		wg.Wait()
	}
}

// birdPaths counts the routes in a `birdc show route` listing that come
// from one of the protocols named.
func birdPaths(out string, protocols []string) int {
	n := 0
	for _, r := range parseBirdRoutes(out) {
		if slices.Contains(protocols, r.proto) {
			n++
		}
	}
	return n
}

// loadAvg is the 1, 5 and 15 minute load averages.
func loadAvg() string {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return "?"
	}
	return strings.Join(strings.Fields(string(b))[:3], " ")
}

func copyFile(t *testing.T, src, dst string) {
	t.Helper()
	in, err := os.Open(src)
	if err != nil {
		t.Fatal(err)
	}
	defer in.Close()
	if err := os.MkdirAll(filepath.Dir(dst), 0o755); err != nil {
		t.Fatal(err)
	}
	out, err := os.OpenFile(dst, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, 0o755)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := io.Copy(out, in); err != nil {
		t.Fatal(err)
	}
	if err := out.Close(); err != nil {
		t.Fatal(err)
	}
}

func writeJSON(t *testing.T, path string, v any) {
	t.Helper()
	b, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, b, 0o600); err != nil {
		t.Fatal(err)
	}
}

func sha256File(t *testing.T, path string) string {
	t.Helper()
	out, err := exec.Command("sha256sum", path).Output()
	if err != nil {
		t.Fatal(err)
	}
	return strings.Fields(string(out))[0]
}

// recap is the PLAY RECAP section of an ansible-playbook log.
func recap(log string) string {
	if i := strings.Index(log, "PLAY RECAP"); i >= 0 {
		return log[i:]
	}
	return tailString(log, 2000)
}

// sippCounts reads the cumulative "Successful call" and "Failed call"
// counters of SIPp's final statistics screen.
func sippCounts(out string) (total, failed int) {
	var ok int
	for _, line := range strings.Split(out, "\n") {
		line = strings.TrimSpace(line)
		f := strings.Fields(line)
		if len(f) < 4 {
			continue
		}
		switch {
		case strings.HasPrefix(line, "Successful call"):
			ok, _ = strconv.Atoi(f[len(f)-1])
		case strings.HasPrefix(line, "Failed call"):
			failed, _ = strconv.Atoi(f[len(f)-1])
		}
	}
	return ok + failed, failed
}

func tailString(s string, n int) string {
	if len(s) > n {
		return s[len(s)-n:]
	}
	return s
}
