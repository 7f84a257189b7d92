package render_test

import (
	"encoding/json"
	"errors"
	"strings"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/hubproject/hub/config"
	"github.com/hubproject/hub/hub"
	"github.com/hubproject/hub/hub/render"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func emailSub(id string) *hub.Subscription {
	return &hub.Subscription{
		ID: id, Channel: "email", Events: []string{"order.created"},
		To:      "{{ .data.customer.email }}",
		Subject: "Order {{ .data.id }}",
		Text:    "Hi {{ .data.customer.name }}",
	}
}

func event(t testing.TB, data string) *hub.Event {
	t.Helper()
	ev := &hub.Event{
		SpecVersion: "1.0", ID: "01HZX", Source: "shop", Type: "order.created",
		Time:    time.Date(2025, 3, 4, 5, 6, 7, 0, time.UTC),
		Subject: "orders/42", DataContentType: "application/json",
		Extensions: map[string]any{"tenant": "acme"},
	}
	if data != "" {
		ev.Data = json.RawMessage(data)
	}
	return ev
}

func mustCompile(t testing.TB, sub *hub.Subscription) *render.Templates {
	t.Helper()
	tp, err := render.Compile(sub)
	if err != nil {
		t.Fatalf("Compile: %v", err)
	}
	return tp
}

func TestCompileErrorsNameFieldAndLine(t *testing.T) {
	cases := []struct {
		name string
		edit func(*hub.Subscription)
		want []string // full lines of the error
		path string   // relative path in the wrapped config.Errors
	}{
		{
			name: "subject syntax",
			edit: func(s *hub.Subscription) { s.Subject = "Order {{ .data.id }" },
			want: []string{`subscriptions[order-confirmation].subject: template: line 1: unexpected "}" in operand`},
			path: "subject",
		},
		{
			name: "text error on line 3",
			edit: func(s *hub.Subscription) { s.Text = "Hello\n\n{{ if .data.x }}no end" },
			want: []string{`subscriptions[order-confirmation].text: template: line 3: unexpected EOF`},
			path: "text",
		},
		{
			name: "unknown function",
			edit: func(s *hub.Subscription) { s.To = "{{ title .data.customer.email }}" },
			want: []string{`subscriptions[order-confirmation].to: template: line 1: function "title" not defined`},
			path: "to",
		},
		{
			name: "html syntax",
			edit: func(s *hub.Subscription) { s.HTML = "<p>\n{{ .data.id }</p>" },
			want: []string{`subscriptions[order-confirmation].html: template: line 2: unexpected "}" in operand`},
			path: "html",
		},
		{
			name: "html ambiguous context found at load",
			edit: func(s *hub.Subscription) { s.HTML = `<a href="{{ .data.url }}>x</a>` },
			want: []string{`subscriptions[order-confirmation].html: template: `},
			path: "html",
		},
		{
			name: "required fields",
			edit: func(s *hub.Subscription) { s.To, s.Subject, s.Text = "", "", "" },
			want: []string{
				"subscriptions[order-confirmation].to: required",
				"subscriptions[order-confirmation].subject: required",
				"subscriptions[order-confirmation].text: required: set text, html or both",
			},
		},
		{
			name: "field the channel does not use",
			edit: func(s *hub.Subscription) { s.Body = "{{ .id }}" },
			want: []string{"subscriptions[order-confirmation].body: not used by the email channel (email uses to, subject, text and html)"},
			path: "body",
		},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			sub := emailSub("order-confirmation")
			tc.edit(sub)
			_, err := render.Compile(sub)
			if err == nil {
				t.Fatal("Compile succeeded")
			}
			lines := strings.Split(err.Error(), "\n")
			if len(lines) != len(tc.want) {
				t.Fatalf("error:\n%v\nwant %d lines", err, len(tc.want))
			}
			for i, w := range tc.want {
				if !strings.HasPrefix(lines[i], w) {
					t.Errorf("line %d = %q, want prefix %q", i, lines[i], w)
				}
			}
			var ce *render.CompileError
			if !errors.As(err, &ce) || ce.Subscription != "order-confirmation" {
				t.Fatalf("not a *CompileError for the subscription: %#v", err)
			}
			// A config loader finds the relative paths to prefix its own.
			var es config.Errors
			if !errors.As(err, &es) {
				t.Fatal("errors.As config.Errors failed")
			}
			if tc.path != "" && es[0].Path != tc.path {
				t.Errorf("path = %q, want %q", es[0].Path, tc.path)
			}
			if strings.Contains(es[0].Reason, "subscriptions[") {
				t.Errorf("relative reason repeats the prefix: %q", es[0].Reason)
			}
		})
	}
}

