// Package render compiles a subscription's templates once, at config load,
// and renders them over events: the recipients (to) and the content (email
// subject, text and HTML parts; SMS body).
//
// Templates are Go templates (text/template; html/template for the email HTML
// part, so event data is escaped) run with missingkey=error: a field the
// event lacks is an error naming the field, never an empty string in a
// customer's inbox. Render errors are deterministic, so they are returned
// marked hub.Permanent.
package render

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	htmltemplate "html/template"
	"io"
	"regexp"
	"strconv"
	"strings"
	texttemplate "text/template"

	"github.com/hubproject/hub/config"
	"github.com/hubproject/hub/hub"
)

// Channel names whose subscriptions carry templates.
const (
	ChannelEmail = "email"
	ChannelSMS   = "sms"
)

// MaxOutput caps what one template may render. A template looping over a
// large payload fails with a clear error instead of exhausting memory.
const MaxOutput = 1 << 20

// Templates are one subscription's compiled templates. They are immutable
// and safe for concurrent use.
type Templates struct {
	sub     string
	to      *texttemplate.Template
	subject *texttemplate.Template
	text    *texttemplate.Template
	html    *htmltemplate.Template
	body    *texttemplate.Template
}

// field is one template field of a subscription.
type field struct {
	name string
	src  string
}

// Compile compiles the template fields sub's channel uses:
//
//	email: to (required), subject (required), text and/or html (one required)
//	sms:   to (required), body (required)
//
// A template field the channel does not use is an error too (an email
// subscription with a body would otherwise send nothing). Other channels
// have no templates: their Templates render nothing.
//
// The error is a *CompileError. Printed, it names the subscription by id:
//
//	subscriptions[order-confirmation].subject: template: line 1: unexpected "}" in operand
//
// and it wraps a config.Errors with paths relative to the subscription
// ("subject"), so a config loader that prefixes its own path
// ("subscriptions[3]") finds them with errors.As.
func Compile(sub *hub.Subscription) (*Templates, error) {
	if sub == nil {
		return nil, errors.New("render: no subscription")
	}
	t := &Templates{sub: sub.ID}
	var errs config.Errors
	var used map[string]bool
	switch sub.Channel {
	case ChannelEmail:
		used = map[string]bool{"to": true, "subject": true, "text": true, "html": true}
		required(&errs, "to", sub.To)
		required(&errs, "subject", sub.Subject)
		if strings.TrimSpace(sub.Text) == "" && strings.TrimSpace(sub.HTML) == "" {
			errs.Add("text", "required: set text, html or both")
		}
		t.to = compileText(&errs, "to", sub.To)
		t.subject = compileText(&errs, "subject", sub.Subject)
		t.text = compileText(&errs, "text", sub.Text)
		t.html = compileHTML(&errs, "html", sub.HTML)
	case ChannelSMS:
		used = map[string]bool{"to": true, "body": true}
		required(&errs, "to", sub.To)
		required(&errs, "body", sub.Body)
		t.to = compileText(&errs, "to", sub.To)
		t.body = compileText(&errs, "body", sub.Body)
	default:
		used = map[string]bool{}
	}
	if sub.Channel == ChannelEmail || sub.Channel == ChannelSMS {
		for _, f := range []field{{"to", sub.To}, {"subject", sub.Subject}, {"text", sub.Text}, {"html", sub.HTML}, {"body", sub.Body}} {
			if f.src != "" && !used[f.name] {
				errs.Add(f.name, "not used by the %s channel%s", sub.Channel, hint(sub.Channel))
			}
		}
	}
	if len(errs) > 0 {
		return nil, &CompileError{Subscription: sub.ID, Errs: errs}
	}
	return t, nil
}

func hint(channel string) string {
	switch channel {
	case ChannelEmail:
		return " (email uses to, subject, text and html)"
	case ChannelSMS:
		return " (sms uses to and body)"
	}
	return ""
}

func required(errs *config.Errors, name, src string) {
	if strings.TrimSpace(src) == "" {
		errs.Add(name, "required")
	}
}

func compileText(errs *config.Errors, name, src string) *texttemplate.Template {
	if src == "" {
		return nil
	}
	t, err := texttemplate.New(name).Funcs(Funcs()).Option("missingkey=error").Parse(src)
	if err != nil {
		errs.Add(name, "%s", parseReason(err))
		return nil
	}
	return t
}

