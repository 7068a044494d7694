// Command edgelab brings the anyedge namespace lab up and down (see
// package lab). It needs root. `make lab` and `make lab-down` run it
// through scripts/lab.sh.
//
//	edgelab up [-regions 2|3] [-dir lab-run] [-bin bin] [-scenarios edge/sipp]
//	edgelab status [-dir lab-run]
//	edgelab down [-dir lab-run]
//
// up builds the lab, registers a few SIP users to the anycast address,
// places a test call, prints a summary and what to try next, and leaves
// the lab running. If any step fails, or on Ctrl-C, it removes everything
// it built.
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"path/filepath"
	"syscall"
	"time"

	"github.com/anyedge/anyedge/lab"
)

func main() {
	if len(os.Args) < 2 {
		usage()
	}
	cmd := os.Args[1]
	fs := flag.NewFlagSet("edgelab "+cmd, flag.ExitOnError)
	dir := fs.String("dir", "lab-run", "run `directory`: configs, logs, state")
	regions := fs.Int("regions", 2, "number of regions, 2 or 3")
	bin := fs.String("bin", "bin", "`directory` with edged and edgectl")
	scenarios := fs.String("scenarios", "edge/sipp", "SIPp scenario `directory`")
	prefix := fs.String("prefix", "anylab", "namespace name `prefix`")
	fs.Parse(os.Args[2:])
	if os.Geteuid() != 0 {
		fatal(fmt.Errorf("needs root (network namespaces, veth, BIRD)"))
	}
	abs := func(p string) string {
		a, err := filepath.Abs(p)
		if err != nil {
			fatal(err)
		}
		return a
	}
	o := lab.Options{
		Regions: *regions, Prefix: *prefix, Dir: abs(*dir),
		Edged: abs(filepath.Join(*bin, "edged")), Edgectl: abs(filepath.Join(*bin, "edgectl")),
		Scenarios: abs(*scenarios), Detach: true, Geo: true,
		Logf: func(format string, args ...any) { fmt.Printf("lab: "+format+"\n", args...) },
	}
	switch cmd {
	case "up":
		up(o)
	case "down":
		down(o)
	case "status":
		l, err := lab.Load(o.Dir, o)
		if err != nil {
			fatal(fmt.Errorf("no lab in %s: %w", o.Dir, err))
		}
		fmt.Print(l.Summary())
	default:
		usage()
	}
}

func usage() {
	fmt.Fprintln(os.Stderr, "usage: edgelab up|status|down [-dir lab-run] [-regions 2|3] [-bin bin] [-scenarios edge/sipp]")
	os.Exit(2)
}

func fatal(err error) {
	fmt.Fprintln(os.Stderr, "lab:", err)
	os.Exit(1)
}

func up(o lab.Options) {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	if _, err := os.Stat(filepath.Join(o.Dir, "state.json")); err == nil {
		fatal(fmt.Errorf("a lab is recorded in %s: run `make lab-down` first", o.Dir))
	}
	l, err := lab.Up(ctx, o)
	if err != nil {
		fatal(fmt.Errorf("up failed (everything it built is removed; logs are in %s): %w", o.Dir, err))
	}
	if err := l.Demo(ctx, os.Stdout); err != nil {
		fmt.Fprintln(os.Stderr, "lab: demo failed; taking the lab down:", err)
		if derr := l.Down(); derr != nil {
			fmt.Fprintln(os.Stderr, "lab: down:", derr)
		}
		os.Exit(1)
	}
	fmt.Print(l.Summary())
	fmt.Print(l.Hints())
}

func down(o lab.Options) {
	l, err := lab.Load(o.Dir, o)
	if err != nil {
		// Nothing recorded: sweep namespaces with the prefix (processes
		// in them die with them only if they have no other hold; none
		// are killed by name).
		if n, perr := lab.Purge(o.Prefix); perr != nil || n > 0 {
			fmt.Printf("lab: no state in %s; removed %d namespaces named %s-*\n", o.Dir, n, o.Prefix)
			if perr != nil {
				fatal(perr)
			}
			return
		}
		fmt.Println("lab: the lab is not up")
		return
	}
	start := time.Now()
	if err := l.Down(); err != nil {
		fatal(err)
	}
	if err := os.RemoveAll(o.Dir); err != nil {
		fatal(err)
	}
	fmt.Printf("lab: down in %v: processes stopped, namespaces and %s removed\n", time.Since(start).Round(time.Millisecond), o.Dir)
}
