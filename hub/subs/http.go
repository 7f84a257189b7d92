package subs

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"mime"
	"net/http"
	"reflect"
	"strconv"
	"strings"

	"github.com/hubproject/hub/config"
	"github.com/hubproject/hub/hub"
	"github.com/hubproject/hub/hub/api"
)

// MaxBodySize caps a request body.
const MaxBodySize = 64 << 10

// Mount adds GET and POST /v1/subscriptions and GET, PATCH and DELETE
// /v1/subscriptions/{id}.
func (s *Store) Mount(a interface {
	Handle(string, http.Handler)
}) {
	a.Handle("GET /v1/subscriptions", http.HandlerFunc(s.httpList))
	a.Handle("POST /v1/subscriptions", http.HandlerFunc(s.httpCreate))
	a.Handle("GET /v1/subscriptions/{id}", http.HandlerFunc(s.httpGet))
	a.Handle("PATCH /v1/subscriptions/{id}", http.HandlerFunc(s.httpPatch))
	a.Handle("DELETE /v1/subscriptions/{id}", http.HandlerFunc(s.httpDelete))
}

// createRequest is the body of POST /v1/subscriptions.
type createRequest struct {
	ID        string            `json:"id"`
	Channel   string            `json:"channel"`
	Events    []string          `json:"events"`
	URL       string            `json:"url"`
	Secret    string            `json:"secret"`
	Headers   map[string]string `json:"headers"`
	RateLimit float64           `json:"rate_limit"`
	Disabled  bool              `json:"disabled"`
}

// created is the answer to a create: the subscription and, when the hub
// generated it, the secret (shown this once).
type created struct {
	Subscription
	Secret string `json:"secret,omitempty"`
}

func (s *Store) httpList(w http.ResponseWriter, _ *http.Request) {
	items := s.Views()
	api.WriteJSON(w, http.StatusOK, map[string]any{"items": items, "count": len(items)})
}

func (s *Store) httpGet(w http.ResponseWriter, r *http.Request) {
	sub, err := s.Get(r.PathValue("id"))
	if err != nil {
		s.fail(w, err)
		return
	}
	api.WriteJSON(w, http.StatusOK, sub)
}

func (s *Store) httpCreate(w http.ResponseWriter, r *http.Request) {
	var req createRequest
	if !decode(w, r, &req) {
		return
	}
	sub, secret, err := s.Create(r.Context(), hub.Subscription{
		ID: req.ID, Channel: req.Channel, Events: req.Events, URL: req.URL,
		Secret: config.Secret(req.Secret), Headers: req.Headers, RateLimit: req.RateLimit, Disabled: req.Disabled,
	})
	if err != nil {
		s.fail(w, err)
		return
	}
	w.Header().Set("Location", "/v1/subscriptions/"+sub.ID)
	api.WriteJSON(w, http.StatusCreated, created{Subscription: sub, Secret: secret})
}

func (s *Store) httpPatch(w http.ResponseWriter, r *http.Request) {
	var p Patch
	if !decode(w, r, &p) {
		return
	}
	sub, err := s.Update(r.Context(), r.PathValue("id"), p)
	if err != nil {
		s.fail(w, err)
		return
	}
	api.WriteJSON(w, http.StatusOK, sub)
}

func (s *Store) httpDelete(w http.ResponseWriter, r *http.Request) {
	if err := s.Delete(r.Context(), r.PathValue("id")); err != nil {
		s.fail(w, err)
		return
	}
	w.WriteHeader(http.StatusNoContent)
}

// fail answers err as a problem.
func (s *Store) fail(w http.ResponseWriter, err error) {
	var ve *ValidationError
	switch {
	case errors.As(err, &ve):
		api.Error(w, http.StatusBadRequest, "invalid subscription", ve.Errors...)
	case errors.Is(err, ErrNotFound):
		api.Error(w, http.StatusNotFound, err.Error())
	case errors.Is(err, ErrExists), errors.Is(err, ErrReadOnly), errors.Is(err, ErrDisabledInConfig),
		errors.Is(err, ErrLimit), errors.Is(err, ErrConflict):
		api.Error(w, http.StatusConflict, err.Error())
	default:
		s.log.Error().Err(err).Msg("subscription request failed")
		api.Error(w, http.StatusServiceUnavailable, "subscription store unavailable: "+err.Error())
	}
}

