package daemon

import (
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/anyedge/anyedge/internal/config"
)

// certMetrics exports the not-after time of every certificate edged
// loaded, for the AnyedgeCertificateExpiresSoon alert. The listeners load
// their certificates once, at start: a renewed file is served only after
// a restart, so the gauge keeps the loaded certificate's time, and a
// reload only warns that the file on disk has changed.
type certMetrics struct {
	log    *slog.Logger
	expiry *prometheus.GaugeVec
	loaded map[certUse]time.Time
}

type certUse struct{ use, file string }

func newCertMetrics(log *slog.Logger) *certMetrics {
	return &certMetrics{
		log: log,
		expiry: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "anyedge_tls_cert_expiry_timestamp_seconds",
			Help: "Not-after time of each certificate edged serves (Unix seconds), by use (sip, cluster) and file.",
		}, []string{"use", "file"}),
		loaded: map[certUse]time.Time{},
	}
}

// certFiles lists the certificate files of cfg by use. The admin API
// serves plain HTTP (loopback, or behind a token): it has none.
func certFiles(cfg *config.Config) []certUse {
	var out []certUse
	if cfg.SIP != nil {
		for _, l := range cfg.SIP.Listeners {
			if l.Transport == "tls" && l.CertFile != "" {
				out = append(out, certUse{"sip", l.CertFile})
			}
		}
	}
	if f := cfg.Cluster.TLS.CertFile; f != "" {
		out = append(out, certUse{"cluster", f})
	}
	return out
}

// load records the certificates the daemon starts with.
func (m *certMetrics) load(cfg *config.Config) {
	for _, c := range certFiles(cfg) {
		if _, ok := m.loaded[c]; ok {
			continue // one file on several listeners
		}
		na, err := notAfter(c.file)
		if err != nil {
			// The listener's own load reports it; no series rather than a
			// wrong one.
			m.log.Warn("certificate expiry unknown", "use", c.use, "file", c.file, "err", err)
			continue
		}
		m.loaded[c] = na
		m.expiry.WithLabelValues(c.use, c.file).Set(float64(na.Unix()))
	}
}

// check runs at a reload: it re-reads the files and warns about those
// changed on disk, which only a restart puts in use.
func (m *certMetrics) check(cfg *config.Config) {
	for _, c := range certFiles(cfg) {
		was, ok := m.loaded[c]
		if !ok {
			continue
		}
		na, err := notAfter(c.file)
		switch {
		case err != nil:
			m.log.Warn("reload: certificate unreadable; the loaded one stays in use", "use", c.use, "file", c.file, "err", err)
		case !na.Equal(was):
			m.log.Warn("reload: certificate file changed; restart edged to serve it", "use", c.use, "file", c.file,
				"loaded_not_after", was, "file_not_after", na)
		}
	}
}

// notAfter reads the first certificate of a PEM file (the leaf).
func notAfter(file string) (time.Time, error) {
	b, err := os.ReadFile(file)
	if err != nil {
		return time.Time{}, err
	}
	for {
		var blk *pem.Block
		blk, b = pem.Decode(b)
		if blk == nil {
			return time.Time{}, errors.New("no CERTIFICATE block")
		}
		if blk.Type != "CERTIFICATE" {
			continue
		}
		c, err := x509.ParseCertificate(blk.Bytes)
		if err != nil {
			return time.Time{}, fmt.Errorf("parse certificate: %w", err)
		}
		return c.NotAfter, nil
	}
}
