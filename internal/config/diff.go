package config

import (
	"fmt"
	"reflect"
	"slices"
	"strings"
)

// Diff returns the key paths whose values differ between two validated
// configs, sorted: "cps.limits[0].rate", "bgp.peers" (a list that grew or
// shrank), "geo" (a section added or removed). Values the YAML does not
// carry (unexported fields, yaml:"-") are ignored.
func Diff(a, b *Config) []string {
	var out []string
	diffValue(reflect.ValueOf(a).Elem(), reflect.ValueOf(b).Elem(), "", &out)
	slices.Sort(out)
	return out
}

func diffValue(a, b reflect.Value, path string, out *[]string) {
	if a.Kind() == reflect.Pointer {
		if a.IsNil() || b.IsNil() {
			if a.IsNil() != b.IsNil() {
				*out = append(*out, path)
			}
			return
		}
		a, b = a.Elem(), b.Elem()
	}
	switch a.Kind() {
	case reflect.Struct:
		if a.Type().Implements(unmarshalerType) || reflect.PointerTo(a.Type()).Implements(unmarshalerType) {
			break // a scalar in YAML (a community, an address)
		}
		for i := range a.NumField() {
			f := a.Type().Field(i)
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
			diffValue(a.Field(i), b.Field(i), join(path, name), out)
		}
		return
	case reflect.Slice:
		if a.Len() != b.Len() {
			*out = append(*out, path)
			return
		}
		for i := range a.Len() {
			diffValue(a.Index(i), b.Index(i), fmt.Sprintf("%s[%d]", path, i), out)
		}
		return
	}
	if !reflect.DeepEqual(a.Interface(), b.Interface()) {
		*out = append(*out, path)
	}
}

// reloadable are the keys (and everything under them) that SIGHUP applies
// to the running daemon. Every other key, including the sections added
// later until they are listed here, takes a restart: see Reloadable.
var reloadable = []string{
	"log.level",
	"cps.limits",
	"cps.partition_policy",
	"bgp.peers",
	"bgp.prefixes",
	"announce",
}

// Reloadable reports whether a change of key (a path as Diff returns it)
// is applied by a reload (SIGHUP) rather than needing a restart. The SIP
// subscribers file is re-read at every reload whatever its key says.
func Reloadable(key string) bool {
	for _, r := range reloadable {
		if key == r || strings.HasPrefix(key, r+".") || strings.HasPrefix(key, r+"[") {
			return true
		}
	}
	return false
}

// ReloadableKeys lists the keys a reload applies, for the documentation.
func ReloadableKeys() []string { return slices.Clone(reloadable) }
