package edge

import (
	"context"
	"testing"
)

// TestFreebind binds an address that is on no interface (TEST-NET-1, never
// routed): a backup node listens on a VIP before it owns it. Nothing is
// sent.
func TestFreebind(t *testing.T) {
	for _, tr := range []string{"udp", "tcp"} {
		s, err := listen(context.Background(), Listener{Transport: tr, Addr: "192.0.2.55:0"})
		if err != nil {
			t.Fatalf("%s: %v", tr, err)
		}
		if s.ps.Host != "192.0.2.55" {
			t.Errorf("advertised %s", s.ps.Host)
		}
		_ = s.close()
	}
}
