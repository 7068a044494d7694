//go:build race

package core

// The race detector slows the simulation about tenfold; the full 1,000
// schedules run without it (make test runs both).
const raceEnabled = true
