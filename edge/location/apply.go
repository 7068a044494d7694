package location

import (
	"slices"
	"strings"
)

// Apply runs RFC 3261 §10.3 steps 6–8 on the bindings of one AoR and returns
// the bindings that must be stored next plus what the 200 OK lists. It is a
// pure function: every backend (memory, replicated, Redis) calls it inside
// its own per-AoR atomic section, so they all behave the same.
//
// cur is never modified. On error nothing changes: the caller keeps cur.
//
// Rules, in order:
//   - Bindings of cur already expired at req.Now are dropped (they do not
//     count towards MaxContacts and are not listed).
//   - Call-ID/CSeq (step 7): if a binding touched by the request (the
//     wildcard touches all) has the request's Call-ID and a CSeq not lower
//     than the request's, the request is out of order: ErrOutOfOrder. A
//     different Call-ID means the UA rebooted: the binding is replaced.
//   - Wildcard (step 6): removes every binding. The registrar has already
//     checked that it came alone and with Expires: 0.
//   - Each contact (step 8) is matched by Binding.Key: the RFC 5626
//     instance (+reg-id) when present, so a phone re-registering from a new
//     address replaces its old binding; else the contact URI. An expiry at or
//     before Now removes the binding; otherwise it is added or refreshed.
//     A key repeated within one request: the last occurrence wins.
//   - MaxContacts (> 0) caps the AoR. PolicyReject refuses a request that
//     adds a binding beyond the cap (ErrTooManyContacts); a pure refresh of
//     an AoR already over the cap (the cap was lowered) is still accepted.
//     PolicyReplaceOldest evicts the bindings with the oldest Registered
//     until the AoR fits; among equals, lower q goes first.
//
// The result is sorted by q (highest first), then most recently registered,
// then contact, so responses and lookups are deterministic. res.Bindings is
// next itself (not a copy): a backend that keeps next as is must copy one
// of them before returning res.
func Apply(cur []Binding, req *SaveRequest) (next []Binding, res *SaveResult, err error) {
	if req == nil || req.AoR == "" || (req.Wildcard && len(req.Contacts) > 0) {
		return nil, nil, ErrInvalid
	}
	res = &SaveResult{}
	next = make([]Binding, 0, len(cur)+len(req.Contacts))
	for _, b := range cur {
		if b.Expires.After(req.Now) {
			next = append(next, b)
		}
	}

	if req.Wildcard {
		for i := range next {
			if outOfOrder(&next[i], req) {
				return nil, nil, ErrOutOfOrder
			}
		}
		res.Removed = len(next)
		res.Bindings = next[:0]
		return next[:0], res, nil
	}

	// keys[i] is next[i]'s key; before holds the keys stored before this
	// request, touched those this request wrote (so a key repeated within
	// the request is not mistaken for an out-of-order retry).
	keys := make([]bkey, len(next), cap(next))
	var before, touched keySet
	for i := range next {
		keys[i] = keyOf(&next[i])
		before.add(keys[i])
	}
	for i := range req.Contacts {
		c := req.Contacts[i]
		key := keyOf(&c)
		idx := slices.Index(keys, key)
		if idx >= 0 && !touched.has(key) && outOfOrder(&next[idx], req) {
			return nil, nil, ErrOutOfOrder
		}
		touched.add(key)

		if !c.Expires.After(req.Now) { // expires=0: remove
			if idx >= 0 {
				next = slices.Delete(next, idx, idx+1)
				keys = slices.Delete(keys, idx, idx+1)
			}
			continue
		}
		c.AoR = req.AoR
		c.CallID = req.CallID
		c.CSeq = req.CSeq
		c.Registered = req.Now
		if idx >= 0 {
			next[idx] = c
		} else {
			next = append(next, c)
			keys = append(keys, key)
		}
	}

	added := 0
	for _, k := range keys {
		if !before.has(k) {
			added++
		}
	}
	var evicted keySet
	if limit := req.MaxContacts; limit > 0 && len(next) > limit {
		if req.Policy != PolicyReplaceOldest {
			if added > 0 {
				return nil, nil, ErrTooManyContacts
			}
		} else {
			next, keys, evicted = evictOldest(next, keys, limit)
		}
	}

	res.Evicted = evicted.len()
	kept, evictedOld := 0, 0
	for _, k := range keys {
		switch {
		case !before.has(k):
			res.Added++
		case touched.has(k):
			res.Refreshed++
			kept++
		default:
			kept++
		}
	}
	for _, k := range evicted.list {
		if before.has(k) {
			evictedOld++
		}
	}
	for k := range evicted.m {
		if before.has(k) {
			evictedOld++
		}
	}
	res.Removed = before.len() - kept - evictedOld
	SortBindings(next)
	// The result shares next's array: the memory store encodes next and
	// keeps only that, so a copy would be wasted. A backend that keeps next
	// itself must copy before returning res.
	res.Bindings = next
	return next, res, nil
}

