//go:build race

package cluster

// raceEnabled: timing-bound tests skip under the race detector, whose
// slowdown on a loaded 2-core machine makes their bounds meaningless.
const raceEnabled = true
