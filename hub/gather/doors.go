package gather

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/hubproject/hub/publisher"
)

// Content types of the doors' answers.
const (
	ContentTypeJSON    = "application/json"
	ContentTypeProblem = "application/problem+json"
)

// MaxBodySize bounds a request's parameters (HTTP body or NATS payload).
const MaxBodySize = 1 << 20

// problemBase prefixes the RFC 9457 problem types; each names a section of
// docs/gather.md.
const problemBase = "https://github.com/hubproject/hub/blob/main/docs/gather.md#"

// Problem is an RFC 9457 problem detail, the body of every failed gather on
// the HTTP and NATS doors.
type Problem struct {
	Type          string          `json:"type"`
	Title         string          `json:"title"`
	Status        int             `json:"status"`
	Detail        string          `json:"detail,omitempty"`
	Route         string          `json:"route,omitempty"`
	Branch        string          `json:"branch,omitempty"`
	CorrelationID string          `json:"correlation_id,omitempty"`
	Meta          json.RawMessage `json:"_meta,omitempty"` // every branch's status, as in a reply
}

// answer is what a door sends back for one gather.
type answer struct {
	status      int
	contentType string
	body        []byte
	corr        string // the correlation id, "" when no gather ran
}

// gatherAnswer runs one gather for a door.
func (g *Gatherer) gatherAnswer(ctx context.Context, route string, params map[string]any, hdr nats.Header) answer {
	res, err := g.Gather(ctx, route, params, hdr)
	var corr string
	if res != nil {
		corr = res.CorrelationID
	}
	var be *BranchError
	switch {
	case err == nil:
		b, _ := res.MarshalJSON() // never fails
		return answer{http.StatusOK, ContentTypeJSON, b, corr}
	case errors.As(err, &be):
		p := Problem{
			Type: problemBase + "branch-error", Title: "Required branch failed",
			Status: be.HTTPStatus(), Detail: be.Error(), Route: be.Route, Branch: be.Branch, CorrelationID: corr,
			Meta: res.appendMeta(nil),
		}
		if be.Timeout {
			p.Type, p.Title = problemBase+"branch-timeout", "Required branch timed out"
		}
		return problemAnswer(p, corr)
	case errors.Is(err, ErrUnknownRoute):
		return problemAnswer(Problem{Type: problemBase + "unknown-route", Title: "Unknown gather route",
			Status: http.StatusNotFound, Detail: err.Error(), Route: route}, corr)
	default: // parameters that cannot be encoded
		return problemAnswer(Problem{Type: problemBase + "bad-request", Title: "Bad gather request",
			Status: http.StatusBadRequest, Detail: err.Error(), Route: route}, corr)
	}
}

func problemAnswer(p Problem, corr string) answer {
	b, err := json.Marshal(p)
	if err != nil { // only strings and raw JSON we built: cannot happen
		b = []byte(`{"title":"internal error","status":500}`)
	}
	return answer{p.Status, ContentTypeProblem, b, corr}
}

func badRequest(route string, err error) Problem {
	return Problem{Type: problemBase + "bad-request", Title: "Bad gather request",
		Status: http.StatusBadRequest, Detail: err.Error(), Route: route}
}

// decodeParams reads a JSON object of parameters; an empty body means none.
// Numbers keep their exact text (ids longer than a float64).
func decodeParams(data []byte) (map[string]any, error) {
	data = bytes.TrimSpace(data)
	if len(data) == 0 {
		return nil, nil
	}
	if data[0] != '{' {
		return nil, errors.New("the body must be a JSON object of parameters")
	}
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.UseNumber()
	var params map[string]any
	if err := dec.Decode(&params); err != nil {
		return nil, fmt.Errorf("the body must be a JSON object of parameters: %w", err)
	}
	if _, err := dec.Token(); err != io.EOF {
		return nil, errors.New("the body must hold one JSON object, found more after it")
	}
	return params, nil
}

// HTTPHandler serves GET and POST /v1/gather/{route}; mount it with a
// pattern that defines {route}, e.g. mux.Handle("/v1/gather/{route}", h).
// GET takes the parameters from the query (a repeated key gives a list),
// POST from a JSON object body. The answer is 200 with the merged reply, or
// an application/problem+json body: 400 bad body, 404 unknown route, 502 a
// required branch failed, 504 it timed out (both naming the branch).
func (g *Gatherer) HTTPHandler() http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		route := r.PathValue("route")
		var params map[string]any
		switch r.Method {
		case http.MethodGet, http.MethodHead:
			params = queryParams(r)
		case http.MethodPost:
			data, err := io.ReadAll(http.MaxBytesReader(w, r.Body, MaxBodySize))
			if err == nil {
				params, err = decodeParams(data)
			}
			if err != nil {
				writeHTTP(w, problemAnswer(badRequest(route, err), ""))
				return
			}
		default:
			w.Header().Set("Allow", "GET, HEAD, POST")
			writeHTTP(w, problemAnswer(Problem{Type: problemBase + "bad-request", Title: "Method not allowed",
				Status: http.StatusMethodNotAllowed, Detail: r.Method + " is not supported; use GET or POST"}, ""))
			return
		}
		writeHTTP(w, g.gatherAnswer(r.Context(), route, params, nats.Header(r.Header)))
	})
}

