package sms

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"strings"

	"github.com/hubproject/hub/hub"
)

// twilio speaks the Messages API:
// POST {base}/2010-04-01/Accounts/{sid}/Messages.json, form encoded, basic
// auth with the account SID and auth token.
type twilio struct {
	cfg      TwilioConfig
	endpoint string
}

func newTwilio(cfg TwilioConfig) *twilio {
	return &twilio{
		cfg:      cfg,
		endpoint: strings.TrimRight(cfg.BaseURL, "/") + "/2010-04-01/Accounts/" + url.PathEscape(cfg.AccountSID) + "/Messages.json",
	}
}

func (t *twilio) defaultFrom() string { return t.cfg.From }

func (t *twilio) request(ctx context.Context, to, body, from string) (*http.Request, error) {
	form := url.Values{"To": {to}, "Body": {body}}
	if from != "" {
		form.Set("From", from)
	}
	if t.cfg.MessagingServiceSID != "" {
		form.Set("MessagingServiceSid", t.cfg.MessagingServiceSID)
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, t.endpoint, strings.NewReader(form.Encode()))
	if err != nil {
		return nil, err
	}
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.Header.Set("Accept", "application/json")
	req.SetBasicAuth(t.cfg.AccountSID, t.cfg.AuthToken.Value())
	return req, nil
}

// twilioReply is both the success (sid, status) and the error shape (code,
// message, more_info).
type twilioReply struct {
	SID     string `json:"sid"`
	Status  any    `json:"status"` // "queued" on success, 400 on error
	Code    int    `json:"code"`
	Message string `json:"message"`
}

// TwilioError is an error reply from Twilio.
type TwilioError struct {
	HTTPStatus int
	Code       int    // Twilio error code, e.g. 21211; 0 if the body had none
	Message    string // Twilio's message, or the start of the body
}

func (e *TwilioError) Error() string {
	if e.Code != 0 {
		return fmt.Sprintf("twilio %d: %s", e.Code, e.Message)
	}
	return fmt.Sprintf("twilio http %d: %s", e.HTTPStatus, e.Message)
}

// Twilio error codes the classification relies on.
const (
	twilioTooManyRequests = 20429
)

func (t *twilio) result(resp *http.Response, payload []byte, d *hub.Delivery) error {
	var r twilioReply
	jsonErr := json.Unmarshal(payload, &r)
	code := resp.StatusCode
	if code >= 200 && code < 300 {
		d.Outcome.Response = r.SID
		return nil
	}
	e := &TwilioError{HTTPStatus: code, Code: r.Code, Message: strings.TrimSpace(r.Message)}
	if jsonErr != nil || e.Message == "" {
		e.Message = snippet(payload)
	}
	d.Outcome.Response = e.Error()
	switch {
	case code == http.StatusTooManyRequests, r.Code == twilioTooManyRequests, code >= 500:
		// Throttled, or Twilio had a problem: retry, when it says.
		return retryable(resp, e)
	}
	// 21211 invalid To, 21610 unsubscribed, 21612 unreachable, 21614 not a
	// mobile number, 20003 bad credentials, any other 4xx (and a 3xx, which
	// the API never sends): the same request will fail again.
	return hub.Permanent(e)
}
