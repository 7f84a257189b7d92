// Package twiliotest runs a fake of Twilio's Messages API in the test
// process (an httptest server), for the SMS channel's tests and for any test
// that texts through the hub. Set the channel's twilio.base_url to URL and
// its account_sid and auth_token to AccountSID and AuthToken.
//
// The fake serves POST /2010-04-01/Accounts/{sid}/Messages.json: it checks
// basic auth, the form encoding and the To, From, MessagingServiceSid and
// Body fields, stores each accepted message and answers 201 with
// Twilio-shaped JSON ({"sid": "SM...", "status": "queued", ...}). Errors are
// Twilio's error JSON ({"code": 21211, "message": "...", "status": 400,
// "more_info": "..."}).
//
// FailNext fails the next requests. Some recipients, after Twilio's own
// magic test numbers, behave specially so that a test can pick the outcome
// per message; see ToInvalid and the other To constants.
//
// Import it from tests only.
package twiliotest

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"sync"
	"testing"

	"github.com/hubproject/hub/subscribers/internal/changes"
)

// Options configure a Server. Empty fields take defaults, which the
// AccountSID and AuthToken methods return.
type Options struct {
	AccountSID string // the account in the path and the basic auth user
	AuthToken  string // the basic auth password
}

// Credentials used when Options leaves them empty.
const (
	defaultAccountSID = "ACtest0123456789"
	defaultAuthToken  = "twiliotest-auth-token"
)

// Recipients ("To") the fake answers specially. Any other number is
// accepted.
const (
	ToInvalid      = "+15005550001" // 400, code 21211: not a valid phone number
	ToUnsubscribed = "+15005550004" // 400, code 21610: unsubscribed recipient
	ToUnreachable  = "+15005550006" // 400, code 21612: not reachable via SMS
	ToNotMobile    = "+15005550009" // 400, code 21614: not a mobile number
	ToServerError  = "+15005550500" // 500, code 20500: internal server error
	// ToHang gets no answer until the request is abandoned or the server
	// closes; WaitHanging tells when one is waiting.
	ToHang = "+15005550999"
)

// Message is one message the fake accepted.
type Message struct {
	SID                 string // the sid it answered with: SM and 32 digits, counting from 1
	To                  string
	From                string
	MessagingServiceSID string // the MessagingServiceSid field
	Body                string
}

type failure struct {
	status     int
	code       int
	message    string
	retryAfter string
}

// Server is a running fake. Its methods are safe for concurrent use.
type Server struct {
	srv        *httptest.Server
	sid, token string
	path       string

	closeOnce sync.Once
	stopped   chan struct{} // closed by Close: releases ToHang requests

	mu       sync.Mutex
	msgs     []Message
	requests int
	conns    int
	hanging  int
	fails    []failure
	changed  changes.Signal // closed and replaced on every change
}

// Start starts the fake on a random loopback port; it stops on t.Cleanup.
func Start(t testing.TB, opts Options) *Server {
	t.Helper()
	s := &Server{
		sid:     opts.AccountSID,
		token:   opts.AuthToken,
		stopped: make(chan struct{}),
		changed: changes.New(),
	}
	if s.sid == "" {
		s.sid = defaultAccountSID
	}
	if s.token == "" {
		s.token = defaultAuthToken
	}
	s.path = "/2010-04-01/Accounts/" + s.sid + "/Messages.json"
	s.srv = httptest.NewUnstartedServer(http.HandlerFunc(s.serve))
	s.srv.Config.ConnState = func(_ net.Conn, st http.ConnState) {
		if st == http.StateNew {
			s.mu.Lock()
			s.conns++
			s.changed.NotifyLocked()
			s.mu.Unlock()
		}
	}
	s.srv.Start()
	t.Cleanup(s.Close)
	return s
}

// URL is the base URL to configure (twilio.base_url), without a trailing
// slash.
func (s *Server) URL() string { return s.srv.URL }

// AccountSID is the account the fake expects.
func (s *Server) AccountSID() string { return s.sid }

// AuthToken is the auth token the fake expects.
func (s *Server) AuthToken() string { return s.token }

// Close stops the fake, releasing ToHang requests. Start registers it with
// t.Cleanup; calling it earlier makes the API unreachable. It is
// idempotent.
func (s *Server) Close() {
	s.closeOnce.Do(func() {
		close(s.stopped)
		s.srv.Close()
	})
}

// FailNext makes the next n requests that pass the auth and form checks
// fail with httpStatus and Twilio's error JSON carrying twilioCode (left out
// when 0) and message, whatever their recipient. A non-empty retryAfter is
// sent as the Retry-After header (seconds, or an HTTP date). Failures queue
// up across calls.
func (s *Server) FailNext(n int, httpStatus int, twilioCode int, message string, retryAfter string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for range n {
		s.fails = append(s.fails, failure{httpStatus, twilioCode, message, retryAfter})
	}
}

// Messages returns the messages accepted so far, in order.
func (s *Server) Messages() []Message {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]Message(nil), s.msgs...)
}

// Requests is how many HTTP requests the fake has received, whatever their
// outcome.
func (s *Server) Requests() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.requests
}

// Connections is how many connections the fake has accepted.
func (s *Server) Connections() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.conns
}

