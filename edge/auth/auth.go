// Package auth authenticates SIP requests with HTTP Digest (RFC 3261 §22,
// RFC 7616, RFC 8760: SHA-256 and MD5, qop=auth) and throttles sources that
// keep failing.
//
// Nonces are stateless (HMAC-signed, see nonce.go), so any node sharing
// Config.Secret accepts a nonce another node issued; only the replay guard
// (highest nonce-count per nonce) is per node and bounded. Realms are
// lowercased everywhere: they are domains, and HA1s in the subscriber file
// must be computed with the lowercase realm.
package auth

import (
	"crypto/rand"
	"crypto/subtle"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/emiago/sipgo/sip"
)

// Outcome is what the server must do with a request.
type Outcome uint8

const (
	// OK: authenticated as Result.User; go on.
	OK Outcome = iota
	// Challenge: send Result.Response (401/407 with fresh nonces). No or
	// unusable credentials, a stale nonce, or a refused nonce-count.
	Challenge
	// Forbidden: send Result.Response (403). Wrong credentials, unknown
	// user, a username that is not the From/To user, or a source that has
	// just been blocked.
	Forbidden
	// Drop: the source is blocked; send nothing.
	Drop
	// BadRequest: send Result.Response (400), malformed credentials.
	BadRequest
)

func (o Outcome) String() string {
	switch o {
	case OK:
		return "ok"
	case Challenge:
		return "challenge"
	case Forbidden:
		return "forbidden"
	case Drop:
		return "drop"
	case BadRequest:
		return "bad-request"
	}
	return "outcome(" + strconv.Itoa(int(o)) + ")"
}

// Result is the verdict on one request.
type Result struct {
	Outcome  Outcome
	User     string        // the authenticated user (OK)
	Realm    string        // the realm checked against
	Response *sip.Response // what to send; nil for OK and Drop
	Reason   string        // why, for logs: "wrong credentials", "stale nonce", ...
}

// Stats are cumulative counters since New (BlockedSources is current).
type Stats struct {
	Challenges     uint64 // 401/407 sent (including stale)
	Stale          uint64 // challenges with stale=true
	Successes      uint64
	Failures       uint64 // wrong or malformed credentials (they count towards blocks)
	Replays        uint64 // nonce-counts refused
	InvalidNonces  uint64 // nonces that were not ours (tampered, other secret)
	Blocks         uint64 // sources blocked
	Drops          uint64 // requests dropped from blocked sources
	BlockedSources int    // sources blocked now
}

// Authenticator checks digest credentials. It is safe for concurrent use.
type Authenticator struct {
	cfg      Config
	subs     Subscribers
	nonces   nonces
	throttle throttle
	clock    func() time.Time
	log      *slog.Logger

	challenges, stale, successes, failures atomic.Uint64
	replays, invalidNonces, blocks, drops  atomic.Uint64
}

// Option configures optional dependencies.
type Option func(*Authenticator)

// WithClock sets the time source (default time.Now).
func WithClock(now func() time.Time) Option { return func(a *Authenticator) { a.clock = now } }

// WithLogger sets the logger (default: discard).
func WithLogger(l *slog.Logger) Option { return func(a *Authenticator) { a.log = l } }

// WithRand sets the randomness for nonces and a generated secret (default
// crypto/rand).
func WithRand(r io.Reader) Option { return func(a *Authenticator) { a.nonces.rand = r } }

// New validates cfg and returns an Authenticator over subs.
func New(cfg Config, subs Subscribers, opts ...Option) (*Authenticator, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if subs == nil {
		return nil, errors.New("auth: nil Subscribers")
	}
	cfg = cfg.withDefaults()
	cfg.Realm = strings.ToLower(cfg.Realm)
	cfg.Algorithms = slices.Clone(cfg.Algorithms)
	for i, alg := range cfg.Algorithms {
		cfg.Algorithms[i], _ = parseAlgorithm(string(alg)) // canonical spelling
	}
	a := &Authenticator{
		cfg:   cfg,
		subs:  subs,
		clock: time.Now,
		log:   slog.New(slog.NewTextHandler(io.Discard, nil)),
		nonces: nonces{
			ttl:  cfg.NonceTTL,
			rand: rand.Reader,
			seen: newLRU[string, ncState](cfg.NonceCache),
		},
		throttle: throttle{
			maxFailures: cfg.MaxFailures, window: cfg.FailWindow, blockFor: cfg.BlockFor,
			sources: newLRU[string, srcState](cfg.MaxSources),
		},
	}
	for _, o := range opts {
		o(a)
	}
	a.nonces.secret = []byte(cfg.Secret)
	if len(a.nonces.secret) == 0 {
		a.nonces.secret = make([]byte, 32)
		if _, err := io.ReadFull(a.nonces.rand, a.nonces.secret); err != nil {
			return nil, fmt.Errorf("auth: generating a nonce secret: %w", err)
		}
	}
	return a, nil
}

