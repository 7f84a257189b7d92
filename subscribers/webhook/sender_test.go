package webhook

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hubproject/hub/config"
	"github.com/hubproject/hub/hub"
	"github.com/hubproject/hub/subscribers/webhook/verify"
)

const testTraceparent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"

// newSender returns a sender that may reach loopback test servers (and
// nothing else private), closed when the test ends.
func newSender(t testing.TB, mutate func(*Config)) *Sender {
	t.Helper()
	cfg := DefaultConfig()
	cfg.AllowCIDRs = []string{"127.0.0.0/8"}
	if mutate != nil {
		mutate(&cfg)
	}
	s, err := New(cfg, WithVersion("1.2.3"))
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	t.Cleanup(func() {
		if err := s.Close(context.Background()); err != nil {
			t.Errorf("Close: %v", err)
		}
	})
	return s
}

func newDelivery(t testing.TB, url string) *hub.Delivery {
	t.Helper()
	ev := &hub.Event{
		SpecVersion: "1.0", ID: "01JTESTEVENT", Source: "shop", Type: "order.created",
		Time: time.Date(2025, 5, 1, 12, 0, 0, 0, time.UTC), Data: json.RawMessage(`{"id":42}`),
		Extensions: map[string]any{"traceparent": testTraceparent},
	}
	body, err := json.Marshal(ev)
	if err != nil {
		t.Fatal(err)
	}
	return &hub.Delivery{
		ID: ev.ID + "/crm/", Event: ev, EventJSON: body, Attempt: 1,
		Subscription: &hub.Subscription{
			ID: "crm", Channel: "webhook", Events: []string{"order.>"}, URL: url,
			Secret: config.Secret(testSecret), Headers: map[string]string{"X-Tenant": "acme"},
		},
	}
}

// receiver is an httptest server that records what it receives.
type receiver struct {
	*httptest.Server
	requests atomic.Int64
	conns    atomic.Int64 // connections accepted
	got      chan *capturedRequest
}

type capturedRequest struct {
	header http.Header
	body   []byte
	path   string
}

func newReceiver(t testing.TB, h func(w http.ResponseWriter, r *http.Request)) *receiver {
	t.Helper()
	rc := &receiver{got: make(chan *capturedRequest, 64)}
	rc.Server = httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		rc.requests.Add(1)
		body, _ := io.ReadAll(r.Body)
		select {
		case rc.got <- &capturedRequest{header: r.Header.Clone(), body: body, path: r.URL.RequestURI()}:
		default:
		}
		if h != nil {
			h(w, r)
		}
	}))
	rc.Config.ConnState = func(_ net.Conn, s http.ConnState) {
		if s == http.StateNew {
			rc.conns.Add(1)
		}
	}
	rc.Start()
	t.Cleanup(rc.Close)
	return rc
}

func status(code int) func(http.ResponseWriter, *http.Request) {
	return func(w http.ResponseWriter, _ *http.Request) { w.WriteHeader(code) }
}

func TestSendDelivered(t *testing.T) {
	for _, code := range []int{200, 201, 202, 204} {
		t.Run(strconv.Itoa(code), func(t *testing.T) {
			rc := newReceiver(t, status(code))
			s := newSender(t, nil)
			d := newDelivery(t, rc.URL+"/hooks")
			if err := s.Send(context.Background(), d); err != nil {
				t.Fatalf("Send: %v", err)
			}
			if d.Outcome.Status != code {
				t.Fatalf("outcome status %d, want %d", d.Outcome.Status, code)
			}
		})
	}
}

