package bfd

import (
	"bytes"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"sort"
	"strings"
	"testing"
)

var updateCorpus = flag.Bool("update-corpus", false, "rewrite testdata/fuzz/FuzzDecode seed files")

// seeds are the named seeds checked into testdata/fuzz/FuzzDecode: the
// packets of a session's life as BIRD and this package send them, plus the
// broken shapes the decoder must refuse. Regenerate with:
//
//	go test ./bfd -run TestSeedCorpus -update-corpus
func seeds() map[string][]byte {
	mk := func(p Packet) []byte { return p.Marshal() }
	down := Packet{State: Down, DetectMult: 3, MyDiscr: 0x3c1f0a55, DesiredMinTx: 1000000, RequiredMinRx: 300000}
	init := down
	init.State, init.YourDiscr = Init, 0x7e4d2c01
	up := init
	up.State, up.Poll, up.DesiredMinTx = Up, true, 300000
	final := up
	final.Poll, final.Final = false, true
	admin := Packet{State: AdminDown, Diag: DiagAdminDown, DetectMult: 3, MyDiscr: 0x3c1f0a55, YourDiscr: 0x7e4d2c01, DesiredMinTx: 1000000, RequiredMinRx: 300000}
	timedOut := down
	timedOut.Diag = DiagControlDetectExpired
	md5 := down
	md5.Auth = &Auth{Type: 2, Data: append([]byte{1, 0, 0, 0, 0, 0, 0, 0, 1}, bytes.Repeat([]byte{0x5a}, 13)...)}
	badVersion := mk(up)
	badVersion[0] = 0<<5 | badVersion[0]&0x1f
	multipoint := mk(up)
	multipoint[1] |= flagMultipoint
	longLen := mk(up)
	longLen[3] = 48
	return map[string][]byte{
		"down":            mk(down),
		"init":            mk(init),
		"up_poll":         mk(up),
		"up_final":        mk(final),
		"admindown":       mk(admin),
		"down_timed_out":  mk(timedOut),
		"auth_keyed_md5":  mk(md5),
		"bad_version":     badVersion,
		"multipoint":      multipoint,
		"length_too_long": longLen,
		"short":           mk(up)[:20],
		"bfd_echo_like":   []byte("anyedge-echo-0123456789ab"),
	}
}

func corpusFile(b []byte) string {
	return fmt.Sprintf("go test fuzz v1\n[]byte(%q)\n", b)
}

// TestSeedCorpus keeps testdata/fuzz/FuzzDecode in step with seeds().
func TestSeedCorpus(t *testing.T) {
	dir := filepath.Join("testdata", "fuzz", "FuzzDecode")
	s := seeds()
	names := make([]string, 0, len(s))
	for n := range s {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, n := range names {
		path := filepath.Join(dir, n)
		want := corpusFile(s[n])
		if *updateCorpus {
			if err := os.MkdirAll(dir, 0o755); err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(path, []byte(want), 0o644); err != nil {
				t.Fatal(err)
			}
			continue
		}
		got, err := os.ReadFile(path)
		if err != nil || string(got) != want {
			t.Errorf("%s is stale or missing (run with -update-corpus): %v", path, err)
		}
	}
}

// FuzzDecode: Decode never panics, and whatever it accepts re-encodes to
// the same bytes (up to the Length field, which becomes 24 without auth) and decodes to the same packet.
func FuzzDecode(f *testing.F) {
	// The seeds are the files in testdata/fuzz/FuzzDecode (TestSeedCorpus).
	f.Fuzz(func(t *testing.T, b []byte) {
		p, err := Decode(b)
		if err != nil {
			if p.Auth != nil {
				t.Fatalf("error %v with an auth section parsed", err)
			}
			return
		}
		enc := p.Marshal()
		want := bytes.Clone(b[:len(enc)])
		if p.Auth == nil {
			// A Length above 24 without an auth section is accepted (the
			// rest is ignored) and re-encodes as 24.
			want[3] = HeaderLen
		}
		if !bytes.Equal(enc, want) {
			t.Fatalf("re-encoding differs:\n% x\n% x", enc, want)
		}
		q, err := Decode(enc)
		if err != nil {
			t.Fatalf("re-encoded packet refused: %v", err)
		}
		if !reflect.DeepEqual(p, q) {
			t.Fatalf("round trip: %+v != %+v", p, q)
		}
		if !strings.Contains(p.String(), p.State.String()) {
			t.Fatal("String")
		}
	})
}
