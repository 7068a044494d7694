package config

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"reflect"
	"regexp"
	"strconv"
	"strings"
	"time"

	"go.yaml.in/yaml/v3"
)

// Error is a configuration error. Its message names the file, the line when
// the key is present in the file, the full key path and the problem:
//
//	edged.yaml: cluster.node_id: required, must be 1..4294967295
//	edged.yaml:7: cluster.lan.ping_intervall: unknown key (did you mean ping_interval?)
type Error struct {
	File string
	Line int    // 0 when unknown, for example for a missing key
	Key  string // full key path, "" for errors about the whole file
	Msg  string
}

func (e *Error) Error() string {
	var b strings.Builder
	b.WriteString(e.File)
	if e.Line > 0 {
		b.WriteString(":")
		b.WriteString(strconv.Itoa(e.Line))
	}
	b.WriteString(": ")
	if e.Key != "" {
		b.WriteString(e.Key)
		b.WriteString(": ")
	}
	b.WriteString(e.Msg)
	return b.String()
}

// fieldError is a validation error before the file name and line are known.
type fieldError struct{ key, msg string }

func (e *fieldError) Error() string { return e.key + ": " + e.msg }

// Load reads and validates the config file at path.
func Load(path string) (*Config, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	return Parse(path, data)
}

// Parse decodes and validates a config; name is the file name used in
// errors. Defaults are filled in. Errors are *Error.
func Parse(name string, data []byte) (*Config, error) {
	var root yaml.Node
	dec := yaml.NewDecoder(bytes.NewReader(data))
	if err := dec.Decode(&root); err != nil && err != io.EOF {
		return nil, syntaxError(name, err)
	}
	var extra yaml.Node
	if err := dec.Decode(&extra); err != io.EOF {
		line := extra.Line
		if err != nil {
			return nil, syntaxError(name, err)
		}
		return nil, &Error{File: name, Line: line, Msg: "more than one YAML document"}
	}

	// Check the shape first: our walk knows the key path of every node, so
	// unknown keys and bad values are reported as "cluster.lan.dead_after"
	// rather than yaml's "field dead_after not found in type cluster.Timers".
	s := &shape{file: name, lines: map[string]int{}}
	doc := &root
	if doc.Kind == yaml.DocumentNode && len(doc.Content) > 0 {
		doc = doc.Content[0]
	}
	cfg := &Config{}
	if doc.Kind != 0 {
		if err := s.check(doc, reflect.TypeOf(cfg).Elem(), ""); err != nil {
			return nil, err
		}
		// The shape is right, so this strict decode should not fail; it
		// stays as the authority on what yaml.v3 accepts.
		dec := yaml.NewDecoder(bytes.NewReader(data))
		dec.KnownFields(true)
		if err := dec.Decode(cfg); err != nil {
			return nil, syntaxError(name, err)
		}
	}
	if err := cfg.validate(); err != nil {
		var fe *fieldError
		if errors.As(err, &fe) {
			return nil, &Error{File: name, Line: s.lines[fe.key], Key: fe.key, Msg: fe.msg}
		}
		return nil, &Error{File: name, Msg: err.Error()}
	}
	return cfg, nil
}

var yamlLine = regexp.MustCompile(`^yaml: (?:line (\d+): )?(.*)$`)

// syntaxError turns "yaml: line 3: did not find expected key" into
// "name:3: did not find expected key".
func syntaxError(name string, err error) error {
	var te *yaml.TypeError
	if errors.As(err, &te) && len(te.Errors) > 0 {
		err = errors.New("yaml: " + te.Errors[0])
	}
	m := yamlLine.FindStringSubmatch(err.Error())
	if m == nil {
		return &Error{File: name, Msg: err.Error()}
	}
	line, _ := strconv.Atoi(m[1])
	return &Error{File: name, Line: line, Msg: m[2]}
}

// shape walks a YAML tree alongside the Go type it decodes into, checking
// keys and value kinds, and records the line of every key path for the
// validation errors that come later.
type shape struct {
	file  string
	lines map[string]int
}

var (
	durationType    = reflect.TypeFor[time.Duration]()
	unmarshalerType = reflect.TypeFor[yaml.Unmarshaler]()
)

func (s *shape) errorf(n *yaml.Node, path, format string, a ...any) error {
	return &Error{File: s.file, Line: n.Line, Key: path, Msg: fmt.Sprintf(format, a...)}
}