func TestSendRequestHeadersAndSignature(t *testing.T) {
	rc := newReceiver(t, status(http.StatusNoContent))
	s := newSender(t, nil)
	d := newDelivery(t, rc.URL+"/hooks?tenant=acme")
	before := time.Now().Unix()
	if err := s.Send(context.Background(), d); err != nil {
		t.Fatal(err)
	}
	r := <-rc.got
	h := r.header
	checks := map[string]string{
		"Content-Type": "application/cloudevents+json",
		"User-Agent":   "hub/1.2.3",
		"Webhook-Id":   "01JTESTEVENT/crm/",
		"X-Tenant":     "acme",
		"Traceparent":  testTraceparent,
	}
	for k, want := range checks {
		if got := h.Get(k); got != want {
			t.Errorf("%s: %q, want %q", k, got, want)
		}
	}
	if _, ok := h["Idempotency-Key"]; ok {
		t.Error("the Idempotency-Key marker went on the wire")
	}
	if r.path != "/hooks?tenant=acme" {
		t.Errorf("path %q", r.path)
	}
	if string(r.body) != string(d.EventJSON) {
		t.Errorf("body %s, want the event JSON %s", r.body, d.EventJSON)
	}
	ts, err := strconv.ParseInt(h.Get("Webhook-Timestamp"), 10, 64)
	if err != nil || ts < before || ts > time.Now().Unix() {
		t.Errorf("webhook-timestamp %q not now", h.Get("Webhook-Timestamp"))
	}
	if err := refWebhook(t, testSecret).Verify(r.body, h); err != nil {
		t.Errorf("reference library rejects the request: %v", err)
	}
	if err := verify.Verify([]string{testSecret}, h, r.body, 0); err != nil {
		t.Errorf("verify package rejects the request: %v", err)
	}

	// The id is stable across retries; the timestamp and signature are per attempt.
	d.Attempt = 2
	if err := s.Send(context.Background(), d); err != nil {
		t.Fatal(err)
	}
	if r2 := <-rc.got; r2.header.Get("Webhook-Id") != h.Get("Webhook-Id") {
		t.Errorf("webhook-id changed across retries: %q then %q", h.Get("Webhook-Id"), r2.header.Get("Webhook-Id"))
	}
}

func TestSendRotationSignsWithEverySecret(t *testing.T) {
	rc := newReceiver(t, status(200))
	s := newSender(t, nil)
	d := newDelivery(t, rc.URL)
	d.Subscription.Secret = config.Secret(testSecret + " " + testSecret2)
	if err := s.Send(context.Background(), d); err != nil {
		t.Fatal(err)
	}
	r := <-rc.got
	if n := len(strings.Fields(r.header.Get("Webhook-Signature"))); n != 2 {
		t.Fatalf("%d signatures, want 2", n)
	}
	for _, secret := range []string{testSecret, testSecret2} {
		if err := refWebhook(t, secret).Verify(r.body, r.header); err != nil {
			t.Errorf("reference library: %v", err)
		}
	}
}

func TestSendRedirectIsNotFollowed(t *testing.T) {
	for _, code := range []int{301, 302, 307, 308} {
		t.Run(strconv.Itoa(code), func(t *testing.T) {
			target := newReceiver(t, status(200))
			rc := newReceiver(t, func(w http.ResponseWriter, r *http.Request) {
				http.Redirect(w, r, target.URL+"/elsewhere", code)
			})
			s := newSender(t, nil)
			d := newDelivery(t, rc.URL)
			err := s.Send(context.Background(), d)
			if err == nil || hub.IsPermanent(err) {
				t.Fatalf("Send = %v, want a retryable error", err)
			}
			if _, ok := hub.RetryDelay(err); ok {
				t.Errorf("a redirect asked for a specific delay: %v", err)
			}
			var se *StatusError
			if !errors.As(err, &se) || se.Code != code {
				t.Errorf("want a StatusError %d, got %v", code, err)
			}
			if !strings.Contains(err.Error(), "not followed") {
				t.Errorf("message %q should say redirects are not followed", err)
			}
			if d.Outcome.Status != code {
				t.Errorf("outcome status %d", d.Outcome.Status)
			}
			if n := target.requests.Load(); n != 0 {
				t.Fatalf("redirect target got %d requests", n)
			}
			if n := target.conns.Load(); n != 0 {
				t.Fatalf("redirect target got %d connections", n)
			}
		})
	}
}

