package transport

import (
	"bytes"
	"testing"
)

// The MAC must change when a hello is rewritten in flight, so a man in the
// middle can't swap a node's id, incarnation or metadata without the key.
func TestAuthMACBindsHellos(t *testing.T) {
	key := []byte("0123456789abcdef0123456789abcdef")
	n1, n2 := bytes.Repeat([]byte{1}, nonceLen), bytes.Repeat([]byte{2}, nonceLen)
	base := authMAC(key, roleDialer, n1, n2, 1, 2, []byte("hello-1"), []byte("hello-2"))
	for name, mac := range map[string][]byte{
		"own hello":  authMAC(key, roleDialer, n1, n2, 1, 2, []byte("hello-X"), []byte("hello-2")),
		"peer hello": authMAC(key, roleDialer, n1, n2, 1, 2, []byte("hello-1"), []byte("hello-X")),
		"role":       authMAC(key, roleAcceptor, n1, n2, 1, 2, []byte("hello-1"), []byte("hello-2")),
		"ids":        authMAC(key, roleDialer, n1, n2, 2, 1, []byte("hello-1"), []byte("hello-2")),
	} {
		if bytes.Equal(mac, base) {
			t.Errorf("MAC unchanged when the %s changes", name)
		}
	}
}
