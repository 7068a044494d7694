package nat

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/anyedge/anyedge/edge/location"
)

// plainRanger hides Memory's RangeNATed: RangeSource must then list all.
type plainRanger struct{ m *location.Memory }

func (p plainRanger) Range(fn func(string, []location.Binding) bool) { p.m.Range(fn) }

func TestRangeSourceNATedOnly(t *testing.T) {
	ctx := context.Background()
	m := location.NewMemory()
	now := time.Now()
	for i := range 6 {
		_, err := m.Save(ctx, &location.SaveRequest{AoR: fmt.Sprintf("sip:u%d@x", i), CallID: "c", CSeq: 1, Now: now,
			Contacts: []location.Binding{{Contact: "sip:u@192.0.2.1", Q: 1000, Expires: now.Add(time.Hour),
				Received: "198.51.100.7:4000", NATed: i%2 == 0}}})
		if err != nil {
			t.Fatal(err)
		}
	}
	bs, err := RangeSource{R: m}.Bindings(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(bs) != 3 {
		t.Fatalf("RangeSource over Memory gave %d bindings, want the 3 NATed", len(bs))
	}
	for _, b := range bs {
		if !b.NATed {
			t.Fatalf("not NATed: %+v", b)
		}
	}
	all, err := RangeSource{R: plainRanger{m}}.Bindings(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(all) != 6 {
		t.Fatalf("RangeSource over a plain Ranger gave %d bindings, want 6", len(all))
	}
}
