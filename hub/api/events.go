package api

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"mime"
	"net/http"
	"strings"
	"time"

	"github.com/hubproject/hub/hub"
	"github.com/hubproject/hub/publisher"
)

var errTooLarge = errors.New("too large")

// readBody reads at most limit bytes, failing with errTooLarge beyond it;
// the limit holds while reading, so an oversize body is never buffered.
func readBody(r io.Reader, limit int64) ([]byte, error) {
	var buf bytes.Buffer
	n, err := buf.ReadFrom(io.LimitReader(r, limit+1))
	if err != nil {
		var mbe *http.MaxBytesError
		if errors.As(err, &mbe) {
			return nil, errTooLarge
		}
		return nil, err
	}
	if n > limit {
		return nil, errTooLarge
	}
	return buf.Bytes(), nil
}

type publishResult struct {
	ID        string `json:"id"`
	Sequence  uint64 `json:"sequence"`
	Duplicate bool   `json:"duplicate"`
}

// postEvents takes one event or a batch, structured (application/json,
// application/cloudevents+json, application/cloudevents-batch+json) or in
// CloudEvents binary mode (ce-* headers, data as the body).
func (s *Server) postEvents(w http.ResponseWriter, r *http.Request) {
	maxEvent := int64(s.events.MaxEventSize)
	maxBody := max(int64(s.cfg.MaxBodySize), maxEvent)
	if r.ContentLength > maxBody {
		Error(w, http.StatusRequestEntityTooLarge, fmt.Sprintf("body of %d bytes is over the %d byte limit", r.ContentLength, maxBody))
		return
	}
	body := http.MaxBytesReader(w, r.Body, maxBody)
	ct := r.Header.Get("Content-Type")
	mt, _, err := mime.ParseMediaType(ct)
	if ct != "" && err != nil {
		Error(w, http.StatusUnsupportedMediaType, fmt.Sprintf("Content-Type %q cannot be parsed", ct))
		return
	}
	now := s.now()
	// The CloudEvents HTTP binding: a cloudevents media type means
	// structured mode; otherwise ce-specversion means binary mode.
	switch {
	case mt == "application/cloudevents+json" || mt == "application/cloudevents-batch+json":
		s.postStructured(w, r, body, mt == "application/cloudevents-batch+json", maxEvent, maxBody, now)
	case r.Header.Get("ce-specversion") != "":
		s.postBinary(w, r, body, mt, maxEvent, now)
	case mt == "application/json":
		s.postStructured(w, r, body, false, maxEvent, maxBody, now)
	default:
		Error(w, http.StatusUnsupportedMediaType,
			fmt.Sprintf("Content-Type %q is not supported: send application/json, application/cloudevents+json, application/cloudevents-batch+json, or CloudEvents binary mode (ce-* headers)", ct))
	}
}

func (s *Server) postStructured(w http.ResponseWriter, r *http.Request, body io.Reader, batchOnly bool, maxEvent, maxBody int64, now time.Time) {
	// Peek at the first byte to learn whether this is one event or a batch,
	// so one event is held to max_event_size while it is read.
	br := newPeekReader(body)
	first, err := br.firstNonSpace()
	if err != nil && !errors.Is(err, io.EOF) {
		s.readError(w, err, maxBody)
		return
	}
	isBatch := first == '['
	if batchOnly && !isBatch {
		Error(w, http.StatusBadRequest, "application/cloudevents-batch+json needs a JSON array of events")
		return
	}
	limit := maxBody
	if !isBatch {
		limit = maxEvent
	}
	data, err := readBody(br, limit)
	if err != nil {
		s.readError(w, err, limit)
		return
	}
	if !isBatch {
		ev, err := hub.DecodeEvent(data, "hub/http", int(maxEvent), now)
		if err == nil && traceFromHeader(r, ev) {
			err = ev.Validate(int(maxEvent))
		}
		if err != nil {
			s.invalid(w, err)
			return
		}
		s.publishOne(w, r, ev)
		return
	}
	var raws []json.RawMessage
	if err := json.Unmarshal(data, &raws); err != nil {
		var te *json.UnmarshalTypeError
		if errors.As(err, &te) {
			Error(w, http.StatusBadRequest, "a batch must be a JSON array of event objects")
			return
		}
		Error(w, http.StatusBadRequest, "malformed JSON: "+err.Error())
		return
	}
	if len(raws) == 0 {
		Error(w, http.StatusBadRequest, "the batch is empty", hub.FieldError{Field: "[]", Reason: "at least one event is required"})
		return
	}
	if len(raws) > s.events.MaxBatch {
		Error(w, http.StatusRequestEntityTooLarge, fmt.Sprintf("the batch has %d events, over the limit of %d (events.max_batch)", len(raws), s.events.MaxBatch))
		return
	}
	// Validate every event before storing any: a batch is rejected whole,
	// and the errors carry the index of each bad event.
	evs := make([]*hub.Event, len(raws))
	var ferrs []hub.FieldError
	for i, raw := range raws {
		ev, err := hub.DecodeEvent(raw, "hub/http", int(maxEvent), now)
		if err == nil && traceFromHeader(r, ev) {
			err = ev.Validate(int(maxEvent))
		}
		if err != nil {
			var ve *hub.ValidationError
			if !errors.As(err, &ve) {
				ve = &hub.ValidationError{Errors: []hub.FieldError{{Reason: err.Error()}}}
			}
			for _, fe := range ve.Errors {
				f := fmt.Sprintf("[%d]", i)
				if fe.Field != "" {
					f += "." + fe.Field
				}
				ferrs = append(ferrs, hub.FieldError{Field: f, Reason: fe.Reason})
			}
			continue
		}
		evs[i] = ev
	}
	if len(ferrs) > 0 {
		Error(w, http.StatusBadRequest, fmt.Sprintf("the batch was rejected whole; nothing was stored (%d invalid field(s))", len(ferrs)), ferrs...)
		return
	}
	s.publishBatch(w, r, evs)
}

