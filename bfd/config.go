package bfd

import (
	"fmt"
	"time"
)

// Config holds the timers of a session. The YAML keys are those of a
// peer's `bfd:` section in the daemon config. Zero values take the
// defaults; Validate fills them in.
type Config struct {
	// MinTx is the desired minimum transmit interval once the session is
	// Up. Default 300 ms: with MinRx and Multiplier at their defaults a
	// dead peer is detected within 900 ms, under the one second that
	// routers should take to drop a dead edge node, while a userspace
	// sender on a loaded host still makes every deadline.
	MinTx time.Duration `yaml:"min_tx"`
	// MinRx is the required minimum receive interval: the fastest this
	// system accepts packets. Default 300 ms.
	MinRx time.Duration `yaml:"min_rx"`
	// Multiplier is the detect multiplier: how many intervals without a
	// packet declare the peer down. Default 3; 1 is allowed but leaves no
	// room for a single lost packet.
	Multiplier uint8 `yaml:"multiplier"`
}

// Defaults.
const (
	DefaultMinTx      = 300 * time.Millisecond
	DefaultMinRx      = 300 * time.Millisecond
	DefaultMultiplier = 3
)

// Timer bounds. Below 10 ms a userspace implementation misses deadlines
// under load and flaps; above a minute BFD is no faster than BGP.
const (
	MinInterval = 10 * time.Millisecond
	MaxInterval = time.Minute
)

// DefaultConfig returns the default timers.
func DefaultConfig() Config {
	return Config{MinTx: DefaultMinTx, MinRx: DefaultMinRx, Multiplier: DefaultMultiplier}
}

// FieldError names the bad key of a config.
type FieldError struct {
	Key string
	Err string
}

func (e *FieldError) Error() string { return e.Key + ": " + e.Err }

// Validate fills defaults and checks the timers. Errors are *FieldError
// with the key relative to the bfd section (for example "min_tx").
func (c *Config) Validate() error {
	if c.MinTx == 0 {
		c.MinTx = DefaultMinTx
	}
	if c.MinRx == 0 {
		c.MinRx = DefaultMinRx
	}
	if c.Multiplier == 0 {
		c.Multiplier = DefaultMultiplier
	}
	for _, f := range []struct {
		key string
		d   time.Duration
	}{{"min_tx", c.MinTx}, {"min_rx", c.MinRx}} {
		if f.d < MinInterval || f.d > MaxInterval {
			return &FieldError{Key: f.key, Err: fmt.Sprintf("must be %v..%v, got %v", MinInterval, MaxInterval, f.d)}
		}
	}
	return nil
}

// DetectTime is the worst-case time to detect a dead peer with timers c on
// both ends.
func (c Config) DetectTime() time.Duration {
	return time.Duration(c.Multiplier) * max(c.MinTx, c.MinRx)
}
