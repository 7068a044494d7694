package auth

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/emiago/sipgo/sip"
)

var t0 = time.Date(2026, 5, 6, 7, 8, 9, 0, time.UTC)

type fakeClock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *fakeClock) Now() time.Time { c.mu.Lock(); defer c.mu.Unlock(); return c.t }
func (c *fakeClock) Advance(d time.Duration) {
	c.mu.Lock()
	c.t = c.t.Add(d)
	c.mu.Unlock()
}

// TestKnownAnswers checks the digest computation against RFC 7616 §3.9.1.
func TestKnownAnswers(t *testing.T) {
	const (
		user, realm, pass = "Mufasa", "http-auth@example.org", "Circle of Life"
		nonce             = "7ypf/xlj9XXwfDPEoM4URrv/xwf94BcCAzFZH4GiTo0v"
		cnonce            = "f2/wE4q74E6zIJEtWaHKaf5wv/H5QzzpXusqGemxURZJ"
	)
	for alg, want := range map[Algorithm]string{
		MD5:    "8ca523f5e9506fed4657c9700eebdbec",
		SHA256: "753927fa0e85d155564e2e272a28d1802ca10daf4496794697cf8db5856cb6c1",
	} {
		got := digestResponse(alg, HA1(alg, user, realm, pass), nonce, "00000001", cnonce, "auth", "GET", "/dir/index.html")
		if got != want {
			t.Errorf("%s: %s, want %s", alg, got, want)
		}
	}
}

// subs is an in-memory Subscribers.
type subs map[string][2]string // user -> md5, sha256 HA1 (realm example.com)

func (s subs) Lookup(user, realm string) (string, string, bool) {
	if realm != "example.com" {
		return "", "", false
	}
	p, ok := s[user]
	return p[0], p[1], ok
}

func testSubs() subs {
	return subs{
		"alice": {HA1(MD5, "alice", "example.com", "wonderland"), HA1(SHA256, "alice", "example.com", "wonderland")},
		"old":   {HA1(MD5, "old", "example.com", "legacy"), ""},
	}
}

func newAuth(t testing.TB, cfg Config, clk *fakeClock) *Authenticator {
	t.Helper()
	if cfg.Secret == "" {
		cfg.Secret = "0123456789abcdef0123456789abcdef"
	}
	a, err := New(cfg, testSubs(), WithClock(clk.Now))
	if err != nil {
		t.Fatal(err)
	}
	return a
}

func request(t testing.TB, method, user string) *sip.Request {
	t.Helper()
	raw := fmt.Sprintf("%s sip:example.com SIP/2.0\r\n"+
		"Via: SIP/2.0/UDP 198.51.100.7:5060;branch=z9hG4bK776asdhds\r\n"+
		"To: <sip:%s@Example.com>\r\nFrom: <sip:%s@example.com>;tag=19283\r\n"+
		"Call-ID: a84b4c76e66710\r\nCSeq: 1 %s\r\nContent-Length: 0\r\n\r\n", method, user, user, method)
	msg, err := sip.ParseMessage([]byte(raw))
	if err != nil {
		t.Fatal(err)
	}
	return msg.(*sip.Request)
}

// challengeParams returns the parameters of the challenges in res, in order.
func challengeParams(t testing.TB, res *sip.Response, header string) []map[string]string {
	t.Helper()
	var out []map[string]string
	for _, h := range res.GetHeaders(header) {
		v, ok := strings.CutPrefix(h.Value(), "Digest ")
		if !ok {
			t.Fatalf("not a digest challenge: %s", h.Value())
		}
		ps, err := parseParams(v)
		if err != nil {
			t.Fatal(err)
		}
		m := map[string]string{}
		for _, p := range ps {
			m[p[0]] = p[1]
		}
		out = append(out, m)
	}
	return out
}

