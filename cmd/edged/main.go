// Command edged is the anyedge edge daemon. The wiring lives in
// internal/daemon so that it can be tested; see `edged -h`.
package main

import (
	"context"
	"os"

	"github.com/anyedge/anyedge/internal/daemon"
)

func main() {
	os.Exit(daemon.Main(context.Background(), os.Args[1:], os.Stdout, os.Stderr))
}
