// Package redistest starts a real Redis Cluster for tests: six
// redis-server processes on free loopback ports (three masters, three
// replicas), each in its own temporary directory with AOF on, created with
// redis-cli --cluster create and killed by PID when the test ends.
//
// Tests skip when redis-server is not installed, unless
// ANYEDGE_REQUIRE_REDIS is set (make test sets it): then they fail.
package redistest

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
)

// RequireEnv makes a missing redis-server a failure instead of a skip.
const RequireEnv = "ANYEDGE_REQUIRE_REDIS"

// Options tune the cluster.
type Options struct {
	// AppendFsync is the AOF fsync policy (default "everysec": an
	// acknowledged write has been written to the file before the reply, so
	// a killed process loses nothing; only a host crash loses up to 1 s).
	AppendFsync string
	// NodeTimeout is cluster-node-timeout (default 2 s: failover within a
	// few seconds, so the failover tests stay short).
	NodeTimeout time.Duration
	// User and Password, when set, add an ACL user with every permission
	// (the default user stays open for redis-cli and the harness).
	User, Password string
	// Bind is the address every node listens on (default 127.0.0.1).
	Bind string
	// Command builds the commands the harness runs (redis-server,
	// redis-cli); default exec.Command. The end-to-end tests run them in
	// a network namespace ("ip netns exec", which keeps the PID).
	Command func(name string, args ...string) *exec.Cmd
	// Dial is how the harness's own clients connect (default: directly).
	Dial func(ctx context.Context, network, addr string) (net.Conn, error)
	// TLS serves TLS only (tls-port; the cluster bus and replication too)
	// and requires client certificates; Cluster.TLS has the files.
	TLS bool
}

// Node is one redis-server process.
type Node struct {
	Port int
	Dir  string
	Addr string

	mu  sync.Mutex
	cmd *exec.Cmd
	out chan error // the exit of cmd
}

// Cluster is the running cluster.
type Cluster struct {
	Nodes []*Node
	t     testing.TB
	bin   string
	cli   string
	o     Options
	// TLS is set with Options.TLS: the CA and a client certificate.
	TLS *TLSFiles
}

// Require skips (or fails under ANYEDGE_REQUIRE_REDIS) when redis-server
// or redis-cli is missing, and returns their paths.
func Require(t testing.TB) (server, cli string) {
	t.Helper()
	server, err1 := exec.LookPath("redis-server")
	cli, err2 := exec.LookPath("redis-cli")
	if err1 != nil || err2 != nil {
		if os.Getenv(RequireEnv) != "" {
			t.Fatalf("redis-server and redis-cli are required (%s is set): %v %v; run scripts/install-deps.sh", RequireEnv, err1, err2)
		}
		t.Skipf("redis-server/redis-cli not installed (apt-get install redis-server redis-tools, or scripts/install-deps.sh); set %s to make this a failure", RequireEnv)
	}
	return server, cli
}

