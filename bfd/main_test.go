package bfd

import (
	"testing"

	"go.uber.org/goleak"
)

// Endpoints start goroutines: every test must leave none behind.
func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }
