package daemon

import (
	"bytes"
	"context"
	"encoding/json"
	"net"
	"strings"
	"testing"

	"go.uber.org/goleak"

	"github.com/anyedge/anyedge/edge/dialog"
	"github.com/anyedge/anyedge/internal/config"
	"github.com/anyedge/anyedge/internal/ctl"
)

const dialogConfig = `
admin: {listen: "127.0.0.1:0"}
cluster:
  node_id: 1
  region: test
  key: 0123456789abcdef
  listen: 127.0.0.1:0
  seed: true
  seed_sync_delay: 100ms
sip:
  listeners: [{transport: udp, addr: "127.0.0.1:0"}]
  domains: [example.com]
dialog:
  max_calls_per_user: 2
  per_user: {alice: 5}
`

func TestDialogConfigErrors(t *testing.T) {
	for _, tc := range []struct{ yaml, want string }{
		{"dialog: {}\n" + strings.SplitN(dialogConfig, "sip:", 2)[0], "dialog: needs the sip section"},
		{strings.Replace(dialogConfig, "max_calls_per_user: 2", "max_calls_per_user: -1", 1), "dialog.max_calls_per_user: -1 is negative"},
		{strings.Replace(dialogConfig, "max_calls_per_user: 2", "timeout: 1s", 1), "dialog.timeout: 1s is out of range"},
		{strings.Replace(dialogConfig, "max_calls_per_user: 2", "max_calls_per_usr: 2", 1), "dialog.max_calls_per_usr: unknown key"},
	} {
		_, err := config.Parse("edged.yaml", []byte(tc.yaml))
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("got %v, want %q", err, tc.want)
		}
	}
}

// TestRealNodeWithDialogs: the dialog capability is synced before the
// node is ready, a call through the edge is tracked (here a 404: it ends
// terminated), /v1/dialogs and edgectl dialogs show it.
func TestRealNodeWithDialogs(t *testing.T) {
	defer goleak.VerifyNone(t)
	d, f := startRealNode(t, dialogConfig)
	defer f.stop(t)

	eventually(t, "ready", func() bool { return f.readyz(t).Ready })
	if !d.dialogs.Synced() {
		t.Fatal("ready before the dialog capability synced")
	}
	conn, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	if got := sendInvite(t, conn, d.sip.Addr("udp").String(), 1); !strings.HasPrefix(got, "SIP/2.0 404") {
		t.Fatalf("INVITE: %q", got)
	}
	var sum dialog.Summary
	eventually(t, "the call tracked", func() bool {
		f.call(t, "GET", "/v1/dialogs?top=3", &sum)
		return sum.Home["terminated"] == 1
	})
	if sum.Node != 1 || sum.Region != "test" || !sum.Synced || sum.PerUser != 2 || sum.Max != dialog.DefaultMaxDialogs || sum.TopUsers == nil {
		t.Fatalf("/v1/dialogs = %+v", sum)
	}
	if code := f.call(t, "GET", "/v1/dialogs?top=x", nil); code != 400 {
		t.Fatalf("bad top: %d", code)
	}
	var out, errOut bytes.Buffer
	if rc := ctl.Main(context.Background(), []string{"-admin", f.base, "dialogs"}, func(string) string { return "" }, &out, &errOut); rc != 0 {
		t.Fatalf("edgectl dialogs: %d %s", rc, errOut.String())
	}
	for _, want := range []string{"node 1 (region test, synced)", "per-user limit 2", "terminated  1 "} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("edgectl dialogs output lacks %q:\n%s", want, out.String())
		}
	}
	out.Reset()
	if rc := ctl.Main(context.Background(), []string{"-admin", f.base, "-o", "json", "dialogs"}, func(string) string { return "" }, &out, &errOut); rc != 0 {
		t.Fatalf("edgectl -o json dialogs: %d %s", rc, errOut.String())
	}
	var js dialog.Summary
	if err := json.Unmarshal(out.Bytes(), &js); err != nil || js.Home["terminated"] != 1 {
		t.Fatalf("json: %v %s", err, out.String())
	}
}