func TestSendRetryableStatuses(t *testing.T) {
	for _, code := range []int{408, 429, 500, 502, 503, 504} {
		t.Run(strconv.Itoa(code), func(t *testing.T) {
			rc := newReceiver(t, status(code))
			s := newSender(t, nil)
			d := newDelivery(t, rc.URL)
			err := s.Send(context.Background(), d)
			if err == nil || hub.IsPermanent(err) || hub.IsGone(err) {
				t.Fatalf("Send = %v, want retryable", err)
			}
			if _, ok := hub.RetryDelay(err); ok {
				t.Errorf("no Retry-After was sent, but got a delay: %v", err)
			}
			want := fmt.Sprintf("webhook %s: %d %s", rc.Listener.Addr(), code, http.StatusText(code))
			if err.Error() != want {
				t.Errorf("message %q, want %q", err, want)
			}
		})
	}
}

func TestSendHonoursRetryAfter(t *testing.T) {
	cases := []struct {
		name       string
		code       int
		retryAfter func() string
		min, max   time.Duration
	}{
		{"seconds 429", 429, func() string { return "120" }, 120 * time.Second, 120 * time.Second},
		{"seconds 503", 503, func() string { return "7" }, 7 * time.Second, 7 * time.Second},
		{"zero", 503, func() string { return "0" }, 0, 0},
		{"http date", 503, func() string { return time.Now().Add(90 * time.Second).UTC().Format(http.TimeFormat) }, 85 * time.Second, 90 * time.Second},
		{"date in the past", 408, func() string { return time.Now().Add(-time.Hour).UTC().Format(http.TimeFormat) }, 0, 0},
		{"huge", 429, func() string { return "99999999999999999999999" }, maxRetryAfter, maxRetryAfter},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			rc := newReceiver(t, func(w http.ResponseWriter, _ *http.Request) {
				w.Header().Set("Retry-After", c.retryAfter())
				w.WriteHeader(c.code)
			})
			s := newSender(t, nil)
			err := s.Send(context.Background(), newDelivery(t, rc.URL))
			d, ok := hub.RetryDelay(err)
			if !ok {
				t.Fatalf("Send = %v, want RetryAfter", err)
			}
			if d < c.min || d > c.max {
				t.Fatalf("delay %s, want %s..%s", d, c.min, c.max)
			}
			if hub.IsPermanent(err) {
				t.Fatal("marked permanent")
			}
		})
	}
	// Garbage is ignored: a plain retry.
	rc := newReceiver(t, func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Retry-After", "soon")
		w.WriteHeader(503)
	})
	s := newSender(t, nil)
	if _, ok := hub.RetryDelay(s.Send(context.Background(), newDelivery(t, rc.URL))); ok {
		t.Fatal("an unparsable Retry-After gave a delay")
	}
}

func TestSendGone(t *testing.T) {
	rc := newReceiver(t, status(http.StatusGone))
	s := newSender(t, nil)
	d := newDelivery(t, rc.URL)
	err := s.Send(context.Background(), d)
	if !hub.IsGone(err) {
		t.Fatalf("Send = %v, want Gone", err)
	}
	if d.Outcome.Status != 410 {
		t.Errorf("outcome status %d", d.Outcome.Status)
	}
}

func TestSendPermanent4xx(t *testing.T) {
	for _, code := range []int{400, 401, 403, 404, 405, 413, 422} {
		t.Run(strconv.Itoa(code), func(t *testing.T) {
			rc := newReceiver(t, status(code))
			s := newSender(t, nil)
			err := s.Send(context.Background(), newDelivery(t, rc.URL))
			if !hub.IsPermanent(err) || hub.IsGone(err) {
				t.Fatalf("Send = %v, want Permanent", err)
			}
		})
	}
}

