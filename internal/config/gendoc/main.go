// Command gendoc writes docs/CONFIG.md, the reference of edged.yaml, from
// the Config structs themselves: it walks config.Config with reflection
// (key paths from the yaml tags, types), reads each field's doc comment
// from the Go source (go/parser), and takes the defaults from what
// validation fills into a minimal config. A section or field added to the
// structs appears without touching this program. Run it with
//
//	go generate ./internal/config
//
// The test next to it fails when docs/CONFIG.md is out of date.
package main

import (
	"bytes"
	"errors"
	"flag"
	"fmt"
	"go/ast"
	"go/parser"
	"go/token"
	"os"
	"path/filepath"
	"reflect"
	"regexp"
	"strings"
	"time"

	"go.yaml.in/yaml/v3"

	"github.com/anyedge/anyedge/internal/config"
)

const module = "github.com/anyedge/anyedge"

func main() {
	out := flag.String("out", "", "write here instead of stdout")
	flag.Parse()
	root, err := moduleRoot()
	if err == nil {
		var b []byte
		if b, err = generate(root); err == nil {
			if *out == "" {
				_, err = os.Stdout.Write(b)
			} else {
				err = os.WriteFile(*out, b, 0o644)
			}
		}
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "gendoc:", err)
		os.Exit(1)
	}
}

// moduleRoot is the directory of the module's go.mod, above the working
// directory.
func moduleRoot() (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for {
		if b, err := os.ReadFile(filepath.Join(dir, "go.mod")); err == nil && bytes.Contains(b, []byte("module "+module+"\n")) {
			return dir, nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", errors.New("go.mod of " + module + " not found")
		}
		dir = parent
	}
}

// minimal is the smallest config with the sections whose defaults are
// worth showing; each other optional section is tried on top of it as an
// empty mapping (its defaults are shown when that validates).
const minimal = `
cluster: {node_id: 1, region: r1, key: 0123456789abcdef, seed: true}
sip:
  listeners: [{transport: udp, addr: "127.0.0.1:5060"}]
cps:
  limits: [{name: l, rate: 10}]
bgp:
  asn: 65001
  router_id: 198.18.0.1
  peers: [{address: 198.18.0.254, asn: 65000}]
  prefixes: [{prefix: 203.0.113.10/32}]
`

// key is one row of the reference.
type key struct {
	path, typ, def, doc, valid string
	reload                     bool
	section                    bool // a mapping: a heading, not a row
}

func generate(root string) ([]byte, error) {
	docs := &docReader{root: root, pkgs: map[string]map[string]*ast.StructType{}}
	defs, err := defaults()
	if err != nil {
		return nil, err
	}
	var keys []key
	t := reflect.TypeFor[config.Config]()
	if err := walk(t, "", docs, defs, &keys); err != nil {
		return nil, err
	}
	return render(keys), nil
}

// defaults validates the minimal config (and each optional section added
// to it empty) twice and returns, by key path, the values validation
// filled in: fields the input left zero that came out non-zero, and equal
// in both runs (a random default, a secret, is no default to print).
func defaults() (map[string]string, error) {
	once := func() (map[string]string, error) {
		out := map[string]string{}
		if err := collect(minimal, out); err != nil {
			return nil, fmt.Errorf("the minimal config does not validate: %w", err)
		}
		t := reflect.TypeFor[config.Config]()
		for f := range t.Fields() {
			name := yamlName(f)
			if name == "" || f.Type.Kind() != reflect.Pointer || strings.Contains(minimal, "\n"+name+":") {
				continue
			}
			_ = collect(minimal+name+": {}\n", out) // a section that needs more has no defaults shown
		}
		return out, nil
	}
	a, err := once()
	if err != nil {
		return nil, err
	}
	b, err := once()
	if err != nil {
		return nil, err
	}
	for k, v := range a {
		if b[k] != v {
			delete(a, k)
		}
	}
	return a, nil
}

// collect parses src raw (no validation) and validated, and records the
// fields that validation filled.
func collect(src string, out map[string]string) error {
	cfg, err := config.Parse("minimal.yaml", []byte(src))
	if err != nil {
		return err
	}
	var raw config.Config
	if err := yaml.Unmarshal([]byte(src), &raw); err != nil {
		return err
	}
	filled(reflect.ValueOf(raw), reflect.ValueOf(*cfg), "", out)
	return nil
}

func filled(raw, val reflect.Value, path string, out map[string]string) {
	if val.Kind() == reflect.Pointer {
		if val.IsNil() {
			return
		}
		if !raw.IsNil() {
			raw = raw.Elem()
		} else {
			raw = reflect.Zero(val.Type().Elem())
		}
		val = val.Elem()
		if val.Kind() != reflect.Struct {
			if raw.IsZero() {
				out[path] = format(val)
			}
			return
		}
	}
	switch {
	case val.Kind() == reflect.Struct && !isScalar(val.Type()):
		for i := range val.NumField() {
			f := val.Type().Field(i)
			if name := yamlName(f); name != "" {
				filled(raw.Field(i), val.Field(i), join(path, name), out)
			}
		}
	case val.Kind() == reflect.Slice && val.Type().Elem().Kind() == reflect.Struct && !isScalar(val.Type().Elem()):
		if val.Len() > 0 && raw.Len() > 0 {
			filled(raw.Index(0), val.Index(0), path+"[]", out)
			return
		}
		fallthrough
	default:
		if raw.IsZero() && !val.IsZero() {
			out[path] = format(val)
		}
	}
}

