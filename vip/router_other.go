//go:build !linux

package vip

import "log/slog"

// Linux is not available on this system.
type Linux struct{}

// LinuxOption sets an optional dependency of the Linux router.
type LinuxOption func(*Linux)

// WithLogger is accepted for portability.
func WithLogger(*slog.Logger) LinuxOption { return func(*Linux) {} }

// WithAnnounce is accepted for portability.
func WithAnnounce(Announce) LinuxOption { return func(*Linux) {} }

// WithAnnounced is accepted for portability.
func WithAnnounced(func(VIP)) LinuxOption { return func(*Linux) {} }

// NewLinux fails: VIPs move with netlink, on Linux only.
func NewLinux([]VIP, ...LinuxOption) (*Linux, error) { return nil, ErrUnsupported }

// Set implements Router.
func (*Linux) Set([]VIP) error { return ErrUnsupported }

// Close implements Router.
func (*Linux) Close() error { return nil }
