package publisher

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"time"

	"github.com/nats-io/nats.go"
)

// ErrNoResponders is returned by Gather and GatherRoute when nobody listens
// on the subject. It is nats.ErrNoResponders itself, so errors.Is works with
// either name.
var ErrNoResponders = nats.ErrNoResponders

// DefaultGatherTimeout bounds a Gather whose ctx has no deadline and which
// was given no Timeout option, so a forgotten deadline cannot hang a caller.
const DefaultGatherTimeout = 2 * time.Second

// DefaultGatherRouteTimeout is GatherRoute's bound when ctx has no deadline
// and no Timeout option is given. It is generous because the hub answers
// within the route's own timeout (2s by default) and the answer must not
// be cut off on its way back.
const DefaultGatherRouteTimeout = 10 * time.Second

// Names shared with the hub's gather service (hub/gather). They live here
// because this package must not import the hub.
const (
	// GatherSubjectPrefix + route is the subject the hub's gather service
	// answers on.
	GatherSubjectPrefix = "hub.gather."
	// GatherStatusHeader carries the HTTP-like status of a route gather:
	// 200, 400, 502 (a required branch failed), 504 (it timed out).
	GatherStatusHeader = "Hub-Gather-Status"
	// CorrelationIDHeader is sent on every branch request of a gather.
	CorrelationIDHeader = "Hub-Correlation-Id"
)

// Reply is one responder's answer to a Gather.
type Reply struct {
	Data   []byte
	Header nats.Header
	// Latency is the time from the request being published to this reply
	// being received.
	Latency time.Duration
	// Subject is the subject the reply arrived on (the gather's inbox).
	Subject string
}

// GatherOption tunes Gather and GatherRoute.
type GatherOption func(*gatherOptions)

type gatherOptions struct {
	maxReplies int
	stallGap   time.Duration
	timeout    time.Duration
	header     nats.Header
}

// MaxReplies ends the gather as soon as n replies arrived (n <= 0: no limit).
func MaxReplies(n int) GatherOption { return func(o *gatherOptions) { o.maxReplies = n } }

// StallGap ends the gather when no reply arrived for d since the previous
// one. The gap starts with the first reply: before it only the deadline
// applies. d <= 0 disables it.
func StallGap(d time.Duration) GatherOption { return func(o *gatherOptions) { o.stallGap = d } }

// Timeout bounds the whole gather, in addition to ctx's deadline.
func Timeout(d time.Duration) GatherOption { return func(o *gatherOptions) { o.timeout = d } }

// Header sets the request headers (correlation id, traceparent, ...). The
// header is only read, never modified.
func Header(h nats.Header) GatherOption { return func(o *gatherOptions) { o.header = h } }

// gatherChanCap bounds the inbox buffer. nats.go drops messages for a full
// channel subscription, so it must absorb a burst of replies while the loop
// below copies them out; the loop is tight, so a few hundred suffice.
const gatherChanCap = 512

