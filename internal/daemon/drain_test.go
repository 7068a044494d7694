package daemon

import (
	"errors"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/anyedge/anyedge/cluster"
)

// drainNode is a Node that can be drained, failing with err.
type drainNode struct {
	*fakeNode
	err   error
	calls []bool
}

func (n *drainNode) SetDrained(d bool) error { n.calls = append(n.calls, d); return n.err }

func TestDrainStateErrorsKeepTheNodeDrained(t *testing.T) {
	log := slog.New(slog.NewTextHandler(io.Discard, nil))

	// A flag that cannot be read refuses the start: unknown is not "not
	// drained".
	file := filepath.Join(t.TempDir(), "not-a-dir")
	must(t, os.WriteFile(file, nil, 0o600))
	if _, err := newDrainState(file, newFakeNode(), log); err == nil || !strings.Contains(err.Error(), "drain flag: stat ") {
		t.Errorf("newDrainState with a file as state dir = %v", err)
	}

	// The flag cannot be saved (its temporary file is taken by a
	// directory), but the node is drained all the same, and the operator
	// is told.
	dir := t.TempDir()
	must(t, os.Mkdir(filepath.Join(dir, drainedFile+".tmp"), 0o700))
	node := &drainNode{fakeNode: newFakeNode()}
	s, err := newDrainState(dir, node, log)
	if err != nil {
		t.Fatal(err)
	}
	err = s.SetDrained(true)
	if err == nil || !strings.HasPrefix(err.Error(), "drained, but the flag was not saved (a restart would undrain): ") {
		t.Errorf("SetDrained(true) = %v", err)
	}
	if !s.Drained() || len(node.calls) != 1 || !node.calls[0] {
		t.Errorf("drained %v, cluster calls %v: want drained everywhere", s.Drained(), node.calls)
	}

	// The cluster refuses the undrain: the node stays drained.
	node = &drainNode{fakeNode: newFakeNode()}
	s, err = newDrainState(t.TempDir(), node, log)
	if err != nil {
		t.Fatal(err)
	}
	must(t, s.SetDrained(true))
	node.err = cluster.ErrNotRunning
	err = s.SetDrained(false)
	if !errors.Is(err, cluster.ErrNotRunning) || !strings.HasPrefix(err.Error(), "still drained: ") || !s.Drained() {
		t.Errorf("undrain refused by the cluster: err %v, drained %v", err, s.Drained())
	}

	// Without a state dir nothing is saved, and a node that cannot
	// advertise the flag is drained locally.
	s, err = newDrainState("", newFakeNode(), log)
	if err != nil {
		t.Fatal(err)
	}
	must(t, s.SetDrained(true))
	if !s.Drained() {
		t.Errorf("not drained")
	}
	must(t, s.SetDrained(false))
	if s.Drained() {
		t.Errorf("still drained")
	}
}