// answer is what a UA sends after a challenge.
func answer(alg Algorithm, user, realm, pass, nonce string, nc int, method string) string {
	ncs := fmt.Sprintf("%08x", nc)
	uri := "sip:example.com"
	resp := digestResponse(alg, HA1(alg, user, realm, pass), nonce, ncs, "0a4f113b", "auth", method, uri)
	return fmt.Sprintf(`Digest username="%s", realm="%s", nonce="%s", uri="%s", response="%s", algorithm=%s, cnonce="0a4f113b", qop=auth, nc=%s`,
		user, realm, nonce, uri, resp, alg, ncs)
}

func withAuth(req *sip.Request, header, value string) *sip.Request {
	r := req.Clone()
	r.AppendHeader(sip.NewHeader(header, value))
	return r
}

const src = "198.51.100.7:5060"

func TestChallenge(t *testing.T) {
	clk := &fakeClock{t: t0}
	a := newAuth(t, Config{}, clk)
	res := a.Check(request(t, "REGISTER", "alice"), src, false)
	if res.Outcome != Challenge || res.Response.StatusCode != 401 || res.Realm != "example.com" {
		t.Fatalf("%v %v", res.Outcome, res.Response)
	}
	ch := challengeParams(t, res.Response, "WWW-Authenticate")
	if len(ch) != 2 || ch[0]["algorithm"] != "SHA-256" || ch[1]["algorithm"] != "MD5" ||
		ch[0]["qop"] != "auth" || ch[0]["realm"] != "example.com" || ch[0]["nonce"] == "" || ch[0]["stale"] != "" {
		t.Fatalf("challenges %v", ch)
	}
	res = a.Check(request(t, "INVITE", "alice"), src, true)
	if res.Outcome != Challenge || res.Response.StatusCode != 407 || len(res.Response.GetHeaders("Proxy-Authenticate")) != 2 {
		t.Fatalf("proxy challenge %v", res.Response)
	}
	// A user provisioned with MD5 only is offered only MD5.
	res = a.Check(request(t, "REGISTER", "old"), src, false)
	if ch := challengeParams(t, res.Response, "WWW-Authenticate"); len(ch) != 1 || ch[0]["algorithm"] != "MD5" {
		t.Fatalf("MD5-only user got %v", ch)
	}
	if st := a.Stats(); st.Challenges != 3 {
		t.Fatalf("stats %+v", st)
	}
}

// TestAlgorithmOrder: the configured order is the order of the challenges
// (phones that take the first one need MD5 first), and an algorithm left
// out is neither offered nor accepted.
func TestAlgorithmOrder(t *testing.T) {
	clk := &fakeClock{t: t0}
	a := newAuth(t, Config{Algorithms: []Algorithm{"md5", SHA256}}, clk)
	req := request(t, "REGISTER", "alice")
	ch := challengeParams(t, a.Check(req, src, false).Response, "WWW-Authenticate")
	if len(ch) != 2 || ch[0]["algorithm"] != "MD5" || ch[1]["algorithm"] != "SHA-256" {
		t.Fatalf("challenges %v", ch)
	}
	only := newAuth(t, Config{Algorithms: []Algorithm{SHA256}}, clk)
	ch = challengeParams(t, only.Check(req, src, false).Response, "WWW-Authenticate")
	if len(ch) != 1 || ch[0]["algorithm"] != "SHA-256" {
		t.Fatalf("SHA-256 only: challenges %v", ch)
	}
	res := only.Check(withAuth(req, "Authorization", answer(MD5, "alice", "example.com", "wonderland", ch[0]["nonce"], 1, "REGISTER")), src, false)
	if res.Outcome != Challenge {
		t.Fatalf("MD5 credentials accepted with MD5 off: %v %s", res.Outcome, res.Reason)
	}
	// A user with only an MD5 HA1 still gets a challenge to fail on, not
	// an empty 401.
	ch = challengeParams(t, only.Check(request(t, "REGISTER", "old"), src, false).Response, "WWW-Authenticate")
	if len(ch) != 1 || ch[0]["algorithm"] != "SHA-256" {
		t.Fatalf("MD5-only user with SHA-256 only: challenges %v", ch)
	}
}

func TestAuthenticate(t *testing.T) {
	for _, tc := range []struct {
		alg    Algorithm
		proxy  bool
		method string
	}{{SHA256, false, "REGISTER"}, {MD5, false, "REGISTER"}, {SHA256, true, "INVITE"}, {MD5, true, "INVITE"}} {
		t.Run(fmt.Sprintf("%s-%s", tc.alg, tc.method), func(t *testing.T) {
			clk := &fakeClock{t: t0}
			a := newAuth(t, Config{}, clk)
			req := request(t, tc.method, "alice")
			hdr, authz := "WWW-Authenticate", "Authorization"
			if tc.proxy {
				hdr, authz = "Proxy-Authenticate", "Proxy-Authorization"
			}
			nonce := challengeParams(t, a.Check(req, src, tc.proxy).Response, hdr)[0]["nonce"]
			for nc := 1; nc <= 3; nc++ {
				res := a.Check(withAuth(req, authz, answer(tc.alg, "alice", "example.com", "wonderland", nonce, nc, tc.method)), src, tc.proxy)
				if res.Outcome != OK || res.User != "alice" || res.Response != nil {
					t.Fatalf("nc=%d: %v %s", nc, res.Outcome, res.Reason)
				}
			}
			// Credentials in the other header kind are not looked at.
			other := "Proxy-Authorization"
			if tc.proxy {
				other = "Authorization"
			}
			if res := a.Check(withAuth(req, other, answer(tc.alg, "alice", "example.com", "wonderland", nonce, 9, tc.method)), src, tc.proxy); res.Outcome != Challenge {
				t.Fatalf("credentials in %s accepted: %v", other, res.Outcome)
			}
		})
	}
}

func TestReplayedNonceCount(t *testing.T) {
	clk := &fakeClock{t: t0}
	a := newAuth(t, Config{}, clk)
	req := request(t, "REGISTER", "alice")
	nonce := challengeParams(t, a.Check(req, src, false).Response, "WWW-Authenticate")[0]["nonce"]
	auth := func(nc int) Result {
		return a.Check(withAuth(req, "Authorization", answer(SHA256, "alice", "example.com", "wonderland", nonce, nc, "REGISTER")), src, false)
	}
	if r := auth(5); r.Outcome != OK {
		t.Fatalf("first use: %v", r.Reason)
	}
	for _, nc := range []int{5, 4, 1} {
		r := auth(nc)
		ch := challengeParams(t, r.Response, "WWW-Authenticate")
		if r.Outcome != Challenge || ch[0]["stale"] != "true" {
			t.Fatalf("replayed nc=%d: %v %s", nc, r.Outcome, r.Reason)
		}
	}
	if r := auth(6); r.Outcome != OK {
		t.Fatalf("next nc refused: %s", r.Reason)
	}
	if st := a.Stats(); st.Replays != 3 || st.Failures != 0 {
		t.Fatalf("stats %+v", st)
	}
}

