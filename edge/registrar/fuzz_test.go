package registrar

import (
	"context"
	"testing"

	"github.com/anyedge/anyedge/edge/location"
	"github.com/emiago/sipgo/sip"
)

// FuzzHandle feeds parsed SIP messages to Handle twice (a registration,
// then the same request again as a retry/refresh) and checks that it always
// answers with a final response and never panics. Seeds are in
// testdata/fuzz/FuzzHandle.
func FuzzHandle(f *testing.F) {
	f.Add([]byte(register()))
	f.Fuzz(func(t *testing.T, data []byte) {
		req := parseOrNil(data)
		if req == nil {
			return
		}
		r, err := New(Config{}, location.NewMemory())
		if err != nil {
			t.Fatal(err)
		}
		for range 2 {
			res := r.Handle(context.Background(), req, udpSrc)
			if res == nil || res.StatusCode < 200 || res.StatusCode > 699 {
				t.Fatalf("bad response %v", res)
			}
			_ = res.String()
		}
	})
}

// parseOrNil parses data as a request. Parser panics are sipgo's, not
// Handle's, and are out of this target's scope.
func parseOrNil(data []byte) (req *sip.Request) {
	defer func() {
		if recover() != nil {
			req = nil
		}
	}()
	msg, err := sip.ParseMessage(data)
	if err != nil {
		return nil
	}
	req, _ = msg.(*sip.Request)
	return req
}
