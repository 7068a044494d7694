// Package ctl is edgectl, the operator's command line for edged's admin
// API. Everything it shows comes from the API; it keeps no state.
package ctl

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"runtime"
	"slices"
	"strings"
	"time"

	"github.com/anyedge/anyedge/internal/version"
)

// DefaultAdmin is edged's default admin address.
const DefaultAdmin = "http://127.0.0.1:9090"

const usage = `usage: edgectl [flags] COMMAND

Commands:
  cluster nodes                     known nodes: state, next hop, hops, RTT
  cluster topology                  nodes, links and routes as this node sees them
  cluster caps                      capability sync state
  cluster tags                      sharing tags and their owners
  cluster tags set-active TAG NODE  make NODE the owner of TAG (NODE 0: let the cluster elect)
  cluster remove NODE               forget a down node cluster-wide
  ready                             readiness and why not (exit 1 when not ready)
  drain [-wait]                     take the node out: not ready, prefixes withdrawn, no sharing tags
                                    (-wait: until not ready and nothing announced, up to -wait-timeout)
  undrain                           put the node back in service
  cps                               CPS limits: configured rate, platform-wide rate now, rejections
  cps top LIMIT [N]                 the N (default 10) busiest keys of a keyed limit
  cps set LIMIT RATE                change a limit's rate (calls per second), cluster-wide
  dialogs                           calls held (early, confirmed, terminated; home and replica), top users
  bgp peers                         BGP sessions with the routers
  bgp routes                        announced prefixes and the routers that have them
  version                           print the version

Flags (before or after the command):
`

// Env reads environment variables; os.Getenv in production.
type Env func(string) string

// command is one edgectl command: its words, its positional arguments and
// what it does.
type command struct {
	words    []string
	args     []string // names of the positional arguments, for usage errors
	optional []string // names of optional arguments after args
	run      func(c *cli, ctx context.Context, args []string) error
}

// usage is the command's synopsis.
func (c *command) usage() string {
	s := strings.Join(append(slices.Clone(c.words), c.args...), " ")
	for _, o := range c.optional {
		s += " [" + o + "]"
	}
	return s
}

var commands = []command{
	{words: []string{"cluster", "nodes"}, run: (*cli).nodes},
	{words: []string{"cluster", "topology"}, run: (*cli).topology},
	{words: []string{"cluster", "caps"}, run: (*cli).caps},
	{words: []string{"cluster", "tags"}, run: (*cli).tags},
	{words: []string{"cluster", "tags", "set-active"}, args: []string{"TAG", "NODE"}, run: (*cli).setActive},
	{words: []string{"cluster", "remove"}, args: []string{"NODE"}, run: (*cli).remove},
	{words: []string{"ready"}, run: (*cli).ready},
	{words: []string{"drain"}, run: (*cli).drain},
	{words: []string{"undrain"}, run: (*cli).undrain},
	{words: []string{"cps"}, run: (*cli).cps},
	{words: []string{"cps", "top"}, args: []string{"LIMIT"}, optional: []string{"N"}, run: (*cli).cpsTop},
	{words: []string{"cps", "set"}, args: []string{"LIMIT", "RATE"}, run: (*cli).cpsSet},
	{words: []string{"dialogs"}, run: (*cli).dialogs},
	{words: []string{"bgp", "peers"}, run: (*cli).bgpPeers},
	{words: []string{"bgp", "routes"}, run: (*cli).bgpRoutes},
}

// cli is one invocation's settings and output.
type cli struct {
	client *client
	json   bool
	out    io.Writer

	// drain -wait: poll every pollEvery for up to waitTimeout.
	wait        bool
	waitTimeout time.Duration
	pollEvery   time.Duration
}

// pollEvery is how often drain -wait asks the daemon.
const pollEvery = 200 * time.Millisecond