func TestNonceExpiry(t *testing.T) {
	clk := &fakeClock{t: t0}
	a := newAuth(t, Config{NonceTTL: time.Minute}, clk)
	req := request(t, "REGISTER", "alice")
	nonce := challengeParams(t, a.Check(req, src, false).Response, "WWW-Authenticate")[0]["nonce"]
	clk.Advance(time.Minute)
	if r := a.Check(withAuth(req, "Authorization", answer(MD5, "alice", "example.com", "wonderland", nonce, 1, "REGISTER")), src, false); r.Outcome != OK {
		t.Fatalf("nonce refused at exactly its TTL: %s", r.Reason)
	}
	clk.Advance(time.Second)
	r := a.Check(withAuth(req, "Authorization", answer(MD5, "alice", "example.com", "wonderland", nonce, 2, "REGISTER")), src, false)
	ch := challengeParams(t, r.Response, "WWW-Authenticate")
	if r.Outcome != Challenge || ch[0]["stale"] != "true" || ch[0]["nonce"] == nonce {
		t.Fatalf("expired nonce: %v %s %v", r.Outcome, r.Reason, ch)
	}
	// An expired nonce with a wrong password is a failure, not "stale".
	r = a.Check(withAuth(req, "Authorization", answer(MD5, "alice", "example.com", "guess", nonce, 3, "REGISTER")), src, false)
	if r.Outcome != Forbidden {
		t.Fatalf("wrong password on a stale nonce: %v", r.Outcome)
	}
	if r := a.Check(withAuth(req, "Authorization", answer(MD5, "alice", "example.com", "wonderland", ch[0]["nonce"], 1, "REGISTER")), src, false); r.Outcome != OK {
		t.Fatalf("fresh nonce: %s", r.Reason)
	}
}

func TestInvalidNonces(t *testing.T) {
	clk := &fakeClock{t: t0}
	a := newAuth(t, Config{}, clk)
	req := request(t, "REGISTER", "alice")
	nonce := challengeParams(t, a.Check(req, src, false).Response, "WWW-Authenticate")[0]["nonce"]
	tampered := []byte(nonce)
	tampered[3] ^= 1 // change the timestamp: the HMAC no longer matches
	other, _ := New(Config{Secret: "another secret, another cluster"}, testSubs(), WithClock(clk.Now))
	foreign := challengeParams(t, other.Check(req, src, false).Response, "WWW-Authenticate")[0]["nonce"]
	for name, n := range map[string]string{
		"tampered": string(tampered), "other secret": foreign, "garbage": "abc", "truncated": nonce[:40],
	} {
		// The attacker knows the password here: only the nonce is wrong.
		r := a.Check(withAuth(req, "Authorization", answer(SHA256, "alice", "example.com", "wonderland", n, 1, "REGISTER")), src, false)
		if r.Outcome != Challenge || r.Reason != "invalid nonce" {
			t.Errorf("%s nonce: %v %s", name, r.Outcome, r.Reason)
		}
	}
	// A nonce issued for another realm does not verify in this one.
	b := newAuth(t, Config{Realm: "other.org"}, clk)
	n := challengeParams(t, b.Check(req, src, false).Response, "WWW-Authenticate")[0]["nonce"]
	if r := a.Check(withAuth(req, "Authorization", answer(SHA256, "alice", "example.com", "wonderland", n, 1, "REGISTER")), src, false); r.Outcome != Challenge {
		t.Errorf("cross-realm nonce: %v", r.Outcome)
	}
	if st := a.Stats(); st.InvalidNonces != 5 || st.Successes != 0 {
		t.Fatalf("stats %+v", st)
	}
}

