package geo

import (
	"errors"
	"testing"
	"time"

	"github.com/anyedge/anyedge/cluster"
)

func TestConfigValidate(t *testing.T) {
	c := DefaultConfig()
	if c.TagPrefix != "home-" || c.Buckets != 4096 || c.AckTimeout != 50*time.Millisecond || c.MoveGrace != time.Second ||
		c.SweepInterval != time.Second || c.MaxFrameBytes != 256<<10 || c.ReplicateContactsCrossRegion {
		t.Fatalf("defaults: %+v", c)
	}
	if c.TagFor("eu-west") != "home-eu-west" {
		t.Fatal(c.TagFor("eu-west"))
	}
	for _, tc := range []struct {
		cfg Config
		key string
	}{
		{Config{Buckets: 8}, "buckets"},
		{Config{Buckets: 1 << 20}, "buckets"},
		{Config{AckTimeout: time.Microsecond}, "ack_timeout"},
		{Config{MoveGrace: -time.Second}, "move_grace"},
		{Config{MoveGrace: time.Hour}, "move_grace"},
		{Config{SweepInterval: time.Millisecond}, "sweep_interval"},
		{Config{MaxFrameBytes: 100}, "max_frame_bytes"},
		{Config{TagPrefix: string(make([]byte, 40))}, "tag_prefix"},
	} {
		err := tc.cfg.Validate()
		var fe *cluster.FieldError
		if !errors.As(err, &fe) || fe.Key != tc.key {
			t.Errorf("%+v: %v, want an error naming %s", tc.cfg, err, tc.key)
		}
	}
}

func TestCheckClusterTags(t *testing.T) {
	c := DefaultConfig()
	cc := &cluster.Config{Region: "eu", Tags: []cluster.TagConfig{{Name: "vip", Nodes: []uint32{1}}, {Name: "home-eu", Region: "eu"}, {Name: "home-us", Region: "us"}}}
	if err := CheckClusterTags(&c, cc); err != nil {
		t.Fatal(err)
	}
	cc.Region = "ap"
	if err := CheckClusterTags(&c, cc); err == nil {
		t.Fatal("missing home-ap accepted")
	}
	cc.Region = "eu"
	cc.Tags[2].Region = "eu"
	var fe *cluster.FieldError
	if err := CheckClusterTags(&c, cc); !errors.As(err, &fe) || fe.Key != "tags[2].region" {
		t.Fatalf("home-us with region eu: %v", err)
	}
}
