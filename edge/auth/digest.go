package auth

import (
	"crypto/md5"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"hash"
	"strings"
)

// Algorithm is a digest algorithm (RFC 7616 §3.3, RFC 8760).
type Algorithm string

const (
	MD5    Algorithm = "MD5"
	SHA256 Algorithm = "SHA-256"
)

func parseAlgorithm(s string) (Algorithm, bool) {
	switch {
	case s == "" || strings.EqualFold(s, "MD5"): // absent means MD5 (RFC 7616 §3.3)
		return MD5, true
	case strings.EqualFold(s, "SHA-256"):
		return SHA256, true
	}
	return "", false // -sess variants, SHA-512-256: not offered
}

func (a Algorithm) hash() hash.Hash {
	if a == SHA256 {
		return sha256.New()
	}
	return md5.New()
}

// h is H(parts joined by ':'), lowercase hex.
func (a Algorithm) h(parts ...string) string {
	hh := a.hash()
	for i, p := range parts {
		if i > 0 {
			hh.Write([]byte{':'})
		}
		hh.Write([]byte(p))
	}
	return hex.EncodeToString(hh.Sum(nil))
}

// HA1 is H(user:realm:password), what subscriber files store instead of
// passwords (RFC 7616 §3.4.2).
func HA1(alg Algorithm, user, realm, password string) string {
	return alg.h(user, realm, password)
}

// digestResponse is the request-digest for qop=auth (RFC 7616 §3.4.1):
// H(HA1:nonce:nc:cnonce:qop:H(method:uri)).
func digestResponse(alg Algorithm, ha1, nonce, nc, cnonce, qop, method, uri string) string {
	return alg.h(ha1, nonce, nc, cnonce, qop, alg.h(method, uri))
}

// credentials are the parameters of an Authorization or
// Proxy-Authorization header.
type credentials struct {
	username, realm, nonce, uri, response string
	algorithm, cnonce, nc, qop            string
}

var errNotDigest = errors.New("auth: not a Digest credential")

// parseCredentials parses `Digest name=value, name="quoted", ...`.
// Unknown parameters are ignored; a duplicated or malformed one is an
// error, since a well-behaved UA never sends them.
func parseCredentials(v string) (*credentials, error) {
	v = strings.TrimSpace(v)
	scheme, rest, _ := strings.Cut(v, " ")
	if !strings.EqualFold(scheme, "Digest") {
		return nil, errNotDigest
	}
	params, err := parseParams(rest)
	if err != nil {
		return nil, err
	}
	c := &credentials{}
	fields := map[string]*string{
		"username": &c.username, "realm": &c.realm, "nonce": &c.nonce, "uri": &c.uri,
		"response": &c.response, "algorithm": &c.algorithm, "cnonce": &c.cnonce, "nc": &c.nc, "qop": &c.qop,
	}
	seen := map[string]bool{}
	for _, p := range params {
		name := strings.ToLower(p[0])
		if seen[name] {
			return nil, errors.New("auth: duplicate parameter " + name)
		}
		seen[name] = true
		if f, ok := fields[name]; ok {
			*f = p[1]
		}
	}
	if c.username == "" || c.nonce == "" || c.response == "" || c.uri == "" {
		return nil, errors.New("auth: missing username, nonce, uri or response")
	}
	return c, nil
}

// parseParams splits auth-params: comma-separated name=value pairs whose
// value is a token or a quoted string with backslash escapes.
func parseParams(s string) ([][2]string, error) {
	var out [][2]string
	for {
		s = strings.TrimLeft(s, " \t,")
		if s == "" {
			return out, nil
		}
		eq := strings.IndexByte(s, '=')
		if eq <= 0 {
			return nil, errors.New("auth: malformed parameter")
		}
		name := strings.TrimSpace(s[:eq])
		s = strings.TrimLeft(s[eq+1:], " \t")
		var val string
		if strings.HasPrefix(s, `"`) {
			var b strings.Builder
			i, closed := 1, false
			for ; i < len(s); i++ {
				c := s[i]
				if c == '\\' && i+1 < len(s) {
					i++
					b.WriteByte(s[i])
					continue
				}
				if c == '"' {
					closed = true
					break
				}
				b.WriteByte(c)
			}
			if !closed {
				return nil, errors.New("auth: unterminated quoted string")
			}
			val, s = b.String(), s[i+1:]
		} else {
			end := strings.IndexByte(s, ',')
			if end < 0 {
				end = len(s)
			}
			val, s = strings.TrimSpace(s[:end]), s[end:]
		}
		if strings.ContainsAny(name, " \t\"") {
			return nil, errors.New("auth: malformed parameter name")
		}
		out = append(out, [2]string{name, val})
		if len(out) > 32 {
			return nil, errors.New("auth: too many parameters")
		}
	}
}

// isHex reports whether s is n lowercase-or-uppercase hex digits.
func isHex(s string, n int) bool {
	if len(s) != n {
		return false
	}
	for _, c := range s {
		if !(c >= '0' && c <= '9' || c >= 'a' && c <= 'f' || c >= 'A' && c <= 'F') {
			return false
		}
	}
	return true
}