// Start starts a six-node cluster and waits until every node reports
// cluster_state:ok. Everything is stopped in t.Cleanup.
func Start(t testing.TB, o Options) *Cluster {
	t.Helper()
	server, cli := Require(t)
	if o.AppendFsync == "" {
		o.AppendFsync = "everysec"
	}
	if o.NodeTimeout == 0 {
		o.NodeTimeout = 2 * time.Second
	}
	if o.Bind == "" {
		o.Bind = "127.0.0.1"
	}
	if o.Command == nil {
		o.Command = exec.Command
	}
	c := &Cluster{t: t, bin: server, cli: cli, o: o}
	t.Cleanup(c.stopAll)
	ports := freePorts(t, 6)
	root := t.TempDir()
	if o.TLS {
		c.TLS = writeTLS(t, root, o.Bind)
	}
	for i, p := range ports {
		n := &Node{Port: p, Dir: filepath.Join(root, fmt.Sprintf("n%d", i)), Addr: net.JoinHostPort(o.Bind, strconv.Itoa(p))}
		if err := os.MkdirAll(n.Dir, 0o700); err != nil {
			t.Fatal(err)
		}
		listen := fmt.Sprintf("port %d", p)
		if c.TLS != nil {
			listen = fmt.Sprintf("port 0\ntls-port %d\ntls-cluster yes\ntls-replication yes\n"+
				"tls-cert-file %s\ntls-key-file %s\ntls-ca-cert-file %s\ntls-auth-clients yes", p, c.TLS.Cert, c.TLS.Key, c.TLS.CA)
		}
		conf := fmt.Sprintf(`%s
bind %s
protected-mode no
dir %s
logfile %s
daemonize no
cluster-enabled yes
cluster-config-file nodes.conf
cluster-node-timeout %d
cluster-replica-validity-factor 0
appendonly yes
appendfsync %s
save ""
`, listen, o.Bind, n.Dir, filepath.Join(n.Dir, "redis.log"), o.NodeTimeout.Milliseconds(), o.AppendFsync)
		if o.User != "" {
			conf += fmt.Sprintf("user %s on >%s ~* &* +@all\n", o.User, o.Password)
		}
		if err := os.WriteFile(filepath.Join(n.Dir, "redis.conf"), []byte(conf), 0o600); err != nil {
			t.Fatal(err)
		}
		c.Nodes = append(c.Nodes, n)
		c.Restart(i)
	}
	var args []string
	if c.TLS != nil {
		args = append(args, "--tls", "--cacert", c.TLS.CA, "--cert", c.TLS.Cert, "--key", c.TLS.Key)
	}
	args = append(args, "--cluster", "create")
	for _, n := range c.Nodes {
		args = append(args, n.Addr)
	}
	args = append(args, "--cluster-replicas", "1", "--cluster-yes")
	create := o.Command(cli, args...)
	timer := time.AfterFunc(time.Minute, func() {
		if p := create.Process; p != nil {
			_ = p.Kill()
		}
	})
	out, err := create.CombinedOutput()
	timer.Stop()
	if err != nil {
		t.Fatalf("redis-cli --cluster create: %v\n%s", err, out)
	}
	c.WaitOK(time.Minute)
	c.WaitReplicasInSync(time.Minute)
	return c
}

// WaitReplicasInSync waits until every running master has a replica
// online (past the full resync): before that a killed master's replica
// would be promoted without its data.
func (c *Cluster) WaitReplicasInSync(within time.Duration) {
	c.t.Helper()
	c.poll(within, "every master with an online replica", func() error {
		masters := 0
		for i, n := range c.Nodes {
			if !c.Running(i) {
				continue
			}
			info, err := c.Info(i, "INFO", "replication")
			if err != nil {
				return err
			}
			if !strings.Contains(info, "role:master") {
				if !strings.Contains(info, "master_link_status:up") || strings.Contains(info, "master_sync_in_progress:1") {
					return fmt.Errorf("replica %s not in sync", n.Addr)
				}
				continue
			}
			if strings.Contains(info, "connected_slaves:0") {
				continue // a master without slots, or whose replica is down
			}
			if !strings.Contains(info, "state=online") {
				return fmt.Errorf("master %s: replica not online", n.Addr)
			}
			masters++
		}
		if masters == 0 {
			return errors.New("no master with a replica")
		}
		return nil
	})
}

func (c *Cluster) tlsConfig() *tls.Config {
	if c.TLS == nil {
		return nil
	}
	return c.TLS.Config.Clone()
}

// Addrs are the addresses of every node.
func (c *Cluster) Addrs() []string {
	var a []string
	for _, n := range c.Nodes {
		a = append(a, n.Addr)
	}
	return a
}

// Restart starts node i (again) from its directory: its nodes.conf and AOF
// bring back its role and data. It waits until it answers PING.
func (c *Cluster) Restart(i int) {
	c.t.Helper()
	n := c.Nodes[i]
	n.mu.Lock()
	if n.cmd != nil {
		n.mu.Unlock()
		c.t.Fatalf("redistest: node %d is running", i)
	}
	cmd := c.o.Command(c.bin, filepath.Join(n.Dir, "redis.conf"))
	cmd.Dir = n.Dir
	// Never outlive the test; its own process group, so that Kill also
	// stops the children it forks (AOF rewrite, replica sync), which would
	// otherwise go on writing in the test's temporary directory.
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL, Setpgid: true}
	if err := cmd.Start(); err != nil {
		n.mu.Unlock()
		c.t.Fatalf("redistest: start redis-server: %v", err)
	}
	n.cmd, n.out = cmd, make(chan error, 1)
	go func(ch chan error) { ch <- cmd.Wait() }(n.out)
	n.mu.Unlock()
	rdb := redis.NewClient(&redis.Options{Addr: n.Addr, DisableIdentity: true, Dialer: c.o.Dial, TLSConfig: c.tlsConfig()})
	defer rdb.Close()
	c.poll(30*time.Second, fmt.Sprintf("node %d (%s) answering PING", i, n.Addr), func() error {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		select {
		case err := <-n.out:
			n.out <- err
			return fmt.Errorf("exited: %v (see %s)", err, filepath.Join(n.Dir, "redis.log"))
		default:
		}
		return rdb.Ping(ctx).Err()
	})
}

