package vip

import (
	"context"
	"encoding/binary"
	"errors"
	"net"
	"net/netip"
	"slices"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/anyedge/anyedge/bgp"
	"github.com/anyedge/anyedge/cluster"
)

func TestParse(t *testing.T) {
	tags := []string{"vip-a", "vip3-a"}
	vips, err := Parse([]Config{
		{Tag: "vip-a", Address: "203.0.113.21/32", Interface: "lan0"},
		{Tag: "vip3-a", Address: "203.0.113.31/32", Mode: ModeL3},
		{Tag: "vip-a", Address: "2001:db8::21/128", Mode: ModeL2, Interface: "lan0"},
	}, tags)
	if err != nil {
		t.Fatal(err)
	}
	if vips[0].Mode != ModeL2 || vips[1].Interface != "lo" || !vips[2].Prefix.Addr().Is6() {
		t.Errorf("defaults: %+v", vips)
	}
	cases := []struct {
		c   Config
		key string
	}{
		{Config{Address: "203.0.113.21/32", Interface: "lan0"}, "[0].tag"},
		{Config{Tag: "nope", Address: "203.0.113.21/32", Interface: "lan0"}, "[0].tag"},
		{Config{Tag: "vip-a", Address: "203.0.113.21", Interface: "lan0"}, "[0].address"},
		{Config{Tag: "vip-a", Address: "203.0.113.0/24", Interface: "lan0"}, "[0].address"},
		{Config{Tag: "vip-a", Address: "fe80::1/128", Interface: "lan0"}, "[0].address"},
		{Config{Tag: "vip-a", Address: "203.0.113.21/32", Mode: "l4"}, "[0].mode"},
		{Config{Tag: "vip-a", Address: "203.0.113.21/32"}, "[0].interface"},
		{Config{Tag: "vip-a", Address: "203.0.113.21/32", Interface: "a-very-long-interface"}, "[0].interface"},
	}
	for _, tc := range cases {
		_, err := Parse([]Config{tc.c}, tags)
		var fe *FieldError
		if !errors.As(err, &fe) || fe.Key != tc.key {
			t.Errorf("%+v: %v, want an error at %s", tc.c, err, tc.key)
		}
	}
	_, err = Parse([]Config{{Tag: "vip-a", Address: "203.0.113.21/32", Interface: "lan0"}, {Tag: "vip3-a", Address: "203.0.113.21/32", Mode: ModeL3}}, tags)
	var fe *FieldError
	if !errors.As(err, &fe) || fe.Key != "[1].address" {
		t.Errorf("duplicate: %v", err)
	}
}

var mac = net.HardwareAddr{0x02, 0xae, 0, 0, 0, 0x11}

func TestGratuitousARP(t *testing.T) {
	f := GratuitousARP(mac, netip.MustParseAddr("203.0.113.21"))
	want := []byte{
		0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x02, 0xae, 0, 0, 0, 0x11, 0x08, 0x06, // Ethernet
		0, 1, 0x08, 0, 6, 4, 0, 1, // Ethernet/IPv4, request
		0x02, 0xae, 0, 0, 0, 0x11, 203, 0, 113, 21, // sender
		0, 0, 0, 0, 0, 0, 203, 0, 113, 21, // target
	}
	if !slices.Equal(f, want) {
		t.Errorf("frame\n got % x\nwant % x", f, want)
	}
}

func TestUnsolicitedNA(t *testing.T) {
	ip := netip.MustParseAddr("2001:db8::21")
	f := UnsolicitedNA(mac, ip)
	if len(f) != 14+40+32 {
		t.Fatalf("length %d", len(f))
	}
	if !slices.Equal(f[0:6], []byte{0x33, 0x33, 0, 0, 0, 1}) || binary.BigEndian.Uint16(f[12:14]) != 0x86dd {
		t.Errorf("ethernet header % x", f[:14])
	}
	h, m := f[14:54], f[54:]
	if h[0]>>4 != 6 || binary.BigEndian.Uint16(h[4:6]) != 32 || h[6] != 58 || h[7] != 255 {
		t.Errorf("ipv6 header % x", h)
	}
	if src, _ := netip.AddrFromSlice(h[8:24]); src != ip {
		t.Errorf("source %v", src)
	}
	if dst, _ := netip.AddrFromSlice(h[24:40]); dst != netip.MustParseAddr("ff02::1") {
		t.Errorf("destination %v", dst)
	}
	if m[0] != 136 || m[1] != 0 || m[4] != 0x20 || m[5]|m[6]|m[7] != 0 {
		t.Errorf("type/code/flags % x (want NA, override only)", m[:8])
	}
	if target, _ := netip.AddrFromSlice(m[8:24]); target != ip {
		t.Errorf("target %v", target)
	}
	if m[24] != 2 || m[25] != 1 || !slices.Equal(m[26:32], mac) {
		t.Errorf("target link-layer option % x", m[24:])
	}
	// A valid checksum makes the sum over pseudo-header and message 0.
	var src, dst [16]byte
	copy(src[:], h[8:24])
	copy(dst[:], h[24:40])
	if c := icmp6Checksum(src, dst, m); c != 0 {
		t.Errorf("checksum does not verify: %#04x", c)
	}
}

