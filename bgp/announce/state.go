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

// State is what survives a restart: whether the operator drained the node.
type State struct {
	Drained bool      `json:"drained"`
	Since   time.Time `json:"since,omitzero"`
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