func TestForbidden(t *testing.T) {
	clk := &fakeClock{t: t0}
	a := newAuth(t, Config{MaxFailures: 100}, clk)
	reg := request(t, "REGISTER", "alice")
	nonce := challengeParams(t, a.Check(reg, src, false).Response, "WWW-Authenticate")[0]["nonce"]
	tests := []struct {
		name string
		req  *sip.Request
		auth string
		want Outcome
	}{
		{"wrong password", reg, answer(SHA256, "alice", "example.com", "guess", nonce, 1, "REGISTER"), Forbidden},
		{"unknown user", request(t, "REGISTER", "mallory"), answer(SHA256, "mallory", "example.com", "x", nonce, 1, "REGISTER"), Forbidden},
		{"registering someone else's AoR", request(t, "REGISTER", "old"), answer(SHA256, "alice", "example.com", "wonderland", nonce, 1, "REGISTER"), Forbidden},
		{"calling as someone else", request(t, "INVITE", "old"), answer(SHA256, "alice", "example.com", "wonderland", nonce, 2, "INVITE"), Forbidden},
		{"SHA-256 for an MD5-only user", request(t, "REGISTER", "old"), answer(SHA256, "old", "example.com", "legacy", nonce, 1, "REGISTER"), Forbidden},
		{"credentials for another realm", reg, answer(SHA256, "alice", "elsewhere.net", "wonderland", nonce, 1, "REGISTER"), Challenge},
		{"unsupported algorithm", reg, strings.Replace(answer(SHA256, "alice", "example.com", "wonderland", nonce, 1, "REGISTER"), "algorithm=SHA-256", "algorithm=SHA-512-256", 1), Challenge},
		{"Basic credentials", reg, "Basic YWxpY2U6d29uZGVybGFuZA==", Challenge},
		{"no qop", reg, `Digest username="alice", realm="example.com", nonce="` + nonce + `", uri="sip:example.com", response="00"`, BadRequest},
		{"malformed", reg, `Digest username="alice, realm=example.com`, BadRequest},
		{"duplicate parameter", reg, `Digest username="alice", username="bob", realm="example.com", nonce="n", uri="u", response="r"`, BadRequest},
		{"good after all that", reg, answer(SHA256, "alice", "example.com", "wonderland", nonce, 1, "REGISTER"), OK},
	}
	for _, tt := range tests {
		r := a.Check(withAuth(tt.req, "Authorization", tt.auth), src, tt.req.Method != sip.REGISTER)
		if tt.req.Method != sip.REGISTER {
			r = a.Check(withAuth(tt.req, "Proxy-Authorization", tt.auth), src, true)
		}
		if r.Outcome != tt.want {
			t.Errorf("%s: %v (%s), want %v", tt.name, r.Outcome, r.Reason, tt.want)
			continue
		}
		wantCode := map[Outcome]int{Forbidden: 403, Challenge: 401, BadRequest: 400}[tt.want]
		if tt.want != OK && (r.Response == nil || r.Response.StatusCode != wantCode && !(wantCode == 401 && r.Response.StatusCode == 407)) {
			t.Errorf("%s: response %v", tt.name, r.Response)
		}
	}
}

func TestThrottle(t *testing.T) {
	clk := &fakeClock{t: t0}
	a := newAuth(t, Config{MaxFailures: 3, FailWindow: time.Minute, BlockFor: 5 * time.Minute}, clk)
	req := request(t, "REGISTER", "alice")
	nonce := challengeParams(t, a.Check(req, src, false).Response, "WWW-Authenticate")[0]["nonce"]
	try := func(pass string, nc int, from string) Result {
		return a.Check(withAuth(req, "Authorization", answer(SHA256, "alice", "example.com", pass, nonce, nc, "REGISTER")), from, false)
	}

	// Failures spread over more than the window never block.
	for i := range 4 {
		if r := try("guess", 1, src); r.Outcome != Forbidden {
			t.Fatalf("spread failure %d: %v", i, r.Outcome)
		}
		clk.Advance(31 * time.Second)
	}
	clk.Advance(time.Minute)
	if r := try("wonderland", 1, src); r.Outcome != OK {
		t.Fatalf("spread failures blocked the source: %v %s", r.Outcome, r.Reason)
	}

	nonce = challengeParams(t, a.Check(req, src, false).Response, "WWW-Authenticate")[0]["nonce"]
	for i := range 3 {
		if r := try("guess", 1, "198.51.100.7:6000"); r.Outcome != Forbidden {
			t.Fatalf("failure %d: %v", i, r.Outcome)
		}
	}
	// Blocked: one 403 telling why, even with the right password, then
	// silence. Another port of the same IP is the same source.
	if r := try("wonderland", 1, src); r.Outcome != Forbidden || r.Reason != "source blocked after repeated failures" {
		t.Fatalf("first blocked attempt: %v %s", r.Outcome, r.Reason)
	}
	for range 3 {
		if r := try("wonderland", 1, src); r.Outcome != Drop || r.Response != nil {
			t.Fatalf("blocked attempt: %v", r.Outcome)
		}
	}
	if !a.Blocked(src) || a.Blocked("203.0.113.9:5060") {
		t.Fatal("Blocked() wrong")
	}
	// Other sources are unaffected.
	if r := try("wonderland", 1, "203.0.113.9:5060"); r.Outcome != OK {
		t.Fatalf("other source: %v", r.Outcome)
	}
	if st := a.Stats(); st.Blocks != 1 || st.Drops != 3 || st.BlockedSources != 1 {
		t.Fatalf("stats %+v", st)
	}
	// After BlockFor the source starts clean.
	clk.Advance(5 * time.Minute)
	nonce = challengeParams(t, a.Check(req, src, false).Response, "WWW-Authenticate")[0]["nonce"]
	if r := try("wonderland", 1, src); r.Outcome != OK {
		t.Fatalf("after the block: %v %s", r.Outcome, r.Reason)
	}
	if st := a.Stats(); st.BlockedSources != 0 || a.Blocked(src) {
		t.Fatalf("still blocked: %+v", st)
	}
}