// Kill kills node i and the children it forked (SIGKILL to the process
// group it leads, which only our redis-server and its forks are in) and
// waits until all of them are gone.
func (c *Cluster) Kill(i int) {
	n := c.Nodes[i]
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.cmd == nil {
		return
	}
	pgid := n.cmd.Process.Pid
	_ = syscall.Kill(-pgid, syscall.SIGKILL)
	<-n.out
	// Forked children are reaped by init, not by us: poll until none of
	// the group is left, bounded.
	for deadline := time.Now().Add(5 * time.Second); time.Now().Before(deadline); time.Sleep(5 * time.Millisecond) {
		if err := syscall.Kill(-pgid, 0); err == syscall.ESRCH {
			break
		}
	}
	n.cmd, n.out = nil, nil
}

// Running reports whether node i's process runs.
func (c *Cluster) Running(i int) bool {
	n := c.Nodes[i]
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.cmd != nil
}

func (c *Cluster) stopAll() {
	for i := range c.Nodes {
		c.Kill(i)
	}
}

// KillAll kills every node.
func (c *Cluster) KillAll() { c.stopAll() }

// RestartAll restarts every stopped node and waits for cluster_state:ok.
func (c *Cluster) RestartAll() {
	for i := range c.Nodes {
		if !c.Running(i) {
			c.Restart(i)
		}
	}
	c.WaitOK(time.Minute)
}

// WaitOK waits until every running node reports cluster_state:ok and
// agrees that every slot has a master that is up.
func (c *Cluster) WaitOK(within time.Duration) {
	c.t.Helper()
	c.poll(within, "cluster_state:ok on every running node", func() error {
		for i, n := range c.Nodes {
			if !c.Running(i) {
				continue
			}
			info, err := c.Info(i, "CLUSTER", "INFO")
			if err != nil {
				return err
			}
			if !strings.Contains(info, "cluster_state:ok") || !strings.Contains(info, "cluster_slots_ok:16384") {
				return fmt.Errorf("%s: %s", n.Addr, firstLines(info, 3))
			}
		}
		return nil
	})
}

// Info runs a command on node i and returns its reply as text (see text).
func (c *Cluster) Info(i int, args ...string) (string, error) {
	rdb := redis.NewClient(&redis.Options{Addr: c.Nodes[i].Addr, DisableIdentity: true, MaxRetries: -1, Dialer: c.o.Dial,
		TLSConfig: c.tlsConfig()})
	defer rdb.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	a := make([]any, len(args))
	for j, s := range args {
		a[j] = s
	}
	v, err := rdb.Do(ctx, a...).Result()
	if err != nil {
		return "", err
	}
	return text(v), nil
}

// text renders a reply: integers in decimal, arrays space-separated.
func text(v any) string {
	switch x := v.(type) {
	case string:
		return x
	case int64:
		return strconv.FormatInt(x, 10)
	case []any:
		parts := make([]string, len(x))
		for i, e := range x {
			parts[i] = text(e)
		}
		return strings.Join(parts, " ")
	default:
		return fmt.Sprint(x)
	}
}

// MasterOf returns the index of the running node that is master for key's
// slot, as that node sees itself.
func (c *Cluster) MasterOf(key string) (int, error) {
	for i := range c.Nodes {
		if !c.Running(i) {
			continue
		}
		slot, err := c.Info(i, "CLUSTER", "KEYSLOT", key)
		if err != nil {
			continue
		}
		nodes, err := c.Info(i, "CLUSTER", "NODES")
		if err != nil {
			continue
		}
		s, _ := strconv.Atoi(slot)
		for _, line := range strings.Split(nodes, "\n") {
			f := strings.Fields(line)
			if len(f) < 9 || !strings.Contains(f[2], "master") || strings.Contains(f[2], "fail") {
				continue
			}
			for _, r := range f[8:] {
				lo, hi, ok := strings.Cut(r, "-")
				if !ok {
					hi = lo
				}
				l, err1 := strconv.Atoi(lo)
				h, err2 := strconv.Atoi(hi)
				if err1 == nil && err2 == nil && s >= l && s <= h {
					addr, _, _ := strings.Cut(f[1], "@")
					for j, n := range c.Nodes {
						if n.Addr == addr {
							return j, nil
						}
					}
				}
			}
		}
		return 0, fmt.Errorf("no master for slot %s in %s's view", slot, c.Nodes[i].Addr)
	}
	return 0, errors.New("no running node")
}

