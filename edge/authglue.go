package edge

import (
	"log/slog"

	"github.com/emiago/sipgo/sip"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/anyedge/anyedge/edge/auth"
	"github.com/anyedge/anyedge/edge/location"
	"github.com/anyedge/anyedge/edge/registrar"
)

// This file is the only place that knows the APIs of the registrar and
// auth packages; the rest of the server talks to the small interface
// below.

type authVerdict uint8

const (
	authOK authVerdict = iota
	authChallenge
	authForbidden // 403, or 400 for malformed credentials: res says which
	authDrop
)

type authOutcome struct {
	verdict authVerdict
	user    string
	res     *sip.Response // the challenge (401/407), the 403 or the 400
	reason  string
}

type authenticator interface {
	check(req *sip.Request, src string, proxy bool) authOutcome
	// known reports whether user@domain is a subscriber (404 vs 480).
	known(user, domain string) bool
	reload() error
}

func newRegistrar(cfg registrar.Config, store location.Store, log *slog.Logger, _ prometheus.Registerer) (*registrar.Registrar, error) {
	return registrar.New(cfg, store, registrar.WithLogger(log.With("component", "registrar")))
}

type authGlue struct {
	a     *auth.Authenticator
	subs  *auth.File
	realm string
}

func newAuthenticator(cfg AuthConfig, log *slog.Logger, _ prometheus.Registerer) (authenticator, error) {
	subs, err := auth.LoadFile(cfg.SubscribersFile)
	if err != nil {
		return nil, err
	}
	acfg := auth.Config{Realm: cfg.Realm, Secret: cfg.Secret}
	for _, alg := range cfg.Algorithms {
		acfg.Algorithms = append(acfg.Algorithms, auth.Algorithm(alg))
	}
	a, err := auth.New(acfg, subs,
		auth.WithLogger(log.With("component", "auth")))
	if err != nil {
		return nil, err
	}
	return &authGlue{a: a, subs: subs, realm: cfg.Realm}, nil
}

func (g *authGlue) check(req *sip.Request, src string, proxy bool) authOutcome {
	r := g.a.Check(req, src, proxy)
	out := authOutcome{user: r.User, res: r.Response, reason: r.Reason}
	switch r.Outcome {
	case auth.OK:
		out.verdict = authOK
	case auth.Challenge:
		out.verdict = authChallenge
	case auth.Drop:
		out.verdict = authDrop
	default: // Forbidden, BadRequest
		out.verdict = authForbidden
	}
	return out
}

func (g *authGlue) known(user, domain string) bool {
	realm := g.realm
	if realm == "" {
		realm = domain // auth's default realm: the request's domain
	}
	_, _, ok := g.subs.Lookup(user, realm)
	return ok
}

func (g *authGlue) reload() error { return g.subs.Reload() }
