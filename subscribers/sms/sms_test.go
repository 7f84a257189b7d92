package sms_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/hubproject/hub/config"
	"github.com/hubproject/hub/hub"
	"github.com/hubproject/hub/subscribers/sms"
	"github.com/hubproject/hub/subscribers/sms/twiliotest"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

const (
	sid   = "ACtest0123456789"
	token = "tok-s3cret-value"
)

// Recipients and what the fake API does with them (see twiliotest).
const (
	numOK          = "+15551234567"
	numInvalid     = twiliotest.ToInvalid      // 21211
	numUnsub       = twiliotest.ToUnsubscribed // 21610
	numUnreachable = twiliotest.ToUnreachable  // 21612
	numLandline    = twiliotest.ToNotMobile    // 21614
	numServerErr   = twiliotest.ToServerError  // 500
	numHang        = twiliotest.ToHang         // answers only when the request is cancelled
)

// startTwilio starts the fake Twilio API with this file's credentials.
func startTwilio(t testing.TB) *twiliotest.Server {
	t.Helper()
	return twiliotest.Start(t, twiliotest.Options{AccountSID: sid, AuthToken: token})
}

// waitHanging waits up to 10s for a request to numHang to arrive.
func waitHanging(t testing.TB, f *twiliotest.Server) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := f.WaitHanging(ctx, 1); err != nil {
		t.Fatal(err)
	}
}

func twilioConfig(f *twiliotest.Server) sms.Config {
	cfg := sms.DefaultConfig()
	cfg.Twilio.BaseURL = f.URL()
	cfg.Twilio.AccountSID = sid
	cfg.Twilio.AuthToken = token
	cfg.Twilio.From = "+15550000000"
	return cfg
}

func newSender(t testing.TB, cfg sms.Config, opts ...sms.Option) *sms.Sender {
	t.Helper()
	s, err := sms.New(cfg, opts...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if err := s.Close(ctx); err != nil {
			t.Errorf("Close: %v", err)
		}
	})
	return s
}

func delivery(to, body string) *hub.Delivery {
	return &hub.Delivery{
		ID: "evt/shipped-sms/" + to, Recipient: to,
		Subscription: &hub.Subscription{ID: "shipped-sms", Channel: "sms"},
		Content:      hub.Content{Text: body}, Attempt: 1,
	}
}

func TestTwilioDelivers(t *testing.T) {
	f := startTwilio(t)
	s := newSender(t, twilioConfig(f))
	for i := range 10 {
		d := delivery(numOK, fmt.Sprintf("Order %d shipped", i))
		if err := s.Send(context.Background(), d); err != nil {
			t.Fatal(err)
		}
		if want := fmt.Sprintf("SM%032d", i+1); d.Outcome.Status != 201 || d.Outcome.Response != want {
			t.Fatalf("Outcome = %+v, want sid %s", d.Outcome, want)
		}
	}
	msgs := f.Messages()
	if len(msgs) != 10 || msgs[3].To != numOK || msgs[3].From != "+15550000000" || msgs[3].Body != "Order 3 shipped" || msgs[3].MessagingServiceSID != "" || msgs[3].SID != fmt.Sprintf("SM%032d", 4) {
		t.Fatalf("messages: %+v", msgs)
	}
	if n := f.Connections(); n != 1 {
		t.Errorf("10 sequential sends used %d connections, want 1 (keep-alive)", n)
	}
}

func TestTwilioMessagingServiceAndSubscriptionFrom(t *testing.T) {
	f := startTwilio(t)
	cfg := twilioConfig(f)
	cfg.Twilio.From = ""
	cfg.Twilio.MessagingServiceSID = "MG123"
	s := newSender(t, cfg)
	if err := s.Send(context.Background(), delivery(numOK, "via service")); err != nil {
		t.Fatal(err)
	}
	d := delivery(numOK, "own number")
	d.Subscription.From = "+15559990000"
	if err := s.Send(context.Background(), d); err != nil {
		t.Fatal(err)
	}
	msgs := f.Messages()
	if len(msgs) != 2 || msgs[0].MessagingServiceSID != "MG123" || msgs[0].From != "" || msgs[1].From != "+15559990000" {
		t.Fatalf("messages: %+v", msgs)
	}
}

