//go:build e2e && linux

package e2e

import (
	"bytes"
	"context"
	"crypto/md5"
	"encoding/hex"
	"fmt"
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

	"github.com/anyedge/anyedge/e2e/netlab"
)

// The SIP end-to-end tests: real edged processes with a sip section and
// real SIPp user agents, each in its own namespace on one bridge, driven
// by the scenarios in edge/sipp (the same ones edge/sipp_test.go runs on
// loopback).
//
//	auth   198.18.0.11  edged, digest auth for REGISTER (calls not challenged)
//	open   198.18.0.12  edged, no auth, two upstreams (the first one dead),
//	                    sbc trusted
//	ua1    198.18.0.21  SIPp callers and registering clients
//	ua2    198.18.0.22  SIPp callees (UAS)
//	ua3    198.18.0.23  SIPp callees, the second contact of a fork
//	core   198.18.0.31  SIPp UAS as the upstream on :5060; nothing on :5099
//	sbc    198.18.0.41  a trusted peer sending calls for another domain
//
// Every SIPp run is bounded: -m 1, a global -timeout that fails the run,
// and a process deadline. A UAS is waited for (its port bound, polled)
// before the call that needs it is placed.

const (
	sipDomain  = "example.com"
	sipPort    = 5060
	sippBudget = 20 * time.Second // process deadline of one SIPp run
)

// sipEdge is one edged with a sip section, in its own namespace.
type sipEdge struct {
	name string
	host *netlab.Host
	cfg  string
	proc *netlab.Proc
}

func (e *sipEdge) ip() string       { return e.host.Addr().String() }
func (e *sipEdge) sipAddr() string  { return fmt.Sprintf("%s:%d", e.ip(), sipPort) }
func (e *sipEdge) adminURL() string { return fmt.Sprintf("http://%s:%d", e.ip(), adminPort) }

// startSIPEdge writes edged's config with the given sip section (the
// listeners are added: UDP and TCP on :5060), checks it with `edged config
// check`, starts the daemon and waits until its admin API answers (the SIP
// listeners are bound before it starts).
func startSIPEdge(t *testing.T, lab *netlab.Lab, lan *netlab.Bridge, name, ip string, sip map[string]any) *sipEdge {
	t.Helper()
	if bins.edgedErr != nil {
		t.Fatalf("edged: %v", bins.edgedErr)
	}
	e := &sipEdge{name: name, host: lab.Host(name, lan, ip+"/24")}
	sip["listeners"] = []map[string]string{
		{"transport": "udp", "addr": e.sipAddr()},
		{"transport": "tcp", "addr": e.sipAddr()},
	}
	cfg := map[string]any{
		"log":   map[string]string{"level": "debug", "format": "text"},
		"admin": map[string]string{"listen": fmt.Sprintf("%s:%d", ip, adminPort), "token": adminToken},
		"cluster": map[string]any{
			"node_id": 1, "region": "lab", "listen": fmt.Sprintf("%s:%d", ip, clusterPort), "seed": true,
			"key": clusterKey, "state_dir": filepath.Join(lab.Dir(), name+"-state"),
		},
		"sip": sip,
	}
	b, err := yaml.Marshal(cfg)
	if err != nil {
		t.Fatal(err)
	}
	e.cfg = filepath.Join(lab.Dir(), name+".yaml")
	if err := os.WriteFile(e.cfg, b, 0o600); err != nil {
		t.Fatal(err)
	}
	if out, err := execOut(bins.edged, "config", "check", e.cfg); err != nil {
		t.Fatalf("edged config check %s: %v\n%s\n%s", e.cfg, err, out, b)
	}
	e.proc = e.host.Start(t, "edged-"+name+".log", bins.edged, "-config", e.cfg)
	d := netlab.Eventually(t, 10*time.Second, 20*time.Millisecond, func() error {
		if e.proc.Exited() {
			return netlab.Permanent(fmt.Errorf("edged %s exited: %s\n%s", name, e.proc.State(), e.proc.Tail(30)))
		}
		resp, err := e.host.HTTPClient().Get(e.adminURL() + "/healthz")
		if err != nil {
			return err
		}
		resp.Body.Close()
		return nil
	})
	t.Logf("edged %s at %s: healthy after %v", name, e.sipAddr(), d.Round(time.Millisecond))
	return e
}

