package registrar

import (
	"errors"
	"strconv"
	"strings"

	"github.com/emiago/sipgo/sip"
)

// reject is a REGISTER we refuse: the status and reason phrase to send.
type reject struct {
	code   int
	reason string
}

func (r *reject) Error() string { return strconv.Itoa(r.code) + " " + r.reason }

func badRequest(reason string) *reject { return &reject{400, reason} }

var errScheme = errors.New("registrar: AoR must be a sip: or sips: URI")

// CanonicalAoR returns the key under which bindings of u are stored:
// "sip:user@host". The proxy must canonicalise Request-URIs the same way.
//
//   - sips: maps to sip: — sips is a transport requirement on the path, not
//     another user, so one user has one set of bindings (RFC 5630 §3.1.3
//     allows registering sip contacts under a sips AoR).
//   - The host is lowercased (DNS names are case-insensitive).
//   - The user is kept verbatim: user parts are case-sensitive (RFC 3261
//     §19.1.4) and escapes are not normalised.
//   - Port, password, URI parameters and headers are dropped: an AoR is
//     user@domain.
func CanonicalAoR(u *sip.Uri) (string, error) {
	if u == nil || (u.Scheme != "sip" && u.Scheme != "sips") {
		return "", errScheme
	}
	host := strings.ToLower(u.Host)
	if !validHost(host) {
		return "", errors.New("registrar: AoR has no valid host")
	}
	if u.User == "" {
		return "sip:" + host, nil
	}
	if strings.ContainsAny(u.User, " \t\r\n<>\"@") {
		return "", errors.New("registrar: AoR has an invalid user part")
	}
	return "sip:" + u.User + "@" + host, nil
}

// validHost accepts a DNS name, IPv4 literal or bracketed IPv6 literal.
func validHost(h string) bool {
	if h == "" || len(h) > 255 {
		return false
	}
	if h[0] == '[' {
		if h[len(h)-1] != ']' {
			return false
		}
		for _, c := range h[1 : len(h)-1] {
			if !(c >= '0' && c <= '9' || c >= 'a' && c <= 'f' || c == ':' || c == '.') {
				return false
			}
		}
		return true
	}
	for _, c := range h {
		if !(c >= '0' && c <= '9' || c >= 'a' && c <= 'z' || c == '-' || c == '.' || c == '_') {
			return false
		}
	}
	return true
}

// contactSpec is one Contact of a REGISTER, validated.
type contactSpec struct {
	uri      sip.Uri
	str      string // uri as stored: the URI with its URI parameters
	expires  int64  // seconds; -1 when the contact has no expires param
	q        int    // ×1000
	instance string // +sip.instance, "<urn:...>"
	regID    int
}

// maxExpiresValue is 2^32-1: RFC 3261 §20.19 says larger values are treated
// as this, which MaxExpires then clamps.
const maxExpiresValue = 1<<32 - 1

// parseDelta parses a delta-seconds value (Expires header, expires param).
func parseDelta(s string) (int64, bool) {
	s = strings.TrimSpace(s)
	if s == "" || len(s) > 20 {
		return 0, false
	}
	for _, c := range s {
		if c < '0' || c > '9' {
			return 0, false
		}
	}
	v, err := strconv.ParseUint(s, 10, 64)
	if err != nil || v > maxExpiresValue {
		return maxExpiresValue, err == nil || errors.Is(err, strconv.ErrRange)
	}
	return int64(v), true
}

// parseQ parses a qvalue (RFC 3261 §25.1): "0" ["." 0*3DIGIT] or "1" ["."
// 0*3("0")], returned ×1000.
func parseQ(s string) (int, bool) {
	if s == "" || len(s) > 5 || (s[0] != '0' && s[0] != '1') {
		return 0, false
	}
	q := int(s[0]-'0') * 1000
	if len(s) == 1 {
		return q, true
	}
	if s[1] != '.' {
		return 0, false
	}
	scale := 100
	for _, c := range s[2:] {
		if c < '0' || c > '9' {
			return 0, false
		}
		q += int(c-'0') * scale
		scale /= 10
	}
	return q, q <= 1000
}

// formatQ is the inverse of parseQ, shortest form.
func formatQ(q int) string {
	if q >= 1000 {
		return "1"
	}
	s := strconv.Itoa(1000 + q)[1:] // three digits
	s = strings.TrimRight(s, "0")
	if s == "" {
		return "0"
	}
	return "0." + s
}

// param finds a header parameter case-insensitively (parameter names are
// case-insensitive, RFC 3261 §7.3.1).
func param(ps sip.HeaderParams, name string) (string, bool) {
	for _, kv := range ps {
		if strings.EqualFold(kv.K, name) {
			return kv.V, true
		}
	}
	return "", false
}

