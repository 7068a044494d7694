package bfd

import (
	"errors"
	"testing"
	"time"
)

func TestConfigValidate(t *testing.T) {
	var c Config
	if err := c.Validate(); err != nil {
		t.Fatal(err)
	}
	if c != DefaultConfig() {
		t.Fatalf("defaults %+v", c)
	}
	// The point of the defaults: a dead node is seen in under a second.
	if d := c.DetectTime(); d != 900*time.Millisecond {
		t.Fatalf("detect time %v", d)
	}
	for key, bad := range map[string]Config{
		"min_tx": {MinTx: 5 * time.Millisecond},
		"min_rx": {MinRx: 2 * time.Minute},
	} {
		err := bad.Validate()
		var fe *FieldError
		if !errors.As(err, &fe) || fe.Key != key {
			t.Errorf("want an error on %s, got %v", key, err)
		}
	}
}
