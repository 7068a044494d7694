package edge

import (
	"testing"

	"go.uber.org/goleak"
)

// TestMain fails the package if any goroutine outlives the tests: every
// Server.Close must stop everything it started.
func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}