// parseContacts collects every Contact of req, across several headers and
// comma-separated lists. wildcard reports "Contact: *", which must then be
// the only contact.
func parseContacts(req *sip.Request, maxContacts int) (cs []contactSpec, wildcard bool, rej *reject) {
	hdrs := headers(req, "contact", "m")
	for _, h := range hdrs {
		var list []*sip.ContactHeader
		if ch, ok := h.(*sip.ContactHeader); ok {
			list = []*sip.ContactHeader{ch}
		} else {
			// A server with a reduced header parser hands us the raw value.
			for _, v := range splitList(h.Value()) {
				ch := &sip.ContactHeader{}
				var err error
				if ch.DisplayName, err = sip.ParseAddressValue(v, &ch.Address, &ch.Params); err != nil {
					return nil, false, badRequest("Invalid Contact header")
				}
				list = append(list, ch)
			}
		}
		for _, ch := range list {
			if ch.Address.Wildcard {
				wildcard = true
				continue
			}
			c, rej := parseContact(ch)
			if rej != nil {
				return nil, false, rej
			}
			cs = append(cs, c)
			if maxContacts > 0 && len(cs) > maxContacts {
				return nil, false, &reject{403, "Too many registered contacts"}
			}
		}
	}
	if wildcard && len(cs) > 0 {
		return nil, false, badRequest("Wildcard Contact must be the only Contact")
	}
	return cs, wildcard, nil
}

func parseContact(ch *sip.ContactHeader) (contactSpec, *reject) {
	u := ch.Address
	if (u.Scheme != "sip" && u.Scheme != "sips") || !validHost(strings.ToLower(u.Host)) ||
		u.Port < 0 || u.Port > 65535 {
		return contactSpec{}, badRequest("Invalid Contact URI")
	}
	c := contactSpec{uri: u, str: u.String(), expires: -1, q: 1000}
	if v, ok := param(ch.Params, "expires"); ok {
		exp, ok := parseDelta(v)
		if !ok {
			return contactSpec{}, badRequest("Invalid Contact expires parameter")
		}
		c.expires = exp
	}
	if v, ok := param(ch.Params, "q"); ok {
		q, ok := parseQ(v)
		if !ok {
			return contactSpec{}, badRequest("Invalid q-value")
		}
		c.q = q
	}
	if v, ok := param(ch.Params, "+sip.instance"); ok {
		v = strings.Trim(v, `"`)
		if len(v) < 3 || v[0] != '<' || v[len(v)-1] != '>' || strings.ContainsAny(v, " \t\"") {
			return contactSpec{}, badRequest("Invalid +sip.instance")
		}
		c.instance = v
	}
	if v, ok := param(ch.Params, "reg-id"); ok {
		id, err := strconv.Atoi(v)
		if err != nil || id < 1 || id > 1<<31-1 {
			return contactSpec{}, badRequest("Invalid reg-id")
		}
		// RFC 5626 §6: without +sip.instance the REGISTER is handled by
		// RFC 3261 rules, so reg-id is ignored.
		if c.instance != "" {
			c.regID = id
		}
	}
	return c, nil
}

// headers returns the headers with any of the given (lowercase) names.
func headers(req *sip.Request, names ...string) []sip.Header {
	var out []sip.Header
	for _, h := range req.Headers() {
		name := h.Name()
		for _, n := range names {
			// EqualFold, not ToLower: no allocation per header (hot path).
			if strings.EqualFold(name, n) {
				out = append(out, h)
				break
			}
		}
	}
	return out
}

// optionTags returns the option tags of the named headers (Supported,
// Require), lowercased.
func optionTags(req *sip.Request, names ...string) []string {
	var tags []string
	for _, h := range headers(req, names...) {
		for _, t := range strings.Split(h.Value(), ",") {
			if t = strings.ToLower(strings.TrimSpace(t)); t != "" {
				tags = append(tags, t)
			}
		}
	}
	return tags
}

// pathValues returns the Path header values (RFC 3327) in order, one per
// URI, as they must be stored and echoed.
func pathValues(req *sip.Request) []string {
	var out []string
	for _, h := range headers(req, "path") {
		for _, v := range splitList(h.Value()) {
			out = append(out, v)
		}
	}
	return out
}

// splitList splits a comma-separated header value, ignoring commas inside
// <...> and quoted strings.
func splitList(v string) []string {
	var out []string
	depth, quoted, start := 0, false, 0
	for i := 0; i < len(v); i++ {
		switch c := v[i]; {
		case c == '\\' && quoted:
			i++
		case c == '"':
			quoted = !quoted
		case c == '<' && !quoted:
			depth++
		case c == '>' && !quoted && depth > 0:
			depth--
		case c == ',' && !quoted && depth == 0:
			if s := strings.TrimSpace(v[start:i]); s != "" {
				out = append(out, s)
			}
			start = i + 1
		}
	}
	if s := strings.TrimSpace(v[start:]); s != "" {
		out = append(out, s)
	}
	return out
}
