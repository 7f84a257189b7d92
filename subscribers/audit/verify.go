package audit

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
)

// Report is what VerifyFile found.
type Report struct {
	Path string `json:"path"`
	// Records is how many records chain correctly (up to the break, if any).
	Records  int    `json:"records"`
	FirstSeq uint64 `json:"first_seq,omitempty"`
	LastSeq  uint64 `json:"last_seq,omitempty"`
	// LastHash is the hash of the last good record: write it down somewhere
	// else to detect a later truncation of the file.
	LastHash string `json:"last_hash,omitempty"`
	// Repairs lists the chain_repaired records: torn tails the writer
	// truncated after a crash. They are part of the chain, not breaks.
	Repairs []Repair `json:"repairs,omitempty"`
	// Break is the first record that does not chain; nil when intact.
	Break *Break `json:"break,omitempty"`
	// TornTail is set when the file ends in a partial line (a crash
	// mid-write); the hub truncates it on its next start.
	TornTail *TornTail `json:"torn_tail,omitempty"`
}

// OK reports whether the chain is intact (a torn tail is not a break).
func (r *Report) OK() bool { return r.Break == nil }

// Break locates the first broken record.
type Break struct {
	Line   int    `json:"line"`          // 1-based
	Seq    uint64 `json:"seq,omitempty"` // 0 when it could not be read
	Reason string `json:"reason"`
}

func (b *Break) String() string {
	if b.Seq == 0 {
		return fmt.Sprintf("line %d: %s", b.Line, b.Reason)
	}
	return fmt.Sprintf("line %d (seq %d): %s", b.Line, b.Seq, b.Reason)
}

// Repair is one chain_repaired record.
type Repair struct {
	Line           int    `json:"line"`
	Seq            uint64 `json:"seq"`
	TruncatedBytes int64  `json:"truncated_bytes"`
	TruncatedAt    int64  `json:"truncated_at"`
}

// TornTail is a final partial line.
type TornTail struct {
	Line   int   `json:"line"`
	Offset int64 `json:"offset"`
	Bytes  int64 `json:"bytes"`
}

// VerifyFile walks the hash chain of an audit file. It returns an error
// only when the file cannot be read; a broken chain is reported in
// Report.Break with the first record that does not verify: bad JSON, a
// record whose own hash does not match (it was changed), a seq gap (records
// removed) or a prev that does not match the record before it.
//
// The chain starts at seq 1 with an empty prev, so removing the first
// records is caught too. Removing records from the end of the file cannot
// be seen from the file alone; compare Report.LastHash with a copy kept
// elsewhere (the AUDIT stream holds every line).
func VerifyFile(path string) (Report, error) {
	rep := Report{Path: path}
	f, err := os.Open(path)
	if err != nil {
		return rep, fmt.Errorf("audit verify: %w", err)
	}
	defer f.Close()
	br := bufio.NewReaderSize(f, 256<<10)
	var (
		offset int64
		lineNo int
		prev   chain
		first  = true
	)
	for {
		line, err := br.ReadBytes('\n')
		if len(line) > 0 && line[len(line)-1] != '\n' {
			// The file ends without a newline: a write cut short.
			rep.TornTail = &TornTail{Line: lineNo + 1, Offset: offset, Bytes: int64(len(line))}
			return rep, nil
		}
		if err != nil {
			if errors.Is(err, io.EOF) {
				return rep, nil
			}
			return rep, fmt.Errorf("audit verify: %w", err)
		}
		lineNo++
		offset += int64(len(line))
		line = bytes.TrimSuffix(line, []byte{'\n'})
		li, perr := parseLine(line)
		var seq uint64
		if li.Seq != nil {
			seq = *li.Seq
		}
		brk := func(reason string) (Report, error) {
			rep.Break = &Break{Line: lineNo, Seq: seq, Reason: reason}
			return rep, nil
		}
		switch {
		case perr != nil:
			return brk(perr.Error())
		case seq > prev.seq+1:
			return brk(gap(prev.seq+1, seq))
		case seq <= prev.seq:
			return brk(fmt.Sprintf("seq out of order: expected %d after %d", prev.seq+1, prev.seq))
		case first && *li.Prev != "":
			return brk("prev mismatch: the first record of a file must have an empty prev")
		case canonicalHash(*li.Prev) != prev.prevString():
			return brk(fmt.Sprintf("prev mismatch: does not chain to line %d (seq %d)", lineNo-1, prev.seq))
		}
		if first {
			rep.FirstSeq = seq
		}
		first = false
		prev = newChain(seq, canonicalHash(li.Hash))
		rep.Records++
		rep.LastSeq, rep.LastHash = seq, li.Hash
		if li.Kind == KindChainRepaired {
			rep.Repairs = append(rep.Repairs, Repair{Line: lineNo, Seq: seq, TruncatedBytes: li.TruncatedBytes, TruncatedAt: li.TruncatedAt})
		}
	}
}

func gap(want, got uint64) string {
	if got == want+1 {
		return fmt.Sprintf("seq gap: expected %d, found %d: record seq %d is missing", want, got, want)
	}
	return fmt.Sprintf("seq gap: expected %d, found %d: records seq %d-%d are missing", want, got, want, got-1)
}
