package auth

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"encoding/binary"
	"io"
	"sync"
	"time"
)

// Nonce layout, before base64url: issue time (unix nanoseconds, big endian),
// random bytes, then HMAC-SHA256(secret, time ‖ random ‖ realm). Any node
// holding the secret can check a nonce without having issued it, which is
// what anycast needs: the challenge and the retry may reach different
// nodes.
const (
	nonceTime = 8
	nonceRand = 16
	nonceMAC  = sha256.Size
	nonceLen  = nonceTime + nonceRand + nonceMAC
	// maxSkew tolerates nodes whose clocks run a little ahead of ours.
	maxSkew = 30 * time.Second
)

type nonceStatus uint8

const (
	nonceValid   nonceStatus = iota
	nonceStale               // ours, but too old (or from too far in the future)
	nonceInvalid             // not ours: tampered, another secret, garbage
)

// nonces issues and checks nonces and remembers, per nonce, the highest
// nonce-count accepted, so a captured request cannot be replayed (RFC 7616
// §3.3 nc). The memory is a bounded LRU; see use for what happens when it
// forgets.
type nonces struct {
	secret []byte
	ttl    time.Duration
	rand   io.Reader

	mu   sync.Mutex
	seen *lru[string, ncState]
	// watermark: the latest issue time of a still-valid nonce the LRU had to
	// evict. An untracked nonce issued at or before it may have been used
	// already, so it is not trusted. Nanosecond issue times keep nonces
	// issued after an eviction above the watermark even under load, so a UA
	// is never refused twice in a row.
	watermark int64
}

type ncState struct {
	nc     uint32
	issued int64 // unix nanoseconds
}

func (n *nonces) issue(realm string, now time.Time) (string, error) {
	var b [nonceLen]byte
	binary.BigEndian.PutUint64(b[:nonceTime], uint64(now.UnixNano()))
	if _, err := io.ReadFull(n.rand, b[nonceTime:nonceTime+nonceRand]); err != nil {
		return "", err
	}
	copy(b[nonceTime+nonceRand:], n.mac(b[:nonceTime+nonceRand], realm))
	return base64.RawURLEncoding.EncodeToString(b[:]), nil
}

func (n *nonces) mac(head []byte, realm string) []byte {
	m := hmac.New(sha256.New, n.secret)
	m.Write(head)
	m.Write([]byte(realm))
	return m.Sum(nil)
}

// verify checks that nonce was issued by a node with our secret for realm,
// and whether it is still fresh. It needs no state.
func (n *nonces) verify(nonce, realm string, now time.Time) (issued int64, st nonceStatus) {
	if base64.RawURLEncoding.DecodedLen(len(nonce)) != nonceLen {
		return 0, nonceInvalid
	}
	b, err := base64.RawURLEncoding.DecodeString(nonce)
	if err != nil || len(b) != nonceLen {
		return 0, nonceInvalid
	}
	if !hmac.Equal(n.mac(b[:nonceTime+nonceRand], realm), b[nonceTime+nonceRand:]) {
		return 0, nonceInvalid
	}
	issued = int64(binary.BigEndian.Uint64(b[:nonceTime]))
	age := time.Duration(now.UnixNano() - issued)
	if age > n.ttl || age < -maxSkew {
		return issued, nonceStale
	}
	return issued, nonceValid
}

type useStatus uint8

const (
	useOK        useStatus = iota
	useReplay              // nc not higher than one already accepted
	useForgotten           // untracked and older than the watermark
)

// use records that nc was accepted for a valid nonce, refusing counts that
// are not higher than the last one (a replay, or a UA that lost count).
func (n *nonces) use(nonce string, issued int64, nc uint32, now time.Time) useStatus {
	n.mu.Lock()
	defer n.mu.Unlock()
	if st, ok := n.seen.get(nonce); ok {
		if nc <= st.nc {
			return useReplay
		}
		st.nc = nc
		return useOK
	}
	if issued <= n.watermark {
		return useForgotten
	}
	n.dropExpired(now)
	if ev := n.seen.put(nonce, ncState{nc: nc, issued: issued}); ev != nil && n.live(ev.val.issued, now) {
		n.watermark = max(n.watermark, ev.val.issued)
	}
	return useOK
}

// dropExpired removes expired nonces from the cold end, so that eviction
// hits dead entries before live ones (and leaves the watermark alone).
func (n *nonces) dropExpired(now time.Time) {
	for n.seen.len() > 0 {
		back := n.seen.order.Back().Value.(*lruItem[string, ncState])
		if n.live(back.val.issued, now) {
			return
		}
		n.seen.remove(back.key)
	}
}

func (n *nonces) live(issued int64, now time.Time) bool {
	return time.Duration(now.UnixNano()-issued) <= n.ttl
}
