package daemon

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"runtime"

	"github.com/anyedge/anyedge/internal/config"
	"github.com/anyedge/anyedge/internal/version"
)

const usage = `usage:
  edged -config FILE          run the daemon
  edged config check FILE     validate FILE and exit (0: valid, 1: not)
  edged version               print the version
`

// Main is edged's command line. It returns the process exit code: 0 on
// success, 1 on failure, 2 on bad usage.
func Main(ctx context.Context, args []string, stdout, stderr io.Writer, opts ...Option) int {
	if len(args) > 0 {
		switch args[0] {
		case "version":
			if len(args) != 1 {
				break
			}
			fmt.Fprintf(stdout, "edged %s (%s)\n", version.Version, runtime.Version())
			return 0
		case "config":
			if len(args) != 3 || args[1] != "check" {
				break
			}
			if _, err := config.Load(args[2]); err != nil {
				fmt.Fprintln(stderr, err)
				return 1
			}
			fmt.Fprintf(stdout, "%s: ok\n", args[2])
			return 0
		}
	}

	fs := flag.NewFlagSet("edged", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() { fmt.Fprint(stderr, usage) }
	path := fs.String("config", "", "config `file` (YAML)")
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		return 2
	}
	if *path == "" || fs.NArg() > 0 {
		fs.Usage()
		return 2
	}
	cfg, err := config.Load(*path)
	if err != nil {
		fmt.Fprintln(stderr, "edged:", err)
		return 1
	}
	d, err := New(cfg, append([]Option{WithLogOutput(stderr), WithConfigPath(*path)}, opts...)...)
	if err != nil {
		fmt.Fprintln(stderr, "edged:", err)
		return 1
	}
	if err := d.Run(ctx); err != nil {
		fmt.Fprintln(stderr, "edged:", err)
		return 1
	}
	return 0
}
