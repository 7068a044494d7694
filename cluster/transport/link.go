package transport

import (
	"bufio"
	"errors"
	"fmt"
	"net"
	"sync"
	"sync/atomic"

	"github.com/anyedge/anyedge/cluster/wire"
)

// writeBuffer is the writer's coalescing buffer: frames queued back to back
// leave in one syscall. The writer flushes whenever both queues are empty
// and after every priority frame, so nothing waits for the buffer to fill.
const writeBuffer = 64 << 10

// directWrite is the body size from which a frame skips the buffer on a
// plain TCP link: its header and body leave in one writev, so a snapshot
// chunk is not copied again on its way to the socket.
const directWrite = 16 << 10

// Link is an authenticated connection to one peer.
type Link struct {
	t        *Transport
	raw      net.Conn // the TCP conn: closing it unblocks everything, even TLS
	conn     net.Conn // raw, or the TLS conn over it
	fr       *wire.FrameReader
	peer     Hello
	remote   net.Addr
	outbound bool
	version  uint8 // negotiated wire version, stamped on frames with Version 0

	hdr  []byte           // the writer's scratch for frame headers
	prio chan *wire.Frame // control frames, always drained first
	data chan *wire.Frame // bounded data queue

	once       sync.Once
	err        error         // why the link closed; written once, before done closes
	done       chan struct{} // closed by closeWith
	writerDone chan struct{}

	framesSent, bytesSent atomic.Uint64
	framesRecv, bytesRecv atomic.Uint64
	badFrames, queueFull  atomic.Uint64
}

// LinkStats are a link's counters, read at call time.
type LinkStats struct {
	FramesSent     uint64 // frames handed to the socket
	BytesSent      uint64
	FramesReceived uint64 // good frames delivered to Handler.Frame
	BytesReceived  uint64
	BadFrames      uint64 // frames dropped as ErrBadFrame
	QueueFull      uint64 // Sends refused with ErrQueueFull
	QueueDepth     int    // data frames waiting to be written
	PriorityDepth  int    // priority frames waiting to be written
}

func newLink(t *Transport, raw, conn net.Conn, fr *wire.FrameReader, peer Hello, outbound bool, version uint8) *Link {
	return &Link{
		t:          t,
		raw:        raw,
		conn:       conn,
		fr:         fr,
		peer:       peer,
		remote:     raw.RemoteAddr(),
		outbound:   outbound,
		version:    version,
		prio:       make(chan *wire.Frame, priorityQueueLen),
		data:       make(chan *wire.Frame, t.cfg.SendQueue),
		done:       make(chan struct{}),
		writerDone: make(chan struct{}),
	}
}

// Peer is what the peer said about itself in the handshake.
func (l *Link) Peer() Hello { return l.peer }

// RemoteAddr is the peer's address.
func (l *Link) RemoteAddr() net.Addr { return l.remote }

// Outbound reports whether we dialed this link.
func (l *Link) Outbound() bool { return l.outbound }

// Done is closed when the link closes (LinkDown may still be pending).
func (l *Link) Done() <-chan struct{} { return l.done }

// Send queues f without blocking. Frames with wire.FlagPriority go to the
// priority queue, which the writer always drains first, so heartbeats
// overtake queued data; the rest go to the bounded data queue. A full
// queue returns ErrQueueFull: the caller decides whether to drop, retry or
// close the link. Leave f.Version 0 to send at the version negotiated with
// the peer.
//
// The link keeps f until it is written: the caller must not modify it
// after Send, but may Send the same frame on several links.
func (l *Link) Send(f *wire.Frame) error {
	if err := wire.Validate(f); err != nil {
		return err
	}
	select {
	case <-l.done:
		return ErrLinkClosed
	default:
	}
	q := l.data
	if f.Flags&wire.FlagPriority != 0 {
		q = l.prio
	}
	select {
	case q <- f:
		return nil
	default:
		l.queueFull.Add(1)
		return ErrQueueFull
	}
}

// Close closes the link. Frames still queued are dropped. Idempotent;
// LinkDown follows on the link's goroutine.
func (l *Link) Close() { l.closeWith(ErrLinkClosed) }

// Stats returns the link's counters.
func (l *Link) Stats() LinkStats {
	return LinkStats{
		FramesSent:     l.framesSent.Load(),
		BytesSent:      l.bytesSent.Load(),
		FramesReceived: l.framesRecv.Load(),
		BytesReceived:  l.bytesRecv.Load(),
		BadFrames:      l.badFrames.Load(),
		QueueFull:      l.queueFull.Load(),
		QueueDepth:     len(l.data),
		PriorityDepth:  len(l.prio),
	}
}

