package core

import (
	"hash/fnv"
	"slices"

	"github.com/anyedge/anyedge/cluster/wire"
)

// kv is a last-writer-wins map: the test capability the simulation syncs,
// replicates and repairs.
type kv struct {
	m map[string]kvRec
}

type kvRec struct {
	Key  string
	Val  uint64
	Ver  uint64
	Node NodeID
}

const kvBuckets = 16

func newKV() *kv { return &kv{m: map[string]kvRec{}} }

func (r kvRec) encode() []byte {
	var w wire.Writer
	w.String(r.Key)
	w.U64(r.Val)
	w.U64(r.Ver)
	w.U32(r.Node)
	return w.B
}

func decodeKV(b []byte) (kvRec, bool) {
	rd := wire.Reader{B: b}
	r := kvRec{Key: rd.String(), Val: rd.U64(), Ver: rd.U64(), Node: rd.U32()}
	return r, rd.Err == nil
}

func (r kvRec) newer(o kvRec) bool {
	if r.Ver != o.Ver {
		return r.Ver > o.Ver
	}
	return r.Node > o.Node
}

func (s *kv) merge(r kvRec) {
	if old, ok := s.m[r.Key]; !ok || r.newer(old) {
		s.m[r.Key] = r
	}
}

func bucketOf(key string) int {
	h := fnv.New32a()
	h.Write([]byte(key))
	return int(h.Sum32() % kvBuckets)
}

type sliceReader struct{ recs [][]byte }

func (s *sliceReader) Next(dst [][]byte, max int) ([][]byte, bool) {
	n := 0
	for len(s.recs) > 0 && n < max {
		dst = append(dst, s.recs[0])
		n += len(s.recs[0])
		s.recs = s.recs[1:]
	}
	return dst, len(s.recs) == 0
}

func (s *kv) records(bucket int) [][]byte {
	keys := make([]string, 0, len(s.m))
	for k := range s.m {
		if bucket < 0 || bucketOf(k) == bucket {
			keys = append(keys, k)
		}
	}
	slices.Sort(keys)
	out := make([][]byte, 0, len(keys))
	for _, k := range keys {
		out = append(out, s.m[k].encode())
	}
	return out
}

func (s *kv) capability() Capability {
	return Capability{
		Name:      "kv",
		NeedsSync: true,
		Handle: func(from NodeID, typ wire.MsgType, body []byte) {
			if r, ok := decodeKV(body); ok {
				s.merge(r)
			}
		},
		Snapshot: func() SnapshotReader { return &sliceReader{recs: s.records(-1)} },
		Apply: func(from NodeID, recs [][]byte) {
			for _, b := range recs {
				if r, ok := decodeKV(b); ok {
					s.merge(r)
				}
			}
		},
		Digest: func() []uint64 {
			d := make([]uint64, kvBuckets)
			for k, r := range s.m {
				h := fnv.New64a()
				h.Write(r.encode())
				d[bucketOf(k)] ^= h.Sum64()
			}
			return d
		},
		Bucket: func(i int) SnapshotReader { return &sliceReader{recs: s.records(i)} },
	}
}
