// Package hub is the core of the notification hub: the CloudEvents Event,
// the Delivery handed to channels, the Channel interface and its error
// classes, and the JetStream provisioning the rest is built on.
package hub

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"mime"
	"reflect"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/go-playground/validator/v10"
	"github.com/oklog/ulid/v2"
)

// SpecVersion is the CloudEvents version the hub speaks.
const SpecVersion = "1.0"

// DefaultSource is used when an event arrives without a source.
const DefaultSource = "hub"

// SubjectPrefix is prepended to an event's type to form its NATS subject.
const SubjectPrefix = "events."

// DefaultMaxEventSize is the default limit for one encoded event.
const DefaultMaxEventSize = 256 << 10

// Event is a CloudEvents 1.0 event in structured JSON mode. Data holds the
// payload as raw JSON; DataBase64 holds binary data. Extension attributes
// are kept in Extensions and written back at the top level.
type Event struct {
	SpecVersion     string          `json:"specversion" validate:"eq=1.0"`
	ID              string          `json:"id" validate:"required,max=128,eventid"`
	Source          string          `json:"source" validate:"required,max=1024"`
	Type            string          `json:"type" validate:"required,max=255,eventtype"`
	Time            time.Time       `json:"time"`
	Subject         string          `json:"subject,omitempty" validate:"max=1024"`
	DataContentType string          `json:"datacontenttype,omitempty" validate:"omitempty,mediatype"`
	DataSchema      string          `json:"dataschema,omitempty" validate:"omitempty,uri"`
	Data            json.RawMessage `json:"data,omitempty"`
	DataBase64      string          `json:"data_base64,omitempty" validate:"omitempty,base64"`
	Extensions      map[string]any  `json:"-"`
}

// NATSSubject is the subject the event is stored under: events.<type>.
func (e *Event) NATSSubject() string { return SubjectPrefix + e.Type }

// NewID returns a new event id: a ULID, so ids sort by creation time.
func NewID() string { return ulid.Make().String() }

// SetDefaults fills specversion, id, source and time when they are empty.
func (e *Event) SetDefaults(source string, now time.Time) {
	if e.SpecVersion == "" {
		e.SpecVersion = SpecVersion
	}
	if e.ID == "" {
		e.ID = NewID()
	}
	if e.Source == "" {
		if source == "" {
			source = DefaultSource
		}
		e.Source = source
	}
	if e.Time.IsZero() {
		e.Time = now.UTC()
	}
}

var knownAttrs = map[string]bool{
	"specversion": true, "id": true, "source": true, "type": true, "time": true,
	"subject": true, "datacontenttype": true, "dataschema": true, "data": true, "data_base64": true,
}

// MarshalJSON writes the structured-mode envelope with extensions at the top
// level.
func (e Event) MarshalJSON() ([]byte, error) {
	var b bytes.Buffer
	b.Grow(160 + len(e.Data) + len(e.DataBase64))
	b.WriteString(`{"specversion":`)
	writeJSONString(&b, e.SpecVersion)
	b.WriteString(`,"id":`)
	writeJSONString(&b, e.ID)
	b.WriteString(`,"source":`)
	writeJSONString(&b, e.Source)
	b.WriteString(`,"type":`)
	writeJSONString(&b, e.Type)
	if !e.Time.IsZero() {
		b.WriteString(`,"time":"`)
		b.Write(e.Time.AppendFormat(nil, time.RFC3339Nano))
		b.WriteByte('"')
	}
	for _, kv := range [...]struct{ k, v string }{
		{"subject", e.Subject}, {"datacontenttype", e.DataContentType},
		{"dataschema", e.DataSchema}, {"data_base64", e.DataBase64},
	} {
		if kv.v != "" {
			b.WriteString(`,"` + kv.k + `":`)
			writeJSONString(&b, kv.v)
		}
	}
	if len(e.Extensions) > 0 {
		keys := make([]string, 0, len(e.Extensions))
		for k := range e.Extensions {
			keys = append(keys, k)
		}
		sort.Strings(keys)
		for _, k := range keys {
			v, err := json.Marshal(e.Extensions[k])
			if err != nil {
				return nil, fmt.Errorf("extension %s: %w", k, err)
			}
			b.WriteByte(',')
			writeJSONString(&b, k)
			b.WriteByte(':')
			b.Write(v)
		}
	}
	if len(e.Data) > 0 {
		b.WriteString(`,"data":`)
		if json.Valid(e.Data) {
			if err := json.Compact(&b, e.Data); err != nil {
				return nil, err
			}
		} else {
			return nil, errors.New("data is not valid JSON")
		}
	}
	b.WriteByte('}')
	return b.Bytes(), nil
}

