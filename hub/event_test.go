package hub

import (
	"encoding/json"
	"errors"
	"strings"
	"testing"
	"time"
)

var now = time.Date(2026, 11, 25, 12, 0, 0, 0, time.UTC)

func TestDecodeEventValid(t *testing.T) {
	ev, err := DecodeEvent([]byte(`{"type":"order.created","data":{"id":1},"traceparent":"00-abc-def-01","priority":3}`), "test", 0, now)
	if err != nil {
		t.Fatal(err)
	}
	if ev.SpecVersion != "1.0" || ev.Source != "test" || ev.ID == "" || !ev.Time.Equal(now) {
		t.Fatalf("defaults not applied: %+v", ev)
	}
	if ev.NATSSubject() != "events.order.created" {
		t.Fatalf("subject %q", ev.NATSSubject())
	}
	if ev.Extensions["traceparent"] != "00-abc-def-01" || ev.Extensions["priority"] != float64(3) {
		t.Fatalf("extensions %v", ev.Extensions)
	}
	// Round trip keeps every attribute, extensions at the top level.
	b, err := json.Marshal(ev)
	if err != nil {
		t.Fatal(err)
	}
	var back Event
	if err := json.Unmarshal(b, &back); err != nil {
		t.Fatal(err)
	}
	if back.ID != ev.ID || back.Type != ev.Type || string(back.Data) != `{"id":1}` || back.Extensions["traceparent"] != "00-abc-def-01" || !back.Time.Equal(ev.Time) {
		t.Fatalf("round trip lost data: %s", b)
	}
}

func TestDecodeEventInvalid(t *testing.T) {
	long := strings.Repeat("x", 129)
	cases := []struct {
		name, in string
		field    string // the field the error must name ("" for the whole event)
		reason   string // a substring of the reason
	}{
		{"malformed JSON", `{"type":`, "", "malformed JSON"},
		{"not an object", `[1,2]`, "", "JSON object"},
		{"a string", `"hello"`, "", "JSON object"},
		{"trailing garbage", `{"type":"a"} x`, "", "malformed JSON"},
		{"missing type", `{"id":"1"}`, "type", "required"},
		{"empty type", `{"type":""}`, "type", "required"},
		{"type not a string", `{"type":5}`, "type", "must be a string"},
		{"double dot", `{"type":"order..created"}`, "type", "not a valid type"},
		{"leading dot", `{"type":".order"}`, "type", "not a valid type"},
		{"trailing dot", `{"type":"order."}`, "type", "not a valid type"},
		{"star wildcard", `{"type":"order.*"}`, "type", "not a valid type"},
		{"gt wildcard", `{"type":"events.>"}`, "type", "not a valid type"},
		{"space", `{"type":"order created"}`, "type", "not a valid type"},
		{"unicode token", `{"type":"ordér.created"}`, "type", "not a valid type"},
		{"type too long", `{"type":"` + strings.Repeat("a", 256) + `"}`, "type", "at most 255"},
		{"id too long", `{"type":"a","id":"` + long + `"}`, "id", "at most 128"},
		{"id with space", `{"type":"a","id":"a b"}`, "id", "printable"},
		{"id with control char", `{"type":"a","id":"a\u0001b"}`, "id", "printable"},
		{"id not a string", `{"type":"a","id":12}`, "id", "must be a string"},
		{"wrong specversion", `{"type":"a","specversion":"0.3"}`, "specversion", `"1.0"`},
		{"bad time", `{"type":"a","time":"yesterday"}`, "time", "RFC 3339"},
		{"time not a string", `{"type":"a","time":12}`, "time", "RFC 3339"},
		{"bad datacontenttype", `{"type":"a","datacontenttype":"not a type/"}`, "datacontenttype", "media type"},
		{"data and data_base64", `{"type":"a","data":1,"data_base64":"AA=="}`, "data_base64", "not be set together"},
		{"bad base64", `{"type":"a","data_base64":"***"}`, "data_base64", "base64"},
		{"bad extension name", `{"type":"a","Trace-Id":"x"}`, "Trace-Id", "lowercase"},
		{"object extension", `{"type":"a","ext":{"a":1}}`, "ext", "string, number or boolean"},
		{"source not a string", `{"type":"a","source":[]}`, "source", "must be a string"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			_, err := DecodeEvent([]byte(c.in), "test", 0, now)
			var ve *ValidationError
			if !errors.As(err, &ve) {
				t.Fatalf("want ValidationError, got %v", err)
			}
			for _, fe := range ve.Errors {
				if fe.Field == c.field && strings.Contains(fe.Reason, c.reason) {
					return
				}
			}
			t.Fatalf("no error for field %q containing %q in %v", c.field, c.reason, ve.Errors)
		})
	}
}

