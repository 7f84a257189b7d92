package dlq

import (
	"errors"
	"net/http"
	"regexp"
	"strconv"

	"github.com/hubproject/hub/hub"
	"github.com/hubproject/hub/hub/api"
)

// Mount adds GET /v1/dlq, POST /v1/dlq/{id}/replay and DELETE /v1/dlq/{id}.
func (s *Store) Mount(a interface {
	Handle(string, http.Handler)
}) {
	a.Handle("GET /v1/dlq", http.HandlerFunc(s.httpList))
	a.Handle("GET /v1/dlq/{id}", http.HandlerFunc(s.httpGet))
	a.Handle("POST /v1/dlq/{id}/replay", http.HandlerFunc(s.httpReplay))
	a.Handle("DELETE /v1/dlq/{id}", http.HandlerFunc(s.httpDrop))
}

func (s *Store) httpList(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	f := Filter{Channel: q.Get("channel"), Subscription: q.Get("subscription")}
	if l := q.Get("limit"); l != "" {
		n, err := strconv.Atoi(l)
		if err != nil || n < 1 || n > 10000 {
			api.Error(w, http.StatusBadRequest, "invalid limit", hub.FieldError{Field: "limit", Reason: "must be a number from 1 to 10000"})
			return
		}
		f.Limit = n
	}
	for _, v := range []struct{ name, val string }{{"channel", f.Channel}, {"subscription", f.Subscription}} {
		if v.val != "" && !tokenRe.MatchString(v.val) {
			api.Error(w, http.StatusBadRequest, "invalid filter", hub.FieldError{Field: v.name, Reason: "must be letters, digits, '_' or '-'"})
			return
		}
	}
	items, err := s.List(r.Context(), f)
	if err != nil {
		api.Error(w, http.StatusServiceUnavailable, err.Error())
		return
	}
	api.WriteJSON(w, http.StatusOK, map[string]any{"items": items, "count": len(items)})
}

var tokenRe = regexp.MustCompile(`^[A-Za-z0-9_-]+$`)

func pathID(w http.ResponseWriter, r *http.Request) (uint64, bool) {
	id, err := strconv.ParseUint(r.PathValue("id"), 10, 64)
	if err != nil || id == 0 {
		api.Error(w, http.StatusBadRequest, "invalid dead letter id", hub.FieldError{Field: "id", Reason: "must be a positive integer"})
		return 0, false
	}
	return id, true
}

func (s *Store) fail(w http.ResponseWriter, err error) {
	switch {
	case errors.Is(err, ErrNotFound):
		api.Error(w, http.StatusNotFound, err.Error())
	case errors.Is(err, ErrNotReplayable):
		api.Error(w, http.StatusConflict, err.Error())
	default:
		api.Error(w, http.StatusServiceUnavailable, err.Error())
	}
}

func (s *Store) httpGet(w http.ResponseWriter, r *http.Request) {
	id, ok := pathID(w, r)
	if !ok {
		return
	}
	dl, err := s.Get(r.Context(), id)
	if err != nil {
		s.fail(w, err)
		return
	}
	api.WriteJSON(w, http.StatusOK, dl)
}

func (s *Store) httpReplay(w http.ResponseWriter, r *http.Request) {
	id, ok := pathID(w, r)
	if !ok {
		return
	}
	dl, err := s.Replay(r.Context(), id)
	if err != nil {
		s.fail(w, err)
		return
	}
	api.WriteJSON(w, http.StatusAccepted, map[string]any{"replayed": id, "delivery_id": dl.DeliveryID, "subscription": dl.Subscription})
}

func (s *Store) httpDrop(w http.ResponseWriter, r *http.Request) {
	id, ok := pathID(w, r)
	if !ok {
		return
	}
	if err := s.Drop(r.Context(), id); err != nil {
		s.fail(w, err)
		return
	}
	w.WriteHeader(http.StatusNoContent)
}