func TestCompileSMSAndOtherChannels(t *testing.T) {
	_, err := render.Compile(&hub.Subscription{ID: "s", Channel: "sms", To: "{{ .data.phone }}", Body: "{{ .data.id", Subject: "x"})
	if err == nil || !strings.Contains(err.Error(), "subscriptions[s].body: template: line 1:") ||
		!strings.Contains(err.Error(), "subscriptions[s].subject: not used by the sms channel") {
		t.Fatalf("sms errors: %v", err)
	}
	// Webhook subscriptions have no templates.
	tp := mustCompile(t, &hub.Subscription{ID: "w", Channel: "webhook", URL: "https://x"})
	m, err := render.NewModel(event(t, `{}`))
	if err != nil {
		t.Fatal(err)
	}
	if r, err := tp.Recipients(m); err != nil || r != nil {
		t.Fatalf("Recipients = %v, %v", r, err)
	}
	if c, err := tp.Content(m); err != nil || c != (hub.Content{}) {
		t.Fatalf("Content = %+v, %v", c, err)
	}
}

func TestRenderDataModel(t *testing.T) {
	sub := &hub.Subscription{
		ID: "all", Channel: "email", To: "{{ .data.customer.email }}",
		Subject: "{{ .type }} {{ .id }} from {{ .source }} ({{ .subject }}, {{ .datacontenttype }}) tenant={{ .tenant }}",
		Text:    "{{ .data.id }} {{ .data.total }} {{ .time.Year }} {{ range .data.items }}[{{ .sku }}]{{ end }}",
		HTML:    "<p>{{ .data.customer.name }}</p>",
	}
	tp := mustCompile(t, sub)
	ev := event(t, `{"id": 12345678901234567890123, "total": 19.99,
		"customer": {"email": "ann@example.com", "name": "Ann"},
		"items": [{"sku": "a"}, {"sku": "b"}]}`)
	m, err := render.NewModel(ev)
	if err != nil {
		t.Fatal(err)
	}
	c, err := tp.Content(m)
	if err != nil {
		t.Fatal(err)
	}
	want := hub.Content{
		Subject: "order.created 01HZX from shop (orders/42, application/json) tenant=acme",
		Text:    "12345678901234567890123 19.99 2025 [a][b]", // big ints survive exactly
		HTML:    "<p>Ann</p>",
	}
	if c != want {
		t.Fatalf("Content =\n%+v\nwant\n%+v", c, want)
	}
	// Render is Content over a model it builds itself.
	if c2, err := tp.Render(ev); err != nil || c2 != want {
		t.Fatalf("Render = %+v, %v", c2, err)
	}
	// The SMS body goes to Text.
	sms := mustCompile(t, &hub.Subscription{ID: "s", Channel: "sms", To: "{{ .data.phone }}", Body: "Order {{ .data.id }} shipped"})
	if c, err := sms.Content(m); err != nil || c.Text != "Order 12345678901234567890123 shipped" || c.Subject != "" {
		t.Fatalf("sms Content = %+v, %v", c, err)
	}
}