func compileHTML(errs *config.Errors, name, src string) *htmltemplate.Template {
	if src == "" {
		return nil
	}
	t, err := htmltemplate.New(name).Funcs(Funcs()).Option("missingkey=error").Parse(src)
	if err != nil {
		errs.Add(name, "%s", parseReason(err))
		return nil
	}
	// html/template finds escaping problems (an action in an ambiguous
	// context) only when it first executes; run it once now so they fail
	// at load like syntax errors. Failures about the missing data are
	// expected and ignored.
	err = t.Execute(&limitWriter{max: MaxOutput}, nil)
	var he *htmltemplate.Error
	if errors.As(err, &he) {
		if he.Line > 0 {
			errs.Add(name, "template: line %d: %s", he.Line, he.Description)
		} else {
			errs.Add(name, "template: %s", parseReason(he))
		}
		return nil
	}
	return t
}

var (
	// "template: subject:1: unexpected ..." and
	// "html/template:html:1:5: ..." (the column is optional).
	parseRe = regexp.MustCompile(`^(?:html/)?template: ?[^:]*:(\d+):(?:\d+:)? (.*)$`)
	// `template: subject:1:12: executing "subject" at <.data.x>: map has no entry for key "x"`
	execRe = regexp.MustCompile(`^template: [^:]*:(\d+):(\d+): executing "[^"]*" at <(.*)>: (.*)$`)
)

// parseReason rewrites Go's parse error to drop the template's internal name
// (the YAML path already names the field): "template: line 1: ...".
func parseReason(err error) string {
	msg := err.Error()
	if m := parseRe.FindStringSubmatch(msg); m != nil {
		return "template: line " + m[1] + ": " + m[2]
	}
	return msg
}

// CompileError lists a subscription's template problems.
type CompileError struct {
	Subscription string        // the subscription id
	Errs         config.Errors // paths relative to the subscription: "subject"
}

func (e *CompileError) Error() string {
	lines := make([]string, len(e.Errs))
	for i, fe := range e.Errs {
		lines[i] = "subscriptions[" + e.Subscription + "]." + fe.Path + ": " + fe.Reason
	}
	return strings.Join(lines, "\n")
}

// Unwrap exposes the relative config.Errors to errors.As.
func (e *CompileError) Unwrap() error { return e.Errs }

// RenderError is a template that failed on an event: a missing key, a
// function error, output over MaxOutput. It is returned wrapped in
// hub.Permanent.
type RenderError struct {
	Subscription string
	Field        string // "subject"
	Line, Col    int    // 0 when unknown
	Expr         string // the failing action, e.g. ".data.customer.name"
	Reason       string // e.g. `map has no entry for key "customer"`
	Err          error
}

func (e *RenderError) Error() string {
	var b strings.Builder
	b.WriteString(e.Field)
	if e.Line > 0 {
		b.WriteString(": line ")
		b.WriteString(strconv.Itoa(e.Line))
	}
	if e.Expr != "" {
		b.WriteString(": {{")
		b.WriteString(e.Expr)
		b.WriteString("}}")
	}
	b.WriteString(": ")
	b.WriteString(e.Reason)
	return b.String()
}

func (e *RenderError) Unwrap() error { return e.Err }

func renderError(sub, name string, err error) error {
	re := &RenderError{Subscription: sub, Field: name, Reason: err.Error(), Err: err}
	var ee texttemplate.ExecError
	if errors.As(err, &ee) {
		msg := ee.Err.Error()
		if m := execRe.FindStringSubmatch(msg); m != nil {
			re.Line, _ = strconv.Atoi(m[1])
			re.Col, _ = strconv.Atoi(m[2])
			re.Expr, re.Reason = m[3], m[4]
		} else {
			re.Reason = strings.TrimPrefix(msg, "template: ")
		}
	}
	return hub.Permanent(re)
}

// exec runs one template into a string; a nil template renders "".
func (t *Templates) exec(name string, tpl interface {
	Execute(io.Writer, any) error
}, m Model) (string, error) {
	w := &limitWriter{max: MaxOutput}
	if err := tpl.Execute(w, m.m); err != nil {
		if errors.Is(err, errTooLong) {
			return "", hub.Permanent(&RenderError{Subscription: t.sub, Field: name, Reason: err.Error(), Err: err})
		}
		return "", renderError(t.sub, name, err)
	}
	if _, isHTML := tpl.(*htmltemplate.Template); isHTML {
		return w.b.String(), nil // html/template already prints null as ""
	}
	// With missingkey=error the only "<no value>" text/template prints is
	// a JSON null; a notification should show nothing there, not Go's
	// placeholder (Helm does the same).
	return strings.ReplaceAll(w.b.String(), "<no value>", ""), nil
}

