package audit

import (
	"bytes"
	"encoding/json"
	"strconv"
	"strings"
)

// Redacted replaces every redacted value.
const Redacted = "[redacted]"

// redactor applies the configured paths. Event paths are applied to the
// event JSON; recipient, response and error also hide those record fields.
type redactor struct {
	paths                     [][]string
	recipient, response, errs bool
}

func newRedactor(paths []string) *redactor {
	r := &redactor{}
	for _, p := range paths {
		switch p {
		case "recipient":
			r.recipient = true
		case "response":
			r.response = true
		case "error":
			r.errs = true
		}
		r.paths = append(r.paths, strings.Split(p, "."))
	}
	return r
}

// outcome hides the record fields named by the config.
func (r *redactor) outcome(rec *Record) {
	if r.recipient && rec.Recipient != "" {
		rec.Recipient = Redacted
	}
	if r.response && rec.Response != "" {
		rec.Response = Redacted
	}
	if r.errs {
		if rec.Error != "" {
			rec.Error = Redacted
		}
		if rec.Reason != "" {
			rec.Reason = Redacted
		}
	}
}

// event returns the event as compact JSON with the configured paths
// redacted. An array on the way applies the rest of the path to each
// element (data.items.phone), or to one element when the segment is an
// index (data.items.0.phone). Paths that are absent change nothing.
// ok is false when raw is not JSON: the caller must not store it as is
// when paths are configured, since nothing in it could be redacted.
func (r *redactor) event(raw []byte) (out []byte, ok bool) {
	if len(r.paths) == 0 {
		var b bytes.Buffer
		if err := json.Compact(&b, raw); err != nil {
			return nil, false
		}
		return b.Bytes(), true
	}
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.UseNumber() // keep numbers exactly as written
	var v any
	if err := dec.Decode(&v); err != nil || dec.More() {
		return nil, false
	}
	changed := false
	for _, p := range r.paths {
		if redactPath(v, p) {
			changed = true
		}
	}
	var b bytes.Buffer
	if !changed {
		if err := json.Compact(&b, raw); err != nil {
			return nil, false
		}
		return b.Bytes(), true
	}
	enc := json.NewEncoder(&b)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(v); err != nil {
		return nil, false
	}
	return bytes.TrimRight(b.Bytes(), "\n"), true
}

func redactPath(v any, path []string) bool {
	switch n := v.(type) {
	case map[string]any:
		child, ok := n[path[0]]
		if !ok {
			return false
		}
		if len(path) == 1 {
			n[path[0]] = Redacted
			return true
		}
		return redactPath(child, path[1:])
	case []any:
		if i, err := strconv.Atoi(path[0]); err == nil {
			if i < 0 || i >= len(n) {
				return false
			}
			if len(path) == 1 {
				n[i] = Redacted
				return true
			}
			return redactPath(n[i], path[1:])
		}
		changed := false
		for _, e := range n {
			if redactPath(e, path) {
				changed = true
			}
		}
		return changed
	}
	return false
}
