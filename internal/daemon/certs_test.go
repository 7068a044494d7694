package daemon

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"log/slog"
	"math/big"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/anyedge/anyedge/edge"
	"github.com/anyedge/anyedge/internal/config"
)

// writeCert writes a self-signed certificate valid until notAfter, with
// its key first in the file (the leaf must still be found).
func writeCert(t *testing.T, path string, notAfter time.Time) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "edge.example"},
		NotBefore: notAfter.Add(-time.Hour), NotAfter: notAfter}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	kb, _ := x509.MarshalECPrivateKey(key)
	var b bytes.Buffer
	_ = pem.Encode(&b, &pem.Block{Type: "EC PRIVATE KEY", Bytes: kb})
	_ = pem.Encode(&b, &pem.Block{Type: "CERTIFICATE", Bytes: der})
	writeFile(t, path, b.String())
}

func TestCertExpiryMetric(t *testing.T) {
	dir := t.TempDir()
	sipCert, clusterCert := filepath.Join(dir, "sip.pem"), filepath.Join(dir, "cluster.pem")
	na1 := time.Date(2027, 1, 2, 3, 4, 5, 0, time.UTC)
	na2 := time.Date(2027, 6, 1, 0, 0, 0, 0, time.UTC)
	writeCert(t, sipCert, na1)
	writeCert(t, clusterCert, na2)
	cfg := &config.Config{SIP: &edge.Config{Listeners: []edge.Listener{
		{Transport: "udp", Addr: "127.0.0.1:5060"},
		{Transport: "tls", Addr: "127.0.0.1:5061", CertFile: sipCert},
		{Transport: "tls", Addr: "[::1]:5061", CertFile: sipCert},
	}}}
	cfg.Cluster.TLS.CertFile = clusterCert
	logs := &syncBuffer{}
	m := newCertMetrics(slog.New(slog.NewTextHandler(logs, nil)))
	m.load(cfg)
	if got := testutil.ToFloat64(m.expiry.WithLabelValues("sip", sipCert)); got != float64(na1.Unix()) {
		t.Errorf("sip expiry %v, want %v", got, na1.Unix())
	}
	if got := testutil.ToFloat64(m.expiry.WithLabelValues("cluster", clusterCert)); got != float64(na2.Unix()) {
		t.Errorf("cluster expiry %v, want %v", got, na2.Unix())
	}
	if n := testutil.CollectAndCount(m.expiry); n != 2 {
		t.Errorf("%d series, want 2 (one per file and use)", n)
	}

	// A renewed file: the loaded certificate is still the one served, so
	// the gauge keeps it and the reload warns.
	writeCert(t, sipCert, na2)
	m.check(cfg)
	if got := testutil.ToFloat64(m.expiry.WithLabelValues("sip", sipCert)); got != float64(na1.Unix()) {
		t.Errorf("sip expiry %v after a reload, want the loaded %v", got, na1.Unix())
	}
	if !strings.Contains(logs.String(), "certificate file changed; restart edged to serve it") {
		t.Errorf("no warning about the renewed file:\n%s", logs)
	}

	// An unreadable file: no series rather than a wrong one.
	writeFile(t, filepath.Join(dir, "bad.pem"), "not a certificate")
	m2 := newCertMetrics(slog.New(slog.DiscardHandler))
	m2.load(&config.Config{SIP: &edge.Config{Listeners: []edge.Listener{{Transport: "tls", CertFile: filepath.Join(dir, "bad.pem")}}}})
	if n := testutil.CollectAndCount(m2.expiry); n != 0 {
		t.Errorf("%d series for an unreadable certificate", n)
	}
}
