package redisloc

import (
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
)

// TestMetricsOp: the pre-resolved children count into the same series as
// the vectors, and an operation outside the known set is still counted.
func TestMetricsOp(t *testing.T) {
	reg := prometheus.NewRegistry()
	m := newMetrics(reg)
	start := time.Now()
	m.op("save", resultOK, start)
	m.op("save", resultOK, start)
	m.op("lookup", resultUnavailable, start)
	m.op("other", resultError, start)
	for _, c := range []struct {
		op, result string
		want       float64
	}{{"save", resultOK, 2}, {"save", resultError, 0}, {"lookup", resultUnavailable, 1}, {"other", resultError, 1}} {
		if got := testutil.ToFloat64(m.ops.WithLabelValues(c.op, c.result)); got != c.want {
			t.Errorf("ops{%s,%s} = %v, want %v", c.op, c.result, got, c.want)
		}
	}
	if n := testutil.CollectAndCount(m.latency); n != 5 {
		t.Errorf("%d latency series, want 5 (four known operations and other)", n)
	}
	if _, err := reg.Gather(); err != nil {
		t.Fatal(err)
	}
}
