// Package deptest keeps the layering honest: the cluster protocol is a
// library under the SIP edge, so it must never depend on the edge, the
// geo or BGP layers, or on the daemon that wires them together. A stray
// import there would compile fine and rot the design, hence a test.
package deptest

import (
	"bytes"
	"encoding/json"
	"errors"
	"io"
	"os/exec"
	"strings"
	"testing"
)

const module = "github.com/anyedge/anyedge"

// forbidden are the packages (and their subpackages) that cluster/... must
// not import, directly or indirectly, in code or tests.
var forbidden = []string{
	module + "/geo",
	module + "/edge",
	module + "/bgp",
	module + "/internal/admin",
	module + "/internal/daemon",
}

type pkg struct {
	ImportPath string
	Deps       []string
	Error      *struct{ Err string }
}

func TestClusterLayering(t *testing.T) {
	// -test includes the packages' tests; -e reports broken packages in
	// Error instead of failing the whole listing. go test puts its own go
	// first on PATH.
	cmd := exec.Command("go", "list", "-e", "-test", "-json=ImportPath,Deps,Error", module+"/cluster/...")
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("go list: %v\n%s", err, stderr.String())
	}
	dec := json.NewDecoder(bytes.NewReader(out))
	checked := 0
	for {
		var p pkg
		if err := dec.Decode(&p); errors.Is(err, io.EOF) {
			break
		} else if err != nil {
			t.Fatalf("decoding go list output: %v", err)
		}
		if p.Error != nil {
			t.Errorf("%s: %s", p.ImportPath, p.Error.Err)
		}
		checked++
		for _, v := range violations(p) {
			t.Error(v)
		}
	}
	if checked == 0 {
		t.Fatal("go list found no cluster packages; the test checks nothing")
	}
	t.Logf("checked %d packages", checked)
}

// violations lists p's forbidden dependencies.
func violations(p pkg) []string {
	var v []string
	for _, dep := range p.Deps {
		for _, f := range forbidden {
			if dep == f || strings.HasPrefix(dep, f+"/") {
				v = append(v, p.ImportPath+" imports "+dep+": cluster must not depend on "+f)
			}
		}
	}
	return v
}

// TestViolations proves that the check catches what it should, so that a
// passing TestClusterLayering means something.
func TestViolations(t *testing.T) {
	p := pkg{ImportPath: module + "/cluster", Deps: []string{
		"fmt", module + "/cluster/wire", module + "/geo/region", module + "/edge", module + "/bgpx", module + "/internal/config",
	}}
	got := violations(p)
	want := []string{
		module + "/cluster imports " + module + "/geo/region: cluster must not depend on " + module + "/geo",
		module + "/cluster imports " + module + "/edge: cluster must not depend on " + module + "/edge",
	}
	if strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Errorf("violations:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
}
