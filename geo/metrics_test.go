package geo

import (
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/prometheus/client_golang/prometheus/testutil/promlint"
)

func counterValue(c prometheus.Collector) float64 { return testutil.ToFloat64(c) }

// TestMetricNames lints every metric the service exports and checks that
// they count what they say.
func TestMetricNames(t *testing.T) {
	reg := prometheus.NewRegistry()
	f := newFake(1, map[uint32]string{1: "eu", 2: "eu"})
	s, err := New(Config{}, f, WithRegistry(reg), WithClock(func() time.Time { return t0 }))
	if err != nil {
		t.Fatal(err)
	}
	s.inline = true
	u := &ua{aor: "sip:m@x", callID: "m", contact: "sip:m@h"}
	if _, err := s.Save(t.Context(), u.request(t0, time.Hour)); err != nil {
		t.Fatal(err)
	}
	homeAt(t, s, "sip:n@x", 2, "eu", "sip:n@h")
	s.m.lag.WithLabelValues("bind").Observe(0.001)
	if _, err := s.Lookup(t.Context(), "sip:n@x"); err != nil {
		t.Fatal(err)
	}
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
	got := map[string]float64{}
	for _, mf := range mfs {
		if !strings.HasPrefix(mf.GetName(), "anyedge_geo_") {
			t.Errorf("metric %s outside anyedge_geo_", mf.GetName())
		}
		for _, m := range mf.GetMetric() {
			key := mf.GetName()
			for _, l := range m.GetLabel() {
				key += "," + l.GetName() + "=" + l.GetValue()
			}
			if m.GetGauge() != nil {
				got[key] = m.GetGauge().GetValue()
			}
			if m.GetCounter() != nil {
				got[key] = m.GetCounter().GetValue()
			}
		}
	}
	for key, want := range map[string]float64{
		"anyedge_geo_bindings,role=home":                     1,
		"anyedge_geo_bindings,role=replica":                  1,
		"anyedge_geo_metadata_entries":                       2,
		"anyedge_geo_save_acks_total,result=alone":           1, // the fake has no partner
		"anyedge_geo_lookups_total,kind=fresh":               1,
		"anyedge_geo_lookup_routes_total,kind=relay":         1,
		"anyedge_geo_tombstones,kind=binding":                0,
		"anyedge_geo_frames_sent_total,cap=bind,type=update": 1,
	} {
		if got[key] != want {
			t.Errorf("%s = %v, want %v", key, got[key], want)
		}
	}
}
