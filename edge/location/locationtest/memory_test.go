package locationtest_test

import (
	"testing"
	"time"

	"github.com/anyedge/anyedge/edge/location"
	"github.com/anyedge/anyedge/edge/location/locationtest"
)

// The in-memory store is the reference the other backends match.
func TestMemory(t *testing.T) {
	locationtest.Run(t, func(t *testing.T, now func() time.Time) (a, b location.Store) {
		m := location.NewMemory(location.WithClock(now))
		return m, m
	})
}