func TestSendRecordsTruncatedResponse(t *testing.T) {
	long := strings.Repeat("x", 2000) + "SECRET-TAIL"
	rc := newReceiver(t, func(w http.ResponseWriter, _ *http.Request) {
		w.WriteHeader(500)
		_, _ = io.WriteString(w, long)
	})
	s := newSender(t, func(c *Config) { c.MaxResponseBytes = 100 })
	d := newDelivery(t, rc.URL)
	err := s.Send(context.Background(), d)
	if d.Outcome.Status != 500 || d.Outcome.Response != long[:100] {
		t.Fatalf("outcome %d %q", d.Outcome.Status, d.Outcome.Response)
	}
	if strings.Contains(err.Error(), "xxxx") {
		t.Errorf("the error carries the body: %v", err)
	}

	// The default records 512 bytes; a short body is recorded whole.
	s2 := newSender(t, nil)
	d2 := newDelivery(t, rc.URL)
	_ = s2.Send(context.Background(), d2)
	if len(d2.Outcome.Response) != DefaultMaxResponseBytes {
		t.Errorf("recorded %d bytes, want %d", len(d2.Outcome.Response), DefaultMaxResponseBytes)
	}
	ok := newReceiver(t, func(w http.ResponseWriter, _ *http.Request) { _, _ = io.WriteString(w, `{"ok":true}`) })
	d3 := newDelivery(t, ok.URL)
	if err := s2.Send(context.Background(), d3); err != nil || d3.Outcome.Response != `{"ok":true}` {
		t.Errorf("Send = %v, outcome %q", err, d3.Outcome.Response)
	}
}

func TestSendKeepsConnectionsAlive(t *testing.T) {
	rc := newReceiver(t, func(w http.ResponseWriter, _ *http.Request) {
		// A body longer than what is recorded must still be drained.
		_, _ = io.WriteString(w, strings.Repeat("y", 4096))
	})
	s := newSender(t, nil)
	for i := 0; i < 20; i++ {
		if err := s.Send(context.Background(), newDelivery(t, rc.URL)); err != nil {
			t.Fatal(err)
		}
	}
	if n := rc.conns.Load(); n != 1 {
		t.Fatalf("20 sequential sends used %d connections, want 1", n)
	}
}

func TestSendErrorsNameTheHostOnly(t *testing.T) {
	rc := newReceiver(t, status(503))
	s := newSender(t, nil)
	d := newDelivery(t, rc.URL+"/hooks/T0KEN-IN-PATH?sig=T0KEN-IN-QUERY")
	err := s.Send(context.Background(), d)
	// A closed port: a network error.
	ln, lerr := net.Listen("tcp", "127.0.0.1:0")
	if lerr != nil {
		t.Fatal(lerr)
	}
	dead := "http://" + ln.Addr().String() + "/hooks/T0KEN-IN-PATH?sig=T0KEN-IN-QUERY"
	_ = ln.Close()
	netErr := s.Send(context.Background(), newDelivery(t, dead))
	if netErr == nil || hub.IsPermanent(netErr) {
		t.Fatalf("connection refused: %v, want retryable", netErr)
	}
	for _, e := range []error{err, netErr} {
		msg := e.Error()
		if strings.Contains(msg, "T0KEN") || strings.Contains(msg, "MfKQ9r8") {
			t.Errorf("error leaks the URL or secret: %s", msg)
		}
		if !strings.HasPrefix(msg, "webhook 127.0.0.1:") {
			t.Errorf("error %q should start with the host", msg)
		}
	}
}

func TestSendTimeoutIsRetryable(t *testing.T) {
	release := make(chan struct{})
	rc := newReceiver(t, func(w http.ResponseWriter, r *http.Request) {
		select {
		case <-release:
		case <-r.Context().Done():
		}
	})
	defer close(release)
	s := newSender(t, func(c *Config) { c.Timeout = config.Duration(100 * time.Millisecond) })
	err := s.Send(context.Background(), newDelivery(t, rc.URL))
	if err == nil || hub.IsPermanent(err) || errors.Is(err, context.Canceled) {
		t.Fatalf("Send = %v, want a retryable timeout", err)
	}
	if !strings.Contains(err.Error(), "no response within 100ms") {
		t.Errorf("message %q should name the timeout", err)
	}
}