// Blocked reports whether requests from src ("ip:port") are currently
// dropped, so the server can drop any request from it early.
func (a *Authenticator) Blocked(src string) bool {
	a.throttle.mu.Lock()
	defer a.throttle.mu.Unlock()
	st, ok := a.throttle.sources.get(sourceKey(src))
	return ok && a.clock().Before(st.blockedUntil)
}

// Check authenticates req from src ("ip:port"). proxy=false is registrar
// (UAS) authentication: WWW-Authenticate/Authorization and 401; proxy=true
// is proxy authentication: Proxy-Authenticate/Proxy-Authorization and 407.
//
// The username must be the To user of a REGISTER (no registering someone
// else's AoR) and the From user of any other request (no calling as
// someone else).
func (a *Authenticator) Check(req *sip.Request, src string, proxy bool) Result {
	now := a.clock()
	key := sourceKey(src)
	switch a.throttle.check(key, now) {
	case forbid:
		return a.forbidden(req, "", "source blocked after repeated failures")
	case drop:
		a.drops.Add(1)
		return Result{Outcome: Drop, Reason: "source blocked"}
	}

	realm, identity := a.realmAndIdentity(req)
	if realm == "" {
		return a.bad(req, realm, "no domain to authenticate against")
	}
	c, err := a.credentials(req, proxy, realm)
	if err != nil {
		a.countFailure(key, now)
		return a.bad(req, realm, err.Error())
	}
	if c == nil {
		return a.challenge(req, proxy, realm, identity, false, "no credentials")
	}
	alg, ok := parseAlgorithm(c.algorithm)
	if !ok || !slices.Contains(a.cfg.Algorithms, alg) {
		return a.challenge(req, proxy, realm, identity, false, "unsupported algorithm "+c.algorithm)
	}
	if !strings.EqualFold(c.qop, "auth") || c.cnonce == "" || !isHex(c.nc, 8) {
		// qop is mandatory in RFC 7616 and we always offer it: without it
		// there is no nonce-count, hence no replay protection.
		a.countFailure(key, now)
		return a.bad(req, realm, "qop=auth with cnonce and nc required")
	}
	if c.username != identity {
		return a.fail(req, key, now, realm, fmt.Sprintf("username %q does not match the From/To user", c.username))
	}
	issued, nst := a.nonces.verify(c.nonce, realm, now)
	if nst == nonceInvalid {
		// Not counted as a failure: a nonce signed with another node's
		// secret (misconfiguration, rotation) is not an attack by the UA.
		a.invalidNonces.Add(1)
		return a.challenge(req, proxy, realm, identity, false, "invalid nonce")
	}
	ha1MD5, ha1SHA, known := a.subs.Lookup(c.username, realm)
	ha1 := ha1MD5
	if alg == SHA256 {
		ha1 = ha1SHA
	}
	if !known || ha1 == "" {
		return a.fail(req, key, now, realm, "unknown user or algorithm not provisioned")
	}
	want := digestResponse(alg, ha1, c.nonce, c.nc, c.cnonce, "auth", string(req.Method), c.uri)
	if subtle.ConstantTimeCompare([]byte(want), []byte(strings.ToLower(c.response))) != 1 {
		return a.fail(req, key, now, realm, "wrong credentials")
	}
	// The password is right from here on: a refusal is about the nonce,
	// and stale=true tells the UA to retry with a fresh one without asking
	// its user.
	if nst == nonceStale {
		return a.challenge(req, proxy, realm, identity, true, "stale nonce")
	}
	nc, _ := strconv.ParseUint(c.nc, 16, 32)
	switch a.nonces.use(c.nonce, issued, uint32(nc), now) {
	case useReplay:
		a.replays.Add(1)
		return a.challenge(req, proxy, realm, identity, true, "nonce-count not increasing (replay)")
	case useForgotten:
		return a.challenge(req, proxy, realm, identity, true, "nonce no longer tracked")
	}
	a.throttle.success(key)
	a.successes.Add(1)
	return Result{Outcome: OK, User: c.username, Realm: realm}
}

