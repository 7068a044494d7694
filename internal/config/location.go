package config

import (
	"errors"

	"github.com/anyedge/anyedge/geo/redisloc"
)

// Location modes.
const (
	// LocationUserFacing keeps bindings in the nodes' memory: on the node
	// alone, or with the geo section on the home node and its partner.
	LocationUserFacing = "user-facing"
	// LocationDBDriven keeps every binding in a Redis Cluster shared by
	// the site's nodes (geo/redisloc).
	LocationDBDriven = "db-driven"
)

// LocationConfig chooses where SIP bindings live.
type LocationConfig struct {
	// Mode is user-facing (default: memory, replicated by the geo section
	// when present) or db-driven (Redis Cluster, the redis key).
	Mode string `yaml:"mode"`
	// Redis is the Redis Cluster of the db-driven mode; see
	// redisloc.Config. Required in that mode, refused in the other.
	Redis *redisloc.Config `yaml:"redis"`
}

// DBDriven reports whether bindings live in Redis.
func (c *LocationConfig) DBDriven() bool { return c.Mode == LocationDBDriven }

func (c *Config) validateLocation() error {
	l := &c.Location
	switch l.Mode {
	case "":
		l.Mode = LocationUserFacing
	case LocationUserFacing, LocationDBDriven:
	default:
		return &fieldError{key: "location.mode", msg: "must be user-facing or db-driven, not " + quote(l.Mode)}
	}
	if !l.DBDriven() {
		if l.Redis != nil {
			return &fieldError{key: "location.redis", msg: "only used with mode: db-driven"}
		}
		return nil
	}
	if c.SIP == nil {
		return &fieldError{key: "location.mode", msg: "db-driven needs the sip section: it is where SIP bindings are used"}
	}
	if c.Geo != nil {
		return &fieldError{key: "location.mode", msg: "db-driven and the geo section (user-facing location) exclude each other"}
	}
	if l.Redis == nil {
		return &fieldError{key: "location.redis", msg: "required with mode: db-driven (at least addrs)"}
	}
	if err := l.Redis.Validate(); err != nil {
		var fe *redisloc.FieldError
		if errors.As(err, &fe) {
			return &fieldError{key: "location.redis." + fe.Key, msg: fe.Err}
		}
		return &fieldError{key: "location.redis", msg: err.Error()}
	}
	return nil
}

func quote(s string) string { return `"` + s + `"` }