// fakeTags is the cluster's tag view, changed by the test.
type fakeTags struct {
	mu     sync.Mutex
	active map[string]bool
}

func (f *fakeTags) Tags() []cluster.TagView {
	f.mu.Lock()
	defer f.mu.Unlock()
	var out []cluster.TagView
	for _, n := range []string{"vip-a", "vip3-a", "other"} {
		out = append(out, cluster.TagView{Name: n, Active: f.active[n]})
	}
	return out
}

func (f *fakeTags) set(tag string, active bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.active[tag] = active
}

func testVIPs(t *testing.T) []VIP {
	vips, err := Parse([]Config{
		{Tag: "vip-a", Address: "203.0.113.21/32", Interface: "lan0"},
		{Tag: "vip3-a", Address: "203.0.113.31/32", Mode: ModeL3},
	}, nil)
	if err != nil {
		t.Fatal(err)
	}
	return vips
}

func pfx(s ...string) []netip.Prefix {
	var out []netip.Prefix
	for _, x := range s {
		out = append(out, netip.MustParsePrefix(x))
	}
	return out
}

func TestMoverFollowsTags(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		rec := &Recorder{}
		tags := &fakeTags{active: map[string]bool{}}
		var mu sync.Mutex
		var extras [][]bgp.Advertisement
		reg := prometheus.NewRegistry()
		m := NewMover(testVIPs(t), rec, tags, WithRegisterer(reg), WithAdvertiser(func(a []bgp.Advertisement) {
			mu.Lock()
			extras = append(extras, a)
			mu.Unlock()
		}))
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan struct{})
		go func() { m.Run(ctx); close(done) }()
		synctest.Wait()
		// Start: nothing owned, so the reconcile removes any stray VIP.
		if got := rec.Sets(); len(got) != 1 || len(got[0]) != 0 {
			t.Fatalf("first Set %v, want the empty reconcile", got)
		}

		// Taking both tags: both VIPs at once, the l3 one announced.
		start := time.Now()
		tags.set("vip-a", true)
		tags.set("vip3-a", true)
		m.Notify(cluster.Event{Kind: cluster.EventTagOwner, Tag: "vip-a", Active: true})
		synctest.Wait()
		if got := rec.Have(); !slices.Equal(got, pfx("203.0.113.21/32", "203.0.113.31/32")) || time.Since(start) != 0 {
			t.Fatalf("after taking the tags: %v after %v", got, time.Since(start))
		}
		mu.Lock()
		if len(extras) != 1 || len(extras[0]) != 1 || extras[0][0].Prefix != netip.MustParsePrefix("203.0.113.31/32") {
			t.Errorf("l3 advertisements %v", extras)
		}
		mu.Unlock()
		if got := testutil.ToFloat64(m.m.held.WithLabelValues("203.0.113.31/32", "vip3-a")); got != 1 {
			t.Errorf("anyedge_vip_held %v", got)
		}

		// An unrelated event changes nothing; a missed one is caught by
		// the resync.
		m.Notify(cluster.Event{Kind: cluster.EventTagOwner, Tag: "other"})
		tags.set("vip3-a", false)
		synctest.Wait()
		if got := rec.Have(); len(got) != 2 {
			t.Fatalf("acted on an unrelated event: %v", got)
		}
		time.Sleep(2 * time.Second)
		synctest.Wait()
		if got := rec.Have(); !slices.Equal(got, pfx("203.0.113.21/32")) {
			t.Fatalf("after the resync: %v", got)
		}
		mu.Lock()
		if last := extras[len(extras)-1]; len(last) != 0 {
			t.Errorf("lost l3 VIP still advertised: %v", last)
		}
		mu.Unlock()

		// A failed Set is retried at the next resync.
		rec.FailNext(errors.New("netlink busy"))
		tags.set("vip3-a", true)
		m.Notify(cluster.Event{Kind: cluster.EventTagOwner, Tag: "vip3-a", Active: true})
		synctest.Wait()
		mu.Lock()
		if last := extras[len(extras)-1]; len(last) != 0 {
			t.Errorf("l3 VIP advertised before its address was in place: %v", last)
		}
		mu.Unlock()
		time.Sleep(2 * time.Second)
		synctest.Wait()
		if got := rec.Have(); len(got) != 2 {
			t.Fatalf("not retried: %v", got)
		}

		cancel()
		<-done
		if err := m.Release(); err != nil {
			t.Fatal(err)
		}
		if got := rec.Have(); len(got) != 0 {
			t.Errorf("after Release: %v", got)
		}
		if problems, err := testutil.GatherAndLint(reg); err != nil || len(problems) > 0 {
			t.Errorf("promlint: %v %v", err, problems)
		}
	})
}