// realmAndIdentity returns the realm to authenticate in and the user the
// credentials must name: the To user of a REGISTER, else the From user.
func (a *Authenticator) realmAndIdentity(req *sip.Request) (realm, user string) {
	var addr *sip.Uri
	if req.Method == sip.REGISTER {
		if to := req.To(); to != nil {
			addr = &to.Address
		}
	} else if from := req.From(); from != nil {
		addr = &from.Address
	}
	if addr == nil {
		return "", ""
	}
	realm = a.cfg.Realm
	if realm == "" {
		realm = strings.ToLower(addr.Host)
	}
	return realm, addr.User
}

// credentials returns the first credentials for realm in the request's
// (Proxy-)Authorization headers; nil if there are none for us.
func (a *Authenticator) credentials(req *sip.Request, proxy bool, realm string) (*credentials, error) {
	name := "authorization"
	if proxy {
		name = "proxy-authorization"
	}
	for _, h := range req.Headers() {
		if strings.ToLower(h.Name()) != name {
			continue
		}
		c, err := parseCredentials(h.Value())
		if errors.Is(err, errNotDigest) {
			continue
		}
		if err != nil {
			return nil, err
		}
		if strings.EqualFold(c.realm, realm) {
			return c, nil
		}
	}
	return nil, nil
}

// challenge answers 401/407 with one challenge per configured algorithm the
// user can use, in the configured order of preference (RFC 8760 §2.4). For an
// unknown user both are offered, so the answer does not reveal which users
// exist.
func (a *Authenticator) challenge(req *sip.Request, proxy bool, realm, user string, stale bool, why string) Result {
	nonce, err := a.nonces.issue(realm, a.clock())
	if err != nil {
		a.log.Error("auth: issuing nonce", "err", err)
		return Result{Outcome: Challenge, Realm: realm, Reason: why,
			Response: sip.NewResponseFromRequest(req, 500, "Server Internal Error", nil)}
	}
	code, reason, header := 401, "Unauthorized", "WWW-Authenticate"
	if proxy {
		code, reason, header = 407, "Proxy Authentication Required", "Proxy-Authenticate"
	}
	res := sip.NewResponseFromRequest(req, code, reason, nil)
	md5, sha, known := a.subs.Lookup(user, realm)
	usable := func(alg Algorithm) bool {
		return !known || (alg == SHA256 && sha != "") || (alg == MD5 && md5 != "")
	}
	// A user with no HA1 for any configured algorithm still gets every
	// challenge (and fails), rather than a 401 with nothing to answer.
	anyUsable := slices.ContainsFunc(a.cfg.Algorithms, usable)
	for _, alg := range a.cfg.Algorithms {
		if anyUsable && !usable(alg) {
			continue
		}
		v := fmt.Sprintf(`Digest realm="%s", nonce="%s", algorithm=%s, qop="auth"`, realm, nonce, alg)
		if stale {
			v += ", stale=true"
		}
		res.AppendHeader(sip.NewHeader(header, v))
	}
	a.challenges.Add(1)
	if stale {
		a.stale.Add(1)
	}
	return Result{Outcome: Challenge, Realm: realm, Response: res, Reason: why}
}

// fail counts a failure for the source and answers 403.
func (a *Authenticator) fail(req *sip.Request, key string, now time.Time, realm, why string) Result {
	a.countFailure(key, now)
	return a.forbidden(req, realm, why)
}

func (a *Authenticator) countFailure(key string, now time.Time) {
	a.failures.Add(1)
	if a.throttle.fail(key, now) {
		a.blocks.Add(1)
		a.log.Info("auth: blocking source after repeated failures", "source", key, "for", a.cfg.BlockFor)
	}
}

func (a *Authenticator) forbidden(req *sip.Request, realm, why string) Result {
	a.log.Debug("auth: forbidden", "reason", why)
	return Result{Outcome: Forbidden, Realm: realm, Reason: why,
		Response: sip.NewResponseFromRequest(req, 403, "Forbidden", nil)}
}

func (a *Authenticator) bad(req *sip.Request, realm, why string) Result {
	return Result{Outcome: BadRequest, Realm: realm, Reason: why,
		Response: sip.NewResponseFromRequest(req, 400, "Bad Request", nil)}
}

// Stats returns a snapshot of the counters.
func (a *Authenticator) Stats() Stats {
	return Stats{
		Challenges: a.challenges.Load(), Stale: a.stale.Load(), Successes: a.successes.Load(),
		Failures: a.failures.Load(), Replays: a.replays.Load(), InvalidNonces: a.invalidNonces.Load(),
		Blocks: a.blocks.Load(), Drops: a.drops.Load(), BlockedSources: a.throttle.blocked(a.clock()),
	}
}
