package daemon

import (
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/emiago/sipgo/sip"

	"github.com/anyedge/anyedge/edge"
	"github.com/anyedge/anyedge/edge/cps"
)

func invite(t *testing.T, src, from, toTag string) *sip.Request {
	t.Helper()
	to := "<sip:bob@example.com>"
	if toTag != "" {
		to += ";tag=" + toTag
	}
	raw := strings.Join([]string{
		"INVITE sip:bob@example.com SIP/2.0",
		"Via: SIP/2.0/UDP 192.0.2.1:5060;branch=z9hG4bK-1",
		"From: <sip:alice@" + from + ">;tag=a1",
		"To: " + to,
		"Call-ID: c1@192.0.2.1",
		"CSeq: 1 INVITE",
		"Max-Forwards: 70",
		"Content-Length: 0",
		"", "",
	}, "\r\n")
	msg, err := sip.ParseMessage([]byte(raw))
	if err != nil {
		t.Fatal(err)
	}
	req := msg.(*sip.Request)
	req.SetSource(src)
	return req
}

func newLimiter(t *testing.T, limits ...cps.LimitConfig) *cps.Limiter {
	t.Helper()
	now := time.Unix(1_700_000_000, 0)
	lim, err := cps.New(cps.Config{Limits: limits}, 7, "test", cps.WithClock(func() time.Time { return now }))
	if err != nil {
		t.Fatal(err)
	}
	return lim
}

func TestCPSHookRefusesOverTheLimit(t *testing.T) {
	hook := cpsHook(newLimiter(t, cps.LimitConfig{Name: "platform", Rate: 1}))
	if res := hook(invite(t, "192.0.2.1:5060", "example.com", ""), edge.CallInfo{}); res != nil {
		t.Fatalf("first call refused: %v", res)
	}
	res := hook(invite(t, "192.0.2.1:5060", "example.com", ""), edge.CallInfo{})
	if res == nil {
		t.Fatal("second call in the same second passed a limit of 1/s")
	}
	if res.StatusCode != 503 || res.Reason != "Service Unavailable" {
		t.Errorf("refused with %d %s, want 503 Service Unavailable", res.StatusCode, res.Reason)
	}
	if h := res.GetHeader("Retry-After"); h == nil || h.Value() != "1" {
		t.Errorf("Retry-After = %v, want 1", h)
	}
	if res.CallID().Value() != "c1@192.0.2.1" {
		t.Errorf("the response does not answer the request")
	}
	// In-dialog requests are never limited, however busy the platform.
	if res := hook(invite(t, "192.0.2.1:5060", "example.com", "b1"), edge.CallInfo{}); res != nil {
		t.Errorf("re-INVITE limited: %v", res)
	}
}

func TestCPSHookResponses(t *testing.T) {
	for _, tt := range []struct {
		resp       cps.ResponseConfig
		code       int
		reason     string
		retryAfter string
	}{
		{cps.ResponseConfig{Code: 486}, 486, "Busy Here", ""},
		{cps.ResponseConfig{Code: 480, RetryAfter: 30 * time.Second}, 480, "Temporarily Unavailable", "30"},
		{cps.ResponseConfig{Code: 503, RetryAfter: -1}, 503, "Service Unavailable", ""},
	} {
		hook := cpsHook(newLimiter(t, cps.LimitConfig{Name: "platform", Rate: 1, Response: tt.resp}))
		hook(invite(t, "192.0.2.1:5060", "example.com", ""), edge.CallInfo{})
		res := hook(invite(t, "192.0.2.1:5060", "example.com", ""), edge.CallInfo{})
		if res == nil || res.StatusCode != tt.code || res.Reason != tt.reason {
			t.Errorf("%+v: refused with %v", tt.resp, res)
			continue
		}
		got := ""
		if h := res.GetHeader("Retry-After"); h != nil {
			got = h.Value()
		}
		if got != tt.retryAfter {
			t.Errorf("%+v: Retry-After %q, want %q", tt.resp, got, tt.retryAfter)
		}
	}
}

// TestCPSHookKeys checks what keyed limits count: the source address
// without port (IPv4-mapped addresses unmapped) and the From domain in
// lower case.
func TestCPSHookKeys(t *testing.T) {
	lim := newLimiter(t,
		cps.LimitConfig{Name: "per-ip", Rate: 100, Selector: cps.SourceIP},
		cps.LimitConfig{Name: "per-domain", Rate: 100, Selector: cps.FromDomain},
		cps.LimitConfig{Name: "per-user", Rate: 100, Selector: cps.AuthUser})
	hook := cpsHook(lim)
	hook(invite(t, "[::ffff:192.0.2.9]:5060", "Example.COM", ""), edge.CallInfo{})
	hook(invite(t, "[2001:db8::9]:5062", "example.com", ""), edge.CallInfo{AuthUser: "alice"})
	for limit, want := range map[string]string{
		"per-ip":     "192.0.2.9 2001:db8::9",
		"per-domain": "example.com",
		"per-user":   "alice", // only the user the server authenticated
	} {
		top, err := lim.Top(limit, 10)
		if err != nil {
			t.Fatal(err)
		}
		var keys []string
		for _, k := range top {
			keys = append(keys, k.Key)
		}
		slices.Sort(keys)
		if got := strings.Join(keys, " "); got != want {
			t.Errorf("%s keys = %q, want %q", limit, got, want)
		}
	}
}
