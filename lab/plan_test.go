//go:build linux

package lab

import (
	"flag"
	"os"
	"path/filepath"
	"testing"

	"go.yaml.in/yaml/v3"
)

var update = flag.Bool("update", false, "rewrite the golden files in testdata/")

func golden(t *testing.T, name string, got []byte) {
	t.Helper()
	path := filepath.Join("testdata", name)
	if *update {
		if err := os.WriteFile(path, got, 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("%v (run go test ./lab -update to create it)", err)
	}
	if string(want) != string(got) {
		t.Errorf("%s differs from the golden file (go test ./lab -update rewrites it):\n%s", name, got)
	}
}

func TestPlan(t *testing.T) {
	p, err := NewPlan("anylab", 3)
	if err != nil {
		t.Fatal(err)
	}
	if len(p.Edges()) != 6 {
		t.Fatalf("%d edges", len(p.Edges()))
	}
	b := p.Region("b")
	if b.ASN != 65020 || b.RouterLAN.String() != "198.18.2.1" || b.Client.String() != "198.18.102.10" ||
		b.Edges[1].ID != 22 || b.Edges[1].Addr.String() != "198.18.2.12" || b.VIPL2.String() != "203.0.113.22" ||
		b.VIPL3.String() != "203.0.113.32" || p.NS(b.RouterName()) != "anylab-rb" {
		t.Errorf("region b: %+v", b)
	}
	for _, bad := range []int{1, 4} {
		if _, err := NewPlan("x", bad); err == nil {
			t.Errorf("%d regions accepted", bad)
		}
	}
}

func TestGeneratedConfigs(t *testing.T) {
	p, err := NewPlan("anylab", 2)
	if err != nil {
		t.Fatal(err)
	}
	conf, err := birdConfig(p, p.Region("a"))
	if err != nil {
		t.Fatal(err)
	}
	golden(t, "bird-ra.conf", []byte(conf))

	l := newLab(p, Options{Dir: "/lab-run", Edged: "edged"})
	l.secrets = Secrets{ClusterKey: "k", AuthSecret: "s", RecordRouteKey: "r"}
	b, err := yaml.Marshal(map[string]any(l.edgedConfig(p.Region("b").Edges[1])))
	if err != nil {
		t.Fatal(err)
	}
	golden(t, "edged-b2.yaml", b)
}
