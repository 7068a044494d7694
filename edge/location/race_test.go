//go:build race

package location

// raceEnabled scales the 1M-binding test down under the race detector,
// which makes it ten times slower without finding anything a smaller run
// would not.
const raceEnabled = true
