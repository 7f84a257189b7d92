package render_test

import (
	"encoding/json"
	"errors"
	"testing"

	"github.com/hubproject/hub/config"
	"github.com/hubproject/hub/hub"
	"github.com/hubproject/hub/hub/render"
)

// FuzzRender runs arbitrary template text over arbitrary event data through
// every template kind. It must never panic; a template that compiles must
// render or fail with a permanent error. Seeds live in testdata/fuzz.
func FuzzRender(f *testing.F) {
	f.Add("Order {{ .data.id }}", []byte(`{"id": 42}`))
	f.Add(`{{ default "x" .data.a.b }}{{ upper .type }}`, []byte(`{"a": {"b": null}}`))
	f.Add(`{{ range $k, $v := .data }}{{ $k }}={{ json $v }};{{ end }}`, []byte(`{"a": [1, 2.5e300, "s"], "b": {}}`))
	f.Add(`{{ formatTime "2006" .time }}{{ formatTime .data.l .data.t }}`, []byte(`{"l": "Jan", "t": "2020-01-01T00:00:00Z"}`))
	f.Add(`<a href="{{ .data.u }}">{{ .data.u }}</a>`, []byte(`{"u": "javascript:alert(1)"}`))
	f.Fuzz(func(t *testing.T, tpl string, data []byte) {
		ev := &hub.Event{SpecVersion: "1.0", ID: "id", Source: "s", Type: "t"}
		if json.Valid(data) {
			ev.Data = data
		}
		m, err := render.NewModel(ev)
		if err != nil {
			if !hub.IsPermanent(err) {
				t.Fatalf("NewModel error not permanent: %v", err)
			}
			return
		}
		subs := []*hub.Subscription{
			{ID: "e", Channel: "email", To: tpl, Subject: tpl, Text: tpl, HTML: tpl},
			{ID: "s", Channel: "sms", To: tpl, Body: tpl},
		}
		for _, sub := range subs {
			tp, err := render.Compile(sub)
			if err != nil {
				var es config.Errors
				if !errors.As(err, &es) || len(es) == 0 {
					t.Fatalf("compile error without config.Errors: %v", err)
				}
				continue
			}
			if _, err := tp.Content(m); err != nil && !hub.IsPermanent(err) {
				t.Fatalf("Content error not permanent: %v", err)
			}
			if _, err := tp.Recipients(m); err != nil && !hub.IsPermanent(err) {
				t.Fatalf("Recipients error not permanent: %v", err)
			}
		}
	})
}
