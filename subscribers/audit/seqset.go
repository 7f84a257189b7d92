package audit

import "sync/atomic"

// seqSet remembers recent EVENTS sequences, lock-free: slot seq%n holds
// the last sequence that mapped to it. Sequences arrive roughly in order,
// so it holds about the last n of them.
type seqSet struct {
	slots []atomic.Uint64
}

func newSeqSet(n int) *seqSet { return &seqSet{slots: make([]atomic.Uint64, n)} }

func (s *seqSet) has(seq uint64) bool { return s.slots[seq%uint64(len(s.slots))].Load() == seq }

func (s *seqSet) add(seq uint64) { s.slots[seq%uint64(len(s.slots))].Store(seq) }
