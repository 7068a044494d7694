package registrar

import (
	"context"
	"errors"
	"sync"
	"testing"

	"github.com/emiago/sipgo/sip"

	"github.com/anyedge/anyedge/edge/location"
)

// deferStore is a location.DeferredSaver over the in-memory store that
// holds each confirmation until the test releases it, or confirms inline
// (before SaveDeferred returns) when early is set.
type deferStore struct {
	*location.Memory
	mu      sync.Mutex
	early   bool
	fail    error
	pending []func()
}

func (d *deferStore) SaveDeferred(ctx context.Context, req *location.SaveRequest, confirmed func()) (*location.SaveResult, error) {
	if d.fail != nil {
		return nil, d.fail
	}
	res, err := d.Save(ctx, req)
	if err != nil {
		return nil, err
	}
	if d.early {
		confirmed()
	} else {
		d.mu.Lock()
		d.pending = append(d.pending, confirmed)
		d.mu.Unlock()
	}
	return res, nil
}

func (d *deferStore) release() {
	d.mu.Lock()
	p := d.pending
	d.pending = nil
	d.mu.Unlock()
	for _, fn := range p {
		fn()
	}
}

// HandleAsync sends the 200 of a saved change only once the store has
// confirmed it, exactly once, whichever comes first; a rejection, a fetch
// and a store error go at once.
func TestHandleAsync(t *testing.T) {
	ds := &deferStore{Memory: location.NewMemory()}
	r, err := New(Config{}, ds)
	if err != nil {
		t.Fatal(err)
	}
	var sent []*sip.Response
	send := func(res *sip.Response) { sent = append(sent, res) }
	handle := func(lines ...string) {
		r.HandleAsync(context.Background(), parse(t, register(lines...)), udpSrc, send)
	}

	handle()
	if len(sent) != 0 {
		t.Fatalf("sent %d before the store confirmed", len(sent))
	}
	ds.release()
	if len(sent) != 1 || sent[0].StatusCode != 200 || len(values(sent[0], "Contact")) != 1 {
		t.Fatalf("after confirming: %d responses, first %v", len(sent), sent)
	}

	ds.early = true // confirmed before SaveDeferred returns
	handle("CSeq: 2 REGISTER")
	if len(sent) != 2 || sent[1].StatusCode != 200 {
		t.Fatalf("confirmed early: %d responses", len(sent))
	}
	ds.early = false

	handle("-Contact") // a fetch saves nothing
	handle("Expires: banana")
	if len(sent) != 4 || sent[2].StatusCode != 200 || sent[3].StatusCode != 400 {
		t.Fatalf("fetch and bad request not sent at once: %d responses", len(sent))
	}
	ds.fail = location.ErrUnavailable
	handle("CSeq: 3 REGISTER")
	if len(sent) != 5 || sent[4].StatusCode != 500 {
		t.Fatalf("store error not sent at once: %d responses", len(sent))
	}
	ds.release()
	if len(sent) != 5 {
		t.Fatalf("%d responses: something was sent twice", len(sent))
	}
}

// With a store that only saves synchronously, HandleAsync is Handle.
func TestHandleAsyncSyncStore(t *testing.T) {
	r, err := New(Config{}, errStore{errors.New("boom")})
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	r.HandleAsync(context.Background(), parse(t, register()), udpSrc, func(res *sip.Response) {
		n++
		if res.StatusCode != 500 {
			t.Errorf("status %d", res.StatusCode)
		}
	})
	if n != 1 {
		t.Fatalf("send called %d times", n)
	}
}