func TestMissingKeyIsPermanentAndNamesTheKey(t *testing.T) {
	tp := mustCompile(t, emailSub("oc"))
	cases := []struct {
		name, data, field, reason string
	}{
		{"nested parent missing", `{"id": 1}`, "text", `map has no entry for key "customer"`},
		{"nested leaf missing", `{"id": 1, "customer": {"email": "a@b.c"}}`, "text", `map has no entry for key "name"`},
		{"top-level data key missing", `{"customer": {"name": "x"}}`, "subject", `map has no entry for key "id"`},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			m, err := render.NewModel(event(t, tc.data))
			if err != nil {
				t.Fatal(err)
			}
			_, err = tp.Content(m)
			if err == nil {
				t.Fatal("rendered without error")
			}
			if !hub.IsPermanent(err) {
				t.Errorf("not permanent: %v", err)
			}
			var re *render.RenderError
			if !errors.As(err, &re) {
				t.Fatalf("not a RenderError: %v", err)
			}
			if re.Field != tc.field || re.Reason != tc.reason || re.Line != 1 {
				t.Errorf("RenderError = %+v", re)
			}
			if !strings.HasPrefix(err.Error(), tc.field+": line 1: {{") || !strings.HasSuffix(err.Error(), tc.reason) {
				t.Errorf("message %q", err)
			}
		})
	}
	// A missing top-level attribute (a typo) fails the same way.
	typo := mustCompile(t, &hub.Subscription{ID: "t", Channel: "sms", To: "+15551234567", Body: "{{ .dta.id }}"})
	m, _ := render.NewModel(event(t, `{}`))
	if _, err := typo.Content(m); err == nil || err.Error() != `body: line 1: {{.dta.id}}: map has no entry for key "dta"` {
		t.Fatalf("typo: %v", err)
	}
}

func TestNullAndNoData(t *testing.T) {
	tp := mustCompile(t, &hub.Subscription{ID: "n", Channel: "sms", To: "x",
		Body: "[{{ .data.nick }}]{{ range .data.items }}x{{ end }}{{ if .data.nick }}set{{ end }}"})
	m, err := render.NewModel(event(t, `{"nick": null, "items": null}`))
	if err != nil {
		t.Fatal(err)
	}
	if c, err := tp.Content(m); err != nil || c.Text != "[]" {
		t.Fatalf("null: %q, %v", c.Text, err)
	}
	// An event without data: .data is null, so fields under it fail clearly.
	m, err = render.NewModel(event(t, ""))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := tp.Content(m); err == nil || !hub.IsPermanent(err) || !strings.Contains(err.Error(), "{{.data.nick}}") {
		t.Fatalf("no data: %v", err)
	}
}

func TestNewModelBadData(t *testing.T) {
	ev := event(t, `{"a": 1} trailing`)
	if _, err := render.NewModel(ev); err == nil || !hub.IsPermanent(err) {
		t.Fatalf("NewModel = %v, want a permanent error", err)
	}
	if _, err := render.NewModel(nil); !hub.IsPermanent(err) {
		t.Fatalf("NewModel(nil) = %v", err)
	}
}

