//go:build linux

package lab

import (
	"flag"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

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

	// As make lab runs it: with geo.
	l := newLab(p, Options{Dir: "/lab-run", Edged: "edged", Geo: true})
	l.secrets = Secrets{ClusterKey: "k", AuthSecret: "s", RecordRouteKey: "r"}
	b, err := yaml.Marshal(map[string]any(l.edgedConfig(p.Region("b").Edges[1])))
	if err != nil {
		t.Fatal(err)
	}
	golden(t, "edged-b2.yaml", b)

	// Without geo: no geo section, no home tags.
	l = newLab(p, Options{Dir: "/lab-run", Edged: "edged"})
	cfg := l.edgedConfig(p.Region("b").Edges[1])
	if _, ok := cfg["geo"]; ok {
		t.Error("geo section without Options.Geo")
	}
	for _, tag := range cfg.Section("cluster")["tags"].([]map[string]any) {
		if strings.HasPrefix(tag["name"].(string), "home-") {
			t.Errorf("tag %v without Options.Geo", tag)
		}
	}
}

func TestOutage(t *testing.T) {
	t0 := time.Unix(1000, 0)
	ms := func(n int) time.Time { return t0.Add(time.Duration(n) * time.Millisecond) }
	var s []Sample
	for i := 0; i <= 60; i++ {
		// Answered, except a spurious loss at 20 ms and the outage from
		// 100 to 300 ms.
		s = append(s, Sample{At: ms(i * 20), OK: i != 1 && (i < 5 || i > 15)})
	}
	w, lost, err := Outage(s, ms(10))
	if err != nil || w != 220*time.Millisecond || lost != 11 {
		t.Errorf("Outage = %v, %d lost, %v; want 220ms, 11 lost", w, lost, err)
	}
	if _, _, err := Outage(s[:10], ms(90)); err == nil {
		t.Error("no answer after the event: want an error")
	}
}
