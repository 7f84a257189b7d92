// Package responders runs the three demo services behind the dashboard
// gather route: svc.user.get, svc.orders.list and svc.payments.list. Each
// answers a JSON object of parameters ({"user_id": "42"}) with plausible
// JSON after a configurable delay, and fails a configurable share of
// requests with a NATS micro service error. Start them in-process from tests
// and benchmarks, or run ../ (the dashboard command) against a hub.
package responders

import (
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
)

// Subjects the responders listen on.
const (
	UserSubject     = "svc.user.get"
	OrdersSubject   = "svc.orders.list"
	PaymentsSubject = "svc.payments.list"
)

// Options tunes the responders.
type Options struct {
	// Delay is how long each reply waits; replies are delayed on timers,
	// so concurrent requests overlap instead of queueing.
	Delay time.Duration
	// FailRate is the share of requests (0..1) answered with the headers
	// Nats-Service-Error / Nats-Service-Error-Code: 500.
	FailRate float64
	// Queue, if set, joins every responder to this queue group so several
	// processes share the load. Empty: each process answers every request.
	Queue string
	// Counter, if set, is called with the subject of every request
	// received (before the delay), e.g. to count requests in tests.
	Counter func(subject string)
}

// Start subscribes the three responders on nc and returns stop, which
// unsubscribes them, cancels replies still waiting on their delay and
// waits for replies being sent. The subscriptions are known to the server
// when Start returns.
func Start(nc *nats.Conn, o Options) (stop func(), err error) {
	if nc == nil {
		return nil, errors.New("responders: nil NATS connection")
	}
	if o.FailRate < 0 || o.FailRate > 1 {
		return nil, fmt.Errorf("responders: fail rate %v is not within 0..1", o.FailRate)
	}
	r := &running{o: o, nc: nc, timers: map[*time.Timer]struct{}{}}
	for subject, build := range map[string]func(params) any{
		UserSubject: user, OrdersSubject: orders, PaymentsSubject: payments,
	} {
		sub, err := nc.QueueSubscribe(subject, o.Queue, func(m *nats.Msg) { r.handle(m, build) })
		if err != nil {
			r.stop()
			return nil, fmt.Errorf("responders: subscribe %s: %w", subject, err)
		}
		r.subs = append(r.subs, sub)
	}
	if err := nc.Flush(); err != nil {
		r.stop()
		return nil, fmt.Errorf("responders: flush: %w", err)
	}
	return r.stop, nil
}

type running struct {
	o    Options
	nc   *nats.Conn
	subs []*nats.Subscription

	mu      sync.Mutex
	stopped bool
	timers  map[*time.Timer]struct{} // delayed replies not yet started
	wg      sync.WaitGroup           // delayed replies scheduled or running
}

func (r *running) handle(m *nats.Msg, build func(params) any) {
	if r.o.Counter != nil {
		r.o.Counter(m.Subject)
	}
	if m.Reply == "" {
		return
	}
	if r.o.Delay <= 0 {
		r.respond(m, build)
		return
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.stopped {
		return
	}
	r.wg.Add(1)
	var t *time.Timer
	t = time.AfterFunc(r.o.Delay, func() {
		defer r.wg.Done()
		r.mu.Lock()
		delete(r.timers, t)
		r.mu.Unlock()
		r.respond(m, build)
	})
	r.timers[t] = struct{}{}
}

func (r *running) stop() {
	for _, s := range r.subs {
		_ = s.Unsubscribe() // fails only on a closed connection, which dropped it
	}
	r.mu.Lock()
	r.stopped = true
	for t := range r.timers {
		if t.Stop() { // it will never run: settle its share of wg here
			r.wg.Done()
		}
		delete(r.timers, t)
	}
	r.mu.Unlock()
	r.wg.Wait()
}

func (r *running) respond(m *nats.Msg, build func(params) any) {
	resp := nats.NewMsg(m.Reply)
	// Copy the correlation id back so a demo can show it end to end.
	if id := m.Header.Get("Hub-Correlation-Id"); id != "" {
		resp.Header.Set("Hub-Correlation-Id", id)
	}
	if r.o.FailRate > 0 && rand.Float64() < r.o.FailRate {
		resp.Header.Set("Nats-Service-Error", "simulated failure")
		resp.Header.Set("Nats-Service-Error-Code", "500")
		_ = r.nc.PublishMsg(resp) // the requester times out if this is lost
		return
	}
	p, err := parseParams(m.Data)
	if err != nil {
		resp.Header.Set("Nats-Service-Error", err.Error())
		resp.Header.Set("Nats-Service-Error-Code", "400")
		_ = r.nc.PublishMsg(resp)
		return
	}
	resp.Data, _ = json.Marshal(build(p)) // plain maps and slices always encode
	_ = r.nc.PublishMsg(resp)
}

// params are the request parameters the responders use.
type params struct {
	userID string
}

func parseParams(data []byte) (params, error) {
	p := params{userID: "42"}
	if len(data) == 0 {
		return p, nil
	}
	var raw map[string]any
	if err := json.Unmarshal(data, &raw); err != nil {
		return p, fmt.Errorf("request must be a JSON object: %w", err)
	}
	for _, k := range []string{"user_id", "user", "id"} {
		if v, ok := raw[k]; ok {
			p.userID = fmt.Sprint(v)
			break
		}
	}
	return p, nil
}

// seed makes each user's data stable across requests.
func seed(id string) uint64 {
	var h uint64 = 14695981039346656037 // FNV-1a
	for i := 0; i < len(id); i++ {
		h ^= uint64(id[i])
		h *= 1099511628211
	}
	return h
}

var firstNames = []string{"Ada", "Grace", "Linus", "Barbara", "Ken", "Radia", "Dennis", "Frances"}

func user(p params) any {
	rng := rand.New(rand.NewPCG(seed(p.userID), 1))
	name := firstNames[rng.IntN(len(firstNames))]
	return map[string]any{
		"id":    p.userID,
		"name":  name,
		"email": fmt.Sprintf("%s.%s@example.com", strings.ToLower(name), p.userID),
		"tier":  []string{"free", "pro", "enterprise"}[rng.IntN(3)],
	}
}

func orders(p params) any {
	rng := rand.New(rand.NewPCG(seed(p.userID), 2))
	n := 1 + rng.IntN(4)
	list := make([]any, n)
	for i := range n {
		list[i] = map[string]any{
			"id":      "ord_" + p.userID + "_" + strconv.Itoa(i+1),
			"user_id": p.userID,
			"status":  []string{"created", "paid", "shipped", "delivered"}[rng.IntN(4)],
			"total":   float64(500+rng.IntN(20000)) / 100,
		}
	}
	return list
}

func payments(p params) any {
	rng := rand.New(rand.NewPCG(seed(p.userID), 3))
	n := rng.IntN(3)
	list := make([]any, n)
	for i := range n {
		list[i] = map[string]any{
			"id":       "pay_" + p.userID + "_" + strconv.Itoa(i+1),
			"user_id":  p.userID,
			"amount":   float64(500+rng.IntN(20000)) / 100,
			"currency": "EUR",
			"method":   []string{"card", "sepa", "paypal"}[rng.IntN(3)],
		}
	}
	return list
}
