package auth

import (
	"bufio"
	"bytes"
	"fmt"
	"os"
	"strings"
	"sync/atomic"
)

// Subscribers looks up credentials. Implementations return HA1 values, not
// passwords, and are safe for concurrent use. An empty ha1 means that
// algorithm is not available for the user (it is then not offered).
type Subscribers interface {
	Lookup(user, realm string) (ha1MD5, ha1SHA256 string, ok bool)
}

// File is a Subscribers backed by a text file, one subscriber per line:
//
//	# comment
//	alice  example.com  <ha1_md5>  [<ha1_sha256>]
//	bob    example.com  -          <ha1_sha256>
//	carol  example.com  password=s3cret
//
// Fields are separated by blanks. HA1s are hex (32 digits for MD5, 64 for
// SHA-256; "-" for none) computed as H(user:realm:password), as
// `edgectl` and Kamailio's ha1/ha1b columns do. The password= form is for
// labs: both HA1s are computed at load time and the password is not kept,
// but it sits in the file in clear text; the password is the rest of the
// field, so it cannot contain blanks. Users are case-sensitive, realms are
// not (they are domains). A duplicate user/realm is an error.
//
// Reload (on SIGHUP) swaps the whole set atomically, or keeps the old one
// if the new file has any error.
type File struct {
	path string
	set  atomic.Pointer[map[subKey]ha1Pair]
}

var _ Subscribers = (*File)(nil)

type subKey struct{ user, realm string }

type ha1Pair struct{ md5, sha256 string }

// LoadFile reads path. Errors name the file and line.
func LoadFile(path string) (*File, error) {
	f := &File{path: path}
	if err := f.Reload(); err != nil {
		return nil, err
	}
	return f, nil
}

// Reload re-reads the file. On any error the previous set stays in use and
// the error says which file and line is wrong.
func (f *File) Reload() error {
	data, err := os.ReadFile(f.path)
	if err != nil {
		return fmt.Errorf("auth: subscribers: %w", err)
	}
	set, err := parseSubscribers(f.path, data)
	if err != nil {
		return err
	}
	f.set.Store(&set)
	return nil
}

// Lookup implements Subscribers.
func (f *File) Lookup(user, realm string) (string, string, bool) {
	p, ok := (*f.set.Load())[subKey{user, strings.ToLower(realm)}]
	return p.md5, p.sha256, ok
}

// Len is the number of subscribers loaded.
func (f *File) Len() int { return len(*f.set.Load()) }

func parseSubscribers(path string, data []byte) (map[subKey]ha1Pair, error) {
	set := make(map[subKey]ha1Pair)
	sc := bufio.NewScanner(bytes.NewReader(data))
	sc.Buffer(make([]byte, 0, 4096), 64*1024)
	for n := 1; sc.Scan(); n++ {
		line := strings.TrimSpace(sc.Text())
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		bad := func(format string, args ...any) error {
			return fmt.Errorf("auth: %s:%d: %s", path, n, fmt.Sprintf(format, args...))
		}
		fields := strings.Fields(line)
		if len(fields) < 3 || len(fields) > 4 {
			return nil, bad("want `user realm ha1_md5 [ha1_sha256]` or `user realm password=SECRET`, got %d fields", len(fields))
		}
		key := subKey{fields[0], strings.ToLower(fields[1])}
		var p ha1Pair
		if pw, ok := strings.CutPrefix(fields[2], "password="); ok {
			if len(fields) != 3 || pw == "" {
				return nil, bad("password= takes the whole third field and nothing after it")
			}
			// HA1 hashes the realm as the UA sends it, which is our lowercase
			// realm.
			p = ha1Pair{HA1(MD5, key.user, key.realm, pw), HA1(SHA256, key.user, key.realm, pw)}
		} else {
			if fields[2] != "-" {
				if !isHex(fields[2], 32) {
					return nil, bad("ha1_md5 is not 32 hex digits")
				}
				p.md5 = strings.ToLower(fields[2])
			}
			if len(fields) == 4 && fields[3] != "-" {
				if !isHex(fields[3], 64) {
					return nil, bad("ha1_sha256 is not 64 hex digits")
				}
				p.sha256 = strings.ToLower(fields[3])
			}
			if p.md5 == "" && p.sha256 == "" {
				return nil, bad("no HA1 for %s", key.user)
			}
		}
		if _, dup := set[key]; dup {
			return nil, bad("duplicate entry for %s in realm %s", key.user, key.realm)
		}
		set[key] = p
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("auth: %s: %w", path, err)
	}
	return set, nil
}
