package audit

import (
	"strconv"
	"strings"
	"testing"

	"github.com/nats-io/nats.go"
)

// FuzzAckMetadata checks ackMetadata against nats.go's own parser: where
// it answers, it must agree; where nats.go finds a plain JetStream ack
// subject with numeric fields, it must answer too.
func FuzzAckMetadata(f *testing.F) {
	for _, s := range []string{
		"$JS.ACK.EVENTS.webhook.1.42.40.1764158400000000000.7",                   // first form
		"$JS.ACK.hub.ACCHASH.EVENTS.webhook.1.42.40.1764158400000000000.7.rnd",   // second form, domain
		"$JS.ACK._.ACCHASH.EVENTS.webhook.3.18446744073709551615.1.1.0.rnd.more", // extra tokens, max seq
		"$JS.ACK.EVENTS.webhook.1.42.40.1764158400000000000",                     // too few
		"$JS.ACK.hub.ACCHASH.EVENTS.webhook.1.42.40.1764158400000000000",         // between the forms
		"$JS.ACK.EVENTS.webhook.1.x.40.1764158400000000000.7",                    // not a number
		"$JS.ACK.EVENTS.webhook.1.42.40.99999999999999999999.7",                  // overflows
		"_INBOX.abc", "", "$JS.ACK.",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, reply string) {
		seq, at, ok := ackMetadata(reply)
		meta, err := (&nats.Msg{Reply: reply, Sub: &nats.Subscription{}}).Metadata()
		if !ok {
			if err == nil && plainNumbers(reply) {
				t.Fatalf("%q: no answer, nats.go reads seq %d", reply, meta.Sequence.Stream)
			}
			return
		}
		if err != nil {
			t.Fatalf("%q: read seq %d, nats.go refuses: %v", reply, seq, err)
		}
		if seq != meta.Sequence.Stream || !at.Equal(meta.Timestamp) {
			t.Fatalf("%q: seq %d at %v, nats.go %d at %v", reply, seq, at, meta.Sequence.Stream, meta.Timestamp)
		}
	})
}

// plainNumbers reports whether reply's stream sequence and time tokens
// are decimals that fit an int64 (nats.go reads anything else as 0 or
// wraps it; ackMetadata leaves those to Metadata).
func plainNumbers(reply string) bool {
	tok := strings.Split(reply, ".")
	seq, ts := 7, 9
	if len(tok) == 9 {
		seq, ts = 5, 7
	}
	if len(tok) <= ts {
		return false
	}
	for _, s := range []string{tok[seq], tok[ts]} {
		if _, err := strconv.ParseInt(s, 10, 64); err != nil || strings.Trim(s, "0123456789") != "" {
			return false
		}
	}
	return true
}

func TestAckMetadataForms(t *testing.T) {
	for _, tc := range []struct {
		reply string
		seq   uint64
		ns    int64
	}{
		{"$JS.ACK.EVENTS.webhook.1.42.40.1764158400000000000.7", 42, 1764158400000000000},
		{"$JS.ACK.hub.ACCHASH.EVENTS.webhook.2.43.41.1764158400000000001.0.rnd", 43, 1764158400000000001},
		{"$JS.ACK._.ACCHASH.EVENTS.webhook.2.44.41.5.0", 44, 5},
	} {
		seq, at, ok := ackMetadata(tc.reply)
		if !ok || seq != tc.seq || at.UnixNano() != tc.ns {
			t.Errorf("%s: %d %v %v, want %d %d", tc.reply, seq, at.UnixNano(), ok, tc.seq, tc.ns)
		}
	}
	for _, reply := range []string{"", "_INBOX.x.y", "$JS.ACK.EVENTS.webhook.1.42.40.17.7.8", "$JS.ACK.EVENTS.webhook.1.-1.40.17.7"} {
		if seq, _, ok := ackMetadata(reply); ok {
			t.Errorf("%q: read seq %d, want no answer", reply, seq)
		}
	}
}
