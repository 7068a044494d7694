//go:build e2e

// Package e2e holds the end-to-end tests: real edged processes in network
// namespaces built with e2e/netlab. Run as root:
//
//	go test -count=1 -tags e2e ./e2e/...
package e2e

import (
	"flag"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"testing"

	"github.com/anyedge/anyedge/e2e/netlab"
)

// bins are the binaries under test, built once by TestMain.
var bins struct {
	dir        string
	edged      string
	edgectl    string
	edgedErr   error // why edged could not be built
	edgectlErr error
}

func TestMain(m *testing.M) {
	flag.Parse()
	var cleanup []func()
	if os.Geteuid() == 0 { // otherwise every test skips: build nothing
		dir, err := os.MkdirTemp("", "anyedge-e2e-bin-")
		if err != nil {
			fmt.Fprintln(os.Stderr, "e2e:", err)
			os.Exit(1)
		}
		cleanup = append(cleanup, func() { os.RemoveAll(dir) })
		bins.dir = dir
		bins.edged, bins.edgedErr = build(dir, "edged")
		bins.edgectl, bins.edgectlErr = build(dir, "edgectl")
	}
	code := netlab.RunMain(m, cleanup...)
	os.Exit(code)
}

func build(dir, name string) (string, error) {
	out := filepath.Join(dir, name)
	cmd := exec.Command("go", "build", "-o", out, "github.com/anyedge/anyedge/cmd/"+name)
	if b, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("go build ./cmd/%s: %v\n%s", name, err, b)
	}
	return out, nil
}