// metric sums the samples of one metric family (all label values).
func (e *sipEdge) metric(t *testing.T, name string) float64 {
	t.Helper()
	resp, err := e.host.HTTPClient().Get(e.adminURL() + "/metrics")
	if err != nil {
		t.Fatalf("%s /metrics: %v", e.name, err)
	}
	defer resp.Body.Close()
	v, _, err := sumMetric(resp.Body, name)
	if err != nil {
		t.Fatalf("%s /metrics: %v", e.name, err)
	}
	return v
}

// metricLabel is the sample of name whose label set contains label (for
// example `class="4xx"`), 0 when absent.
func (e *sipEdge) metricLabel(t *testing.T, name, label string) float64 {
	t.Helper()
	resp, err := e.host.HTTPClient().Get(e.adminURL() + "/metrics")
	if err != nil {
		t.Fatalf("%s /metrics: %v", e.name, err)
	}
	defer resp.Body.Close()
	var buf bytes.Buffer
	if _, err := buf.ReadFrom(resp.Body); err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(buf.String(), "\n") {
		if strings.HasPrefix(line, name+"{") && strings.Contains(line, label) {
			f := strings.Fields(line)
			v, err := strconv.ParseFloat(f[len(f)-1], 64)
			if err != nil {
				t.Fatalf("%s: %q: %v", e.name, line, err)
			}
			return v
		}
	}
	return 0
}

// sipUA is a namespace that runs SIPp. Each run gets a port of its own, so
// that late messages for an earlier run never reach a later one.
type sipUA struct {
	host *netlab.Host
	mu   sync.Mutex
	next int
}

func newSipUA(lab *netlab.Lab, lan *netlab.Bridge, name, ip string) *sipUA {
	return &sipUA{host: lab.Host(name, lan, ip+"/24"), next: 5061}
}

func (u *sipUA) ip() string { return u.host.Addr().String() }

// port returns a port this host has not used yet.
func (u *sipUA) port() int {
	u.mu.Lock()
	defer u.mu.Unlock()
	p := u.next
	u.next++
	return p
}

// sippRun is one SIPp process in a namespace.
type sippRun struct {
	name  string
	ua    *sipUA
	port  int
	dir   string
	cmd   *exec.Cmd
	out   bytes.Buffer
	start time.Time
	done  chan struct{}
	err   error
	wall  time.Duration
}

// startSIPp starts one run of scenario (a file in edge/sipp) on ua; remote
// "" makes it a UAS. args may set -p (the port, default a fresh one), -m
// (calls, default 1) and -key domain (default example.com). The process is
// killed when the test ends, if it still runs.
func startSIPp(t *testing.T, ua *sipUA, scenario, remote string, args ...string) *sippRun {
	t.Helper()
	bin, err := exec.LookPath("sipp")
	if err != nil {
		t.Fatalf("sipp not installed (make deps): %v", err)
	}
	r := &sippRun{name: scenario, ua: ua, dir: t.TempDir(), done: make(chan struct{})}
	if i := slices.Index(args, "-p"); i >= 0 && i+1 < len(args) {
		r.port, _ = strconv.Atoi(args[i+1])
	} else {
		r.port = ua.port()
		args = append(args, "-p", strconv.Itoa(r.port))
	}
	if !slices.Contains(args, "-key") || !slices.Contains(args, "domain") {
		args = append(args, "-key", "domain", sipDomain)
	}
	scen, err := filepath.Abs(filepath.Join("..", "edge", "sipp", scenario))
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Contains(args, "-m") {
		args = append(args, "-m", "1")
	}
	argv := append([]string{"-sf", scen, "-l", "1", "-i", ua.ip(), "-t", "u1",
		"-timeout", "15s", "-timeout_error", "-buff_size", "4194304", "-nostdin",
		"-trace_err", "-error_file", filepath.Join(r.dir, "errors.log"),
		"-trace_msg", "-message_file", filepath.Join(r.dir, "messages.log")}, args...)
	if remote != "" {
		argv = append(argv, remote)
	}
	ctx, cancel := context.WithTimeout(context.Background(), sippBudget)
	r.cmd = ua.host.Exec(ctx, bin, argv...) // `ip netns exec` execs sipp in place: the PID is sipp's
	r.cmd.Stdout, r.cmd.Stderr = &r.out, &r.out
	r.start = time.Now()
	if err := r.cmd.Start(); err != nil {
		cancel()
		t.Fatalf("sipp %s: %v", scenario, err)
	}
	go func() {
		r.err = r.cmd.Wait()
		r.wall = time.Since(r.start)
		cancel()
		close(r.done)
	}()
	t.Cleanup(func() {
		select {
		case <-r.done:
		default:
			_ = r.cmd.Process.Kill() // ours, by PID
			<-r.done
		}
	})
	return r
}