// decode reads one JSON object of at most MaxBodySize into v, refusing
// unknown fields; on failure it has answered with a problem naming the
// field.
func decode(w http.ResponseWriter, r *http.Request, v any) bool {
	if ct := r.Header.Get("Content-Type"); ct != "" {
		if mt, _, err := mime.ParseMediaType(ct); err != nil || mt != "application/json" {
			api.Error(w, http.StatusUnsupportedMediaType, fmt.Sprintf("Content-Type %q is not supported: send application/json", ct))
			return false
		}
	}
	if r.ContentLength > MaxBodySize {
		api.Error(w, http.StatusRequestEntityTooLarge, fmt.Sprintf("body of %d bytes is over the %d byte limit", r.ContentLength, MaxBodySize))
		return false
	}
	dec := json.NewDecoder(http.MaxBytesReader(w, r.Body, MaxBodySize))
	dec.DisallowUnknownFields()
	err := dec.Decode(v)
	if err == nil {
		// Nothing but white space may follow the object.
		if _, terr := dec.Token(); !errors.Is(terr, io.EOF) {
			err = terr
			if err == nil {
				err = errTrailing
			}
		}
	}
	if err != nil {
		decodeError(w, err, v)
		return false
	}
	return true
}

var errTrailing = errors.New("data after the JSON object")

// decodeError answers a JSON decoding error, naming the field when the
// error says which one.
func decodeError(w http.ResponseWriter, err error, v any) {
	var (
		mbe *http.MaxBytesError
		ute *json.UnmarshalTypeError
		se  *json.SyntaxError
	)
	bad := func(field, reason string) {
		api.Error(w, http.StatusBadRequest, "invalid request body", hub.FieldError{Field: field, Reason: reason})
	}
	switch {
	case errors.As(err, &mbe):
		api.Error(w, http.StatusRequestEntityTooLarge, fmt.Sprintf("body is over the %d byte limit", mbe.Limit))
	case errors.Is(err, io.EOF):
		bad("", "the body is empty: send a JSON object")
	case errors.Is(err, io.ErrUnexpectedEOF):
		bad("", "the JSON is cut short")
	case errors.As(err, &se):
		bad("", fmt.Sprintf("invalid JSON at byte %d: %v", se.Offset, se))
	case errors.As(err, &ute):
		if ute.Field == "" {
			bad("", "the body must be a JSON object")
			return
		}
		bad(ute.Field, "must be "+kindName(fieldType(v, ute.Field, ute.Type)))
	case errors.Is(err, errTrailing):
		bad("", "the body must hold one JSON object and nothing after it")
	default:
		if name, ok := unknownField(err); ok {
			bad(name, "unknown field")
			return
		}
		bad("", err.Error())
	}
}

// unknownField extracts the name from encoding/json's error for a field
// DisallowUnknownFields refused; the package has no typed error for it.
func unknownField(err error) (string, bool) {
	rest, ok := strings.CutPrefix(err.Error(), "json: unknown field ")
	if !ok {
		return "", false
	}
	name, uerr := strconv.Unquote(rest)
	if uerr != nil {
		return rest, true
	}
	return name, true
}

// fieldType is the type of the field of the struct *v named name in JSON,
// so an error inside an array or object describes the whole field ("an
// array of strings", not "a string"); def when there is no such field.
func fieldType(v any, name string, def reflect.Type) reflect.Type {
	t := reflect.TypeOf(v)
	if t.Kind() != reflect.Pointer || t.Elem().Kind() != reflect.Struct {
		return def
	}
	t = t.Elem()
	for i := range t.NumField() {
		f := t.Field(i)
		if tag, _, _ := strings.Cut(f.Tag.Get("json"), ","); tag == name {
			return f.Type
		}
	}
	return def
}

// kindName describes a Go type as the JSON a client should send.
func kindName(t reflect.Type) string {
	switch t.Kind() {
	case reflect.String:
		return "a string"
	case reflect.Bool:
		return "true or false"
	case reflect.Float32, reflect.Float64, reflect.Int, reflect.Int64, reflect.Int32, reflect.Uint64, reflect.Uint32:
		return "a number"
	case reflect.Slice, reflect.Array:
		return "an array of " + strings.TrimPrefix(strings.TrimPrefix(kindName(t.Elem()), "a "), "an ") + "s"
	case reflect.Map:
		return "an object of " + strings.TrimPrefix(kindName(t.Elem()), "a ") + "s"
	case reflect.Struct:
		return "a JSON object"
	case reflect.Pointer:
		return kindName(t.Elem())
	}
	return "a " + t.String()
}
