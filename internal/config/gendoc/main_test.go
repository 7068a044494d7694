package main

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// docs/CONFIG.md is what the generator writes from the current structs.
func TestConfigReferenceUpToDate(t *testing.T) {
	root, err := moduleRoot()
	if err != nil {
		t.Fatal(err)
	}
	want, err := generate(root)
	if err != nil {
		t.Fatal(err)
	}
	got, err := os.ReadFile(filepath.Join(root, "docs", "CONFIG.md"))
	if err != nil {
		t.Fatalf("%v: run `go generate ./internal/config`", err)
	}
	if !bytes.Equal(got, want) {
		gl, wl := strings.Split(string(got), "\n"), strings.Split(string(want), "\n")
		for i := range max(len(gl), len(wl)) {
			var g, w string
			if i < len(gl) {
				g = gl[i]
			}
			if i < len(wl) {
				w = wl[i]
			}
			if g != w {
				t.Fatalf("docs/CONFIG.md is out of date: run `go generate ./internal/config`.\nFirst difference, line %d:\n have: %s\n want: %s", i+1, g, w)
			}
		}
	}
}

// Every key of the config appears, with the reload column from
// config.Reloadable, and the defaults validation fills in.
func TestConfigReferenceContent(t *testing.T) {
	root, err := moduleRoot()
	if err != nil {
		t.Fatal(err)
	}
	b, err := generate(root)
	if err != nil {
		t.Fatal(err)
	}
	doc := string(b)
	for _, row := range []string{
		"| `cluster.node_id` | integer 0..4294967295 | — | restart |",
		"| `cps.limits[].rate` | number | — | reload |",
		"| `bgp.peers[].hold_time` | duration | `9s` | reload |",
		"| `admin.listen` | string | `127.0.0.1:9090` | restart |",
		"| `log.level` | string | `info` | reload |",
	} {
		if !strings.Contains(doc, row) {
			t.Errorf("no row %q", row)
		}
	}
	for _, sec := range []string{"log", "admin", "cluster", "sip", "cps", "bgp", "announce", "vips"} {
		if !strings.Contains(doc, "\n## `"+sec+"`\n") {
			t.Errorf("no section %s", sec)
		}
	}
	// A random default (the nonce secret) is no default.
	if strings.Contains(doc, "| `sip.auth.secret` | string | `") {
		t.Error("sip.auth.secret shows a default")
	}
}

func TestSentences(t *testing.T) {
	d, v := split("Rate is the limit. Required, > 0. Default 1 s.", "Rate", "rate")
	if d != "`rate` is the limit. Default 1 s." || v != "Required, > 0." {
		t.Fatalf("desc %q valid %q", d, v)
	}
}
