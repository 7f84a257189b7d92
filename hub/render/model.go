package render

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"

	"github.com/hubproject/hub/hub"
)

// Model is the data a template runs over: the event's attributes by their
// CloudEvents names (id, type, source, time, subject, datacontenttype,
// specversion, dataschema), its extensions by name, and data, the event's
// JSON payload decoded into maps, slices, strings, bools and json.Number.
//
// Build it once per event with NewModel and render every template of every
// matching subscription over it: the payload is decoded only once. A Model
// is read-only and safe for concurrent use.
type Model struct {
	m map[string]any
}

// NewModel decodes ev into the template data model. Numbers in data are kept
// as json.Number so that large integers (order ids, amounts in cents) print
// exactly instead of as rounded float64s. An error (data that is not JSON) is
// marked hub.Permanent: the same event can never render.
func NewModel(ev *hub.Event) (Model, error) {
	if ev == nil {
		return Model{}, hub.Permanent(errors.New("render: no event"))
	}
	m := make(map[string]any, 10+len(ev.Extensions))
	// Extensions first so the core attributes win; the event validator
	// already forbids extensions named like them.
	for k, v := range ev.Extensions {
		m[k] = v
	}
	m["specversion"] = ev.SpecVersion
	m["id"] = ev.ID
	m["type"] = ev.Type
	m["source"] = ev.Source
	m["time"] = ev.Time
	m["subject"] = ev.Subject
	m["datacontenttype"] = ev.DataContentType
	m["dataschema"] = ev.DataSchema
	var data any
	if len(ev.Data) > 0 {
		var err error
		if data, err = decodeData(ev.Data); err != nil {
			return Model{}, hub.Permanent(fmt.Errorf("render: event data: %w", err))
		}
	} else if ev.DataBase64 != "" {
		// Binary payloads are not decoded: templates see the base64 text.
		m["data_base64"] = ev.DataBase64
	}
	m["data"] = data
	return Model{m: m}, nil
}

func decodeData(b []byte) (any, error) {
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.UseNumber()
	var v any
	if err := dec.Decode(&v); err != nil {
		return nil, err
	}
	if _, err := dec.Token(); err != io.EOF {
		return nil, errors.New("trailing data after the JSON value")
	}
	return v, nil
}
