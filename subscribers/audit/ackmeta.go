package audit

import (
	"strconv"
	"strings"
	"time"
)

// ackMetadata reads the EVENTS sequence and the stored time from a
// JetStream ack subject, as jetstream.Msg.Metadata does, without its
// allocations (RecordEvent runs for every event):
//
//	$JS.ACK.<stream>.<consumer>.<delivered>.<sseq>.<cseq>.<ts>.<pending>
//	$JS.ACK.<domain>.<acchash>.<stream>.<consumer>.<delivered>.<sseq>.<cseq>.<ts>.<pending>[.<token>...]
//
// ok is false for anything else; the caller then asks Metadata.
func ackMetadata(reply string) (seq uint64, at time.Time, ok bool) {
	rest, found := strings.CutPrefix(reply, "$JS.ACK.")
	if !found {
		return 0, time.Time{}, false
	}
	// The tokens after the prefix: 7 in the first form, 9 or more in
	// the second (nats.go accepts the same counts).
	var tok [10]string
	n := 0
	for n < len(tok) {
		t, after, more := strings.Cut(rest, ".")
		tok[n] = t
		n++
		if !more {
			break
		}
		rest = after
	}
	var seqTok, tsTok string
	switch {
	case n == 7:
		seqTok, tsTok = tok[3], tok[5]
	case n >= 9:
		seqTok, tsTok = tok[5], tok[7]
	default:
		return 0, time.Time{}, false
	}
	seq, err1 := strconv.ParseUint(seqTok, 10, 64)
	ts, err2 := strconv.ParseInt(tsTok, 10, 64)
	if err1 != nil || err2 != nil || ts < 0 || tsTok[0] == '+' {
		return 0, time.Time{}, false
	}
	return seq, time.Unix(0, ts), true
}
