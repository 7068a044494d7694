package location

import (
	"context"
	"fmt"
	"os"
	"runtime"
	"runtime/debug"
	"strconv"
	"strings"
	"testing"
	"time"
)

// realistic returns the REGISTER of phone i as the registrar would save it:
// a NATed UA with an RFC 5626 instance, the worst realistic case for size.
func realistic(i int, now time.Time, exp time.Duration) *SaveRequest {
	aor := fmt.Sprintf("sip:u%07d@example.com", i)
	return &SaveRequest{
		AoR: aor, CallID: fmt.Sprintf("a84b4c76e66710-%07d@192.168.1.23", i), CSeq: 1, Now: now,
		MaxContacts: 10, Policy: PolicyReplaceOldest,
		Contacts: []Binding{{
			Contact:    fmt.Sprintf("sip:u%07d@192.168.1.23:5060;transport=udp", i),
			InstanceID: fmt.Sprintf("<urn:uuid:00000000-0000-1000-8000-%012d>", i), RegID: 1,
			Q: 1000, Expires: now.Add(exp), UserAgent: "Yealink SIP-T46S 66.86.0.15",
			Received:  fmt.Sprintf("198.51.%d.%d:%d", i>>16&255, i>>8&255, 1024+i&0xffff),
			Transport: "udp", Socket: "udp:203.0.113.10:5060", NATed: true,
		}},
	}
}

func fill(tb testing.TB, m *Memory, n int, now time.Time, exp func(i int) time.Duration) {
	ctx := context.Background()
	for i := range n {
		if _, err := m.Save(ctx, realistic(i, now, exp(i))); err != nil {
			tb.Fatal(err)
		}
	}
}

// TestMemoryMillionExpiry stores 1,000,000 bindings (100,000 under -race)
// with expiries spread over an hour and reaps them in one-second ticks:
// each tick removes exactly what is due and the heap visits one entry per
// AoR in total, never a full scan.
func TestMemoryMillionExpiry(t *testing.T) {
	if testing.Short() {
		t.Skip("1M bindings: skipped with -short")
	}
	n := 1_000_000
	if raceEnabled {
		n = 100_000
	}
	clk := &fakeClock{t: t0}
	m := NewMemory(WithClock(clk.Now))
	fill(t, m, n, t0, func(i int) time.Duration { return time.Duration(60+i%3600) * time.Second })
	if m.Len() != n {
		t.Fatalf("Len %d", m.Len())
	}
	total := 0
	for sec := 1; sec <= 3660; sec++ {
		now := t0.Add(time.Duration(sec) * time.Second)
		visited := m.Stats().Visited
		got := m.Expire(now)
		want := 0
		if sec >= 60 && sec < 3660 {
			want = n / 3600 // bindings due exactly this second
			if (sec - 60) < n%3600 {
				want++
			}
		}
		if got != want || m.Stats().Visited-visited != uint64(want) {
			t.Fatalf("second %d: reaped %d visiting %d entries, want %d", sec, got, m.Stats().Visited-visited, want)
		}
		total += got
	}
	if st := m.Stats(); total != n || m.Len() != 0 || st.Visited != uint64(n) || st.AoRs != 0 {
		t.Fatalf("reaped %d, Len %d, stats %+v", total, m.Len(), st)
	}
}

