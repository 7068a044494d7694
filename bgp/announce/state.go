package announce

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"time"
)

// StateFile is the name of the drain state file in the state directory.
const StateFile = "drain.json"

// State is what survives a restart: whether the operator drained the
// node, and the recent starts that did not end in a clean stop.
type State struct {
	Drained bool      `json:"drained"`
	Since   time.Time `json:"since,omitzero"`
	// Starts are the start times of the runs within the restart window
	// that have not stopped cleanly (the last one is the current run's);
	// a clean stop empties it.
	Starts []time.Time `json:"unclean_starts,omitempty"`
}

// maxStarts bounds State.Starts: more restarts than this in the window
// hold the first announcement for max_hold_down anyway.
const maxStarts = 16

// Restart records a start at now and returns the state to persist with
// the number of earlier unclean starts that count against it: those
// within window, or 1 when the previous run did not stop cleanly but
// started before the window (it crashed, when is unknown).
func (s State) Restart(now time.Time, window time.Duration) (State, int) {
	var kept []time.Time
	for _, t := range s.Starts {
		if now.Sub(t) < window {
			kept = append(kept, t)
		}
	}
	n := len(kept)
	if n == 0 && len(s.Starts) > 0 {
		n = 1
	}
	if len(kept) >= maxStarts {
		kept = kept[len(kept)-maxStarts+1:]
	}
	s.Starts = append(kept, now.UTC())
	return s, n
}

// LoadState reads the drain state from path. A missing file is the zero
// State (not drained); an unreadable or corrupt one is an error, so that a
// drained node never comes back announcing by accident.
func LoadState(path string) (State, error) {
	var s State
	b, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		return s, nil
	}
	if err != nil {
		return s, fmt.Errorf("announce: drain state: %w", err)
	}
	if err := json.Unmarshal(b, &s); err != nil {
		return s, fmt.Errorf("announce: drain state %s: %w (fix or remove the file)", path, err)
	}
	return s, nil
}

// SaveState writes s to path atomically: a temporary file in the same
// directory, synced, then renamed over path, and the directory synced, so
// a crash leaves either the old state or the new one.
func SaveState(path string, s State) error {
	b, err := json.Marshal(s)
	if err != nil {
		return err
	}
	dir := filepath.Dir(path)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("announce: drain state: %w", err)
	}
	f, err := os.CreateTemp(dir, ".drain-*.json")
	if err != nil {
		return fmt.Errorf("announce: drain state: %w", err)
	}
	tmp := f.Name()
	_, err = f.Write(append(b, '\n'))
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp, path)
	}
	if err != nil {
		_ = os.Remove(tmp)
		return fmt.Errorf("announce: drain state: %w", err)
	}
	if d, err := os.Open(dir); err == nil {
		_ = d.Sync()
		_ = d.Close()
	}
	return nil
}