func format(v reflect.Value) string {
	if d, ok := v.Interface().(time.Duration); ok {
		return d.String()
	}
	if v.Kind() == reflect.Slice || v.Kind() == reflect.Map {
		b, err := yaml.Marshal(v.Interface())
		if err == nil {
			var n yaml.Node
			if yaml.Unmarshal(b, &n) == nil && len(n.Content) > 0 {
				n.Content[0].Style = yaml.FlowStyle
				if b, err = yaml.Marshal(n.Content[0]); err == nil {
					return strings.TrimSpace(string(b))
				}
			}
		}
	}
	return fmt.Sprint(v.Interface())
}

var unmarshaler = reflect.TypeFor[yaml.Unmarshaler]()

// isScalar reports whether a struct type is one YAML scalar (it parses
// itself: a community, an address).
func isScalar(t reflect.Type) bool {
	return t.Implements(unmarshaler) || reflect.PointerTo(t).Implements(unmarshaler)
}

func yamlName(f reflect.StructField) string {
	if !f.IsExported() {
		return ""
	}
	name, _, _ := strings.Cut(f.Tag.Get("yaml"), ",")
	switch name {
	case "-":
		return ""
	case "":
		return strings.ToLower(f.Name)
	}
	return name
}

func join(path, k string) string {
	if path == "" {
		return k
	}
	return path + "." + k
}

// walk appends the rows of struct type t (fields under path).
func walk(t reflect.Type, path string, docs *docReader, defs map[string]string, keys *[]key) error {
	for f := range t.Fields() {
		name := yamlName(f)
		if name == "" {
			continue
		}
		p := join(path, name)
		doc, err := docs.field(t, f.Name)
		if err != nil {
			return err
		}
		ft := f.Type
		for ft.Kind() == reflect.Pointer {
			ft = ft.Elem()
		}
		k := key{path: p, typ: typeName(ft), def: defs[p], reload: config.Reloadable(p)}
		k.doc, k.valid = split(doc, f.Name, name)
		switch {
		case ft.Kind() == reflect.Struct && !isScalar(ft):
			k.section = true
			*keys = append(*keys, k)
			if err := walk(ft, p, docs, defs, keys); err != nil {
				return err
			}
		case ft.Kind() == reflect.Slice && elem(ft).Kind() == reflect.Struct && !isScalar(elem(ft)):
			*keys = append(*keys, k)
			if err := walk(elem(ft), p+"[]", docs, defs, keys); err != nil {
				return err
			}
		default:
			*keys = append(*keys, k)
		}
	}
	return nil
}

func elem(t reflect.Type) reflect.Type {
	e := t.Elem()
	for e.Kind() == reflect.Pointer {
		e = e.Elem()
	}
	return e
}

// typeName is a Go type in the terms of YAML.
func typeName(t reflect.Type) string {
	if t == reflect.TypeFor[time.Duration]() {
		return "duration"
	}
	if isScalar(t) {
		return "string"
	}
	switch t.Kind() {
	case reflect.Bool:
		return "bool"
	case reflect.String:
		return "string"
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64:
		return "integer"
	case reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64, reflect.Uint:
		return fmt.Sprintf("integer 0..%d", uint64(1)<<t.Bits()-1)
	case reflect.Float32, reflect.Float64:
		return "number"
	case reflect.Slice:
		e := elem(t)
		if e.Kind() == reflect.Struct && !isScalar(e) {
			return "list of mappings"
		}
		return "list of " + typeName(e)
	case reflect.Map:
		return "mapping of " + typeName(t.Key()) + " to " + typeName(t.Elem())
	case reflect.Struct:
		return "mapping"
	}
	return t.String()
}

// validation sentences: what makes a value refused.
var validWords = regexp.MustCompile(`(?i)\b(required|must|at least|at most|exclusive|unique|only for|needs|refused|not allowed)\b|\d\.\.\d|\bor more\b`)

// split turns a doc comment into the description and the validation
// rules (the sentences that say what is refused), with the Go field name
// that starts it replaced by the key.
func split(doc, goName, yamlKey string) (string, string) {
	doc = strings.Join(strings.Fields(doc), " ")
	if rest, ok := strings.CutPrefix(doc, goName+" "); ok {
		doc = "`" + yamlKey + "` " + rest
	}
	var desc, valid []string
	for _, s := range sentences(doc) {
		if validWords.MatchString(s) && !strings.HasPrefix(s, "`"+yamlKey+"` ") {
			valid = append(valid, s)
		} else {
			desc = append(desc, s)
		}
	}
	return strings.Join(desc, " "), strings.Join(valid, " ")
}