// Slots returns the slot ranges node i serves as a master, as it sees
// itself.
func (c *Cluster) Slots(i int) ([][2]int, error) {
	nodes, err := c.Info(i, "CLUSTER", "NODES")
	if err != nil {
		return nil, err
	}
	var out [][2]int
	for _, line := range strings.Split(nodes, "\n") {
		f := strings.Fields(line)
		if len(f) < 9 || !strings.Contains(f[2], "myself") || !strings.Contains(f[2], "master") {
			continue
		}
		for _, r := range f[8:] {
			lo, hi, ok := strings.Cut(r, "-")
			if !ok {
				hi = lo
			}
			l, err1 := strconv.Atoi(lo)
			h, err2 := strconv.Atoi(hi)
			if err1 == nil && err2 == nil {
				out = append(out, [2]int{l, h})
			}
		}
	}
	return out, nil
}

// KeySlot returns the hash slot of key, asking a running node.
func (c *Cluster) KeySlot(key string) (int, error) {
	for i := range c.Nodes {
		if !c.Running(i) {
			continue
		}
		v, err := c.Info(i, "CLUSTER", "KEYSLOT", key)
		if err != nil {
			continue
		}
		return strconv.Atoi(v)
	}
	return 0, errors.New("no running node")
}

// MemoryUsed sums used_memory over the running masters.
func (c *Cluster) MemoryUsed() (int64, error) { return c.SumInfo("memory", "used_memory") }

// SumInfo sums an integer field of an INFO section over the running
// masters.
func (c *Cluster) SumInfo(section, field string) (int64, error) {
	var total int64
	for i := range c.Nodes {
		if !c.Running(i) {
			continue
		}
		role, err := c.Info(i, "ROLE")
		if err == nil && !strings.HasPrefix(role, "master") {
			continue
		}
		info, err := c.Info(i, "INFO", section)
		if err != nil {
			return 0, err
		}
		for _, line := range strings.Split(info, "\n") {
			if v, ok := strings.CutPrefix(strings.TrimSpace(line), field+":"); ok {
				n, err := strconv.ParseInt(v, 10, 64)
				if err != nil {
					return 0, fmt.Errorf("INFO %s: %q: %w", section, line, err)
				}
				total += n
			}
		}
	}
	return total, nil
}

func (c *Cluster) poll(within time.Duration, what string, f func() error) {
	c.t.Helper()
	deadline := time.Now().Add(within)
	var err error
	for {
		if err = f(); err == nil {
			return
		}
		if time.Now().After(deadline) {
			c.t.Fatalf("redistest: timed out after %v waiting for %s: %v", within, what, err)
		}
		time.Sleep(50 * time.Millisecond) // polling interval, not a synchronisation
	}
}

func firstLines(s string, n int) string {
	lines := strings.SplitN(s, "\n", n+1)
	if len(lines) > n {
		lines = lines[:n]
	}
	return strings.Join(lines, " ")
}

// freePorts finds n loopback ports whose cluster bus port (+10000) is free
// too. Ports are held until all are chosen so that none repeats.
func freePorts(t testing.TB, n int) []int {
	t.Helper()
	var held []net.Listener
	defer func() {
		for _, l := range held {
			_ = l.Close()
		}
	}()
	var ports []int
	for tries := 0; len(ports) < n && tries < 1000; tries++ {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		p := l.Addr().(*net.TCPAddr).Port
		if p+10000 > 65535 {
			_ = l.Close()
			continue
		}
		bus, err := net.Listen("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(p+10000)))
		if err != nil {
			_ = l.Close()
			continue
		}
		held = append(held, l, bus)
		ports = append(ports, p)
	}
	if len(ports) < n {
		t.Fatalf("redistest: found only %d free port pairs", len(ports))
	}
	return ports
}