func TestRecipients(t *testing.T) {
	cases := []struct {
		name, to, data string
		want           []string
		err            string
	}{
		{"single", "{{ .data.email }}", `{"email": " ann@example.com "}`, []string{"ann@example.com"}, ""},
		{"comma list", "{{ .data.a }}, {{ .data.b }},,{{ .data.a }}", `{"a": "a@x.io", "b": "b@x.io"}`, []string{"a@x.io", "b@x.io"}, ""},
		{"display name with comma", `"Doe, Jane" <jane@x.io>, bob@x.io`, `{}`, []string{`"Doe, Jane" <jane@x.io>`, "bob@x.io"}, ""},
		{"json array", "{{ json .data.emails }}", `{"emails": ["a@x.io", " b@x.io", "", "a@x.io", null]}`, []string{"a@x.io", "b@x.io"}, ""},
		{"json array of numbers", "{{ json .data.phones }}", `{"phones": [15551234567]}`, []string{"15551234567"}, ""},
		{"literal", "ops@example.com", `{}`, []string{"ops@example.com"}, ""},
		{"empty", "{{ .data.email }}", `{"email": ""}`, nil, "to: rendered no recipients"},
		{"only separators", "{{ .data.email }}", `{"email": " , ,"}`, nil, "to: rendered no recipients"},
		{"empty json array", "{{ json .data.emails }}", `{"emails": []}`, nil, "to: rendered no recipients"},
		{"bad json array", "[{{ .data.email }}", `{"email": "a@x.io"}`, nil, "not a JSON array of strings"},
		{"json array of objects", "{{ json .data.emails }}", `{"emails": [{"a": 1}]}`, nil, "element 0 of the JSON array"},
		{"missing key", "{{ .data.email }}", `{}`, nil, `to: line 1: {{.data.email}}: map has no entry for key "email"`},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			tp := mustCompile(t, &hub.Subscription{ID: "r", Channel: "email", To: tc.to, Subject: "s", Text: "t"})
			m, err := render.NewModel(event(t, tc.data))
			if err != nil {
				t.Fatal(err)
			}
			got, err := tp.Recipients(m)
			if tc.err != "" {
				if err == nil || !strings.Contains(err.Error(), tc.err) || !hub.IsPermanent(err) {
					t.Fatalf("err = %v, want permanent %q", err, tc.err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if strings.Join(got, "|") != strings.Join(tc.want, "|") {
				t.Fatalf("got %q, want %q", got, tc.want)
			}
		})
	}
}

func TestFunctions(t *testing.T) {
	cases := []struct {
		tpl, want, err string
	}{
		{`{{ default "friend" (index .data "nick") }}`, "friend", ""}, // missing key via index
		{`{{ default "friend" .data.null }}`, "friend", ""},
		{`{{ default "friend" .data.empty }}`, "friend", ""},
		{`{{ default "none" .data.zero }}`, "none", ""},
		{`{{ default "none" .data.f }}`, "none", ""},
		{`{{ default "friend" .data.name }}`, "Ann", ""},
		{`{{ .data.null | default "piped" }}`, "piped", ""},
		{`{{ upper .data.name }} {{ lower .data.name }} {{ upper .data.n }}`, "ANN ann 12", ""},
		{`{{ formatTime "2006-01-02 15:04" .time }}`, "2025-03-04 05:06", ""},
		{`{{ formatTime "Jan 2" .data.when }}`, "Dec 31", ""},
		{`{{ formatTime "Jan 2" .data.name }}`, "", `error calling formatTime: formatTime: "Ann" is not an RFC 3339 time`},
		{`{{ formatTime "Jan 2" .data.n }}`, "", "need a time or an RFC 3339 string, got json.Number"},
		{`{{ json .data.name }} {{ json .data.list }} {{ json .data.n }}`, `"Ann" [1,"two",null] 12`, ""},
		{`{{ len .data.list }} {{ index .data.list 1 }}`, "3 two", ""},
	}
	m, err := render.NewModel(event(t, `{"name": "Ann", "null": null, "empty": "", "zero": 0, "f": false, "n": 12,
		"when": "2024-12-31T23:00:00Z", "list": [1, "two", null]}`))
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range cases {
		t.Run(tc.tpl, func(t *testing.T) {
			tp := mustCompile(t, &hub.Subscription{ID: "f", Channel: "sms", To: "x", Body: tc.tpl})
			c, err := tp.Content(m)
			if tc.err != "" {
				if err == nil || !strings.Contains(err.Error(), tc.err) {
					t.Fatalf("err = %v, want %q", err, tc.err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if c.Text != tc.want {
				t.Fatalf("got %q, want %q", c.Text, tc.want)
			}
		})
	}
}

func TestHTMLIsEscapedTextIsNot(t *testing.T) {
	tp := mustCompile(t, &hub.Subscription{ID: "h", Channel: "email", To: "a@x.io",
		Subject: "{{ .data.name }}", Text: "{{ .data.name }}",
		HTML: `<p title="{{ .data.name }}">{{ .data.name }}</p><a href="{{ .data.url }}">x</a>`})
	c, err := tp.Render(event(t, `{"name": "<script>alert(1)</script> & \"co\"", "url": "javascript:alert(1)"}`))
	if err != nil {
		t.Fatal(err)
	}
	if c.Text != `<script>alert(1)</script> & "co"` || c.Subject != c.Text {
		t.Errorf("text/subject were altered: %q / %q", c.Text, c.Subject)
	}
	if strings.Contains(c.HTML, "<script>") || !strings.Contains(c.HTML, "&lt;script&gt;alert(1)&lt;/script&gt; &amp; &#34;co&#34;") {
		t.Errorf("html not escaped: %s", c.HTML)
	}
	if strings.Contains(c.HTML, "javascript:") {
		t.Errorf("unsafe URL kept: %s", c.HTML)
	}
}

func TestOutputLimit(t *testing.T) {
	tp := mustCompile(t, &hub.Subscription{ID: "big", Channel: "sms", To: "x",
		Body: `{{ range .data.l }}{{ range $.data.l }}{{ range $.data.l }}{{ $.data.s }}{{ end }}{{ end }}{{ end }}`})
	l := strings.Repeat("1,", 99) + "1"
	_, err := tp.Render(event(t, `{"s": "0123456789", "l": [`+l+`]}`))
	if err == nil || !hub.IsPermanent(err) || !strings.Contains(err.Error(), "byte limit") {
		t.Fatalf("err = %v", err)
	}
}

func TestConcurrentRender(t *testing.T) {
	tp := mustCompile(t, &hub.Subscription{ID: "c", Channel: "email", To: "{{ .data.e }}", Subject: "{{ .id }}", Text: "{{ .data.n }}", HTML: "<b>{{ .data.n }}</b>"})
	m, err := render.NewModel(event(t, `{"e": "a@x.io", "n": 7}`))
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	for range 8 {
		wg.Go(func() {
			for range 200 {
				if _, err := tp.Content(m); err != nil {
					t.Error(err)
					return
				}
				if _, err := tp.Recipients(m); err != nil {
					t.Error(err)
					return
				}
			}
		})
	}
	wg.Wait()
}

func TestValidEmail(t *testing.T) {
	for _, ok := range []string{"a@example.com", "Jane Doe <jane@example.com>", `"Doe, Jane" <jane.doe+x@sub.example.org>`} {
		if err := render.ValidEmail(ok); err != nil {
			t.Errorf("ValidEmail(%q) = %v", ok, err)
		}
	}
	for _, bad := range []string{"", "plain", "a@", "@b.c", "a b@c.d", "a@b.c\r\nBcc: x@y.z", "Jane <not-an-address>"} {
		if err := render.ValidEmail(bad); err == nil {
			t.Errorf("ValidEmail(%q) accepted", bad)
		}
	}
}

func TestValidPhone(t *testing.T) {
	for _, ok := range []string{"+15551234567", "+442071838750"} {
		if err := render.ValidPhone(ok); err != nil {
			t.Errorf("ValidPhone(%q) = %v", ok, err)
		}
	}
	for _, bad := range []string{"", "5551234567", "+1 555 123 4567", "+0123456789", "+1234567890123456", "phone"} {
		err := render.ValidPhone(bad)
		if err == nil {
			t.Errorf("ValidPhone(%q) accepted", bad)
		} else if bad != "" && !strings.Contains(err.Error(), "E.164") {
			t.Errorf("reason %q does not say E.164", err)
		}
	}
}
