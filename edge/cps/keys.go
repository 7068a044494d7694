package cps

// keyTable holds the counters of a keyed limit, bounded two ways: at most
// max keys (the least recently used goes first), and a key with no call
// and no peer report for idle slots is dropped by expire.
type keyTable struct {
	m    map[string]*counter
	head counter // sentinel: head.next is the most recently used
	max  int
	idle int64 // slots
	w    int

	evicted uint64 // dropped at the cap (not by idleness)
}

func newKeyTable(max int, idle int64, w int) *keyTable {
	t := &keyTable{m: map[string]*counter{}, max: max, idle: idle, w: w}
	t.head.next, t.head.prev = &t.head, &t.head
	return t
}

func (t *keyTable) len() int { return len(t.m) }

func (t *keyTable) unlink(c *counter) {
	c.prev.next, c.next.prev = c.next, c.prev
	c.prev, c.next = nil, nil
}

func (t *keyTable) pushFront(c *counter) {
	c.next, c.prev = t.head.next, &t.head
	t.head.next.prev = c
	t.head.next = c
}

// get returns the counter of key, creating it (and evicting the least
// recently used key at the cap) when create is set. It marks the key used
// at slot k.
func (t *keyTable) get(key string, k int64, create bool) *counter {
	c := t.m[key]
	if c == nil {
		if !create {
			return nil
		}
		if len(t.m) >= t.max {
			t.remove(t.head.prev)
			t.evicted++
		}
		c = newCounter(key, t.w, false)
		t.m[c.key] = c
		t.pushFront(c)
	} else if t.head.next != c {
		t.unlink(c)
		t.pushFront(c)
	}
	c.used = k
	return c
}

// getBytes is get(string(key), k, true) without allocating for a key
// already held.
func (t *keyTable) getBytes(key []byte, k int64) *counter {
	if c := t.m[string(key)]; c != nil {
		return t.get(c.key, k, false)
	}
	return t.get(string(key), k, true)
}

func (t *keyTable) remove(c *counter) {
	t.unlink(c)
	delete(t.m, c.key)
	c.gone = true
}

// expire drops the keys unused since before slot k-idle and returns how
// many it dropped.
func (t *keyTable) expire(k int64) int {
	n := 0
	for c := t.head.prev; c != &t.head && c.used < k-t.idle; c = t.head.prev {
		t.remove(c)
		n++
	}
	return n
}

// each calls fn for every counter, most recently used first.
func (t *keyTable) each(fn func(*counter)) {
	for c := t.head.next; c != &t.head; c = c.next {
		fn(c)
	}
}