func TestSendContextCancelReturnsPromptly(t *testing.T) {
	entered := make(chan struct{}, 1)
	release := make(chan struct{})
	rc := newReceiver(t, func(w http.ResponseWriter, r *http.Request) {
		entered <- struct{}{}
		select {
		case <-release:
		case <-r.Context().Done():
		}
	})
	defer close(release)
	s := newSender(t, nil)
	ctx, cancel := context.WithCancel(context.Background())
	errc := make(chan error, 1)
	go func() { errc <- s.Send(ctx, newDelivery(t, rc.URL)) }()
	<-entered
	cancel()
	select {
	case err := <-errc:
		if !errors.Is(err, context.Canceled) {
			t.Fatalf("Send = %v, want context.Canceled", err)
		}
		if hub.IsPermanent(err) {
			t.Fatal("a cancelled send was marked permanent")
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Send did not return after its context was cancelled")
	}
}

func TestSendConcurrent(t *testing.T) {
	rc := newReceiver(t, status(204))
	s := newSender(t, func(c *Config) { c.MaxIdleConnsPerHost = 16 })
	const workers, each = 32, 25
	var wg sync.WaitGroup
	errs := make(chan error, workers*each)
	for w := 0; w < workers; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; i < each; i++ {
				d := newDelivery(t, rc.URL)
				if i%2 == 1 {
					d.Subscription.Secret = config.Secret(testSecret + " " + testSecret2)
				}
				if err := s.Send(context.Background(), d); err != nil {
					errs <- err
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	if n := rc.requests.Load(); n != workers*each {
		t.Fatalf("receiver got %d requests, want %d", n, workers*each)
	}
}

func TestCloseIsIdempotent(t *testing.T) {
	rc := newReceiver(t, status(200))
	s, err := New(func() Config { c := DefaultConfig(); c.AllowCIDRs = []string{"127.0.0.0/8"}; return c }())
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Send(context.Background(), newDelivery(t, rc.URL)); err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 3; i++ {
		if err := s.Close(context.Background()); err != nil {
			t.Fatalf("Close #%d: %v", i+1, err)
		}
	}
	err = s.Send(context.Background(), newDelivery(t, rc.URL))
	if !errors.Is(err, ErrClosed) || hub.IsPermanent(err) {
		t.Fatalf("Send after Close = %v, want retryable ErrClosed", err)
	}
}

func TestSendRefusesBadSubscriptions(t *testing.T) {
	rc := newReceiver(t, status(200))
	s := newSender(t, nil)
	cases := map[string]func(d *hub.Delivery){
		"ftp scheme":      func(d *hub.Delivery) { d.Subscription.URL = "ftp://example.com/x" },
		"file scheme":     func(d *hub.Delivery) { d.Subscription.URL = "file:///etc/passwd" },
		"no url":          func(d *hub.Delivery) { d.Subscription.URL = "" },
		"userinfo":        func(d *hub.Delivery) { d.Subscription.URL = "http://u:p@" + rc.Listener.Addr().String() },
		"no secret":       func(d *hub.Delivery) { d.Subscription.Secret = "" },
		"bad secret":      func(d *hub.Delivery) { d.Subscription.Secret = "whsec_???" },
		"reserved header": func(d *hub.Delivery) { d.Subscription.Headers = map[string]string{"Webhook-Signature": "v1,forged"} },
		"header CRLF":     func(d *hub.Delivery) { d.Subscription.Headers = map[string]string{"X-A": "a\r\nX-B: b"} },
		"no subscription": func(d *hub.Delivery) { d.Subscription = nil },
		"no delivery id":  func(d *hub.Delivery) { d.ID = "" },
	}
	for name, mutate := range cases {
		t.Run(name, func(t *testing.T) {
			d := newDelivery(t, rc.URL)
			mutate(d)
			if err := s.Send(context.Background(), d); !hub.IsPermanent(err) {
				t.Fatalf("Send = %v, want Permanent", err)
			}
		})
	}
	if n := rc.requests.Load(); n != 0 {
		t.Fatalf("%d requests made for invalid subscriptions", n)
	}
}

func TestSendUsesRecipientWhenURLIsEmpty(t *testing.T) {
	rc := newReceiver(t, status(200))
	s := newSender(t, nil)
	d := newDelivery(t, "")
	d.Recipient = rc.URL + "/r"
	if err := s.Send(context.Background(), d); err != nil {
		t.Fatal(err)
	}
	if r := <-rc.got; r.path != "/r" {
		t.Fatalf("path %q", r.path)
	}
}