// WaitMessages waits until at least n messages have been accepted in total
// and returns all of them. When ctx ends or the server stops first, it
// returns those there are and an error.
func (s *Server) WaitMessages(ctx context.Context, n int) ([]Message, error) {
	err := s.changed.Wait(ctx, &s.mu, s.stopped, func() bool { return len(s.msgs) >= n })
	msgs := s.Messages()
	if err != nil {
		return msgs, fmt.Errorf("twiliotest: got %d messages, want %d: %w", len(msgs), n, err)
	}
	return msgs, nil
}

// WaitHanging waits until at least n requests to ToHang are waiting for an
// answer at the same time, or ctx ends.
func (s *Server) WaitHanging(ctx context.Context, n int) error {
	if err := s.changed.Wait(ctx, &s.mu, s.stopped, func() bool { return s.hanging >= n }); err != nil {
		return fmt.Errorf("twiliotest: waiting for %d hanging requests: %w", n, err)
	}
	return nil
}

// writeError writes Twilio's error JSON.
func writeError(w http.ResponseWriter, status, code int, msg string) {
	body := map[string]any{"message": msg, "status": status}
	if code != 0 {
		body["code"] = code
		body["more_info"] = fmt.Sprintf("https://www.twilio.com/docs/errors/%d", code)
	}
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(body)
}

func (s *Server) serve(w http.ResponseWriter, r *http.Request) {
	s.mu.Lock()
	s.requests++
	s.changed.NotifyLocked()
	s.mu.Unlock()
	if r.Method != http.MethodPost || r.URL.Path != s.path {
		writeError(w, http.StatusNotFound, 20404, "The requested resource "+r.URL.Path+" was not found")
		return
	}
	if u, p, ok := r.BasicAuth(); !ok || u != s.sid || p != s.token {
		writeError(w, http.StatusUnauthorized, 20003, "Authenticate")
		return
	}
	if ct := r.Header.Get("Content-Type"); ct != "application/x-www-form-urlencoded" {
		writeError(w, http.StatusBadRequest, 20001, "bad content type "+ct)
		return
	}
	if err := r.ParseForm(); err != nil {
		writeError(w, http.StatusBadRequest, 20001, err.Error())
		return
	}
	f := r.PostForm
	m := Message{To: f.Get("To"), From: f.Get("From"), MessagingServiceSID: f.Get("MessagingServiceSid"), Body: f.Get("Body")}
	switch {
	case m.To == "":
		writeError(w, http.StatusBadRequest, 21604, "A 'To' phone number is required.")
		return
	case m.Body == "":
		writeError(w, http.StatusBadRequest, 21602, "Message body is required.")
		return
	case m.From == "" && m.MessagingServiceSID == "":
		writeError(w, http.StatusBadRequest, 21603, "The 'From' phone number is required.")
		return
	}
	if fl, ok := s.takeFail(); ok {
		if fl.retryAfter != "" {
			w.Header().Set("Retry-After", fl.retryAfter)
		}
		writeError(w, fl.status, fl.code, fl.message)
		return
	}
	switch m.To {
	case ToInvalid:
		writeError(w, http.StatusBadRequest, 21211, "The 'To' number "+m.To+" is not a valid phone number.")
	case ToUnsubscribed:
		writeError(w, http.StatusBadRequest, 21610, "Attempt to send to unsubscribed recipient")
	case ToUnreachable:
		writeError(w, http.StatusBadRequest, 21612, "The 'To' phone number is not currently reachable via SMS")
	case ToNotMobile:
		writeError(w, http.StatusBadRequest, 21614, "'To' number is not a valid mobile number")
	case ToServerError:
		writeError(w, http.StatusInternalServerError, 20500, "Internal Server Error")
	case ToHang:
		s.hang(r.Context())
	default:
		s.mu.Lock()
		m.SID = fmt.Sprintf("SM%032d", len(s.msgs)+1)
		s.msgs = append(s.msgs, m)
		s.changed.NotifyLocked()
		s.mu.Unlock()
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusCreated)
		_ = json.NewEncoder(w).Encode(map[string]any{
			"sid": m.SID, "account_sid": s.sid, "status": "queued",
			"to": m.To, "from": nullable(m.From), "messaging_service_sid": nullable(m.MessagingServiceSID),
			"body": m.Body, "direction": "outbound-api", "api_version": "2010-04-01", "num_segments": "1",
			"error_code": nil, "error_message": nil,
			"uri": "/2010-04-01/Accounts/" + s.sid + "/Messages/" + m.SID + ".json",
		})
	}
}

// hang holds a request until the client gives up or the server closes;
// the client then sees no answer.
func (s *Server) hang(ctx context.Context) {
	s.mu.Lock()
	s.hanging++
	s.changed.NotifyLocked()
	s.mu.Unlock()
	select {
	case <-ctx.Done():
	case <-s.stopped:
	}
	s.mu.Lock()
	s.hanging--
	s.changed.NotifyLocked()
	s.mu.Unlock()
	panic(http.ErrAbortHandler) // drop the connection without a reply
}

func (s *Server) takeFail() (failure, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if len(s.fails) == 0 {
		return failure{}, false
	}
	f := s.fails[0]
	s.fails = s.fails[1:]
	return f, true
}

func nullable(v string) any {
	if v == "" {
		return nil
	}
	return v
}
