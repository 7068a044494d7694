package config

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

const sipSection = "sip: {listeners: [{transport: udp, addr: \"127.0.0.1:5060\"}]}\n"

func TestLocationDBDriven(t *testing.T) {
	pw := filepath.Join(t.TempDir(), "pw")
	if err := os.WriteFile(pw, []byte("s3cret\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg, err := Parse("edged.yaml", []byte(sipSection+minimal+`
location:
  mode: db-driven
  redis:
    addrs: ["127.0.0.1:7000", "127.0.0.1:7001"]
    username: edge
    password_file: `+pw+`
    timeout: 250ms
    wait_replicas: 1
`))
	if err != nil {
		t.Fatal(err)
	}
	r := cfg.Location.Redis
	if !cfg.Location.DBDriven() || r.Password != "s3cret" || r.Timeout != 250*time.Millisecond ||
		r.WaitReplicas != 1 || r.WaitTimeout != 125*time.Millisecond || r.KeyPrefix != "al:" {
		t.Fatalf("parsed %+v", r)
	}
	cfg, err = Parse("edged.yaml", []byte(minimal))
	if err != nil || cfg.Location.Mode != LocationUserFacing || cfg.Location.Redis != nil {
		t.Fatalf("default mode: %+v %v", cfg.Location, err)
	}
}

func TestLocationErrors(t *testing.T) {
	redis := "  redis: {addrs: [\"127.0.0.1:7000\"]}\n"
	for _, tt := range []struct{ name, yaml, want string }{
		{"unknown mode", sipSection + minimal + "location: {mode: sql}\n", "location.mode: must be user-facing or db-driven"},
		{"db-driven needs sip", minimal + "location:\n  mode: db-driven\n" + redis, "location.mode: db-driven needs the sip section"},
		{"db-driven needs redis", sipSection + minimal + "location: {mode: db-driven}\n", "location.redis: required"},
		{"redis only in db-driven", sipSection + minimal + "location:\n" + redis, "location.redis: only used with mode: db-driven"},
		{"no addrs", sipSection + minimal + "location:\n  mode: db-driven\n  redis: {timeout: 1s}\n", "location.redis.addrs: required"},
		{"bad addr", sipSection + minimal + "location:\n  mode: db-driven\n  redis: {addrs: [nohost]}\n", "location.redis.addrs[0]: must be host:port"},
		{"wait replicas", sipSection + minimal + "location:\n  mode: db-driven\n  redis: {addrs: [\"h:1\"], wait_replicas: 9}\n", "location.redis.wait_replicas"},
		{"password twice", sipSection + minimal + "location:\n  mode: db-driven\n  redis: {addrs: [\"h:1\"], password: a, password_file: /x}\n", "location.redis.password_file"},
		{"missing CA", sipSection + minimal + "location:\n  mode: db-driven\n  redis: {addrs: [\"h:1\"], tls: {ca: /nonexistent/ca.pem}}\n", "location.redis.tls.ca"},
		{"braces in prefix", sipSection + minimal + "location:\n  mode: db-driven\n  redis: {addrs: [\"h:1\"], key_prefix: \"{x}\"}\n", "location.redis.key_prefix"},
		{"misspelt key", sipSection + minimal + "location:\n  mode: db-driven\n  redis: {adrs: [\"h:1\"]}\n", "location.redis.adrs: unknown key"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			_, err := Parse("edged.yaml", []byte(tt.yaml))
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("error %v, want %q", err, tt.want)
			}
		})
	}
}
