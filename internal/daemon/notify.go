package daemon

import (
	"net"
	"os"
)

// sdNotify tells systemd (Type=notify units) about the daemon's state:
// READY=1 once every listener is up, RELOADING=1/READY=1 around a SIGHUP,
// STOPPING=1 when shutting down. Without NOTIFY_SOCKET it does nothing.
// It reports whether the message was sent.
func sdNotify(state string) bool {
	path := os.Getenv("NOTIFY_SOCKET")
	if path == "" {
		return false
	}
	if path[0] == '@' {
		path = "\x00" + path[1:] // abstract socket
	}
	c, err := net.DialUnix("unixgram", nil, &net.UnixAddr{Name: path, Net: "unixgram"})
	if err != nil {
		return false
	}
	defer c.Close()
	_, err = c.Write([]byte(state))
	return err == nil
}