// Gather publishes one request on subject with a fresh inbox as its reply
// subject and collects replies until one of:
//   - MaxReplies replies arrived;
//   - the deadline (ctx's, Timeout, or DefaultGatherTimeout when neither is
//     set) passed;
//   - StallGap passed without a reply since the previous one;
//   - a sentinel arrived: an empty body without headers (not returned).
//
// These are normal ends and return the replies with a nil error, except a
// deadline reached with no reply at all, which returns nats.ErrTimeout. When
// nobody listens it returns ErrNoResponders at once. When ctx is cancelled it
// returns the replies so far and ctx.Err().
func Gather(ctx context.Context, nc *nats.Conn, subject string, data []byte, opts ...GatherOption) ([]Reply, error) {
	if nc == nil {
		return nil, nats.ErrInvalidConnection
	}
	var o gatherOptions
	for _, opt := range opts {
		opt(&o)
	}
	timeout := o.timeout
	if _, ok := ctx.Deadline(); !ok && timeout <= 0 {
		timeout = DefaultGatherTimeout
	}
	if timeout > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, timeout)
		defer cancel()
	}
	if err := ctx.Err(); err != nil {
		return nil, err
	}

	bufLen := gatherChanCap
	if o.maxReplies > 0 && o.maxReplies < bufLen {
		// +1 leaves room for a sentinel or no-responders status.
		bufLen = o.maxReplies + 1
	}
	ch := make(chan *nats.Msg, bufLen)
	inbox := nc.NewInbox()
	sub, err := nc.ChanSubscribe(inbox, ch)
	if err != nil {
		return nil, fmt.Errorf("gather %s: subscribe inbox: %w", subject, err)
	}
	// The subscription is the only resource; nats.go stops writing to ch
	// once Unsubscribe returns, and ch is garbage after that.
	defer func() { _ = sub.Unsubscribe() }()

	start := time.Now()
	// The SUB above and this PUB go out on the same connection in order,
	// so the server knows the inbox before any responder can answer.
	if err := nc.PublishMsg(&nats.Msg{Subject: subject, Reply: inbox, Data: data, Header: o.header}); err != nil {
		return nil, fmt.Errorf("gather %s: publish: %w", subject, err)
	}

	var replies []Reply
	var stall *time.Timer
	var stallC <-chan time.Time
	defer func() {
		if stall != nil {
			stall.Stop()
		}
	}()
	for {
		select {
		case m := <-ch:
			if len(m.Data) == 0 {
				if isNoResponders(m) {
					// The server only says this when the request reached
					// nobody, so no reply can be on its way.
					return nil, ErrNoResponders
				}
				if len(m.Header) == 0 {
					return replies, nil // sentinel: the responders are done
				}
			}
			replies = append(replies, Reply{Data: m.Data, Header: m.Header, Latency: time.Since(start), Subject: m.Subject})
			if o.maxReplies > 0 && len(replies) >= o.maxReplies {
				return replies, nil
			}
			if o.stallGap > 0 {
				if stall == nil {
					stall = time.NewTimer(o.stallGap)
					stallC = stall.C
				} else {
					stall.Reset(o.stallGap) // Go ≥1.23 timers: no drain needed
				}
			}
		case <-stallC:
			return replies, nil
		case <-ctx.Done():
			err := ctx.Err()
			if !errors.Is(err, context.DeadlineExceeded) {
				return replies, err
			}
			if len(replies) == 0 {
				return nil, nats.ErrTimeout
			}
			return replies, nil
		}
	}
}

// isNoResponders reports the server's "no responders" status: an empty
// message with the header Status: 503.
func isNoResponders(m *nats.Msg) bool {
	return len(m.Data) == 0 && m.Header.Get("Status") == "503"
}

// GatherRoute asks the hub's gather service for route with params as the
// request (a JSON object) and returns the merged reply body and its status:
// 200 with the merged JSON; 400, 404, 502 or 504 with an
// application/problem+json body naming the problem (and, for 502/504, the
// required branch that failed). The error is non-nil only when no answer
// came: ErrNoResponders when no hub serves the route, nats.ErrTimeout, or
// a transport error. Options: Header (e.g. Hub-Correlation-Id, traceparent)
// and Timeout (default DefaultGatherRouteTimeout when ctx has no deadline;
// the route's own timeout is enforced by the hub).
func GatherRoute(ctx context.Context, nc *nats.Conn, route string, params map[string]any, opts ...GatherOption) ([]byte, int, error) {
	if nc == nil {
		return nil, 0, nats.ErrInvalidConnection
	}
	var o gatherOptions
	for _, opt := range opts {
		opt(&o)
	}
	body := []byte("{}")
	if len(params) > 0 {
		var err error
		if body, err = json.Marshal(params); err != nil {
			return nil, 0, fmt.Errorf("gather route %s: encode params: %w", route, err)
		}
	}
	timeout := o.timeout
	if _, ok := ctx.Deadline(); !ok && timeout <= 0 {
		timeout = DefaultGatherRouteTimeout
	}
	if timeout > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, timeout)
		defer cancel()
	}
	m, err := nc.RequestMsgWithContext(ctx, &nats.Msg{Subject: GatherSubjectPrefix + route, Data: body, Header: o.header})
	switch {
	case errors.Is(err, context.DeadlineExceeded):
		return nil, 0, fmt.Errorf("gather route %s: %w", route, nats.ErrTimeout)
	case err != nil:
		return nil, 0, fmt.Errorf("gather route %s: %w", route, err)
	}
	status := 200 // a reply without the header is taken as success
	if s := m.Header.Get(GatherStatusHeader); s != "" {
		if status, err = strconv.Atoi(s); err != nil {
			return m.Data, 0, fmt.Errorf("gather route %s: bad %s header %q", route, GatherStatusHeader, s)
		}
	}
	return m.Data, status, nil
}
