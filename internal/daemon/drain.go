package daemon

import (
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"time"
)

// drainedFile, in cluster.state_dir, marks a drained node: a node drained
// by the operator stays drained across restarts until undrained.
const drainedFile = "drained"

// clusterDrainer is a node that can advertise itself drained (not eligible
// for sharing tags); *cluster.Node is one.
type clusterDrainer interface {
	SetDrained(drained bool) error
}

// drainState is the operator's drain flag: readiness reads it, the cluster
// node advertises it, and the state dir keeps it across restarts.
type drainState struct {
	path string         // the flag file; "" without a state dir
	node clusterDrainer // nil: a node that cannot advertise it
	log  *slog.Logger

	mu sync.Mutex // serialises changes
	on atomic.Bool
}

func newDrainState(stateDir string, node Node, log *slog.Logger) (*drainState, error) {
	s := &drainState{log: log}
	s.node, _ = node.(clusterDrainer)
	if stateDir == "" {
		return s, nil
	}
	s.path = filepath.Join(stateDir, drainedFile)
	_, err := os.Stat(s.path)
	switch {
	case err == nil:
		s.on.Store(true)
		log.Warn("starting drained: the node was drained before it stopped; edgectl undrain puts it back", "flag", s.path)
	case !errors.Is(err, fs.ErrNotExist):
		// Unknown is not "not drained": refuse to start rather than
		// announce a node the operator may have taken out.
		return nil, fmt.Errorf("drain flag: %w", err)
	}
	return s, nil
}

// Drained reports the flag.
func (s *drainState) Drained() bool { return s.on.Load() }

// SetDrained drains or undrains the node. Draining takes effect on
// readiness first (the BGP gate withdraws on its next poll), then on the
// cluster, then on disk; an error after the first step leaves the node
// drained, the safe side. Undraining removes the flag file first, so that
// a node undrained in the cluster is never drained again by a restart.
func (s *drainState) SetDrained(on bool) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if on {
		s.on.Store(true)
		if err := s.advertise(true); err != nil {
			return fmt.Errorf("drained locally (readiness false), but the cluster was not told: %w", err)
		}
		if err := s.save(); err != nil {
			return fmt.Errorf("drained, but the flag was not saved (a restart would undrain): %w", err)
		}
		return nil
	}
	if err := s.remove(); err != nil {
		return fmt.Errorf("still drained: %w", err)
	}
	if err := s.advertise(false); err != nil {
		return fmt.Errorf("still drained: %w", err)
	}
	s.on.Store(false)
	return nil
}

// restore advertises a drain flag found at startup to the cluster. It
// waits for the node to run, and does nothing if the operator undrained
// meanwhile.
func (s *drainState) restore() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if !s.on.Load() {
		return nil
	}
	return s.advertise(true)
}

func (s *drainState) advertise(on bool) error {
	if s.node == nil {
		return nil
	}
	return s.node.SetDrained(on)
}

func (s *drainState) save() error {
	if s.path == "" {
		return nil
	}
	if err := os.MkdirAll(filepath.Dir(s.path), 0o750); err != nil {
		return err
	}
	tmp := s.path + ".tmp"
	msg := "drained by the operator at " + time.Now().UTC().Format(time.RFC3339) + "\n"
	if err := os.WriteFile(tmp, []byte(msg), 0o640); err != nil {
		return err
	}
	return os.Rename(tmp, s.path)
}

func (s *drainState) remove() error {
	if s.path == "" {
		return nil
	}
	if err := os.Remove(s.path); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return err
	}
	return nil
}
