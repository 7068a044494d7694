package transport

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"math/big"
	"net"
	"testing"
	"time"
)

// testCA is a throwaway ECDSA certificate authority.
type testCA struct {
	cert *x509.Certificate
	key  *ecdsa.PrivateKey
	pool *x509.CertPool
}

func newTestCA(t *testing.T) *testCA {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: "anyedge test CA"},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(time.Hour),
		KeyUsage:              x509.KeyUsageCertSign,
		BasicConstraintsValid: true,
		IsCA:                  true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AddCert(cert)
	return &testCA{cert: cert, key: key, pool: pool}
}

// issue makes a node certificate. Every node is both a TLS server and a
// client, so it gets both extended key usages, and 127.0.0.1 as IP SAN
// because that is the address tests dial.
func (ca *testCA) issue(t *testing.T, serial int64, name string) tls.Certificate {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(serial),
		Subject:      pkix.Name{CommonName: name},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
		IPAddresses:  []net.IP{net.IPv4(127, 0, 0, 1)},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.cert, &key.PublicKey, ca.key)
	if err != nil {
		t.Fatal(err)
	}
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key}
}

// mutualTLS is the cluster's TLS setup: the same config serves and dials.
func (ca *testCA) mutualTLS(certs ...tls.Certificate) *tls.Config {
	return &tls.Config{
		Certificates: certs,
		RootCAs:      ca.pool,
		ClientCAs:    ca.pool,
		ClientAuth:   tls.RequireAndVerifyClientCert,
		MinVersion:   tls.VersionTLS13,
	}
}

func withTLS(c *tls.Config) option { return func(cfg *Config, _ *recorder) { cfg.TLS = c } }

func TestMutualTLS(t *testing.T) {
	ca := newTestCA(t)
	a := startNode(t, 1, withTLS(ca.mutualTLS(ca.issue(t, 10, "node-1"))))

	t.Run("link up", func(t *testing.T) {
		b := startNode(t, 2, dialOnly, withTLS(ca.mutualTLS(ca.issue(t, 11, "node-2"))))
		l, err := b.dial(t, a)
		if err != nil {
			t.Fatal(err)
		}
		la := recv(t, a.rec.ups, "LinkUp on a")
		tc, ok := l.conn.(*tls.Conn)
		if !ok || !sameHello(l.Peer(), a.hello) || !sameHello(la.Peer(), b.hello) {
			t.Fatalf("link is TLS: %v; peers %+v / %+v", ok, l.Peer(), la.Peer())
		}
		if st := tc.ConnectionState(); len(st.PeerCertificates) == 0 || st.PeerCertificates[0].Subject.CommonName != "node-1" {
			t.Fatal("b did not verify a's certificate")
		}
		l.Close()
		recv(t, a.rec.downs, "LinkDown on a")
	})

	t.Run("client without certificate", func(t *testing.T) {
		b := startNode(t, 3, dialOnly, withTLS(ca.mutualTLS()))
		if _, err := b.dial(t, a); !errors.Is(err, ErrAuth) {
			t.Fatalf("Dial: %v, want ErrAuth", err)
		}
		if err := recv(t, a.rec.fails, "AuthFailed on a"); !errors.Is(err, ErrAuth) {
			t.Fatalf("a's AuthFailed: %v", err)
		}
		recv(t, b.rec.fails, "AuthFailed on b")
		b.tr.Close()
		none(t, b.rec.ups, "LinkUp on b")
	})

	t.Run("certificate from another CA", func(t *testing.T) {
		other := newTestCA(t)
		cfg := other.mutualTLS(other.issue(t, 12, "intruder"))
		cfg.RootCAs = ca.pool // it trusts us, we do not trust it
		b := startNode(t, 4, dialOnly, withTLS(cfg))
		if _, err := b.dial(t, a); !errors.Is(err, ErrAuth) {
			t.Fatalf("Dial: %v, want ErrAuth", err)
		}
		recv(t, a.rec.fails, "AuthFailed on a")
	})

	t.Run("valid certificate, wrong key", func(t *testing.T) {
		b := startNode(t, 5, dialOnly, withTLS(ca.mutualTLS(ca.issue(t, 13, "node-5"))),
			func(c *Config, _ *recorder) { c.Key = []byte("a-key-from-elsewhere") })
		if _, err := b.dial(t, a); !errors.Is(err, ErrAuth) {
			t.Fatalf("Dial: %v, want ErrAuth", err)
		}
		recv(t, a.rec.fails, "AuthFailed on a")
	})

	a.tr.Close()
	none(t, a.rec.ups, "LinkUp on a from a refused client")
}