// Main runs edgectl with args (without the program name) and returns the
// exit code: 0 on success, 1 when the command failed, 2 on bad usage.
func Main(ctx context.Context, args []string, env Env, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("edgectl", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() {
		fmt.Fprint(stderr, usage)
		fs.PrintDefaults()
	}
	admin := fs.String("admin", envOr(env, "EDGECTL_ADMIN", DefaultAdmin), "edged admin API `URL` (env EDGECTL_ADMIN)")
	token := fs.String("token", env("EDGECTL_TOKEN"), "bearer `token` for state-changing commands (env EDGECTL_TOKEN)")
	output := fs.String("o", "table", "output `format`: table or json")
	timeout := fs.Duration("timeout", 10*time.Second, "give up on the daemon after this long")
	wait := fs.Bool("wait", false, "drain: wait until the node is not ready and nothing is announced")
	waitTimeout := fs.Duration("wait-timeout", time.Minute, "drain -wait: give up after this long")

	words, err := parseInterspersed(fs, args)
	if err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		return 2
	}
	if *output != "table" && *output != "json" {
		fmt.Fprintf(stderr, "edgectl: -o must be table or json, not %q\n", *output)
		return 2
	}
	if len(words) == 1 && (words[0] == "version") {
		fmt.Fprintf(stdout, "edgectl %s (%s)\n", version.Version, runtime.Version())
		return 0
	}
	if len(words) == 1 && words[0] == "help" {
		fs.SetOutput(stdout)
		fmt.Fprint(stdout, usage)
		fs.PrintDefaults()
		return 0
	}
	cmd, rest := lookup(words)
	if cmd == nil {
		if len(words) == 0 {
			fmt.Fprintln(stderr, "edgectl: no command")
		} else {
			fmt.Fprintf(stderr, "edgectl: unknown command %q\n", strings.Join(words, " "))
		}
		fs.Usage()
		return 2
	}
	if len(rest) < len(cmd.args) || len(rest) > len(cmd.args)+len(cmd.optional) {
		fmt.Fprintf(stderr, "usage: edgectl %s\n", cmd.usage())
		return 2
	}
	if *wait && cmd.words[0] != "drain" {
		fmt.Fprintln(stderr, "edgectl: -wait only applies to drain")
		return 2
	}
	cl, err := newClient(*admin, *token, *timeout)
	if err != nil {
		fmt.Fprintln(stderr, "edgectl:", err)
		return 2
	}
	c := &cli{client: cl, json: *output == "json", out: stdout,
		wait: *wait, waitTimeout: *waitTimeout, pollEvery: pollEvery}
	if err := cmd.run(c, ctx, rest); err != nil {
		if errors.Is(err, errNotReady) {
			return 1 // the output says why
		}
		var ue usageError
		if errors.As(err, &ue) {
			fmt.Fprintf(stderr, "edgectl: %s\nusage: edgectl %s\n", ue, cmd.usage())
			return 2
		}
		fmt.Fprintln(stderr, "edgectl:", err)
		return 1
	}
	return 0
}

// usageError is a bad argument to a known command.
type usageError string

func (e usageError) Error() string { return string(e) }

// lookup finds the longest command whose words prefix the given words.
func lookup(words []string) (*command, []string) {
	var best *command
	for i := range commands {
		c := &commands[i]
		if len(c.words) <= len(words) && slices.Equal(c.words, words[:len(c.words)]) &&
			(best == nil || len(c.words) > len(best.words)) {
			best = c
		}
	}
	if best == nil {
		return nil, nil
	}
	return best, words[len(best.words):]
}

// parseInterspersed parses flags anywhere among the words, so that both
// `edgectl -o json cluster nodes` and `edgectl cluster nodes -o json` work.
// Everything after "--" is a word.
func parseInterspersed(fs *flag.FlagSet, args []string) ([]string, error) {
	var tail []string
	if i := slices.Index(args, "--"); i >= 0 {
		args, tail = args[:i], args[i+1:]
	}
	var words []string
	for {
		if err := fs.Parse(args); err != nil {
			return nil, err
		}
		args = fs.Args()
		if len(args) == 0 {
			break
		}
		words = append(words, args[0])
		args = args[1:]
	}
	return append(words, tail...), nil
}

func envOr(env Env, key, def string) string {
	if v := env(key); v != "" {
		return v
	}
	return def
}