func TestSourceKey(t *testing.T) {
	for in, want := range map[string]string{
		"198.51.100.7:5060":          "198.51.100.7",
		"[2001:db8:1:2:3::4]:5060":   "2001:db8:1:2::/64",
		"[2001:db8:1:2:ffff::]:1234": "2001:db8:1:2::/64",
		"[::ffff:198.51.100.7]:5060": "198.51.100.7",
		"198.51.100.7":               "198.51.100.7",
		"garbage":                    "garbage",
	} {
		if got := sourceKey(in); got != want {
			t.Errorf("sourceKey(%q) = %q, want %q", in, got, want)
		}
	}
}

// TestNonceCacheEviction: when the replay table must forget a live nonce,
// that nonce (and older ones) get a stale challenge instead of trust.
func TestNonceCacheEviction(t *testing.T) {
	clk := &fakeClock{t: t0}
	a := newAuth(t, Config{NonceCache: 2}, clk)
	req := request(t, "REGISTER", "alice")
	var ns []string
	for range 3 {
		ns = append(ns, challengeParams(t, a.Check(req, src, false).Response, "WWW-Authenticate")[0]["nonce"])
		clk.Advance(time.Second)
	}
	for i, n := range ns {
		if r := a.Check(withAuth(req, "Authorization", answer(SHA256, "alice", "example.com", "wonderland", n, 1, "REGISTER")), src, false); r.Outcome != OK {
			t.Fatalf("nonce %d: %s", i, r.Reason)
		}
	}
	// ns[0] was evicted: even a higher nc is not trusted any more.
	r := a.Check(withAuth(req, "Authorization", answer(SHA256, "alice", "example.com", "wonderland", ns[0], 2, "REGISTER")), src, false)
	if r.Outcome != Challenge || r.Reason != "nonce no longer tracked" {
		t.Fatalf("evicted nonce: %v %s", r.Outcome, r.Reason)
	}
	if r := a.Check(withAuth(req, "Authorization", answer(SHA256, "alice", "example.com", "wonderland", ns[2], 2, "REGISTER")), src, false); r.Outcome != OK {
		t.Fatalf("tracked nonce: %s", r.Reason)
	}
}

func TestConcurrentChecks(t *testing.T) {
	clk := &fakeClock{t: t0}
	a := newAuth(t, Config{MaxSources: 4}, clk) // 8 sources: the failure table churns
	var wg sync.WaitGroup
	for w := range 8 {
		wg.Go(func() {
			from := fmt.Sprintf("198.51.100.%d:5060", w)
			req := request(t, "REGISTER", "alice")
			for range 50 {
				nonce := challengeParams(t, a.Check(req, from, false).Response, "WWW-Authenticate")[0]["nonce"]
				for nc := 1; nc <= 3; nc++ {
					if r := a.Check(withAuth(req, "Authorization", answer(SHA256, "alice", "example.com", "wonderland", nonce, nc, "REGISTER")), from, false); r.Outcome != OK {
						t.Errorf("worker %d: %v %s", w, r.Outcome, r.Reason)
						return
					}
				}
				a.Check(withAuth(req, "Authorization", answer(SHA256, "alice", "example.com", "bad", nonce, 9, "REGISTER")), from, false)
				_ = a.Stats()
				clk.Advance(time.Millisecond)
			}
		})
	}
	wg.Wait()
	if st := a.Stats(); st.Successes != 8*50*3 || st.Failures != 8*50 {
		t.Fatalf("stats %+v", st)
	}
}