// sentences splits at ". " followed by an upper case letter or a quote.
var sentenceEnd = regexp.MustCompile(`[.;:]\s+[A-Z"(]`)

func sentences(s string) []string {
	var out []string
	for {
		loc := sentenceEnd.FindStringIndex(s)
		if loc == nil {
			break
		}
		cut := loc[1] - 1
		out = append(out, strings.TrimSpace(s[:cut]))
		s = s[cut:]
	}
	if s = strings.TrimSpace(s); s != "" {
		out = append(out, s)
	}
	return out
}

// docReader reads the field comments of struct types from the module's
// source.
type docReader struct {
	root string
	pkgs map[string]map[string]*ast.StructType // package path → type name → struct
}

func (r *docReader) field(t reflect.Type, name string) (string, error) {
	pkg := t.PkgPath()
	if pkg != module && !strings.HasPrefix(pkg, module+"/") {
		return "", nil
	}
	types, ok := r.pkgs[pkg]
	if !ok {
		var err error
		if types, err = r.parse(pkg); err != nil {
			return "", err
		}
		r.pkgs[pkg] = types
	}
	st := types[t.Name()]
	if st == nil {
		return "", fmt.Errorf("%s.%s: struct not found in the source", pkg, t.Name())
	}
	for _, f := range st.Fields.List {
		for i, n := range f.Names {
			if n.Name != name {
				continue
			}
			doc := f.Doc.Text()
			if doc == "" {
				doc = f.Comment.Text()
			}
			if doc == "" && i > 0 {
				doc = "See `" + strings.ToLower(f.Names[0].Name) + "`."
			}
			return doc, nil
		}
	}
	// A field without a comment of its own after one that has it
	// ("CertFile and KeyFile are ..." above CertFile alone).
	return "", nil
}

func (r *docReader) parse(pkg string) (map[string]*ast.StructType, error) {
	dir := filepath.Join(r.root, filepath.FromSlash(strings.TrimPrefix(strings.TrimPrefix(pkg, module), "/")))
	ents, err := os.ReadDir(dir)
	if err != nil {
		return nil, err
	}
	fset := token.NewFileSet()
	out := map[string]*ast.StructType{}
	for _, e := range ents {
		n := e.Name()
		if !strings.HasSuffix(n, ".go") || strings.HasSuffix(n, "_test.go") {
			continue
		}
		f, err := parser.ParseFile(fset, filepath.Join(dir, n), nil, parser.ParseComments|parser.SkipObjectResolution)
		if err != nil {
			return nil, err
		}
		for _, d := range f.Decls {
			gd, ok := d.(*ast.GenDecl)
			if !ok || gd.Tok != token.TYPE {
				continue
			}
			for _, s := range gd.Specs {
				ts := s.(*ast.TypeSpec)
				if st, ok := ts.Type.(*ast.StructType); ok {
					out[ts.Name.Name] = st
				}
			}
		}
	}
	return out, nil
}

func cell(s string) string {
	if s == "" {
		return "—"
	}
	return strings.ReplaceAll(s, "|", `\|`)
}

func render(keys []key) []byte {
	var b bytes.Buffer
	b.WriteString(`# edged.yaml reference

<!-- Generated by internal/config/gendoc from the Config structs and their
doc comments: edit those, then run ` + "`go generate ./internal/config`" + `. -->

Every key of edged's config file, by section. **Type** is what the YAML
value must be; **Default** is what validation fills in when the key is
absent ("—": none, or one derived from other keys as the description
says); **Reload** says whether a reload (SIGHUP, ` + "`systemctl reload edged`" + `)
applies a change of the key, or only a restart does: a reload that changes
a "restart" key is refused as a whole (docs/OPERATIONS.md, "Reloading the
configuration"). **Validation** is what the key's documentation says is
refused; ` + "`edged config check FILE`" + ` applies it and names the file, line
and key of the first problem. List items are written ` + "`key[]`" + `.
`)
	for _, k := range keys {
		top := !strings.Contains(k.path, ".")
		if top {
			fmt.Fprintf(&b, "\n## `%s`\n\n", k.path)
			if k.doc != "" {
				b.WriteString(k.doc + "\n")
			}
			if k.valid != "" {
				b.WriteString("\n" + k.valid + "\n")
			}
			b.WriteString("\n| Key | Type | Default | Reload | Description | Validation |\n|---|---|---|---|---|---|\n")
			if k.section {
				continue
			}
		}
		reload := "restart"
		if k.reload {
			reload = "reload"
		}
		def := cell(k.def)
		if k.def != "" {
			def = "`" + strings.ReplaceAll(k.def, "|", `\|`) + "`"
		}
		fmt.Fprintf(&b, "| `%s` | %s | %s | %s | %s | %s |\n", k.path, k.typ, def, reload, cell(k.doc), cell(k.valid))
	}
	return b.Bytes()
}