// wait waits for the run and fails the test, with SIPp's logs, unless it
// passed. It returns the run's wall time.
func (r *sippRun) wait(t *testing.T) time.Duration {
	t.Helper()
	<-r.done
	if r.err == nil {
		return r.wall
	}
	var logs strings.Builder
	for _, f := range []string{"errors.log", "messages.log"} {
		if b, err := os.ReadFile(filepath.Join(r.dir, f)); err == nil {
			fmt.Fprintf(&logs, "--- %s\n%s\n", f, lastBytes(b, 6000))
		}
	}
	t.Fatalf("sipp %s on %s:%d failed after %v: %v\n%s\n%s", r.name, r.ua.ip(), r.port,
		r.wall.Round(time.Millisecond), r.err, lastBytes(r.out.Bytes(), 2000), logs.String())
	return 0
}

// stop kills a run that would not end by itself (a UAS with -m above the
// calls it gets).
func (r *sippRun) stop() {
	select {
	case <-r.done:
	default:
		_ = r.cmd.Process.Kill() // ours, by PID
		<-r.done
	}
}

// listening polls until the run's UDP port is bound in its namespace: a
// UAS must be there before the call that is meant for it.
func (r *sippRun) listening(t *testing.T) {
	t.Helper()
	netlab.Eventually(t, 10*time.Second, 20*time.Millisecond, func() error {
		select {
		case <-r.done:
			return netlab.Permanent(fmt.Errorf("sipp %s exited before listening: %v\n%s", r.name, r.err, lastBytes(r.out.Bytes(), 2000)))
		default:
		}
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		out, err := r.ua.host.Run(ctx, "ss", "-Hlnu", fmt.Sprintf("sport = :%d", r.port))
		if err != nil {
			return err
		}
		if len(bytes.TrimSpace(out)) == 0 {
			return fmt.Errorf("nothing bound to udp %s:%d yet", r.ua.ip(), r.port)
		}
		return nil
	})
}

// runSIPp runs a scenario to completion and returns its wall time.
func runSIPp(t *testing.T, ua *sipUA, scenario, remote string, args ...string) time.Duration {
	t.Helper()
	return startSIPp(t, ua, scenario, remote, args...).wait(t)
}

// startUAS registers user with the contact ua:port through edge (with
// digest auth, password user+"pw", when auth is true), then starts the UAS
// scenario on that port and waits until it listens.
func startUAS(t *testing.T, edge *sipEdge, ua *sipUA, user, scenario string, auth bool) *sippRun {
	t.Helper()
	port := strconv.Itoa(ua.port())
	if auth {
		runSIPp(t, ua, "uac_register.xml", edge.sipAddr(), "-s", user, "-au", user, "-ap", user+"pw", "-p", port)
	} else {
		runSIPp(t, ua, "uac_register_noauth.xml", edge.sipAddr(), "-s", user, "-p", port)
	}
	uas := startSIPp(t, ua, scenario, "", "-aa", "-p", port)
	uas.listening(t)
	return uas
}

func lastBytes(b []byte, n int) []byte {
	if len(b) > n {
		return b[len(b)-n:]
	}
	return b
}