func TestDecodeEventListsEveryBadField(t *testing.T) {
	_, err := DecodeEvent([]byte(`{"type":"a..b","id":"a b","specversion":"2"}`), "", 0, now)
	var ve *ValidationError
	if !errors.As(err, &ve) || len(ve.Errors) != 3 {
		t.Fatalf("want 3 field errors, got %v", err)
	}
}

func TestDecodeEventSize(t *testing.T) {
	big := `{"type":"a","data":"` + strings.Repeat("x", 300) + `"}`
	_, err := DecodeEvent([]byte(big), "", 256, now)
	if err == nil || !strings.Contains(err.Error(), "byte limit") {
		t.Fatalf("want size error, got %v", err)
	}
	if _, err := DecodeEvent([]byte(big), "", 1024, now); err != nil {
		t.Fatalf("within limit: %v", err)
	}
}

func TestMatchType(t *testing.T) {
	cases := []struct {
		pattern, typ string
		want         bool
	}{
		{"order.created", "order.created", true},
		{"order.created", "order.shipped", false},
		{"order.*", "order.created", true},
		{"order.*", "order.created.v2", false},
		{"order.>", "order.created.v2", true},
		{"order.>", "order", false},
		{">", "anything.at.all", true},
		{"*.created", "user.created", true},
		{"order", "order.created", false},
		{"order.created.v2", "order.created", false},
	}
	for _, c := range cases {
		if got := MatchType(c.pattern, c.typ); got != c.want {
			t.Errorf("MatchType(%q, %q) = %v, want %v", c.pattern, c.typ, got, c.want)
		}
	}
	for _, bad := range []string{"", "a..b", "a.>.b", "a b", "a.**"} {
		if ValidPattern(bad) == nil {
			t.Errorf("ValidPattern(%q) accepted", bad)
		}
	}
}

func FuzzDecodeEvent(f *testing.F) {
	for _, s := range []string{
		`{"type":"order.created","data":{"id":1}}`,
		`{"specversion":"1.0","id":"x","source":"s","type":"a.b","time":"2026-01-01T00:00:00Z","ext":"v"}`,
		`[1]`, `{"type":"a","data_base64":"AAAA"}`, `{`, `{"type":"a..b"}`, `null`,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		ev, err := DecodeEvent(b, "fuzz", 4096, now)
		if err != nil {
			var ve *ValidationError
			if !errors.As(err, &ve) {
				t.Fatalf("error is not a ValidationError: %v", err)
			}
			if len(ve.Errors) == 0 {
				t.Fatal("ValidationError with no field errors")
			}
			return
		}
		// A valid event encodes, decodes again, and is still valid.
		out, err := json.Marshal(ev)
		if err != nil {
			t.Fatalf("valid event does not encode: %v", err)
		}
		again, err := DecodeEvent(out, "fuzz", 0, now)
		if err != nil {
			t.Fatalf("re-decode of %s: %v", out, err)
		}
		if again.ID != ev.ID || again.Type != ev.Type {
			t.Fatalf("round trip changed the event: %s", out)
		}
	})
}
