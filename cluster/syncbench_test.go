package cluster

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"runtime"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/anyedge/anyedge/cluster/core"
	"github.com/anyedge/anyedge/cluster/wire"
	"github.com/anyedge/anyedge/internal/testprof"
)

// Snapshot streaming between two processes on loopback. The target (from
// the issue) is 1,000,000 records of about 200 bytes synced in under 3 s.
//
// The donor is this test binary re-executed (TestSyncDonorProcess with
// donorEnv set), so donor and receiver have a CPU scheduler, a GC and a
// socket each, as in production. Time runs from the receiver's Start until
// it is synced with every record.
//
//	go test -run '^$' -bench BenchmarkSnapshotSync -benchtime 1x -count 3 ./cluster
//	ANYEDGE_SYNC_1M=1 go test -run TestSnapshotSync1M -v ./cluster
//
// Profiles: go test -cpuprofile for the receiver, and the file named by
// ANYEDGE_SYNC_DONOR_CPUPROFILE for the donor (from the moment it is
// ready, so its records' construction is left out).

const (
	syncRecordSize = 200
	syncCap        = "bench"
	donorEnv       = "ANYEDGE_SYNC_DONOR" // record count; set only in the donor process
	donorAddrEnv   = "ANYEDGE_SYNC_DONOR_ADDR"
	// donorProfileEnv names a file for the donor's CPU profile (the
	// receiver's comes from go test -cpuprofile).
	donorProfileEnv = "ANYEDGE_SYNC_DONOR_CPUPROFILE"
	donorReady      = "DONOR READY"
	syncWait        = 2 * time.Minute // bounds every wait; a hang becomes a failure
)

// freeAddr returns a loopback address with a port that was free a moment
// ago.
func freeAddr(tb testing.TB) string {
	tb.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatal(err)
	}
	defer l.Close()
	return l.Addr().String()
}

// makeRecords builds n distinct records of exactly size bytes in one
// backing array.
func makeRecords(n, size int) [][]byte {
	buf := make([]byte, n*size)
	recs := make([][]byte, n)
	for i := range recs {
		r := buf[i*size : (i+1)*size : (i+1)*size]
		k := strconv.AppendInt([]byte("sip:user"), int64(i), 10)
		k = append(k, "@example.com;expires=3600;contact=<sip:10.0.0.1:5060>;"...)
		for j := range r {
			if j < len(k) {
				r[j] = k[j]
			} else {
				r[j] = 'a' + byte((i+j)%26)
			}
		}
		recs[i] = r
	}
	return recs
}

// sliceStore is the simplest capability that syncs: records in a slice.
// A receiver keeps each applied batch as it comes (chunks), so the
// benchmark measures the cluster and not the growth of one big slice.
type sliceStore struct {
	recs   [][]byte   // donor side
	chunks [][][]byte // receiver side, owned by the loop goroutine
	n      atomic.Int64
}

type sliceSnap struct{ recs [][]byte }

func (s *sliceSnap) Next(dst [][]byte, max int) ([][]byte, bool) {
	n := 0
	for len(s.recs) > 0 && n < max {
		dst = append(dst, s.recs[0])
		n += len(s.recs[0])
		s.recs = s.recs[1:]
	}
	return dst, len(s.recs) == 0
}

func (s *sliceStore) capability() Capability {
	return Capability{
		Name:      syncCap,
		NeedsSync: true,
		Handle:    func(uint32, wire.MsgType, []byte) {},
		Snapshot:  func() SnapshotReader { return &sliceSnap{recs: s.recs} },
		Apply: func(_ uint32, recs [][]byte) {
			// The batch and its records (which alias the frame body the
			// transport handed over) are not reused by the core: keeping
			// them costs no copy.
			s.chunks = append(s.chunks, recs)
			s.n.Add(int64(len(recs)))
		},
	}
}

// syncedSignal returns a subscriber that closes ch when the capability is
// synced.
func syncedSignal(ch chan struct{}) func(Event) {
	var once sync.Once
	return func(e Event) {
		if e.Kind == EventSyncState && e.Cap == syncCap && e.State == core.Synced {
			once.Do(func() { close(ch) })
		}
	}
}

// syncTimes is what a receiver measured, from its Start.
type syncTimes struct {
	streaming time.Duration // the sync request went out (join, handshake, topology, donor choice)
	synced    time.Duration // every record applied
	// CPU time used meanwhile by each process (0 where unknown). Unlike
	// the wall time, it hardly moves with the load of a shared machine.
	recvCPU, donorCPU time.Duration
	// Minor page faults meanwhile: on a VM whose memory is backed lazily,
	// the first touch of a page can cost tens of µs.
	recvFaults, donorFaults int64
}

