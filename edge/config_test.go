package edge

import (
	"errors"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil/promlint"

	"github.com/anyedge/anyedge/edge/location"
	"github.com/anyedge/anyedge/edge/upstream"
)

func validConfig() Config {
	return Config{Listeners: []Listener{{Transport: "udp", Addr: "127.0.0.1:5060"}}, Domains: []string{"Example.COM"}}
}

func TestConfigDefaults(t *testing.T) {
	c := validConfig()
	if err := c.Validate(); err != nil {
		t.Fatal(err)
	}
	if c.Forking != ForkParallel || c.MaxMessageSize != 32768 || c.MaxBodySize != 16384 ||
		c.Timeouts.NoResponse != 4*time.Second || c.Timeouts.Invite != 120*time.Second ||
		c.Keepalive.Interval != 30*time.Second || c.Domains[0] != "example.com" {
		t.Fatalf("defaults not filled: %+v", c)
	}
}

func TestConfigErrorsNameTheKey(t *testing.T) {
	cases := []struct {
		key    string
		mutate func(*Config)
	}{
		{"listeners", func(c *Config) { c.Listeners = nil }},
		{"listeners[0].addr", func(c *Config) { c.Listeners[0].Addr = "localhost:5060" }},
		{"listeners[0].transport", func(c *Config) { c.Listeners[0].Transport = "sctp" }},
		{"listeners[0].advertise", func(c *Config) { c.Listeners[0].Addr = "0.0.0.0:5060" }},
		{"listeners[1].cert_file", func(c *Config) { c.Listeners = append(c.Listeners, Listener{Transport: "tls", Addr: "127.0.0.1:5061"}) }},
		{"domains[0]", func(c *Config) { c.Domains = []string{"bad domain"} }},
		{"auth.subscribers_file", func(c *Config) { c.Auth.Enabled = true }},
		{"auth.algorithms[1]", func(c *Config) {
			c.Auth = AuthConfig{Enabled: true, SubscribersFile: os.DevNull, Algorithms: []string{"MD5", "SHA-512"}}
		}},
		{"forking", func(c *Config) { c.Forking = "random" }},
		{"upstreams[0].addr", func(c *Config) { c.Upstreams = []upstream.Target{{Addr: "core"}} }},
		{"upstream_health.down_after", func(c *Config) { c.UpstreamHealth.DownAfter = -2 }},
		{"trusted[0]", func(c *Config) { c.Trusted = []string{"10.0.0.0/33"} }},
		{"keepalive.method", func(c *Config) { c.Keepalive.Method = "icmp" }},
		{"max_message_size", func(c *Config) { c.MaxMessageSize = 100 }},
		{"max_registers_in_flight", func(c *Config) { c.MaxRegistersInFlight = -1 }},
		{"timeouts.invite", func(c *Config) { c.Timeouts.Invite = time.Second }},
		{"registrar", func(c *Config) { c.Registrar.MinExpires = time.Millisecond }},
	}
	for _, tc := range cases {
		c := validConfig()
		tc.mutate(&c)
		err := c.Validate()
		var fe *FieldError
		if !errors.As(err, &fe) || fe.Key != tc.key {
			t.Errorf("%s: got %v", tc.key, err)
		} else if !strings.HasPrefix(err.Error(), tc.key+": ") {
			t.Errorf("%s: message %q", tc.key, err)
		}
	}
}

// TestMetricNames lints every metric the server registers.
func TestMetricNames(t *testing.T) {
	reg := prometheus.NewRegistry()
	c := validConfig()
	c.Upstreams = []upstream.Target{{Addr: "127.0.0.1:5099"}}
	c.Listeners[0].Addr = "127.0.0.1:0"
	srv, err := New(c, location.NewMemory(), WithRegistry(reg))
	if err != nil {
		t.Fatal(err)
	}
	if err := srv.Start(t.Context()); err != nil {
		t.Fatal(err)
	}
	defer srv.Close()
	srv.m.request("INVITE")
	srv.m.response(200)
	srv.m.authFail.WithLabelValues("forbidden").Inc()
	srv.m.malformed.WithLabelValues("unparsable").Inc()
	srv.m.denied.WithLabelValues("relay").Inc()
	srv.m.handled("INVITE", time.Now())
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	probs, err := promlint.NewWithMetricFamilies(mfs).Lint()
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range probs {
		t.Errorf("%s: %s", p.Metric, p.Text)
	}
	names := map[string]bool{}
	for _, mf := range mfs {
		names[mf.GetName()] = true
		if !strings.HasPrefix(mf.GetName(), "anyedge_sip_") {
			t.Errorf("%s: not anyedge_sip_*", mf.GetName())
		}
	}
	for _, want := range []string{"anyedge_sip_requests_total", "anyedge_sip_responses_total", "anyedge_sip_bindings",
		"anyedge_sip_transactions_in_flight", "anyedge_sip_auth_failures_total", "anyedge_sip_keepalive_failures_total",
		"anyedge_sip_keepalive_removals_total", "anyedge_sip_malformed_messages_total", "anyedge_sip_request_duration_seconds",
		"anyedge_sip_upstream_up"} {
		if !names[want] {
			t.Errorf("metric %s missing", want)
		}
	}
}