func TestTwilioErrorClasses(t *testing.T) {
	f := startTwilio(t)
	s := newSender(t, twilioConfig(f))
	// Not everything in front of the API answers JSON (a proxy, a load
	// balancer).
	html := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "text/html")
		w.WriteHeader(400)
		_, _ = io.WriteString(w, "<html><body>Bad Request</body></html>")
	}))
	t.Cleanup(html.Close)
	htmlCfg := twilioConfig(f)
	htmlCfg.Twilio.BaseURL = html.URL
	sHTML := newSender(t, htmlCfg)

	cases := []struct {
		name      string
		to        string
		fail      func() // sets up the failure; nil: the recipient decides
		s         *sms.Sender
		permanent bool
		reason    string
		delay     time.Duration // Retry-After honoured; -1: none expected
		status    int
	}{
		{name: "invalid", to: numInvalid, permanent: true, reason: "twilio 21211: The 'To' number +15005550001 is not a valid phone number.", delay: -1, status: 400},
		{name: "unsubscribed", to: numUnsub, permanent: true, reason: "twilio 21610: Attempt to send to unsubscribed recipient", delay: -1, status: 400},
		{name: "unreachable", to: numUnreachable, permanent: true, reason: "twilio 21612: The 'To' phone number is not currently reachable via SMS", delay: -1, status: 400},
		{name: "landline", to: numLandline, permanent: true, reason: "twilio 21614: 'To' number is not a valid mobile number", delay: -1, status: 400},
		{name: "not JSON", to: numOK, s: sHTML, permanent: true, reason: "twilio http 400: <html><body>Bad Request</body></html>", delay: -1, status: 400},
		{name: "throttled with Retry-After", to: numOK, fail: func() { f.FailNext(1, 429, 20429, "Too Many Requests", "7") },
			reason: "twilio 20429: Too Many Requests", delay: 7 * time.Second, status: 429},
		{name: "throttled", to: numOK, fail: func() { f.FailNext(1, 429, 20429, "Too Many Requests", "") },
			reason: "twilio 20429: Too Many Requests", delay: -1, status: 429},
		{name: "server error", to: numServerErr, reason: "twilio 20500: Internal Server Error", delay: -1, status: 500},
		{name: "unavailable until a date", to: numOK, fail: func() {
			f.FailNext(1, 503, 20503, "Service Unavailable", time.Now().Add(90*time.Second).UTC().Format(http.TimeFormat))
		}, reason: "twilio 20503: Service Unavailable", delay: 80 * time.Second, status: 503},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			if tc.fail != nil {
				tc.fail()
			}
			if tc.s == nil {
				tc.s = s
			}
			d := delivery(tc.to, "hello")
			err := tc.s.Send(context.Background(), d)
			if err == nil {
				t.Fatal("no error")
			}
			if hub.IsPermanent(err) != tc.permanent {
				t.Errorf("permanent = %v, want %v: %v", hub.IsPermanent(err), tc.permanent, err)
			}
			if err.Error() != tc.reason {
				t.Errorf("reason %q, want %q", err, tc.reason)
			}
			delay, ok := hub.RetryDelay(err)
			switch {
			case tc.delay < 0 && ok:
				t.Errorf("unexpected Retry-After %v", delay)
			case tc.delay >= 0 && (!ok || delay < tc.delay || delay > tc.delay+15*time.Second):
				t.Errorf("RetryDelay = %v, %v; want about %v", delay, ok, tc.delay)
			}
			var te *sms.TwilioError
			if !errors.As(err, &te) || te.HTTPStatus != tc.status || d.Outcome.Status != tc.status {
				t.Errorf("TwilioError %+v, Outcome %+v", te, d.Outcome)
			}
			if strings.Contains(err.Error(), token) {
				t.Error("error leaks the auth token")
			}
		})
	}
	if n := len(f.Messages()); n != 0 {
		t.Errorf("%d messages accepted, want none", n)
	}

	t.Run("bad credentials", func(t *testing.T) {
		cfg := twilioConfig(f)
		cfg.Twilio.AuthToken = "wrong-token"
		s := newSender(t, cfg)
		err := s.Send(context.Background(), delivery(numOK, "x"))
		if !hub.IsPermanent(err) || err.Error() != "twilio 20003: Authenticate" {
			t.Fatalf("err = %v", err)
		}
	})
}

