package twiliotest_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/hubproject/hub/subscribers/sms/twiliotest"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

type reply struct {
	status     int
	retryAfter string
	body       map[string]any
}

// post sends one Messages API request the way the SMS channel does.
func post(ctx context.Context, c *http.Client, srv *twiliotest.Server, token string, form url.Values) (reply, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost,
		srv.URL()+"/2010-04-01/Accounts/"+srv.AccountSID()+"/Messages.json", strings.NewReader(form.Encode()))
	if err != nil {
		return reply{}, err
	}
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.SetBasicAuth(srv.AccountSID(), token)
	resp, err := c.Do(req)
	if err != nil {
		return reply{}, err
	}
	defer resp.Body.Close()
	r := reply{status: resp.StatusCode, retryAfter: resp.Header.Get("Retry-After")}
	if err := json.NewDecoder(resp.Body).Decode(&r.body); err != nil {
		return r, fmt.Errorf("status %d: %w", resp.StatusCode, err)
	}
	return r, nil
}

func client(t *testing.T) *http.Client {
	c := &http.Client{Transport: http.DefaultTransport.(*http.Transport).Clone()}
	t.Cleanup(c.CloseIdleConnections)
	return c
}

func TestAPI(t *testing.T) {
	srv := twiliotest.Start(t, twiliotest.Options{})
	c := client(t)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	msg := url.Values{"To": {"+15551234567"}, "From": {"+15550000000"}, "Body": {"hello"}}

	r, err := post(ctx, c, srv, srv.AuthToken(), msg)
	if err != nil {
		t.Fatal(err)
	}
	want := "SM" + strings.Repeat("0", 31) + "1"
	if r.status != 201 || r.body["sid"] != want || r.body["status"] != "queued" || r.body["to"] != "+15551234567" {
		t.Fatalf("reply %+v", r)
	}
	msgs, err := srv.WaitMessages(ctx, 1)
	if err != nil {
		t.Fatal(err)
	}
	if m := msgs[0]; m != (twiliotest.Message{SID: want, To: "+15551234567", From: "+15550000000", Body: "hello"}) {
		t.Fatalf("message %+v", m)
	}

	srv.FailNext(1, 429, 20429, "Too Many Requests", "7")
	bad := url.Values{"To": {twiliotest.ToInvalid}, "MessagingServiceSid": {"MG1"}, "Body": {"x"}}
	noBody := url.Values{"To": {"+15551234567"}, "From": {"+15550000000"}}
	for _, tc := range []struct {
		token            string
		form             url.Values
		status, code     int
		retryAfter, text string
	}{
		{srv.AuthToken(), msg, 429, 20429, "7", "Too Many Requests"},
		{"wrong", msg, 401, 20003, "", "Authenticate"},
		{srv.AuthToken(), bad, 400, 21211, "", "The 'To' number +15005550001 is not a valid phone number."},
		{srv.AuthToken(), noBody, 400, 21602, "", "Message body is required."},
		{srv.AuthToken(), url.Values{"To": {twiliotest.ToServerError}, "From": {"x"}, "Body": {"x"}}, 500, 20500, "", "Internal Server Error"},
	} {
		r, err := post(ctx, c, srv, tc.token, tc.form)
		if err != nil {
			t.Fatal(err)
		}
		if r.status != tc.status || r.body["code"] != float64(tc.code) || r.body["status"] != float64(tc.status) ||
			r.body["message"] != tc.text || r.retryAfter != tc.retryAfter {
			t.Errorf("reply %+v, want %d %d %q", r, tc.status, tc.code, tc.text)
		}
	}
	if n, m := srv.Requests(), len(srv.Messages()); n != 6 || m != 1 {
		t.Errorf("%d requests, %d messages; want 6, 1", n, m)
	}
	if n := srv.Connections(); n != 1 {
		t.Errorf("%d connections, want 1 (keep-alive)", n)
	}
}

// A request to ToHang is answered by nothing: it ends when the client gives
// up, or with a dropped connection when the server closes.
func TestHang(t *testing.T) {
	srv := twiliotest.Start(t, twiliotest.Options{AccountSID: "AC1", AuthToken: "tok"})
	c := client(t)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	hang := url.Values{"To": {twiliotest.ToHang}, "From": {"x"}, "Body": {"x"}}

	cctx, ccancel := context.WithCancel(ctx)
	defer ccancel()
	cancelled, closed := make(chan error, 1), make(chan error, 1)
	go func() { _, err := post(cctx, c, srv, "tok", hang); cancelled <- err }()
	go func() { _, err := post(ctx, c, srv, "tok", hang); closed <- err }()
	if err := srv.WaitHanging(ctx, 2); err != nil {
		t.Fatal(err)
	}
	ccancel()
	if err := <-cancelled; !errors.Is(err, context.Canceled) {
		t.Fatalf("cancelled request: %v", err)
	}
	srv.Close()
	if err := <-closed; err == nil || ctx.Err() != nil {
		t.Fatalf("request hanging at Close: %v (ctx %v)", err, ctx.Err())
	}
	if _, err := srv.WaitMessages(ctx, 1); err == nil {
		t.Fatal("WaitMessages on a stopped server did not fail")
	}
	srv.Close() // idempotent; t.Cleanup calls it again
}
