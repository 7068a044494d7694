package edge

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/emiago/sipgo"
	"github.com/emiago/sipgo/sip"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/anyedge/anyedge/cluster"
	"github.com/anyedge/anyedge/edge/dialog"
)

// loneNode is a cluster of one: replication goes nowhere.
type loneNode struct{}

func (loneNode) Self() cluster.NodeMeta { return cluster.NodeMeta{ID: 1, Region: "r1"} }
func (loneNode) SendMatching(string, cluster.MsgType, cluster.Filter, []byte) int {
	return 0
}

func dialogServer(t *testing.T, limit int) (*fixture, *dialog.Service, *prometheus.Registry) {
	t.Helper()
	dreg := prometheus.NewRegistry()
	svc, err := dialog.New(dialog.Config{MaxCallsPerUser: limit}, loneNode{}, dialog.WithRegistry(dreg))
	if err != nil {
		t.Fatal(err)
	}
	subs := filepath.Join(t.TempDir(), "subscribers")
	if err := os.WriteFile(subs, []byte("alice example.com password=alicepw\nbob example.com password=bobpw\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	f := startServer(t, func(c *Config) {
		c.Auth = AuthConfig{Enabled: true, SubscribersFile: subs}
	}, WithHooks(Hooks{Dialogs: svc}))
	return f, svc, dreg
}

// authInvite sends an INVITE from u, authenticating as u.
func authInvite(t *testing.T, u *ua, password string, to sip.Uri) (*sipgo.DialogClientSession, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	req := u.request(sip.INVITE, to)
	req.SetBody([]byte("v=0\r\n"))
	sess, err := u.dua.WriteInvite(ctx, req)
	if err != nil {
		t.Fatal(err)
	}
	return sess, sess.WaitAnswer(ctx, sipgo.AnswerOptions{Username: u.user, Password: password})
}

func summaryIs(svc *dialog.Service, role string, want map[string]int) error {
	s := svc.Summary(0)
	got := s.Home
	if role == "replica" {
		got = s.Replica
	}
	for k, v := range want {
		if got[k] != v {
			return fmt.Errorf("%s %s = %d, want %d (%+v)", role, k, got[k], v, got)
		}
	}
	return nil
}

// TestCallLimit486: with max_calls_per_user 2, alice's third concurrent
// call gets 486 Busy Here, and a BYE frees a slot.
func TestCallLimit486(t *testing.T) {
	f, svc, dreg := dialogServer(t, 2)
	alice := newUA(t, "alice", "udp", f.udp)
	bob := newUA(t, "bob", "udp", f.udp)
	mustStatus(t, alice.registerAuth("alicepw", 300), 200)
	mustStatus(t, bob.registerAuth("bobpw", 300), 200)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()

	var calls []*sipgo.DialogClientSession
	for i := range 2 {
		sess, err := authInvite(t, alice, "alicepw", bob.uri())
		if err != nil {
			t.Fatalf("call %d: %v", i+1, err)
		}
		if err := sess.Ack(ctx); err != nil {
			t.Fatal(err)
		}
		calls = append(calls, sess)
	}
	eventually(t, 2*time.Second, func() error { return summaryIs(svc, "home", map[string]int{"confirmed": 2, "early": 0}) })
	if n := svc.Active("alice"); n != 2 {
		t.Fatalf("alice has %d active calls", n)
	}
	_, err := authInvite(t, alice, "alicepw", bob.uri())
	if c := finalCode(t, err); c != sip.StatusBusyHere {
		t.Fatalf("third call: %d, want 486", c)
	}
	if n := counter(t, dreg, "anyedge_dialog_rejected_total", map[string]string{"reason": "user_limit"}); n != 1 {
		t.Fatalf("rejections counted: %v", n)
	}
	// bob (another user) is not limited by alice's calls.
	if sess, err := authInvite(t, bob, "bobpw", alice.uri()); err != nil {
		t.Fatalf("bob's call: %v", err)
	} else {
		_ = sess.Ack(ctx)
		_ = sess.Bye(ctx)
	}
	// BYE from the caller ends call 1.
	if err := calls[0].Bye(ctx); err != nil {
		t.Fatal(err)
	}
	recv(t, bob.byes, "BYE at bob")
	eventually(t, 2*time.Second, func() error {
		if n := svc.Active("alice"); n != 1 {
			return fmt.Errorf("alice has %d active calls", n)
		}
		return nil
	})
	sess, err := authInvite(t, alice, "alicepw", bob.uri())
	if err != nil {
		t.Fatalf("call after BYE: %v", err)
	}
	_ = sess.Ack(ctx)
	for _, s := range []*sipgo.DialogClientSession{calls[1], sess} {
		if err := s.Bye(ctx); err != nil {
			t.Fatal(err)
		}
	}
	eventually(t, 2*time.Second, func() error {
		return summaryIs(svc, "home", map[string]int{"confirmed": 0, "early": 0})
	})
	if n := svc.Active("alice"); n != 0 {
		t.Fatalf("alice still has %d active calls", n)
	}
}

// TestDialogCancelAndFailure: a cancelled call and a refused call end
// their dialogs and free the slot.
func TestDialogCancelAndFailure(t *testing.T) {
	f, svc, _ := dialogServer(t, 1)
	alice := newUA(t, "alice", "udp", f.udp)
	bob := newUA(t, "bob", "udp", f.udp)
	mustStatus(t, alice.registerAuth("alicepw", 300), 200)
	mustStatus(t, bob.registerAuth("bobpw", 300), 200)

	bob.behave(0, func(*sip.Request) int { return 486 })
	_, err := authInvite(t, alice, "alicepw", bob.uri())
	if c := finalCode(t, err); c != 486 {
		t.Fatalf("refused call: %d", c)
	}
	eventually(t, 2*time.Second, func() error {
		return summaryIs(svc, "home", map[string]int{"early": 0, "confirmed": 0, "terminated": 1})
	})

	// A ringing call, cancelled by the caller.
	bob.behave(10*time.Second, nil)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	sess, err := alice.dua.WriteInvite(ctx, alice.request(sip.INVITE, bob.uri()))
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() {
		done <- sess.WaitAnswer(ctx, sipgo.AnswerOptions{Username: "alice", Password: "alicepw", OnResponse: func(r *sip.Response) error {
			if r.StatusCode == 180 {
				if err := summaryIs(svc, "home", map[string]int{"early": 1}); err != nil {
					t.Error("while ringing: ", err)
				}
				cancel() // hang up while it rings
			}
			return nil
		}})
	}()
	recv(t, bob.cancels, "CANCEL at bob")
	if err := recv(t, done, "WaitAnswer"); !errors.Is(err, context.Canceled) {
		t.Fatalf("WaitAnswer: %v", err)
	}
	eventually(t, 2*time.Second, func() error {
		return summaryIs(svc, "home", map[string]int{"early": 0, "confirmed": 0, "terminated": 2})
	})
	if n := svc.Active("alice"); n != 0 {
		t.Fatalf("alice has %d active calls", n)
	}
}