// closeWith records the first reason and closes the connection, which
// unblocks the reader and the writer.
func (l *Link) closeWith(err error) {
	l.once.Do(func() {
		l.err = err
		close(l.done)
		l.raw.Close()
	})
}

// readLoop owns all handler callbacks of the link: LinkUp, then frames,
// then LinkDown once the writer has stopped too.
func (l *Link) readLoop() {
	defer l.t.wg.Done()
	h := l.t.h
	h.LinkUp(l)
	var err error
	for {
		var f *wire.Frame
		if f, err = l.fr.ReadFrame(); err != nil {
			if errors.Is(err, wire.ErrBadFrame) {
				// The length was sane, so the stream is still in sync.
				l.badFrames.Add(1)
				h.BadFrame(l, err)
				continue
			}
			break // ErrTooLarge (cannot resync), EOF, or a socket error
		}
		l.framesRecv.Add(1)
		l.bytesRecv.Add(uint64(wire.EncodedLen(f)))
		h.Frame(l, f)
	}
	l.closeWith(err)
	<-l.writerDone
	l.t.removeLink(l)
	l.t.log.Info("cluster link down", "peer", l.peer.NodeID, "remote", l.remote.String(), "err", l.err)
	h.LinkDown(l, l.err)
}

// writeLoop drains the priority queue first, then data, coalescing frames
// in a bufio.Writer that is flushed whenever both queues run dry.
func (l *Link) writeLoop() {
	defer l.t.wg.Done()
	defer close(l.writerDone)
	bw := bufio.NewWriterSize(l.conn, writeBuffer)
	for {
		f, ok := l.next(bw)
		if !ok {
			return
		}
		g := *f // shallow copy: f may be shared with other links
		if g.Version == 0 {
			g.Version = l.version
		}
		n, err := l.write(bw, &g)
		if g.Release != nil {
			g.Release(g.Body) // on the wire (or never going to be)
		}
		if errors.Is(err, errEncode) {
			// Send validated it; only a frame changed after Send gets here.
			l.t.log.Error("cluster link dropped an unencodable frame", "peer", l.peer.NodeID, "err", err)
			continue
		}
		if err != nil {
			l.closeWith(err)
			return
		}
		l.framesSent.Add(1)
		l.bytesSent.Add(uint64(n))
		// A heartbeat leaves now, not when the buffer next fills up behind
		// a steady trickle of data. Priority traffic is a few frames a
		// second, so the extra syscall is free.
		if g.Flags&wire.FlagPriority != 0 {
			if err := bw.Flush(); err != nil {
				l.closeWith(err)
				return
			}
		}
	}
}

// errEncode marks a frame that could not be encoded (the link stays up).
var errEncode = errors.New("transport: unencodable frame")

// write puts f into bw, or for a large body on a plain TCP link, after
// flushing bw, straight onto the socket. It returns the frame's size.
func (l *Link) write(bw *bufio.Writer, f *wire.Frame) (int, error) {
	if len(f.Body) >= directWrite && l.conn == l.raw {
		hdr, err := wire.AppendHeader(l.hdr[:0], f)
		if err != nil {
			return 0, fmt.Errorf("%w: %w", errEncode, err)
		}
		l.hdr = hdr[:0]
		if err := bw.Flush(); err != nil {
			return 0, err
		}
		bufs := net.Buffers{hdr, f.Body}
		n, err := bufs.WriteTo(l.conn) // writev on a TCP conn
		return int(n), err
	}
	// Encode straight into the bufio buffer, after a flush if the frame
	// does not fit what is left (AppendFrame would allocate).
	if n := wire.EncodedLen(f); n > bw.Available() && bw.Buffered() > 0 {
		if err := bw.Flush(); err != nil {
			return 0, err
		}
	}
	buf, err := wire.AppendFrame(bw.AvailableBuffer(), f)
	if err != nil {
		return 0, fmt.Errorf("%w: %w", errEncode, err)
	}
	_, err = bw.Write(buf)
	return len(buf), err
}

// next returns the next frame to write, priority first, flushing before it
// blocks. It returns false when the link is closed or a flush failed.
func (l *Link) next(bw *bufio.Writer) (*wire.Frame, bool) {
	select {
	case f := <-l.prio:
		return f, true
	case <-l.done:
		return nil, false
	default:
	}
	select {
	case f := <-l.prio:
		return f, true
	case f := <-l.data:
		return f, true
	default:
	}
	if bw.Buffered() > 0 {
		if err := bw.Flush(); err != nil {
			l.closeWith(err)
			return nil, false
		}
	}
	select {
	case f := <-l.prio:
		return f, true
	case f := <-l.data:
		return f, true
	case <-l.done:
		return nil, false
	}
}
