// Command edgectl is the operator's command line for edged's admin API.
// The commands live in internal/ctl so that they can be tested; see
// `edgectl help`.
package main

import (
	"context"
	"os"
	"os/signal"
	"syscall"

	"github.com/anyedge/anyedge/internal/ctl"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := ctl.Main(ctx, os.Args[1:], os.Getenv, os.Stdout, os.Stderr)
	stop()
	os.Exit(code)
}
