package auth

import "container/list"

// lru is a bounded map that evicts the least recently used entry. It is not
// safe for concurrent use: its owners lock around it. Both tables built on
// it (nonce counts, source failures) hold state an attacker can make us
// create, so they must be bounded.
type lru[K comparable, V any] struct {
	max   int
	items map[K]*list.Element
	order list.List // front: most recent; values are *lruItem
}

type lruItem[K comparable, V any] struct {
	key K
	val V
}

func newLRU[K comparable, V any](max int) *lru[K, V] {
	return &lru[K, V]{max: max, items: make(map[K]*list.Element)}
}

// get returns a pointer to the value (valid until the next put or remove)
// and marks it used.
func (l *lru[K, V]) get(k K) (*V, bool) {
	e, ok := l.items[k]
	if !ok {
		return nil, false
	}
	l.order.MoveToFront(e)
	return &e.Value.(*lruItem[K, V]).val, true
}

// put stores v under k. If that evicts another entry, it is returned.
func (l *lru[K, V]) put(k K, v V) (evicted *lruItem[K, V]) {
	if e, ok := l.items[k]; ok {
		e.Value.(*lruItem[K, V]).val = v
		l.order.MoveToFront(e)
		return nil
	}
	l.items[k] = l.order.PushFront(&lruItem[K, V]{key: k, val: v})
	if l.order.Len() > l.max {
		last := l.order.Back()
		it := l.order.Remove(last).(*lruItem[K, V])
		delete(l.items, it.key)
		return it
	}
	return nil
}

func (l *lru[K, V]) remove(k K) {
	if e, ok := l.items[k]; ok {
		l.order.Remove(e)
		delete(l.items, k)
	}
}

func (l *lru[K, V]) len() int { return l.order.Len() }

// each calls fn for every entry, most recent first.
func (l *lru[K, V]) each(fn func(k K, v *V)) {
	for e := l.order.Front(); e != nil; e = e.Next() {
		it := e.Value.(*lruItem[K, V])
		fn(it.key, &it.val)
	}
}