// postBinary reads a CloudEvents binary-mode request: attributes in ce-*
// headers, the body is the data, Content-Type is its datacontenttype.
func (s *Server) postBinary(w http.ResponseWriter, r *http.Request, body io.Reader, mt string, maxEvent int64, now time.Time) {
	data, err := readBody(body, maxEvent)
	if err != nil {
		s.readError(w, err, maxEvent)
		return
	}
	ev := hub.Event{
		SpecVersion:     r.Header.Get("ce-specversion"),
		ID:              r.Header.Get("ce-id"),
		Source:          r.Header.Get("ce-source"),
		Type:            r.Header.Get("ce-type"),
		Subject:         r.Header.Get("ce-subject"),
		DataSchema:      r.Header.Get("ce-dataschema"),
		DataContentType: r.Header.Get("Content-Type"),
	}
	var ferrs []hub.FieldError
	if t := r.Header.Get("ce-time"); t != "" {
		tt, err := time.Parse(time.RFC3339Nano, t)
		if err != nil {
			ferrs = append(ferrs, hub.FieldError{Field: "time", Reason: fmt.Sprintf("must be an RFC 3339 timestamp, not %q", t)})
		}
		ev.Time = tt
	}
	for k, v := range r.Header {
		lk := strings.ToLower(k)
		name, ok := strings.CutPrefix(lk, "ce-")
		if !ok || len(v) == 0 {
			continue
		}
		switch name {
		case "specversion", "id", "source", "type", "subject", "dataschema", "time":
			continue
		}
		if ev.Extensions == nil {
			ev.Extensions = map[string]any{}
		}
		ev.Extensions[name] = v[0]
	}
	if len(data) > 0 {
		if mt == "" || mt == "application/json" || strings.HasSuffix(mt, "+json") {
			if !json.Valid(data) {
				ferrs = append(ferrs, hub.FieldError{Field: "data", Reason: "body is declared JSON but is not valid JSON"})
			}
			ev.Data = data
		} else {
			ev.DataBase64 = base64.StdEncoding.EncodeToString(data)
		}
	}
	if len(ferrs) > 0 {
		Error(w, http.StatusBadRequest, "invalid event", ferrs...)
		return
	}
	ev.SetDefaults("hub/http", now)
	traceFromHeader(r, &ev)
	if err := ev.Validate(int(maxEvent)); err != nil {
		s.invalid(w, err)
		return
	}
	s.publishOne(w, r, &ev)
}

func (s *Server) readError(w http.ResponseWriter, err error, limit int64) {
	if errors.Is(err, errTooLarge) {
		Error(w, http.StatusRequestEntityTooLarge, fmt.Sprintf("body is over the %d byte limit", limit))
		return
	}
	var mbe *http.MaxBytesError
	if errors.As(err, &mbe) {
		Error(w, http.StatusRequestEntityTooLarge, fmt.Sprintf("body is over the %d byte limit", mbe.Limit))
		return
	}
	Error(w, http.StatusBadRequest, "reading the body failed: "+err.Error())
}

func (s *Server) invalid(w http.ResponseWriter, err error) {
	var ve *hub.ValidationError
	if errors.As(err, &ve) {
		for _, fe := range ve.Errors {
			if fe.Field == "" && strings.Contains(fe.Reason, "byte limit") {
				Error(w, http.StatusRequestEntityTooLarge, fe.Reason)
				return
			}
		}
		Error(w, http.StatusBadRequest, "invalid event", ve.Errors...)
		return
	}
	Error(w, http.StatusBadRequest, err.Error())
}

func (s *Server) publishFailed(w http.ResponseWriter, err error, detail string) {
	if errors.Is(err, publisher.ErrUnavailable) {
		RetryLater(w, http.StatusServiceUnavailable, time.Second, detail+": JetStream is unavailable; retry with the same ids (they are deduplicated)")
		return
	}
	s.log.Error().Err(err).Msg("publish failed")
	Error(w, http.StatusInternalServerError, detail+": "+err.Error())
}

