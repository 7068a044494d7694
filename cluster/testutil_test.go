package cluster

import (
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
)

func testutilCounter(c prometheus.Counter) float64 { return testutil.ToFloat64(c) }