func BenchmarkSave(b *testing.B) {
	m := NewMemory()
	now := time.Now()
	reqs := make([]*SaveRequest, 100_000)
	for i := range reqs {
		reqs[i] = realistic(i, now, time.Hour)
	}
	ctx := context.Background()
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; b.Loop(); i++ {
		r := reqs[i%len(reqs)]
		r.CSeq = uint32(i/len(reqs) + 1) // a refresh after the first round
		if _, err := m.Save(ctx, r); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkLookup(b *testing.B) {
	m := NewMemory()
	const n = 100_000
	fill(b, m, n, time.Now(), func(int) time.Duration { return time.Hour })
	aors := make([]string, n)
	for i := range aors {
		aors[i] = fmt.Sprintf("sip:u%07d@example.com", i)
	}
	ctx := context.Background()
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; b.Loop(); i++ {
		if bs, _ := m.Lookup(ctx, aors[i%n]); len(bs) != 1 {
			b.Fatal("missing binding")
		}
	}
}

// BenchmarkMemoryPerBinding reports the heap growth per stored binding for
// 1,000,000 realistic bindings (one per AoR, the worst case: the AoR's
// map, heap and key costs are not shared).
func BenchmarkMemoryPerBinding(b *testing.B) {
	const n = 1_000_000
	for b.Loop() {
		runtime.GC()
		var before, after runtime.MemStats
		runtime.ReadMemStats(&before)
		m := NewMemory()
		fill(b, m, n, time.Now(), func(int) time.Duration { return time.Hour })
		runtime.GC()
		runtime.ReadMemStats(&after)
		b.ReportMetric(float64(after.HeapAlloc-before.HeapAlloc)/n, "bytes/binding")
		runtime.KeepAlive(m)
	}
}

// sipbenchShaped is the REGISTER of user i of bench/sipbench's memory
// test as edged saves it: SIPp's reg_unique scenario from one of four
// processes on 127.0.0.1, no instance, not NATed.
func sipbenchShaped(i int, now time.Time) *SaveRequest {
	port := 5061 + i%4
	return &SaveRequest{
		AoR: fmt.Sprintf("sip:m%du%d@example.com", i%4, i), CallID: fmt.Sprintf("%d-%d@127.0.0.1", i, 100000+i%4), CSeq: 1, Now: now,
		MaxContacts: 10, Policy: PolicyReplaceOldest,
		Contacts: []Binding{{
			Contact: fmt.Sprintf("sip:m%du%d@127.0.0.1:%d", i%4, i, port), Q: 1000, Expires: now.Add(time.Hour),
			Received: fmt.Sprintf("127.0.0.1:%d", port), Transport: "udp", Socket: "udp:127.0.0.1:5060",
			UserAgent: "SIPp/v3.7.3",
		}},
	}
}

// rssBytes is the process's resident set (Linux; 0 elsewhere).
func rssBytes() int64 {
	b, err := os.ReadFile("/proc/self/statm")
	if err != nil {
		return 0
	}
	f := strings.Fields(string(b))
	if len(f) < 2 {
		return 0
	}
	pages, _ := strconv.ParseInt(f[1], 10, 64)
	return pages * int64(os.Getpagesize())
}

// BenchmarkRSSPerBinding stores 1,000,000 bindings shaped like sipbench's
// and reports the growth per binding of the resident set after a GC
// (rss-B/binding: what the process keeps without help), after returning
// free heap pages to the OS (rss-freed-B/binding), of the live Go heap
// (heap-B/binding), and of the store's own accounting (arena-B/binding).
// Run it alone (-run '^$' -bench RSSPerBinding -benchtime 1x): the RSS is
// the whole process's.
func BenchmarkRSSPerBinding(b *testing.B) {
	const n = 1_000_000
	for b.Loop() {
		runtime.GC()
		debug.FreeOSMemory()
		var before, after runtime.MemStats
		runtime.ReadMemStats(&before)
		rss0 := rssBytes()
		m := NewMemory()
		now := time.Now()
		ctx := context.Background()
		for i := range n {
			if _, err := m.Save(ctx, sipbenchShaped(i, now)); err != nil {
				b.Fatal(err)
			}
		}
		runtime.GC()
		rss1 := rssBytes()
		debug.FreeOSMemory()
		rss2 := rssBytes()
		runtime.ReadMemStats(&after)
		b.ReportMetric(float64(rss1-rss0)/n, "rss-B/binding")
		b.ReportMetric(float64(rss2-rss0)/n, "rss-freed-B/binding")
		b.ReportMetric(float64(int64(after.HeapAlloc)-int64(before.HeapAlloc))/n, "heap-B/binding")
		b.ReportMetric(float64(arenaBytes(m))/n, "arena-B/binding")
		runtime.KeepAlive(m)
	}
}