func writeJSONString(b *bytes.Buffer, s string) {
	simple := true
	for i := 0; i < len(s); i++ {
		if c := s[i]; c < 0x20 || c == '"' || c == '\\' || c >= 0x80 || c == '<' || c == '>' || c == '&' {
			simple = false
			break
		}
	}
	if simple {
		b.WriteByte('"')
		b.WriteString(s)
		b.WriteByte('"')
		return
	}
	q, _ := json.Marshal(s)
	b.Write(q)
}

// UnmarshalJSON reads a structured-mode envelope. Attribute types are
// checked here so the error can name the field; value rules are Validate's.
func (e *Event) UnmarshalJSON(b []byte) error {
	var raw map[string]json.RawMessage
	if err := json.Unmarshal(b, &raw); err != nil {
		var te *json.UnmarshalTypeError
		if errors.As(err, &te) {
			return &ValidationError{Errors: []FieldError{{Field: "", Reason: "event must be a JSON object"}}}
		}
		return err
	}
	*e = Event{}
	var errs []FieldError
	str := func(name string, dst *string) {
		v, ok := raw[name]
		if !ok || string(v) == "null" {
			return
		}
		if err := json.Unmarshal(v, dst); err != nil {
			errs = append(errs, FieldError{Field: name, Reason: "must be a string"})
		}
	}
	str("specversion", &e.SpecVersion)
	str("id", &e.ID)
	str("source", &e.Source)
	str("type", &e.Type)
	str("subject", &e.Subject)
	str("datacontenttype", &e.DataContentType)
	str("dataschema", &e.DataSchema)
	str("data_base64", &e.DataBase64)
	if v, ok := raw["time"]; ok && string(v) != "null" {
		var s string
		if err := json.Unmarshal(v, &s); err != nil {
			errs = append(errs, FieldError{Field: "time", Reason: "must be an RFC 3339 timestamp string"})
		} else if t, err := time.Parse(time.RFC3339Nano, s); err != nil {
			errs = append(errs, FieldError{Field: "time", Reason: fmt.Sprintf("must be an RFC 3339 timestamp, not %q", s)})
		} else {
			e.Time = t
		}
	}
	if v, ok := raw["data"]; ok && string(v) != "null" {
		e.Data = append(json.RawMessage(nil), v...)
	}
	for k, v := range raw {
		if knownAttrs[k] {
			continue
		}
		var x any
		if err := json.Unmarshal(v, &x); err != nil {
			return err
		}
		if e.Extensions == nil {
			e.Extensions = make(map[string]any)
		}
		e.Extensions[k] = x
	}
	if len(errs) > 0 {
		sortFieldErrors(errs)
		return &ValidationError{Errors: errs}
	}
	return nil
}

// FieldError names one invalid field of an event and why.
type FieldError struct {
	Field  string `json:"field"`
	Reason string `json:"reason"`
}

// ValidationError lists every invalid field of an event (or of a batch, where
// fields are prefixed with the event's index: "[3].type").
type ValidationError struct {
	Errors []FieldError
}

func (e *ValidationError) Error() string { return "invalid event: " + JoinFieldErrors(e.Errors) }

// JoinFieldErrors writes field errors as "field: reason; field: reason".
func JoinFieldErrors(errs []FieldError) string {
	parts := make([]string, len(errs))
	for i, fe := range errs {
		if fe.Field == "" {
			parts[i] = fe.Reason
		} else {
			parts[i] = fe.Field + ": " + fe.Reason
		}
	}
	return strings.Join(parts, "; ")
}

func sortFieldErrors(errs []FieldError) {
	sort.SliceStable(errs, func(i, j int) bool { return errs[i].Field < errs[j].Field })
}

var (
	typeRe    = regexp.MustCompile(`^[A-Za-z0-9_-]+(\.[A-Za-z0-9_-]+)*$`)
	extNameRe = regexp.MustCompile(`^[a-z0-9]{1,20}$`)
	eventV    = newEventValidator()
)

func newEventValidator() *validator.Validate {
	v := validator.New(validator.WithRequiredStructEnabled())
	v.RegisterTagNameFunc(func(f reflect.StructField) string {
		name, _, _ := strings.Cut(f.Tag.Get("json"), ",")
		if name == "-" {
			return ""
		}
		return name
	})
	_ = v.RegisterValidation("eventtype", func(fl validator.FieldLevel) bool { return ValidType(fl.Field().String()) })
	_ = v.RegisterValidation("eventid", func(fl validator.FieldLevel) bool { return validID(fl.Field().String()) })
	_ = v.RegisterValidation("mediatype", func(fl validator.FieldLevel) bool {
		_, _, err := mime.ParseMediaType(fl.Field().String())
		return err == nil
	})
	return v
}