// subscribersFile writes a subscriber list with MD5 HA1s only: SIPp
// answers a challenge with the first algorithm offered and knows no
// SHA-256, so the edge must offer MD5 alone for these users. Passwords are
// user+"pw".
func subscribersFile(t *testing.T, dir string, users ...string) string {
	t.Helper()
	var b strings.Builder
	for _, u := range users {
		ha1 := md5.Sum([]byte(u + ":" + sipDomain + ":" + u + "pw"))
		fmt.Fprintf(&b, "%s %s %s -\n", u, sipDomain, hex.EncodeToString(ha1[:]))
	}
	path := filepath.Join(dir, "subscribers")
	if err := os.WriteFile(path, []byte(b.String()), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

// TestSIP runs the SIP scenarios against two edged nodes. The scenarios
// share the lab and the daemons (each check is on counter deltas), so a
// scenario that fails does not stop the others.
func TestSIP(t *testing.T) {
	lab := netlab.New(t) // skips unless root
	lan := lab.Bridge("lan")
	if _, err := exec.LookPath("sipp"); err != nil {
		t.Fatalf("sipp not installed (make deps): %v", err)
	}
	auth := startSIPEdge(t, lab, lan, "auth", "198.18.0.11", map[string]any{
		"domains": []string{sipDomain},
		"auth": map[string]any{
			"enabled":          true,
			"subscribers_file": subscribersFile(t, lab.Dir(), "alice", "bob", "dave", "erin", "mallory"),
			"invite":           false, // calls are not challenged: SIPp's call scenarios carry no credentials
		},
		"timeouts": map[string]string{"no_response": "2s"},
	})
	open := startSIPEdge(t, lab, lan, "open", "198.18.0.12", map[string]any{
		"domains": []string{sipDomain},
		// The first upstream is the core host on a port nothing listens
		// on, weighted so that it is always tried first; the probes would
		// mark it down before the call, so they wait an hour (a negative
		// interval, documented as "off", is refused by the config loader).
		"upstreams": []map[string]any{
			{"addr": "198.18.0.31:5099", "weight": 1000000},
			{"addr": "198.18.0.31:5060", "weight": 1},
		},
		"upstream_health": map[string]string{"interval": "1h"},
		"trusted":         []string{"198.18.0.41/32"},
		"timeouts":        map[string]string{"no_response": "1s"},
	})
	ua1 := newSipUA(lab, lan, "ua1", "198.18.0.21")
	ua2 := newSipUA(lab, lan, "ua2", "198.18.0.22")
	ua3 := newSipUA(lab, lan, "ua3", "198.18.0.23")
	core := newSipUA(lab, lan, "core", "198.18.0.31")
	sbc := newSipUA(lab, lan, "sbc", "198.18.0.41")

	t.Run("register_digest_auth", func(t *testing.T) {
		b0 := auth.metric(t, "anyedge_sip_bindings")
		c4, c2 := auth.metricLabel(t, "anyedge_sip_responses_total", `class="4xx"`), auth.metricLabel(t, "anyedge_sip_responses_total", `class="2xx"`)
		d := runSIPp(t, ua1, "uac_register.xml", auth.sipAddr(), "-s", "alice", "-au", "alice", "-ap", "alicepw")
		b1 := auth.metric(t, "anyedge_sip_bindings")
		d4 := auth.metricLabel(t, "anyedge_sip_responses_total", `class="4xx"`) - c4
		d2 := auth.metricLabel(t, "anyedge_sip_responses_total", `class="2xx"`) - c2
		t.Logf("REGISTER → 401 → REGISTER with credentials → 200 in %v (SIPp wall time); bindings %v → %v; 4xx +%v, 2xx +%v",
			d.Round(time.Millisecond), b0, b1, d4, d2)
		if b1 != b0+1 || d4 != 1 || d2 != 1 {
			t.Errorf("want one more binding, one 401 and one 200")
		}
	})

	t.Run("register_wrong_password", func(t *testing.T) {
		b0 := auth.metric(t, "anyedge_sip_bindings")
		f0 := auth.metricLabel(t, "anyedge_sip_auth_failures_total", `reason="forbidden"`)
		d := runSIPp(t, ua1, "uac_register_badpass.xml", auth.sipAddr(), "-s", "mallory", "-au", "mallory", "-ap", "wrong")
		b1 := auth.metric(t, "anyedge_sip_bindings")
		f1 := auth.metricLabel(t, "anyedge_sip_auth_failures_total", `reason="forbidden"`)
		t.Logf("REGISTER → 401 → REGISTER with a wrong password → 403 in %v; bindings %v → %v; auth failures (forbidden) %v → %v",
			d.Round(time.Millisecond), b0, b1, f0, f1)
		if b1 != b0 || f1 != f0+1 {
			t.Errorf("want no new binding and one more auth failure")
		}
	})

	t.Run("register_refresh_unregister", func(t *testing.T) {
		b0 := open.metric(t, "anyedge_sip_bindings")
		r0 := open.metricLabel(t, "anyedge_sip_requests_total", `method="REGISTER"`)
		// The scenario asserts 200 to each of the three REGISTERs.
		d := runSIPp(t, ua1, "uac_reg_rereg_unreg.xml", open.sipAddr(), "-s", "carol")
		b1 := open.metric(t, "anyedge_sip_bindings")
		r1 := open.metricLabel(t, "anyedge_sip_requests_total", `method="REGISTER"`)
		t.Logf("register, refresh after 200 ms, unregister: 3 × 200 in %v; REGISTERs %v → %v; bindings %v → %v",
			d.Round(time.Millisecond), r0, r1, b0, b1)
		if r1 != r0+3 || b1 != b0 {
			t.Errorf("want 3 REGISTERs and no binding left")
		}
	})

	t.Run("call", func(t *testing.T) {
		uas := startUAS(t, auth, ua2, "bob", "uas_answer.xml", true)
		inv0 := auth.metricLabel(t, "anyedge_sip_requests_total", `method="INVITE"`)
		bye0 := auth.metricLabel(t, "anyedge_sip_requests_total", `method="BYE"`)
		d := runSIPp(t, ua1, "uac_call.xml", auth.sipAddr(), "-s", "bob")
		du := uas.wait(t)
		inv := auth.metricLabel(t, "anyedge_sip_requests_total", `method="INVITE"`) - inv0
		bye := auth.metricLabel(t, "anyedge_sip_requests_total", `method="BYE"`) - bye0
		t.Logf("ua1 → edge → bob at ua2: INVITE/180/200/ACK, 300 ms, BYE/200 in %v (UAS done after %v); edge saw %v INVITE, %v BYE",
			d.Round(time.Millisecond), du.Round(time.Millisecond), inv, bye)
		if inv != 1 || bye != 1 {
			t.Errorf("want the INVITE and the BYE through the edge")
		}
	})

	t.Run("cancel_ringing", func(t *testing.T) {
		uas := startUAS(t, auth, ua2, "dave", "uas_ring.xml", true)
		c0 := auth.metricLabel(t, "anyedge_sip_requests_total", `method="CANCEL"`)
		r0 := auth.metricLabel(t, "anyedge_sip_responses_total", `class="4xx"`)
		// The caller's scenario asserts 180, 200 to its CANCEL and 487; the
		// callee's asserts that the edge cancelled its branch and
		// acknowledged its 487.
		d := runSIPp(t, ua1, "uac_cancel.xml", auth.sipAddr(), "-s", "dave")
		du := uas.wait(t)
		// sipgo answers a CANCEL and the INVITE's 487 inside its
		// transaction layer: neither shows in the edge's counters.
		c := auth.metricLabel(t, "anyedge_sip_requests_total", `method="CANCEL"`) - c0
		r := auth.metricLabel(t, "anyedge_sip_responses_total", `class="4xx"`) - r0
		t.Logf("INVITE, 180, CANCEL → 200, 487, ACK in %v (callee cancelled and done after %v); edge counters: CANCEL +%v, 4xx +%v",
			d.Round(time.Millisecond), du.Round(time.Millisecond), c, r)
	})

	t.Run("unknown_user_404", func(t *testing.T) {
		d := runSIPp(t, ua1, "uac_404.xml", auth.sipAddr(), "-s", "nobody")
		t.Logf("INVITE for nobody@%s → 404, ACK, in %v", sipDomain, d.Round(time.Millisecond))
	})

	t.Run("parallel_fork", func(t *testing.T) {
		b0 := auth.metric(t, "anyedge_sip_bindings")
		answer := startUAS(t, auth, ua2, "erin", "uas_answer.xml", true)
		ring := startUAS(t, auth, ua3, "erin", "uas_ring.xml", true)
		b1 := auth.metric(t, "anyedge_sip_bindings")
		d := runSIPp(t, ua1, "uac_call.xml", auth.sipAddr(), "-s", "erin")
		da := answer.wait(t)
		dr := ring.wait(t) // the losing branch was cancelled by the edge: 200, 487, ACK
		t.Logf("erin has %v contacts (ua2 answers, ua3 rings): call done in %v; ua2 done after %v, ua3 cancelled and done after %v",
			b1-b0, d.Round(time.Millisecond), da.Round(time.Millisecond), dr.Round(time.Millisecond))
		if b1-b0 != 2 {
			t.Errorf("want two bindings for erin")
		}
	})

	t.Run("upstream_failover", func(t *testing.T) {
		up := startSIPp(t, core, "uas_answer.xml", "", "-aa", "-p", "5060")
		up.listening(t)
		f0 := open.metric(t, "anyedge_sip_upstream_failovers_total")
		d := runSIPp(t, sbc, "uac_call.xml", open.sipAddr(), "-s", "15551234", "-key", "domain", "carrier.example.net")
		up.wait(t)
		f := open.metric(t, "anyedge_sip_upstream_failovers_total") - f0
		t.Logf("sbc → edge → 198.18.0.31:5099 (nothing listens) → failover to 198.18.0.31:5060: call done in %v; failovers +%v",
			d.Round(time.Millisecond), f)
		if f < 1 {
			t.Errorf("the dead upstream was never tried (no failover counted)")
		}
	})
}