func (s *shape) check(n *yaml.Node, t reflect.Type, path string) error {
	if n.Kind == yaml.AliasNode && n.Alias != nil {
		n = n.Alias
	}
	for t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	if isNull(n) {
		return nil
	}
	if t.Implements(unmarshalerType) || reflect.PointerTo(t).Implements(unmarshalerType) {
		return s.scalar(n, t, path)
	}
	switch t.Kind() {
	case reflect.Struct:
		if n.Kind != yaml.MappingNode {
			return s.errorf(n, path, "want a mapping of keys, got %s", describe(n))
		}
		fields := yamlFields(t)
		for i := 0; i+1 < len(n.Content); i += 2 {
			k, v := n.Content[i], n.Content[i+1]
			kp := join(path, k.Value)
			f, ok := fields[k.Value]
			if !ok {
				return s.errorf(k, kp, "unknown key%s", suggest(k.Value, fields))
			}
			s.lines[kp] = k.Line
			if err := s.check(v, f.Type, kp); err != nil {
				return err
			}
		}
	case reflect.Slice:
		if n.Kind != yaml.SequenceNode {
			return s.errorf(n, path, "want a list, got %s", describe(n))
		}
		for i, e := range n.Content {
			ep := fmt.Sprintf("%s[%d]", path, i)
			s.lines[ep] = e.Line
			if err := s.check(e, t.Elem(), ep); err != nil {
				return err
			}
		}
	case reflect.Map:
		if n.Kind != yaml.MappingNode {
			return s.errorf(n, path, "want a mapping, got %s", describe(n))
		}
		for i := 0; i+1 < len(n.Content); i += 2 {
			k, v := n.Content[i], n.Content[i+1]
			kp := fmt.Sprintf("%s[%s]", path, k.Value)
			if err := s.scalar(k, t.Key(), kp); err != nil {
				return err
			}
			s.lines[kp] = k.Line
			if err := s.check(v, t.Elem(), kp); err != nil {
				return err
			}
		}
	default:
		return s.scalar(n, t, path)
	}
	return nil
}

// scalar checks that n decodes into a value of type t.
func (s *shape) scalar(n *yaml.Node, t reflect.Type, path string) error {
	if n.Kind != yaml.ScalarNode && !(t.Implements(unmarshalerType) || reflect.PointerTo(t).Implements(unmarshalerType)) {
		return s.errorf(n, path, "want %s, got %s", want(t), describe(n))
	}
	v := reflect.New(t)
	if err := n.Decode(v.Interface()); err != nil {
		if _, ok := v.Interface().(yaml.Unmarshaler); ok {
			// The type's own parser knows what it wants: a bad community
			// says "want AS:value, each 0..65535", not "an integer".
			return s.errorf(n, path, "%s", strings.TrimPrefix(err.Error(), "yaml: "))
		}
		return s.errorf(n, path, "want %s, got %s", want(t), describe(n))
	}
	// No timer in anyedge runs backwards; a negative duration is a typo.
	if d, ok := v.Interface().(*time.Duration); ok && *d < 0 {
		return s.errorf(n, path, "must not be negative, got %s", describe(n))
	}
	return nil
}

func isNull(n *yaml.Node) bool {
	return n.Kind == yaml.ScalarNode && n.ShortTag() == "!!null"
}

func describe(n *yaml.Node) string {
	switch n.Kind {
	case yaml.MappingNode:
		return "a mapping"
	case yaml.SequenceNode:
		return "a list"
	}
	return strconv.Quote(n.Value)
}

// want describes the values a Go type accepts, in the operator's terms.
func want(t reflect.Type) string {
	if t == durationType {
		return `a duration such as "100ms" or "5s"`
	}
	switch t.Kind() {
	case reflect.Bool:
		return "true or false"
	case reflect.String:
		return "a string"
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64:
		return "an integer"
	case reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64, reflect.Uint:
		return fmt.Sprintf("an integer 0..%d", uint64(1)<<(t.Bits())-1)
	case reflect.Float32, reflect.Float64:
		return "a number"
	}
	return t.String()
}

// yamlFields maps the YAML keys of a struct to its fields, following the
// yaml.v3 rules this config uses: the tag name, or the lowercased field
// name; "-" skips the field.
func yamlFields(t reflect.Type) map[string]reflect.StructField {
	fields := map[string]reflect.StructField{}
	for f := range t.Fields() {
		if !f.IsExported() {
			continue
		}
		name, _, _ := strings.Cut(f.Tag.Get("yaml"), ",")
		switch name {
		case "-":
			continue
		case "":
			name = strings.ToLower(f.Name)
		}
		fields[name] = f
	}
	return fields
}

// suggest proposes the known key closest to a misspelt one.
func suggest(key string, fields map[string]reflect.StructField) string {
	best, bestD := "", 3 // more than two edits away is no suggestion
	for name := range fields {
		if d := editDistance(key, name); d < bestD || (d == bestD && best != "" && name < best) {
			best, bestD = name, d
		}
	}
	if best == "" {
		return ""
	}
	return fmt.Sprintf(" (did you mean %s?)", best)
}

// editDistance is the Levenshtein distance of a and b.
func editDistance(a, b string) int {
	prev := make([]int, len(b)+1)
	cur := make([]int, len(b)+1)
	for j := range prev {
		prev[j] = j
	}
	for i := 1; i <= len(a); i++ {
		cur[0] = i
		for j := 1; j <= len(b); j++ {
			cost := 1
			if a[i-1] == b[j-1] {
				cost = 0
			}
			cur[j] = min(prev[j]+1, cur[j-1]+1, prev[j-1]+cost)
		}
		prev, cur = cur, prev
	}
	return prev[len(b)]
}

func join(path, key string) string {
	if path == "" {
		return key
	}
	return path + "." + key
}