// Content renders the subject, text and HTML (email) or body (SMS, into
// Text) over m. Errors are hub.Permanent and wrap a *RenderError.
func (t *Templates) Content(m Model) (hub.Content, error) {
	var c hub.Content
	var err error
	if t.subject != nil {
		if c.Subject, err = t.exec("subject", t.subject, m); err != nil {
			return hub.Content{}, err
		}
	}
	if t.text != nil {
		if c.Text, err = t.exec("text", t.text, m); err != nil {
			return hub.Content{}, err
		}
	}
	if t.body != nil {
		if c.Text, err = t.exec("body", t.body, m); err != nil {
			return hub.Content{}, err
		}
	}
	if t.html != nil {
		if c.HTML, err = t.exec("html", t.html, m); err != nil {
			return hub.Content{}, err
		}
	}
	return c, nil
}

// Render builds the model for ev and renders the content. To render the
// recipients too, or several subscriptions for one event, build the Model
// once with NewModel and call Recipients and Content.
func (t *Templates) Render(ev *hub.Event) (hub.Content, error) {
	m, err := NewModel(ev)
	if err != nil {
		return hub.Content{}, err
	}
	return t.Content(m)
}

// Recipients renders the to template over m and splits the result into
// recipients. The template may yield one address, several separated by
// commas (a comma inside double quotes, as in "Doe, Jane" <jane@example.com>,
// does not split), or a JSON array of strings ({{ json .data.emails }}).
// Recipients are trimmed, empty ones dropped and duplicates removed, in
// order. No recipient at all is an error: the event would otherwise vanish
// without a trace. Errors are hub.Permanent. Addresses are not validated
// here; each channel checks its own kind (ValidEmail, ValidPhone).
func (t *Templates) Recipients(m Model) ([]string, error) {
	if t.to == nil {
		return nil, nil
	}
	out, err := t.exec("to", t.to, m)
	if err != nil {
		return nil, err
	}
	return SplitRecipients(out)
}

// SplitRecipients is the splitting half of Recipients, for a rendered to.
func SplitRecipients(s string) ([]string, error) {
	s = strings.TrimSpace(s)
	var parts []string
	if strings.HasPrefix(s, "[") {
		var arr []any
		dec := json.NewDecoder(strings.NewReader(s))
		dec.UseNumber()
		if err := dec.Decode(&arr); err != nil {
			return nil, hub.Permanent(fmt.Errorf("to: rendered %s, which is not a JSON array of strings: %w", clip(s), err))
		}
		for i, v := range arr {
			switch x := v.(type) {
			case string:
				parts = append(parts, x)
			case json.Number: // a phone number written as a number
				parts = append(parts, x.String())
			case nil:
			default:
				return nil, hub.Permanent(fmt.Errorf("to: element %d of the JSON array is a %T, not a string", i, v))
			}
		}
	} else {
		parts = splitComma(s)
	}
	seen := make(map[string]bool, len(parts))
	res := make([]string, 0, len(parts))
	for _, p := range parts {
		p = strings.TrimSpace(p)
		if p == "" || seen[p] {
			continue
		}
		seen[p] = true
		res = append(res, p)
	}
	if len(res) == 0 {
		return nil, hub.Permanent(errors.New("to: rendered no recipients"))
	}
	return res, nil
}

// splitComma splits on commas outside double quotes and angle brackets.
func splitComma(s string) []string {
	var parts []string
	inQuote, inAngle, escaped := false, false, false
	start := 0
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case escaped:
			escaped = false
		case c == '\\' && inQuote:
			escaped = true
		case c == '"':
			inQuote = !inQuote
		case c == '<' && !inQuote:
			inAngle = true
		case c == '>' && !inQuote:
			inAngle = false
		case c == ',' && !inQuote && !inAngle:
			parts = append(parts, s[start:i])
			start = i + 1
		}
	}
	return append(parts, s[start:])
}

func clip(s string) string {
	if len(s) > 64 {
		return strconv.Quote(s[:64]) + "..."
	}
	return strconv.Quote(s)
}

var errTooLong = fmt.Errorf("output is over the %d byte limit", MaxOutput)

// limitWriter collects output up to max bytes.
type limitWriter struct {
	b   bytes.Buffer
	max int
}

func (w *limitWriter) Write(p []byte) (int, error) {
	if w.b.Len()+len(p) > w.max {
		return 0, errTooLong
	}
	return w.b.Write(p)
}