func TestRecipientAndBodyChecked(t *testing.T) {
	f := startTwilio(t)
	s := newSender(t, twilioConfig(f))
	for _, to := range []string{"", "5551234567", "+1 555 123 4567", "ann@example.com"} {
		err := s.Send(context.Background(), delivery(to, "x"))
		if !hub.IsPermanent(err) || !strings.Contains(err.Error(), "recipient") {
			t.Errorf("Send to %q = %v", to, err)
		}
	}
	if err := s.Send(context.Background(), delivery(numOK, "  ")); !hub.IsPermanent(err) {
		t.Errorf("empty body: %v", err)
	}
	if n := f.Requests(); n != 0 {
		t.Errorf("%d invalid messages reached the API", n)
	}
}

func TestNetworkErrorIsRetryable(t *testing.T) {
	f := startTwilio(t)
	cfg := twilioConfig(f)
	f.Close() // nothing listens there any more
	s := newSender(t, cfg)
	err := s.Send(context.Background(), delivery(numOK, "x"))
	if err == nil || hub.IsPermanent(err) {
		t.Fatalf("err = %v, want retryable", err)
	}
	if _, ok := hub.RetryDelay(err); ok {
		t.Error("network error asked for a delay")
	}
	if strings.Contains(err.Error(), token) {
		t.Error("error leaks the auth token")
	}
}

func TestGenericProvider(t *testing.T) {
	type got struct {
		method, ct, auth, body, query string
	}
	var mu sync.Mutex
	var reqs []got
	status := http.StatusOK
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		mu.Lock()
		reqs = append(reqs, got{r.Method, r.Header.Get("Content-Type"), r.Header.Get("Authorization"), string(b), r.URL.RawQuery})
		st := status
		mu.Unlock()
		if st == 503 {
			w.Header().Set("Retry-After", "2")
		}
		w.WriteHeader(st)
		_, _ = io.WriteString(w, `{"id":"msg-1","ok":true}`)
	}))
	t.Cleanup(srv.Close)

	t.Run("default JSON body", func(t *testing.T) {
		cfg := sms.DefaultConfig()
		cfg.Provider = sms.ProviderGeneric
		cfg.Generic.URL = srv.URL + "/send?api_key=k3y"
		cfg.Generic.From = "Hub"
		cfg.Generic.Headers = map[string]config.Secret{"Authorization": "Bearer gw-secret"}
		s := newSender(t, cfg)
		d := delivery(numOK, `Say "hi"`)
		if err := s.Send(context.Background(), d); err != nil {
			t.Fatal(err)
		}
		if d.Outcome.Status != 200 || d.Outcome.Response != `{"id":"msg-1","ok":true}` {
			t.Errorf("Outcome = %+v", d.Outcome)
		}
		mu.Lock()
		r := reqs[len(reqs)-1]
		mu.Unlock()
		var body map[string]string
		if err := json.Unmarshal([]byte(r.body), &body); err != nil {
			t.Fatalf("body %q: %v", r.body, err)
		}
		if r.method != "POST" || r.ct != "application/json" || r.auth != "Bearer gw-secret" || r.query != "api_key=k3y" ||
			body["to"] != numOK || body["body"] != `Say "hi"` || body["from"] != "Hub" {
			t.Fatalf("request %+v body %v", r, body)
		}
	})
	t.Run("form body template and error classes", func(t *testing.T) {
		cfg := sms.Config{Provider: sms.ProviderGeneric, Generic: sms.GenericConfig{
			URL: srv.URL + "/send?api_key=k3y", Method: "put",
			ContentType: "application/x-www-form-urlencoded",
			Body:        `to={{ urlquery .to }}&text={{ urlquery .body }}&sender={{ default "hub" .from }}`,
		}}
		s := newSender(t, cfg)
		if err := s.Send(context.Background(), delivery(numOK, "a&b c")); err != nil {
			t.Fatal(err)
		}
		mu.Lock()
		r := reqs[len(reqs)-1]
		status = 422
		mu.Unlock()
		if r.method != "PUT" || r.body != "to=%2B15551234567&text=a%26b+c&sender=hub" {
			t.Fatalf("request %+v", r)
		}
		err := s.Send(context.Background(), delivery(numOK, "x"))
		if !hub.IsPermanent(err) || !strings.Contains(err.Error(), "http 422") {
			t.Fatalf("422: %v", err)
		}
		mu.Lock()
		status = 503
		mu.Unlock()
		err = s.Send(context.Background(), delivery(numOK, "x"))
		if d, ok := hub.RetryDelay(err); hub.IsPermanent(err) || !ok || d != 2*time.Second {
			t.Fatalf("503: %v (%v)", err, d)
		}
	})
	t.Run("query string kept out of network errors", func(t *testing.T) {
		cfg := sms.Config{Provider: sms.ProviderGeneric, Generic: sms.GenericConfig{URL: "http://127.0.0.1:1/send?api_key=k3y"}}
		s := newSender(t, cfg)
		err := s.Send(context.Background(), delivery(numOK, "x"))
		if err == nil || hub.IsPermanent(err) || strings.Contains(err.Error(), "k3y") {
			t.Fatalf("err = %v", err)
		}
	})
}

