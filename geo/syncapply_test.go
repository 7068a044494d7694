package geo

import (
	"context"
	"flag"
	"testing"
	"time"
)

var applyN = flag.Int("geo.apply.n", 200_000, "BenchmarkSyncApply's number of bindings")

// snapshotChunks encodes the snapshot of kind as a donor streams it:
// chunks of whole records within the cluster's default chunk budget, each
// record a slice of its chunk's buffer, as the receiver's Apply gets them.
func snapshotChunks(s *Service, kind uint8) [][][]byte {
	const budget = 64<<10 - 64 // cluster's SyncChunkBytes minus its header room
	rd := s.reader(kind, 0, len(s.st.shards))
	var out [][][]byte
	var pend [][]byte
	done := false
	for !done || len(pend) > 0 {
		if len(pend) == 0 {
			pend, done = rd.Next(pend[:0], budget)
			if len(pend) == 0 {
				break
			}
		}
		n, size := 0, 0
		for n < len(pend) && (n == 0 || size+4+len(pend[n]) <= budget) {
			size += 4 + len(pend[n])
			n++
		}
		buf := make([]byte, 0, size)
		recs := make([][]byte, n)
		for i, r := range pend[:n] {
			at := len(buf)
			buf = append(buf, r...)
			recs[i] = buf[at:len(buf):len(buf)]
		}
		out = append(out, recs)
		pend = pend[n:]
	}
	return out
}

// filledDonor is a node holding n realistic bindings homed on it.
func filledDonor(b *testing.B, n int) *Service {
	b.Helper()
	donor, err := New(Config{}, newFake(1, map[uint32]string{1: "eu", 2: "eu"}))
	if err != nil {
		b.Fatal(err)
	}
	donor.inline = true
	now := time.Now()
	ctx := context.Background()
	for i := range n {
		if _, err := donor.Save(ctx, realistic(i, now)); err != nil {
			b.Fatal(err)
		}
	}
	return donor
}

// BenchmarkSyncApply is the receiving side of a new node's sync: a fresh
// node applies the metadata and binding snapshots of a donor holding n
// bindings (-geo.apply.n, default 200,000), chunk by chunk as the cluster
// hands them over, without sockets. TestSync1MBindings is the same over
// two real nodes.
func BenchmarkSyncApply(b *testing.B) {
	n := *applyN
	donor := filledDonor(b, n)
	meta, bind := snapshotChunks(donor, recMeta), snapshotChunks(donor, recBind)
	donor = nil
	var cpu time.Duration
	b.ReportAllocs()
	b.ResetTimer()
	for b.Loop() {
		b.StopTimer()
		rcv, err := New(Config{}, newFake(2, map[uint32]string{1: "eu", 2: "eu"}))
		if err != nil {
			b.Fatal(err)
		}
		rcv.inline = true
		cpu0 := cpuTime()
		b.StartTimer()
		for _, c := range meta {
			rcv.apply(MetaCap, c)
		}
		for _, c := range bind {
			rcv.apply(rcv.bindCap, c)
		}
		b.StopTimer()
		cpu += cpuTime() - cpu0
		if got := rcv.st.replica.Load(); got != int64(n) {
			b.Fatalf("%d replicas after the sync, want %d", got, n)
		}
		if got := rcv.st.metaLive.Load(); got != int64(n) {
			b.Fatalf("%d metadata entries after the sync, want %d", got, n)
		}
		b.StartTimer()
	}
	b.ReportMetric(float64(n)*float64(b.N)/b.Elapsed().Seconds(), "bindings/s")
	// CPU time of the process (the garbage collector included) per
	// binding: unlike wall time it does not depend on the machine's load.
	b.ReportMetric(float64(cpu)/float64(n*b.N), "cpu-ns/binding")
}

// BenchmarkSnapshotRead is the donor's side of a new node's sync: it reads
// the metadata and binding snapshots of n bindings (-geo.apply.n) as the
// cluster's sync streams do, without sockets.
func BenchmarkSnapshotRead(b *testing.B) {
	n := *applyN
	donor := filledDonor(b, n)
	const budget = 64<<10 - 64
	var cpu time.Duration
	b.ResetTimer()
	for b.Loop() {
		cpu0 := cpuTime()
		recs := 0
		for _, kind := range []uint8{recMeta, recBind} {
			rd := donor.snapshot(kind)
			var dst [][]byte
			for done := false; !done; {
				dst, done = rd.Next(dst[:0], budget)
				recs += len(dst)
			}
		}
		cpu += cpuTime() - cpu0
		if recs != 2*n {
			b.Fatalf("%d records read, want %d", recs, 2*n)
		}
	}
	b.ReportMetric(float64(cpu.Nanoseconds())/float64(b.N)/float64(n), "cpu-ns/binding")
}
