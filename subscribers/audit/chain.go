package audit

import (
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
)

// chain is the writer's position in the hash chain.
type chain struct {
	seq uint64
	// prev is the hash of the last record (canonical form), empty before
	// the first; kept in place so sealing a record allocates nothing.
	prev    [hexLen]byte
	prevLen int
}

func newChain(seq uint64, prev string) chain {
	c := chain{seq: seq}
	c.prevLen = copy(c.prev[:], prev)
	return c
}

func (c *chain) prevBytes() []byte  { return c.prev[:c.prevLen] }
func (c *chain) prevString() string { return string(c.prevBytes()) }

// Every line ends in its hash member: ,"hash":"<hash>"}. A hash is the
// SHA-256 in unpadded base64url (43 characters); trails written before
// 2026-11-26 hold 64 hex digits, which verify and the writer still read.
const (
	hashKey   = `,"hash":"`
	b64Len    = 43
	hexLen    = 64
	hashClose = `"}`
)

var hashEnc = base64.RawURLEncoding

// canonicalHash returns h (either form) in the form the writer writes, so
// a prev written after an upgrade matches the hex hash before it.
func canonicalHash(h string) string {
	if len(h) != hexLen {
		return h
	}
	sum, err := hex.DecodeString(h)
	if err != nil {
		return h
	}
	return hashEnc.EncodeToString(sum)
}

// encodeLike encodes sum in the form of h (hex or base64url).
func encodeLike(h string, sum []byte) string {
	if len(h) == hexLen {
		return hex.EncodeToString(sum)
	}
	return hashEnc.EncodeToString(sum)
}

// seal appends one complete line (without the newline) for body to dst,
// advancing the chain. The record's canonical bytes are the line without
// its hash member: {"seq":N,"prev":"...",<body>}.
func (c *chain) seal(dst, body []byte) []byte {
	dst, start := c.open(dst)
	return c.close(append(dst, body...), start)
}

// open starts the next line in dst, up to where the body goes; close
// finishes it. The body is appended in between (seal, or the writer
// encoding an outcome in place).
func (c *chain) open(dst []byte) ([]byte, int) {
	c.seq++
	start := len(dst)
	dst = append(dst, `{"seq":`...)
	dst = strconv.AppendUint(dst, c.seq, 10)
	dst = append(dst, `,"prev":"`...)
	dst = append(dst, c.prevBytes()...)
	return append(dst, `",`...), start
}

func (c *chain) close(dst []byte, start int) []byte {
	dst = append(dst, '}')
	sum := sha256.Sum256(dst[start:])
	dst = dst[:len(dst)-1]
	dst = append(dst, hashKey...)
	at := len(dst)
	dst = hashEnc.AppendEncode(dst, sum[:])
	c.prevLen = copy(c.prev[:], dst[at:])
	return append(dst, `"}`...)
}

// lineInfo is what the chain needs from one line.
type lineInfo struct {
	Seq  *uint64 `json:"seq"`
	Prev *string `json:"prev"`
	Kind string  `json:"kind"`
	Hash string  `json:"hash"`

	TruncatedBytes int64 `json:"truncated_bytes"`
	TruncatedAt    int64 `json:"truncated_at"`
}

var errNotRecord = errors.New("not an audit record")

// parseLine decodes a line's chain fields and checks its own hash. A
// non-nil error names what is wrong; info is filled as far as it could be
// read (a record whose hash does not match still has its seq).
func parseLine(line []byte) (lineInfo, error) {
	var li lineInfo
	if err := json.Unmarshal(line, &li); err != nil {
		return li, fmt.Errorf("bad JSON: %w", err)
	}
	if li.Seq == nil || li.Prev == nil || li.Hash == "" {
		return li, fmt.Errorf("%w: seq, prev or hash is missing", errNotRecord)
	}
	if len(li.Hash) != b64Len && len(li.Hash) != hexLen {
		return li, fmt.Errorf("%w: the hash is not a SHA-256 in base64url (or hex)", errNotRecord)
	}
	n := len(line)
	suffix := len(hashKey) + len(li.Hash) + len(hashClose)
	if n < suffix+2 || string(line[n-suffix:n-suffix+len(hashKey)]) != hashKey ||
		string(line[n-len(hashClose):]) != hashClose || string(line[n-len(hashClose)-len(li.Hash):n-len(hashClose)]) != li.Hash {
		return li, fmt.Errorf("%w: the hash is not the last member", errNotRecord)
	}
	h := sha256.New()
	h.Write(line[:n-suffix])
	h.Write([]byte{'}'})
	// Compared as text: another spelling of the same digest (upper-case
	// hex, base64 padding bits) is a changed byte too.
	if encodeLike(li.Hash, h.Sum(nil)) != li.Hash {
		return li, errors.New("hash mismatch: the record was changed after it was written")
	}
	return li, nil
}