func TestRateLimit(t *testing.T) {
	f := startTwilio(t)
	t.Run("spaces sends", func(t *testing.T) {
		cfg := twilioConfig(f)
		cfg.RateLimit = 20
		s := newSender(t, cfg)
		start := time.Now()
		for range 5 {
			if err := s.Send(context.Background(), delivery(numOK, "x")); err != nil {
				t.Fatal(err)
			}
		}
		if d := time.Since(start); d < 180*time.Millisecond {
			t.Fatalf("5 sends at 20/s took %v, want >= 200ms", d)
		}
	})
	t.Run("defers a long wait instead of blocking", func(t *testing.T) {
		cfg := twilioConfig(f)
		cfg.RateLimit = 0.1
		s := newSender(t, cfg, sms.WithMaxRateWait(time.Second))
		before := len(f.Messages())
		if err := s.Send(context.Background(), delivery(numOK, "1")); err != nil {
			t.Fatal(err)
		}
		start := time.Now()
		err := s.Send(context.Background(), delivery(numOK, "2"))
		d, ok := hub.DeferDelay(err)
		if !ok || d < 5*time.Second || hub.IsPermanent(err) {
			t.Fatalf("err = %v (delay %v)", err, d)
		}
		if time.Since(start) > time.Second {
			t.Error("blocked instead of deferring")
		}
		if n := len(f.Messages()) - before; n != 1 {
			t.Fatalf("%d sent, want 1", n)
		}
	})
}

