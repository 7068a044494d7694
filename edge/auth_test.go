package edge

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/emiago/sipgo"
	"github.com/emiago/sipgo/sip"
)

func authServer(t *testing.T) *fixture {
	t.Helper()
	subs := filepath.Join(t.TempDir(), "subscribers")
	if err := os.WriteFile(subs, []byte("alice example.com password=alicepw\nbob example.com password=bobpw\ncarol example.com password=carolpw\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	return startServer(t, func(c *Config) {
		c.Auth = AuthConfig{Enabled: true, SubscribersFile: subs}
	})
}

// registerAuth registers with digest credentials.
func (u *ua) registerAuth(password string, expires int) *sip.Response {
	u.t.Helper()
	req := u.registerRequest(expires)
	res := u.do(req)
	if res.StatusCode != 401 {
		return res
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	res2, err := u.cli.DoDigestAuth(ctx, req, res, sipgo.DigestAuth{Username: u.user, Password: password})
	if err != nil {
		u.t.Fatal(err)
	}
	return res2
}

func TestRegisterDigest(t *testing.T) {
	f := authServer(t)
	alice := newUA(t, "alice", "udp", f.udp)
	mustStatus(t, alice.register(300), 401)
	mustStatus(t, alice.registerAuth("alicepw", 300), 200)
	if f.store.Len() != 1 {
		t.Fatalf("%d bindings", f.store.Len())
	}
	bob := newUA(t, "bob", "udp", f.udp)
	mustStatus(t, bob.registerAuth("wrong", 300), 403)
	if n := counter(t, f.reg, "anyedge_sip_auth_failures_total", nil); n < 1 {
		t.Errorf("auth failures = %v", n)
	}
}

func TestInviteAuthAnd480(t *testing.T) {
	f := authServer(t)
	alice := newUA(t, "alice", "udp", f.udp)
	bob := newUA(t, "bob", "udp", f.udp)
	mustStatus(t, alice.registerAuth("alicepw", 300), 200)
	mustStatus(t, bob.registerAuth("bobpw", 300), 200)

	// Unauthenticated INVITE: 407.
	_, err := invite(t, alice, bob.uri())
	if c := finalCode(t, err); c != 407 {
		t.Fatalf("got %d, want 407", c)
	}
	// With credentials it goes through.
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	sess, err := alice.dua.WriteInvite(ctx, alice.request(sip.INVITE, bob.uri()))
	if err != nil {
		t.Fatal(err)
	}
	if err := sess.WaitAnswer(ctx, sipgo.AnswerOptions{Username: "alice", Password: "alicepw"}); err != nil {
		t.Fatal(err)
	}
	_ = sess.Ack(ctx)
	_ = sess.Bye(ctx)

	// carol is a subscriber but not registered: 480. dave is nobody: 404.
	for user, want := range map[string]int{"carol": 480, "dave": 404} {
		s2, err := alice.dua.WriteInvite(ctx, alice.request(sip.INVITE, sip.Uri{Scheme: "sip", User: user, Host: domain}))
		if err != nil {
			t.Fatal(err)
		}
		err = s2.WaitAnswer(ctx, sipgo.AnswerOptions{Username: "alice", Password: "alicepw"})
		var de *sipgo.ErrDialogResponse
		if !errors.As(err, &de) || de.Res.StatusCode != want {
			t.Errorf("INVITE %s: %v, want %d", user, err, want)
		}
	}
}
