package edge

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/emiago/sipgo/sip"

	"github.com/anyedge/anyedge/edge/nat"
)

func TestBeforeNewDialogHook(t *testing.T) {
	f := startServer(t, nil, WithHooks(Hooks{BeforeNewDialog: func(req *sip.Request, _ CallInfo) *sip.Response {
		res := sip.NewResponseFromRequest(req, 503, "CPS Limit", nil)
		res.AppendHeader(sip.NewHeader("Retry-After", "1"))
		return res
	}}))
	alice := newUA(t, "alice", "udp", f.udp)
	bob := newUA(t, "bob", "udp", f.udp)
	mustStatus(t, bob.register(300), 200)
	_, err := invite(t, alice, bob.uri())
	if c := finalCode(t, err); c != 503 {
		t.Fatalf("got %d, want the hook's 503", c)
	}
	if len(bob.invites) != 0 {
		t.Fatal("the call went through despite the hook")
	}
	// Not for other methods.
	mustStatus(t, alice.do(alice.request(sip.MESSAGE, bob.uri())), 200)
}

// TestKeepaliveRemovesDeadContact: a NATed phone that stops answering the
// keepalive OPTIONS is removed after `failures` probes.
func TestKeepaliveRemovesDeadContact(t *testing.T) {
	trap, _ := deadPeer(t)
	f := startServer(t, func(c *Config) {
		c.Keepalive = nat.Config{Interval: 200 * time.Millisecond, Failures: 2, Timeout: 100 * time.Millisecond}
	})
	bob := newUA(t, "bob", "udp", f.udp)
	var u sip.Uri
	_ = sip.ParseUri("sip:bob@"+trap, &u)
	bob.contact.Address.Port = u.Port // looks NATed: Contact ≠ source
	bob.resetDialogs()
	mustStatus(t, bob.register(300), 200)
	// Alive: it answers OPTIONS, so it stays for several intervals.
	eventually(t, 5*time.Second, func() error {
		if n := counter(t, f.reg, "anyedge_sip_keepalive_probes_total", nil); n < 3 {
			return errorf("%v probes", n)
		}
		return nil
	})
	if f.store.Len() != 1 {
		t.Fatal("a live contact was removed")
	}
	_ = bob.pc.Close() // the phone dies
	eventually(t, 5*time.Second, func() error {
		if f.store.Len() != 0 {
			return errorf("still %d bindings", f.store.Len())
		}
		return nil
	})
	if n := counter(t, f.reg, "anyedge_sip_keepalive_removals_total", nil); n != 1 {
		t.Errorf("removals = %v", n)
	}
}

func TestTLSListener(t *testing.T) {
	dir := t.TempDir()
	cert, key := filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem")
	writeSelfSigned(t, cert, key)
	f := startServer(t, func(c *Config) {
		c.Listeners = append(c.Listeners, Listener{Transport: "tls", Addr: "127.0.0.1:0", CertFile: cert, KeyFile: key})
	})
	conn, err := tls.Dial("tcp", f.srv.Addr("tls").String(), &tls.Config{InsecureSkipVerify: true})
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	local := conn.LocalAddr().String()
	req := "OPTIONS sip:" + f.srv.Addr("tls").String() + " SIP/2.0\r\n" +
		"Via: SIP/2.0/TLS " + local + ";branch=z9hG4bKtls1\r\nFrom: <sip:t@example.com>;tag=1\r\n" +
		"To: <sip:" + f.srv.Addr("tls").String() + ">\r\nCall-ID: tls-1\r\nCSeq: 1 OPTIONS\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n"
	if _, err := conn.Write([]byte(req)); err != nil {
		t.Fatal(err)
	}
	_ = conn.SetReadDeadline(time.Now().Add(3 * time.Second))
	buf := make([]byte, 4096)
	n, err := conn.Read(buf)
	if err != nil || !strings.HasPrefix(string(buf[:n]), "SIP/2.0 200 ") {
		t.Fatalf("over TLS: %q %v", buf[:n], err)
	}
}

func TestIPv6Listener(t *testing.T) {
	if pc, err := net.ListenPacket("udp6", "[::1]:0"); err != nil {
		t.Skip("no IPv6 loopback")
	} else {
		pc.Close()
	}
	f := startServer(t, func(c *Config) {
		c.Listeners = append(c.Listeners, Listener{Transport: "udp", Addr: "[::1]:0"})
	})
	var six string
	for _, s := range f.srv.sockets {
		if s.ap.Addr().Is6() {
			six = s.ap.String()
		}
	}
	pc, err := net.ListenPacket("udp6", "[::1]:0")
	if err != nil {
		t.Fatal(err)
	}
	defer pc.Close()
	req := "OPTIONS sip:example.com SIP/2.0\r\nVia: SIP/2.0/UDP " + pc.LocalAddr().String() + ";branch=z9hG4bKv6;rport\r\n" +
		"From: <sip:t@example.com>;tag=1\r\nTo: <sip:example.com>\r\nCall-ID: v6-1\r\nCSeq: 1 OPTIONS\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n"
	dst, _ := net.ResolveUDPAddr("udp6", six)
	if _, err := pc.WriteTo([]byte(req), dst); err != nil {
		t.Fatal(err)
	}
	_ = pc.SetReadDeadline(time.Now().Add(3 * time.Second))
	buf := make([]byte, 4096)
	n, _, err := pc.ReadFrom(buf)
	if err != nil || !strings.HasPrefix(string(buf[:n]), "SIP/2.0 200 ") {
		t.Fatalf("over IPv6: %q %v", buf[:n], err)
	}
}

func writeSelfSigned(t *testing.T, certPath, keyPath string) {
	t.Helper()
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "edge.test"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour), IPAddresses: []net.IP{net.IPv4(127, 0, 0, 1)}}
	der, err := x509.CreateCertificate(rand.Reader, tpl, tpl, &k.PublicKey, k)
	if err != nil {
		t.Fatal(err)
	}
	kb, _ := x509.MarshalECPrivateKey(k)
	_ = os.WriteFile(certPath, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o600)
	_ = os.WriteFile(keyPath, pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kb}), 0o600)
}

var _ = context.Background