func TestContextCancel(t *testing.T) {
	f := startTwilio(t)
	s := newSender(t, twilioConfig(f))
	ctx, cancel := context.WithCancel(context.Background())
	errc := make(chan error, 1)
	go func() { errc <- s.Send(ctx, delivery(numHang, "x")) }()
	waitHanging(t, f)
	start := time.Now()
	cancel()
	select {
	case err := <-errc:
		if !errors.Is(err, context.Canceled) || hub.IsPermanent(err) {
			t.Fatalf("err = %v", err)
		}
		if time.Since(start) > 2*time.Second {
			t.Fatal("slow to return")
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Send ignored cancellation")
	}
	ctx, cancel = context.WithCancel(context.Background())
	cancel()
	if err := s.Send(ctx, delivery(numOK, "x")); !errors.Is(err, context.Canceled) {
		t.Fatalf("cancelled ctx: %v", err)
	}
}

func TestConcurrentSends(t *testing.T) {
	f := startTwilio(t)
	s := newSender(t, twilioConfig(f))
	var wg sync.WaitGroup
	for w := range 8 {
		wg.Go(func() {
			for i := range 25 {
				to := numOK
				if i%5 == 0 {
					to = numServerErr
				}
				err := s.Send(context.Background(), delivery(to, fmt.Sprintf("%d-%d", w, i)))
				if (to == numOK) != (err == nil) || hub.IsPermanent(err) {
					t.Errorf("send to %s: %v", to, err)
				}
			}
		})
	}
	wg.Wait()
	if n := len(f.Messages()); n != 160 {
		t.Fatalf("%d messages, want 160", n)
	}
	// Keep-alive: far fewer connections than the 200 requests. net/http may
	// dial a spare while a finished connection returns to the pool, so
	// allow some slack over the 8 workers.
	if n := f.Connections(); n > 16 {
		t.Errorf("%d connections for 8 workers and 200 requests", n)
	}
}

func TestClose(t *testing.T) {
	f := startTwilio(t)
	s, err := sms.New(twilioConfig(f))
	if err != nil {
		t.Fatal(err)
	}
	// A running send holds Close until it ends.
	ctx, cancel := context.WithCancel(context.Background())
	errc := make(chan error, 1)
	go func() { errc <- s.Send(ctx, delivery(numHang, "x")) }()
	waitHanging(t, f)
	short, cancelShort := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancelShort()
	if err := s.Close(short); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Close with a send running = %v", err)
	}
	if err := s.Send(context.Background(), delivery(numOK, "x")); !errors.Is(err, sms.ErrClosed) || hub.IsPermanent(err) {
		t.Fatalf("Send after Close = %v", err)
	}
	cancel()
	<-errc
	for range 3 {
		if err := s.Close(context.Background()); err != nil {
			t.Fatal(err)
		}
	}
}

func TestConfig(t *testing.T) {
	type root struct {
		SMS sms.Config `yaml:"sms"`
	}
	t.Setenv("TWILIO_TOKEN", token)
	good := `
sms:
  provider: twilio
  twilio: { account_sid: ` + sid + `, auth_token_env: TWILIO_TOKEN, from: "+15550000000" }
  timeout: 5s
  rate_limit: 10
`
	r := root{SMS: sms.DefaultConfig()}
	if err := config.Decode([]byte(good), &r); err != nil {
		t.Fatal(err)
	}
	if r.SMS.Twilio.AuthToken.Value() != token || r.SMS.Twilio.BaseURL != sms.DefaultTwilioBaseURL || r.SMS.Timeout.D() != 5*time.Second {
		t.Fatalf("decoded %+v", r.SMS)
	}
	if s := fmt.Sprintf("%v %+v %#v", r, r, r); strings.Contains(s, token) {
		t.Fatal("config printing leaks the token")
	}
	if _, err := sms.New(r.SMS); err != nil {
		t.Fatal(err)
	}

	cases := []struct {
		yaml string
		want []string
	}{
		{`{ provider: twilio, twilio: { base_url: "ftp://x" } }`, []string{
			`sms.twilio.account_sid: required`, `sms.twilio.auth_token: required`,
			`sms.twilio.base_url: "ftp://x" is not an http(s) URL`, `sms.twilio.from: required`,
		}},
		{`{ provider: carrier-pigeon }`, []string{`sms.provider: must be one of: twilio, generic`}},
		{`{ provider: generic, generic: { method: GET, body: "{{ .To }}", headers: { "Bad Header": x } } }`, []string{
			`sms.generic.url: required`, `sms.generic.method: must be one of: POST, PUT, PATCH`,
			`sms.generic.body: template: line 1:`, `map has no entry for key "To"`,
			`sms.generic.headers.Bad Header: not a valid HTTP header name`,
		}},
		{`{ provider: generic, generic: { url: "https://gw", body: "{{ .to " } }`, []string{`sms.generic.body: template: line 1: unclosed action`}},
		{`{ rate_limit: -1 }`, []string{`sms.rate_limit: must be at least 0`}},
	}
	for _, tc := range cases {
		r := root{SMS: sms.DefaultConfig()}
		err := config.Decode([]byte("sms: "+tc.yaml), &r)
		for _, w := range tc.want {
			if err == nil || !strings.Contains(err.Error(), w) {
				t.Errorf("%s:\n%v\nmissing %q", tc.yaml, err, w)
			}
		}
	}
}