func (s *Server) publishOne(w http.ResponseWriter, r *http.Request, ev *hub.Event) {
	ack, err := s.pub.Publish(r.Context(), *ev)
	if err != nil {
		s.publishFailed(w, err, "event "+ev.ID+" was not stored")
		return
	}
	WriteJSON(w, http.StatusAccepted, publishResult{ID: ack.ID, Sequence: ack.Sequence, Duplicate: ack.Duplicate})
}

// publishBatch stores the events, with WithAtomicBatches as one JetStream
// atomic batch (several of publisher.DefaultMaxBatch when events.max_batch
// is larger): all stored, with a few fsyncs per batch under sync: always
// rather than one per event, or none. An id
// already stored makes the publisher send per message, so it comes back as
// a duplicate. If JetStream fails, the client retries the whole batch with
// the same ids; what was stored comes back as duplicates.
func (s *Server) publishBatch(w http.ResponseWriter, r *http.Request, evs []*hub.Event) {
	if !s.atomicBatches {
		s.publishEach(w, r, evs)
		return
	}
	batch := make([]publisher.Event, len(evs))
	for i, ev := range evs {
		batch[i] = *ev
	}
	acks, err := s.pub.PublishBatch(r.Context(), batch)
	if err != nil {
		var ve *hub.ValidationError
		if errors.As(err, &ve) {
			Error(w, http.StatusBadRequest, "the batch was rejected whole; nothing was stored", ve.Errors...)
			return
		}
		stored := 0
		for _, a := range acks {
			if a.Sequence > 0 {
				stored++
			}
		}
		s.publishFailed(w, err, fmt.Sprintf("%d of %d events were stored", stored, len(evs)))
		return
	}
	out := make([]publishResult, len(acks))
	for i, a := range acks {
		out[i] = publishResult{ID: a.ID, Sequence: a.Sequence, Duplicate: a.Duplicate}
	}
	WriteJSON(w, http.StatusAccepted, out)
}

// publishEach sends every event asynchronously and waits for all acks (the
// default batch path). If JetStream fails part-way, some
// events may be stored: the client retries the whole batch and the stored
// ones come back as duplicates.
func (s *Server) publishEach(w http.ResponseWriter, r *http.Request, evs []*hub.Event) {
	futs := make([]*publisher.Future, len(evs))
	var firstErr error
	for i, ev := range evs {
		f, err := s.pub.PublishAsync(*ev)
		if err != nil {
			firstErr = err
			break
		}
		futs[i] = f
	}
	out := make([]publishResult, len(evs))
	stored := 0
	for i, f := range futs {
		if f == nil {
			continue
		}
		ack, err := f.Wait(r.Context())
		if err != nil {
			if firstErr == nil {
				firstErr = err
			}
			continue
		}
		stored++
		out[i] = publishResult{ID: ack.ID, Sequence: ack.Sequence, Duplicate: ack.Duplicate}
	}
	if firstErr != nil {
		s.publishFailed(w, firstErr, fmt.Sprintf("%d of %d events were stored", stored, len(evs)))
		return
	}
	WriteJSON(w, http.StatusAccepted, out)
}

// peekReader lets postStructured look at the first non-space byte.
type peekReader struct {
	r   io.Reader
	buf []byte
}

func newPeekReader(r io.Reader) *peekReader { return &peekReader{r: r} }

func (p *peekReader) firstNonSpace() (byte, error) {
	tmp := make([]byte, 512)
	for {
		n, err := p.r.Read(tmp)
		p.buf = append(p.buf, tmp[:n]...)
		if i := bytes.IndexFunc(p.buf, func(r rune) bool { return r != ' ' && r != '\t' && r != '\n' && r != '\r' }); i >= 0 {
			return p.buf[i], nil
		}
		if err != nil {
			return 0, err
		}
	}
}

func (p *peekReader) Read(b []byte) (int, error) {
	if len(p.buf) > 0 {
		n := copy(b, p.buf)
		p.buf = p.buf[n:]
		return n, nil
	}
	return p.r.Read(b)
}

// traceFromHeader gives an event without a traceparent extension the
// request's W3C Trace Context headers (traceparent, tracestate). It reports
// whether it changed the event.
func traceFromHeader(r *http.Request, ev *hub.Event) bool {
	tp := r.Header.Get(hub.TraceparentHeader)
	if !hub.ValidTraceparent(tp) {
		return false
	}
	if _, ok := ev.Extensions[hub.TraceparentHeader]; ok {
		return false
	}
	if ev.Extensions == nil {
		ev.Extensions = map[string]any{}
	}
	ev.Extensions[hub.TraceparentHeader] = tp
	if ts := r.Header.Get(hub.TracestateHeader); ts != "" && len(ts) <= 512 {
		if _, ok := ev.Extensions[hub.TracestateHeader]; !ok {
			ev.Extensions[hub.TracestateHeader] = ts
		}
	}
	return true
}