// evictOldest keeps the limit most recently registered bindings (among
// equals, the higher q) and returns them with their keys and the keys it
// dropped.
func evictOldest(bs []Binding, keys []bkey, limit int) ([]Binding, []bkey, keySet) {
	idx := make([]int, len(bs))
	for i := range idx {
		idx[i] = i
	}
	slices.SortStableFunc(idx, func(a, b int) int {
		if c := bs[a].Registered.Compare(bs[b].Registered); c != 0 {
			return c
		}
		return bs[a].Q - bs[b].Q
	})
	var evicted keySet
	for _, i := range idx[:len(bs)-limit] {
		evicted.add(keys[i])
	}
	keptB := make([]Binding, 0, limit)
	keptK := make([]bkey, 0, limit)
	for i := range bs {
		if !evicted.has(keys[i]) {
			keptB = append(keptB, bs[i])
			keptK = append(keptK, keys[i])
		}
	}
	return keptB, keptK, evicted
}

// bkey is Binding.Key as a comparable value, so Apply can match bindings
// without building strings.
type bkey struct {
	instance string
	regID    int
	contact  string
}

func keyOf(b *Binding) bkey {
	if b.InstanceID != "" {
		return bkey{instance: b.InstanceID, regID: b.RegID}
	}
	return bkey{contact: b.Contact}
}

// keySet is a set of keys that stays a slice while small: an AoR has a few
// bindings and a REGISTER one contact, where a linear scan beats a map. It
// switches to a map past smallSet so AoRs without a contact cap stay linear.
type keySet struct {
	list []bkey
	m    map[bkey]struct{}
}

const smallSet = 16

func (s *keySet) add(k bkey) {
	if s.m != nil {
		s.m[k] = struct{}{}
		return
	}
	if slices.Contains(s.list, k) {
		return
	}
	s.list = append(s.list, k)
	if len(s.list) > smallSet {
		s.m = make(map[bkey]struct{}, 2*len(s.list))
		for _, k := range s.list {
			s.m[k] = struct{}{}
		}
		s.list = nil
	}
}

func (s *keySet) has(k bkey) bool {
	if s.m != nil {
		_, ok := s.m[k]
		return ok
	}
	return slices.Contains(s.list, k)
}

func (s *keySet) len() int { return len(s.list) + len(s.m) }

// outOfOrder is RFC 3261 §10.3 step 7: same Call-ID, CSeq not higher.
func outOfOrder(b *Binding, req *SaveRequest) bool {
	return b.CallID == req.CallID && req.CSeq <= b.CSeq
}

// SortBindings orders bindings the way Lookup and the 200 OK list them:
// highest q first, then the most recently registered, then by contact so
// equal bindings have a stable order.
func SortBindings(bs []Binding) {
	slices.SortFunc(bs, func(a, b Binding) int {
		if a.Q != b.Q {
			return b.Q - a.Q
		}
		if c := b.Registered.Compare(a.Registered); c != 0 {
			return c
		}
		return strings.Compare(a.Contact, b.Contact)
	})
}