func queryParams(r *http.Request) map[string]any {
	q := r.URL.Query()
	if len(q) == 0 {
		return nil
	}
	params := make(map[string]any, len(q))
	for k, vs := range q {
		if len(vs) == 1 {
			params[k] = vs[0]
			continue
		}
		list := make([]any, len(vs))
		for i, v := range vs {
			list[i] = v
		}
		params[k] = list
	}
	return params
}

func writeHTTP(w http.ResponseWriter, a answer) {
	h := w.Header()
	h.Set("Content-Type", a.contentType)
	h.Set("Content-Length", strconv.Itoa(len(a.body)))
	if a.corr != "" {
		h.Set(CorrelationIDHeader, a.corr)
	}
	w.WriteHeader(a.status)
	_, _ = w.Write(a.body) // the client went away: nothing left to tell it
}

// service is the running NATS door.
type service struct {
	subs   []*nats.Subscription
	ch     chan *nats.Msg
	cancel context.CancelFunc // aborts in-flight gathers when Stop runs out of time
	wg     sync.WaitGroup     // the workers
}

// Start opens the NATS door: it subscribes to hub.gather.<route> for every
// route in queue group hub-gather and answers each request with the merged
// reply and the header Hub-Gather-Status (200, 400, 502 or 504; the body is
// a problem JSON when not 200). Requests are served by Config.Concurrency
// workers, so a slow gather never blocks the subscription; the rest queue.
// Start returns once the server knows the subscriptions.
func (g *Gatherer) Start(ctx context.Context) error {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.svc != nil {
		return errors.New("gather: already started")
	}
	// nats.go drops messages for a full channel (slow consumer), so queue
	// generously: each waiting request costs a pointer.
	svc := &service{ch: make(chan *nats.Msg, max(1024, 16*g.concurrency))}
	for _, name := range g.Routes() {
		sub, err := g.nc.ChanQueueSubscribe(publisher.GatherSubjectPrefix+name, QueueGroup, svc.ch)
		if err != nil {
			svc.unsubscribe()
			return fmt.Errorf("gather: subscribe route %s: %w", name, err)
		}
		svc.subs = append(svc.subs, sub)
	}
	if _, ok := ctx.Deadline(); !ok {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, 10*time.Second)
		defer cancel()
	}
	if err := g.nc.FlushWithContext(ctx); err != nil {
		svc.unsubscribe()
		return fmt.Errorf("gather: register subscriptions: %w", err)
	}
	// Gathers run under their own context, not Start's: they must outlive
	// the call that started the door.
	workCtx, cancel := context.WithCancel(context.Background())
	svc.cancel = cancel
	for range g.concurrency {
		svc.wg.Go(func() {
			for m := range svc.ch {
				g.serveMsg(workCtx, m)
			}
		})
	}
	g.svc = svc
	return nil
}

func (s *service) unsubscribe() {
	for _, sub := range s.subs {
		// An error means the connection is closed, which removed the
		// subscription already.
		_ = sub.Unsubscribe()
	}
	s.subs = nil
}

// Stop closes the NATS door: it unsubscribes (no new requests), answers the
// requests already queued, and waits for in-flight gathers. If ctx ends
// first the remaining gathers are cancelled (their requesters get 502/504),
// Stop waits for them to return and reports ctx's error. Stop without
// Start, or twice, does nothing.
func (g *Gatherer) Stop(ctx context.Context) error {
	g.mu.Lock()
	svc := g.svc
	g.svc = nil
	g.mu.Unlock()
	if svc == nil {
		return nil
	}
	svc.unsubscribe()
	// After Unsubscribe nats.go no longer writes to ch, so closing it is
	// safe; workers drain what is queued and exit.
	close(svc.ch)
	done := make(chan struct{})
	go func() {
		svc.wg.Wait()
		close(done)
	}()
	defer svc.cancel()
	select {
	case <-done:
		return nil
	case <-ctx.Done():
		svc.cancel()
		<-done // every gather returns promptly once cancelled
		return fmt.Errorf("gather: stop: %w", ctx.Err())
	}
}

func (g *Gatherer) serveMsg(ctx context.Context, m *nats.Msg) {
	if m.Reply == "" {
		return // a publish, not a request: nobody would read the answer
	}
	route := strings.TrimPrefix(m.Subject, publisher.GatherSubjectPrefix)
	var a answer
	if params, err := decodeParams(m.Data); err != nil {
		a = problemAnswer(badRequest(route, err), "")
	} else {
		a = g.gatherAnswer(ctx, route, params, m.Header)
	}
	resp := &nats.Msg{Subject: m.Reply, Data: a.body, Header: nats.Header{
		publisher.GatherStatusHeader: {strconv.Itoa(a.status)},
		"Content-Type":               {a.contentType},
	}}
	if a.corr != "" {
		resp.Header[CorrelationIDHeader] = []string{a.corr}
	}
	if err := g.nc.PublishMsg(resp); err != nil {
		g.log.Warn().Err(err).Str("route", route).Str("correlation_id", a.corr).Msg("gather: reply not sent")
	}
}