// TestSyncDonorProcess is the donor half of the two-process sync; it runs
// only in the child started by startDonor.
func TestSyncDonorProcess(t *testing.T) {
	nrec, err := strconv.Atoi(os.Getenv(donorEnv))
	if err != nil {
		t.Skip("runs only as the donor process of TestSnapshotSync*/BenchmarkSnapshotSync")
	}
	st := &sliceStore{recs: makeRecords(nrec, syncRecordSize)}
	n, err := New(Config{NodeID: 1, Region: "r1", Listen: os.Getenv(donorAddrEnv), Key: testKey, Seed: true, SeedSyncDelay: 10 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	if err := n.Register(st.capability()); err != nil {
		t.Fatal(err)
	}
	synced := make(chan struct{})
	n.Subscribe(syncedSignal(synced))
	if err := n.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	defer n.Close()
	select {
	case <-synced:
	case <-time.After(syncWait):
		t.Fatal("donor never synced")
	}
	// From here on: the sync, not the records' construction.
	testprof.StartCPU(t, os.Getenv(donorProfileEnv))
	fmt.Printf("%s %s\n", donorReady, n.Addr())
	// Serve until the parent closes our stdin (or dies).
	done := make(chan struct{})
	go func() { io.Copy(io.Discard, os.Stdin); close(done) }()
	<-done
}

// lockedBuffer collects a child's output; ready closes when the donor
// says it is ready.
type lockedBuffer struct {
	mu    sync.Mutex
	b     bytes.Buffer
	ready chan struct{}
	once  sync.Once
}

func (w *lockedBuffer) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.b.Write(p)
	if w.ready != nil && bytes.Contains(w.b.Bytes(), []byte(donorReady)) {
		w.once.Do(func() { close(w.ready) })
	}
	return len(p), nil
}

func (w *lockedBuffer) String() string {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.b.String()
}

// donorProc is a running donor process.
type donorProc struct {
	addr string
	pid  int
}

// startDonor re-executes the test binary as a donor holding nrec records
// and returns once it is synced. The child is stopped at cleanup.
func startDonor(tb testing.TB, nrec int) donorProc {
	tb.Helper()
	addr := freeAddr(tb)
	args := []string{"-test.run=^TestSyncDonorProcess$", "-test.count=1"}
	cmd := exec.Command(os.Args[0], args...)
	cmd.Env = append(os.Environ(), donorEnv+"="+strconv.Itoa(nrec), donorAddrEnv+"="+addr)
	out := &lockedBuffer{ready: make(chan struct{})}
	cmd.Stdout, cmd.Stderr = out, out
	stdin, err := cmd.StdinPipe()
	if err != nil {
		tb.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		tb.Fatal(err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	tb.Cleanup(func() {
		stdin.Close()
		select {
		case err := <-exited:
			if err != nil {
				tb.Errorf("donor process: %v\n%s", err, out)
			}
		case <-time.After(10 * time.Second):
			cmd.Process.Kill()
			<-exited
			tb.Errorf("donor process did not stop; killed\n%s", out)
		}
	})
	select {
	case <-out.ready:
		return donorProc{addr: addr, pid: cmd.Process.Pid}
	case err := <-exited:
		exited <- err // for the cleanup
		tb.Fatalf("donor process exited early: %v\n%s", err, out)
	case <-time.After(syncWait):
		tb.Fatalf("donor not ready after %v\n%s", syncWait, out)
	}
	return donorProc{}
}

// syncFrom starts a receiver that joins donor and measures how long it
// takes from Start to synced with every one of nrec records.
func syncFrom(tb testing.TB, id uint32, donor donorProc, nrec int) syncTimes {
	tb.Helper()
	n, err := New(Config{NodeID: id, Region: "r1", Listen: freeAddr(tb), Key: testKey, Join: []string{donor.addr}})
	if err != nil {
		tb.Fatal(err)
	}
	st := &sliceStore{}
	if err := n.Register(st.capability()); err != nil {
		tb.Fatal(err)
	}
	synced := make(chan struct{})
	n.Subscribe(syncedSignal(synced))
	var start time.Time
	var streaming atomic.Int64
	n.Subscribe(func(e Event) {
		if e.Kind == EventSyncState && e.Cap == syncCap && e.State == core.Syncing {
			streaming.CompareAndSwap(0, int64(time.Since(start)))
		}
	})
	recv0, _ := testprof.ReadUsage(os.Getpid())
	donor0, _ := testprof.ReadUsage(donor.pid)
	start = time.Now()
	if err := n.Start(context.Background()); err != nil {
		tb.Fatal(err)
	}
	defer n.Close()
	select {
	case <-synced:
	case <-time.After(syncWait):
		tb.Fatalf("not synced after %v: %d of %d records, caps %+v", syncWait, st.n.Load(), nrec, n.Caps())
	}
	elapsed := time.Since(start)
	recv1, _ := testprof.ReadUsage(os.Getpid())
	donor1, _ := testprof.ReadUsage(donor.pid)
	if got := st.n.Load(); got != int64(nrec) {
		tb.Fatalf("synced with %d records, want %d", got, nrec)
	}
	if c := n.Caps(); len(c) != 1 || c[0].Attempts != 1 {
		tb.Fatalf("caps %+v: the sync was retried", c)
	}
	return syncTimes{streaming: time.Duration(streaming.Load()), synced: elapsed, recvCPU: recv1.CPU - recv0.CPU, donorCPU: donor1.CPU - donor0.CPU,
		recvFaults: recv1.Faults - recv0.Faults, donorFaults: donor1.Faults - donor0.Faults}
}

func reportSync(tb testing.TB, nrec int, d syncTimes) {
	mb := float64(nrec) * syncRecordSize / 1e6
	s := d.synced.Seconds()
	if b, ok := tb.(*testing.B); ok {
		b.ReportMetric(s, "s/sync")
		b.ReportMetric(d.streaming.Seconds(), "s-to-request")
		b.ReportMetric(float64(nrec)/s, "records/s")
		b.ReportMetric(mb/s, "MB/s")
		b.ReportMetric(d.recvCPU.Seconds(), "recv-cpu-s")
		b.ReportMetric(d.donorCPU.Seconds(), "donor-cpu-s")
		b.ReportMetric(float64(d.recvFaults), "recv-faults")
		b.ReportMetric(float64(d.donorFaults), "donor-faults")
		return
	}
	tb.Logf("%d records of %d bytes (%.0f MB) synced in %.3f s (sync request after %.3f s): %.0f records/s, %.1f MB/s; CPU: receiver %.2f s, donor %.2f s; minor faults: receiver %d, donor %d",
		nrec, syncRecordSize, mb, s, d.streaming.Seconds(), float64(nrec)/s, mb/s, d.recvCPU.Seconds(), d.donorCPU.Seconds(), d.recvFaults, d.donorFaults)
}

// TestSnapshotSyncTwoProcesses keeps the two-process harness working at a
// size that fits every test run.
func TestSnapshotSyncTwoProcesses(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a second process")
	}
	const nrec = 20_000
	d := syncFrom(t, 2, startDonor(t, nrec), nrec)
	reportSync(t, nrec, d)
}

// TestSnapshotSync1M checks the target. It is slow and needs the
// machine to itself, so it runs only when asked.
func TestSnapshotSync1M(t *testing.T) {
	if testing.Short() || os.Getenv("ANYEDGE_SYNC_1M") != "1" {
		t.Skip("set ANYEDGE_SYNC_1M=1 to sync 1,000,000 records between two processes")
	}
	const nrec = 1_000_000
	d := syncFrom(t, 2, startDonor(t, nrec), nrec)
	reportSync(t, nrec, d)
	if d.synced > 3*time.Second {
		t.Errorf("synced in %.2f s, target 3 s", d.synced.Seconds())
	}
}

func BenchmarkSnapshotSync(b *testing.B) {
	const nrec = 1_000_000
	donor := startDonor(b, nrec)
	b.ResetTimer()
	var total syncTimes
	for i := 0; i < b.N; i++ {
		// Each receiver is a new node id: the donor still remembers the
		// previous one.
		d := syncFrom(b, uint32(2+i), donor, nrec)
		total.synced += d.synced
		total.streaming += d.streaming
		total.recvCPU += d.recvCPU
		total.donorCPU += d.donorCPU
		total.recvFaults += d.recvFaults
		total.donorFaults += d.donorFaults
	}
	b.StopTimer()
	per := time.Duration(b.N)
	reportSync(b, nrec, syncTimes{streaming: total.streaming / per, synced: total.synced / per, recvCPU: total.recvCPU / per, donorCPU: total.donorCPU / per,
		recvFaults: total.recvFaults / int64(b.N), donorFaults: total.donorFaults / int64(b.N)})
}

// BenchmarkSnapshotCorePath is the per-record cost of the sync protocol
// without sockets: donor core, frame encoding, decoding, receiver core, in
// one goroutine. The gap to BenchmarkSnapshotSync is the shell and the
// transport.
func BenchmarkSnapshotCorePath(b *testing.B) {
	const nrec = 100_000
	recs := makeRecords(nrec, syncRecordSize)
	meta := func(id uint32) core.NodeMeta {
		return core.NodeMeta{ID: id, Incarnation: uint64(id), Region: "r1", ClusterAddr: fmt.Sprintf("n%d", id)}
	}
	b.SetBytes(nrec * syncRecordSize)
	b.ReportAllocs()
	var buf []byte
	now := time.Unix(1_700_000_000, 0)
	for b.Loop() {
		donorStore := &sliceStore{recs: recs}
		dc := donorStore.capability()
		dc.NeedsSync = false
		d := core.New(core.Config{Self: meta(1)}, now)
		d.Register(dc)
		rs := &sliceStore{}
		r := core.New(core.Config{Self: meta(2)}, now)
		r.Register(rs.capability())
		d.LinkUp(now, r.Self())
		r.LinkUp(now, d.Self())
		cores := map[uint32]*core.Core{1: d, 2: r}
		for busy := true; busy; {
			busy = false
			for _, from := range []uint32{1, 2} {
				for _, s := range cores[from].Ready().Sends {
					busy = true
					var err error
					if buf, err = wire.AppendFrame(buf[:0], s.Frame); err != nil {
						b.Fatal(err)
					}
					f, _, err := wire.Decode(buf)
					if err != nil {
						b.Fatal(err)
					}
					cores[s.To].Recv(now, from, f)
				}
			}
			r.Tick(now)
		}
		if rs.n.Load() != nrec {
			b.Fatalf("%d records synced, want %d", rs.n.Load(), nrec)
		}
	}
	b.ReportMetric(float64(b.N)*nrec/b.Elapsed().Seconds(), "records/s")
}

// TestSyncStartsWithoutWaitingForLSARefresh joins a fresh receiver to a
// synced donor again and again while the receiver's loop has a backlog of
// work (as on a node whose capabilities send a lot): each time the sync
// must start at once, not after the donor's next periodic LSA (10 s).
func TestSyncStartsWithoutWaitingForLSARefresh(t *testing.T) {
	if testing.Short() || raceEnabled {
		// It found joins stalling for 2×SyncTimeout: a busy loop read the
		// donor's LSA late, so the join address was dialed twice, the link
		// replacement made the donor flap, and the flapped donor was then
		// avoided as if it had refused.
		t.Skip("joins 8 nodes against a time bound")
	}
	donorStore := &sliceStore{recs: makeRecords(100, syncRecordSize)}
	d, err := New(Config{NodeID: 1, Region: "r1", Listen: freeAddr(t), Key: testKey, Seed: true, SeedSyncDelay: 10 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	if err := d.Register(donorStore.capability()); err != nil {
		t.Fatal(err)
	}
	ready := make(chan struct{})
	d.Subscribe(syncedSignal(ready))
	if err := d.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	<-ready
	for i := 0; i < 8; i++ {
		n, err := New(Config{NodeID: uint32(2 + i), Region: "r1", Listen: freeAddr(t), Key: testKey, Join: []string{d.Addr().String()}})
		if err != nil {
			t.Fatal(err)
		}
		st := &sliceStore{}
		if err := n.Register(st.capability()); err != nil {
			t.Fatal(err)
		}
		synced := make(chan struct{})
		n.Subscribe(syncedSignal(synced))
		if err := n.Start(context.Background()); err != nil {
			t.Fatal(err)
		}
		stop := make(chan struct{})
		var busy sync.WaitGroup
		busy.Add(1)
		go func() {
			defer busy.Done()
			for {
				select {
				case <-stop:
					return
				default:
					n.do(func() {})
					runtime.Gosched()
				}
			}
		}()
		var late bool
		select {
		case <-synced:
		case <-time.After(8 * time.Second): // under the 10 s LSA refresh it guards against
			late = true
		}
		close(stop)
		busy.Wait()
		n.Close()
		if late {
			t.Fatalf("join %d: not synced after 8 s (a 100-record sync takes milliseconds; the LSA refresh is 10 s)", i+1)
		}
	}
}
