package audit

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
)

// chain is the writer's position in the hash chain.
type chain struct {
	seq  uint64
	prev string // hex hash of the last record; "" before the first
}

// hashMember is how every line ends: ,"hash":"<64 hex>"}.
const (
	hashKey       = `,"hash":"`
	hashSuffixLen = len(hashKey) + 64 + len(`"}`)
)

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
	dst = append(dst, c.prev...)
	return append(dst, `",`...), start
}

func (c *chain) close(dst []byte, start int) []byte {
	dst = append(dst, '}')
	sum := sha256.Sum256(dst[start:])
	dst = dst[:len(dst)-1]
	dst = append(dst, hashKey...)
	at := len(dst)
	dst = hex.AppendEncode(dst, sum[:])
	c.prev = string(dst[at:])
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
	n := len(line)
	if n < hashSuffixLen+2 || string(line[n-hashSuffixLen:n-hashSuffixLen+len(hashKey)]) != hashKey ||
		string(line[n-2:]) != `"}` || string(line[n-66:n-2]) != li.Hash {
		return li, fmt.Errorf("%w: the hash is not the last member", errNotRecord)
	}
	want, err := hex.DecodeString(li.Hash)
	if err != nil || len(want) != sha256.Size {
		return li, fmt.Errorf("%w: the hash is not 64 hex digits", errNotRecord)
	}
	h := sha256.New()
	h.Write(line[:n-hashSuffixLen])
	h.Write([]byte{'}'})
	if !bytes.Equal(h.Sum(nil), want) {
		return li, errors.New("hash mismatch: the record was changed after it was written")
	}
	return li, nil
}