func TestConfig(t *testing.T) {
	if err := (Config{}).Validate(); err != nil {
		t.Fatal(err)
	}
	for _, c := range []Config{{Secret: "short"}, {NonceTTL: time.Millisecond}, {MaxFailures: -1},
		{FailWindow: -time.Second}, {NonceCache: -1}, {Algorithms: []Algorithm{"SHA-512"}},
		{Algorithms: []Algorithm{MD5, "md5"}}} {
		if c.Validate() == nil {
			t.Errorf("%+v accepted", c)
		}
	}
	if _, err := New(Config{}, nil); err == nil {
		t.Error("nil subscribers accepted")
	}
}

func TestFile(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "subscribers")
	write := func(s string) {
		if err := os.WriteFile(path, []byte(s), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	md5 := HA1(MD5, "alice", "example.com", "wonderland")
	sha := HA1(SHA256, "alice", "example.com", "wonderland")
	write("# subscribers\n\nalice example.com " + md5 + " " + sha + "\n" +
		"bob   EXAMPLE.com  password=s3cr=t\n" +
		"carol example.com - " + strings.ToUpper(sha) + "\n")
	f, err := LoadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if m, s, ok := f.Lookup("alice", "example.com"); !ok || m != md5 || s != sha {
		t.Fatalf("alice: %s %s %v", m, s, ok)
	}
	if m, s, ok := f.Lookup("bob", "Example.COM"); !ok || m != HA1(MD5, "bob", "example.com", "s3cr=t") ||
		s != HA1(SHA256, "bob", "example.com", "s3cr=t") {
		t.Fatalf("bob: %s %s %v", m, s, ok)
	}
	if m, s, ok := f.Lookup("carol", "example.com"); !ok || m != "" || s != sha {
		t.Fatalf("carol: %q %q %v", m, s, ok)
	}
	if _, _, ok := f.Lookup("Alice", "example.com"); ok || f.Len() != 3 {
		t.Fatal("users must be case-sensitive")
	}

	for name, content := range map[string]string{
		"bad hex":         "dave example.com nothex\n",
		"too many fields": "dave example.com " + md5 + " " + sha + " extra\n",
		"too few fields":  "dave example.com\n",
		"duplicate":       "dave example.com password=a\ndave example.com password=b\n",
		"no ha1":          "dave example.com - -\n",
		"password plus":   "dave example.com password=a " + sha + "\n",
	} {
		write("# ok line next\nerin example.com password=x\n" + content)
		err := f.Reload()
		if err == nil || !strings.Contains(err.Error(), path+":") {
			t.Errorf("%s: error %v does not name the file and line", name, err)
		}
		if _, _, ok := f.Lookup("alice", "example.com"); !ok || f.Len() != 3 {
			t.Errorf("%s: the old set was not kept", name)
		}
	}
	if err := os.Remove(path); err != nil {
		t.Fatal(err)
	}
	if err := f.Reload(); err == nil || f.Len() != 3 {
		t.Errorf("missing file: %v, len %d", err, f.Len())
	}
	write("erin example.com password=x\n")
	if err := f.Reload(); err != nil || f.Len() != 1 {
		t.Fatalf("good reload: %v", err)
	}
	if _, err := LoadFile(filepath.Join(dir, "none")); err == nil {
		t.Fatal("LoadFile of a missing file")
	}
}