// ValidType reports whether t is a valid event type: dot-separated tokens of
// [A-Za-z0-9_-], so that events.<type> is a literal NATS subject.
func ValidType(t string) bool { return typeRe.MatchString(t) }

func validID(id string) bool {
	if !utf8.ValidString(id) {
		return false
	}
	for _, r := range id {
		if !unicode.IsPrint(r) || unicode.IsSpace(r) {
			return false
		}
	}
	return true
}

// Validate checks the event against the CloudEvents rules and the hub's own
// (type tokens, id length, size). maxSize <= 0 skips the size check. The
// returned error is a *ValidationError listing every bad field.
func (e *Event) Validate(maxSize int) error {
	var errs []FieldError
	if err := eventV.Struct(e); err != nil {
		var verrs validator.ValidationErrors
		if !errors.As(err, &verrs) {
			return err
		}
		for _, fe := range verrs {
			errs = append(errs, FieldError{Field: fe.Field(), Reason: eventReason(fe)})
		}
	}
	if len(e.Data) > 0 && e.DataBase64 != "" {
		errs = append(errs, FieldError{Field: "data_base64", Reason: "must not be set together with data"})
	}
	if len(e.Data) > 0 && !json.Valid(e.Data) {
		errs = append(errs, FieldError{Field: "data", Reason: "must be valid JSON"})
	}
	for k, v := range e.Extensions {
		switch {
		case !extNameRe.MatchString(k):
			errs = append(errs, FieldError{Field: k, Reason: "extension attribute names must be 1-20 lowercase letters or digits"})
		default:
			switch v.(type) {
			case string, float64, bool, json.Number, int, int64:
			default:
				errs = append(errs, FieldError{Field: k, Reason: "extension attribute values must be a string, number or boolean"})
			}
		}
	}
	if maxSize > 0 && len(errs) == 0 {
		if n := e.encodedSizeHint(); n > maxSize {
			errs = append(errs, FieldError{Field: "", Reason: fmt.Sprintf("event is %d bytes, over the %d byte limit", n, maxSize)})
		}
	}
	if len(errs) > 0 {
		sortFieldErrors(errs)
		return &ValidationError{Errors: errs}
	}
	return nil
}

// encodedSizeHint is the encoded size of the event; exact for events
// without exotic characters, and never an under-estimate by much.
func (e *Event) encodedSizeHint() int {
	b, err := e.MarshalJSON()
	if err != nil {
		return 0
	}
	return len(b)
}

func eventReason(fe validator.FieldError) string {
	switch fe.Tag() {
	case "required":
		return "required"
	case "eq":
		return fmt.Sprintf("must be %q", fe.Param())
	case "max":
		return "must be at most " + fe.Param() + " characters long"
	case "eventtype":
		return fmt.Sprintf("%q is not a valid type: use dot-separated tokens of letters, digits, '_' and '-' (e.g. order.created), no wildcards or spaces", fe.Value())
	case "eventid":
		return "must be 1-128 printable characters without spaces"
	case "mediatype":
		return fmt.Sprintf("%q is not a media type", fe.Value())
	case "uri":
		return "must be a URI"
	case "base64":
		return "must be base64"
	}
	return "fails rule " + fe.Tag()
}

// DecodeEvent decodes one JSON event, applies defaults and validates it.
func DecodeEvent(b []byte, source string, maxSize int, now time.Time) (*Event, error) {
	if maxSize > 0 && len(b) > maxSize {
		return nil, &ValidationError{Errors: []FieldError{{Reason: "event is " + strconv.Itoa(len(b)) + " bytes, over the " + strconv.Itoa(maxSize) + " byte limit"}}}
	}
	var e Event
	if err := json.Unmarshal(b, &e); err != nil {
		return nil, wrapJSONError(err)
	}
	e.SetDefaults(source, now)
	if err := e.Validate(maxSize); err != nil {
		return nil, err
	}
	return &e, nil
}

// wrapJSONError turns a syntax error into a ValidationError with the offset.
func wrapJSONError(err error) error {
	var ve *ValidationError
	if errors.As(err, &ve) {
		return ve
	}
	var se *json.SyntaxError
	if errors.As(err, &se) {
		return &ValidationError{Errors: []FieldError{{Reason: fmt.Sprintf("malformed JSON at byte %d: %v", se.Offset, se)}}}
	}
	return &ValidationError{Errors: []FieldError{{Reason: "malformed JSON: " + err.Error()}}}
}
