package metricsdoc

import (
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
)

// docs/ARCHITECTURE.md stays true about the layout: every package its
// table names exists, and every top-level package directory is named.
func TestArchitectureNamesRealPackages(t *testing.T) {
	root := filepath.Join("..", "..", "..")
	b, err := os.ReadFile(filepath.Join(root, "docs", "ARCHITECTURE.md"))
	if err != nil {
		t.Fatal(err)
	}
	doc := string(b)
	_, table, ok := strings.Cut(doc, "\n## Packages\n")
	if !ok {
		t.Fatal("no Packages section")
	}
	table, _, _ = strings.Cut(table, "\n## ")
	hasGo := func(dir string) bool {
		ents, err := os.ReadDir(filepath.Join(root, filepath.FromSlash(dir)))
		if err != nil {
			return false
		}
		for _, e := range ents {
			if strings.HasSuffix(e.Name(), ".go") {
				return true
			}
		}
		return false
	}
	named := 0
	for _, m := range regexp.MustCompile("`([a-z0-9/]+)`").FindAllStringSubmatch(table, -1) {
		if strings.Contains(m[1], "/") || hasGo(m[1]) {
			named++
			if !hasGo(m[1]) {
				t.Errorf("ARCHITECTURE.md names %s, which is not a package", m[1])
			}
		}
	}
	if named < 10 {
		t.Fatalf("only %d packages found in the table", named)
	}
	ents, err := os.ReadDir(root)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range ents {
		if e.IsDir() && hasGo(e.Name()) && !strings.Contains(doc, "`"+e.Name()) {
			t.Errorf("ARCHITECTURE.md does not mention the package %s", e.Name())
		}
	}
}
