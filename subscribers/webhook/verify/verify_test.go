package verify_test

import (
	"bytes"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"testing"
	"time"

	standardwebhooks "github.com/standard-webhooks/standard-webhooks/libraries/go"

	"github.com/hubproject/hub/subscribers/webhook/verify"
)

const (
	secret  = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
	secret2 = "whsec_QUJDREVGR0hJSktMTU5PUFFSU1RVVldY"
)

// refSigned signs with the Standard Webhooks reference library.
func refSigned(t testing.TB, secret, id string, ts time.Time, body []byte) http.Header {
	t.Helper()
	wh, err := standardwebhooks.NewWebhook(secret)
	if err != nil {
		t.Fatal(err)
	}
	sig, err := wh.Sign(id, ts, body)
	if err != nil {
		t.Fatal(err)
	}
	h := http.Header{}
	h.Set(standardwebhooks.HeaderWebhookID, id)
	h.Set(standardwebhooks.HeaderWebhookTimestamp, strconv.FormatInt(ts.Unix(), 10))
	h.Set(standardwebhooks.HeaderWebhookSignature, sig)
	return h
}

func TestVerifyAcceptsReferenceSignatures(t *testing.T) {
	body := []byte(`{"type":"order.created","data":{"id":42}}`)
	h := refSigned(t, secret, "msg_1", time.Now(), body)
	if err := verify.Verify([]string{secret}, h, body, 0); err != nil {
		t.Fatal(err)
	}
	// The secret without its prefix works the same.
	if err := verify.Verify([]string{strings.TrimPrefix(secret, "whsec_")}, h, body, 0); err != nil {
		t.Fatal(err)
	}
}

func TestVerifyRejections(t *testing.T) {
	body := []byte(`{"id":1}`)
	now := time.Now()
	good := refSigned(t, secret, "msg_1", now, body)
	with := func(k, v string) http.Header { h := good.Clone(); h.Set(k, v); return h }
	without := func(k string) http.Header { h := good.Clone(); h.Del(k); return h }

	cases := []struct {
		name   string
		header http.Header
		body   []byte
		want   error
	}{
		{"no id", without("webhook-id"), body, verify.ErrMissingHeaders},
		{"no timestamp", without("webhook-timestamp"), body, verify.ErrMissingHeaders},
		{"no signature", without("webhook-signature"), body, verify.ErrMissingHeaders},
		{"timestamp not a number", with("webhook-timestamp", "yesterday"), body, verify.ErrInvalidTimestamp},
		{"changed id", with("webhook-id", "msg_2"), body, verify.ErrInvalidSignature},
		{"changed timestamp", with("webhook-timestamp", strconv.FormatInt(now.Unix()-1, 10)), body, verify.ErrInvalidSignature},
		{"one body byte", good, []byte(`{"id":2}`), verify.ErrInvalidSignature},
		{"empty body", good, nil, verify.ErrInvalidSignature},
		{"other secret", refSigned(t, secret2, "msg_1", now, body), body, verify.ErrInvalidSignature},
		{"unknown version only", with("webhook-signature", strings.Replace(good.Get("webhook-signature"), "v1,", "v2,", 1)), body, verify.ErrInvalidSignature},
		{"signature not base64", with("webhook-signature", "v1,***"), body, verify.ErrInvalidSignature},
		{"too old", refSigned(t, secret, "msg_1", now.Add(-5*time.Minute-10*time.Second), body), body, verify.ErrTimestampTooOld},
		{"too new", refSigned(t, secret, "msg_1", now.Add(5*time.Minute+10*time.Second), body), body, verify.ErrTimestampTooNew},
		{"far past", with("webhook-timestamp", "-9223372036854775808"), body, verify.ErrTimestampTooOld},
		{"far future", with("webhook-timestamp", "9223372036854775807"), body, verify.ErrTimestampTooNew},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			if err := verify.Verify([]string{secret}, c.header, c.body, 5*time.Minute); !errors.Is(err, c.want) {
				t.Fatalf("got %v, want %v", err, c.want)
			}
		})
	}
}

func TestVerifyTolerance(t *testing.T) {
	body := []byte("{}")
	h := refSigned(t, secret, "m", time.Now().Add(-90*time.Second), body)
	if err := verify.Verify([]string{secret}, h, body, time.Minute); !errors.Is(err, verify.ErrTimestampTooOld) {
		t.Fatalf("1m tolerance, 90s old: %v", err)
	}
	if err := verify.Verify([]string{secret}, h, body, 2*time.Minute); err != nil {
		t.Fatalf("2m tolerance, 90s old: %v", err)
	}
	if err := verify.Verify([]string{secret}, h, body, 0); err != nil {
		t.Fatalf("default tolerance, 90s old: %v", err)
	}
}

func TestVerifyRotation(t *testing.T) {
	body := []byte(`{"id":"r"}`)
	now := time.Now()
	// Receiver rotating: knows both secrets, the hub still signs with one.
	for _, s := range []string{secret, secret2} {
		h := refSigned(t, s, "m", now, body)
		if err := verify.Verify([]string{secret, secret2}, h, body, 0); err != nil {
			t.Errorf("receiver with both secrets, signed with one: %v", err)
		}
	}
	// The hub rotating: two signatures in one header, receiver knows one.
	a := refSigned(t, secret, "m", now, body)
	b := refSigned(t, secret2, "m", now, body)
	h := a.Clone()
	h.Set("webhook-signature", a.Get("webhook-signature")+" "+b.Get("webhook-signature"))
	for _, s := range []string{secret, secret2} {
		if err := verify.Verify([]string{s}, h, body, 0); err != nil {
			t.Errorf("two signatures, receiver with one secret: %v", err)
		}
	}
	// Secrets in one space-separated string, as the hub's config holds them.
	if err := verify.Verify([]string{secret + " " + secret2}, b, body, 0); err != nil {
		t.Errorf("space-separated secrets: %v", err)
	}
}

func TestNewVerifierRefusesBadSecrets(t *testing.T) {
	for _, s := range [][]string{nil, {}, {""}, {"  "}, {"whsec_%%%"}, {secret, "not base64!"}} {
		if _, err := verify.NewVerifier(s, 0); !errors.Is(err, verify.ErrInvalidSecret) {
			t.Errorf("NewVerifier(%q) = %v, want ErrInvalidSecret", s, err)
		}
	}
	if err := verify.Verify([]string{"whsec_%%%"}, http.Header{}, nil, 0); !errors.Is(err, verify.ErrInvalidSecret) {
		t.Errorf("Verify with a bad secret = %v", err)
	}
	defer func() {
		if recover() == nil {
			t.Error("Middleware with a bad secret did not panic")
		}
	}()
	verify.Middleware([]string{"whsec_%%%"}, 0, http.NotFoundHandler())
}

func TestMiddleware(t *testing.T) {
	got := make(chan []byte, 1)
	h := verify.Middleware([]string{secret}, 0, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		if r.ContentLength != int64(len(b)) {
			t.Errorf("ContentLength %d for a %d-byte body", r.ContentLength, len(b))
		}
		got <- b
		w.WriteHeader(http.StatusNoContent)
	}))
	srv := httptest.NewServer(h)
	defer srv.Close()

	post := func(header http.Header, body []byte) *http.Response {
		t.Helper()
		req, err := http.NewRequest(http.MethodPost, srv.URL, bytes.NewReader(body))
		if err != nil {
			t.Fatal(err)
		}
		for k, v := range header {
			req.Header[k] = v
		}
		resp, err := srv.Client().Do(req)
		if err != nil {
			t.Fatal(err)
		}
		_, _ = io.Copy(io.Discard, resp.Body)
		_ = resp.Body.Close()
		return resp
	}

	body := []byte(`{"type":"order.created"}`)
	if resp := post(refSigned(t, secret, "m1", time.Now(), body), body); resp.StatusCode != http.StatusNoContent {
		t.Fatalf("valid request: %d", resp.StatusCode)
	}
	if b := <-got; !bytes.Equal(b, body) {
		t.Fatalf("next saw body %q, want %q", b, body)
	}
	if resp := post(refSigned(t, secret2, "m1", time.Now(), body), body); resp.StatusCode != http.StatusUnauthorized {
		t.Fatalf("wrong secret: %d, want 401", resp.StatusCode)
	}
	if resp := post(http.Header{}, body); resp.StatusCode != http.StatusUnauthorized {
		t.Fatalf("no headers: %d, want 401", resp.StatusCode)
	}

	v, err := verify.NewVerifier([]string{secret}, 0)
	if err != nil {
		t.Fatal(err)
	}
	v.MaxBodyBytes = 16
	small := httptest.NewServer(v.Middleware(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		t.Error("next called for an oversized body")
	})))
	defer small.Close()
	req, _ := http.NewRequest(http.MethodPost, small.URL, bytes.NewReader(body))
	for k, vv := range refSigned(t, secret, "m2", time.Now(), body) {
		req.Header[k] = vv
	}
	resp, err := small.Client().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	_ = resp.Body.Close()
	if resp.StatusCode != http.StatusRequestEntityTooLarge {
		t.Fatalf("oversized body: %d, want 413", resp.StatusCode)
	}
}

// FuzzVerify: whatever the headers and body, Verify does not panic, and a
// request signed by the reference library always verifies while the same
// headers over a different body never do.
func FuzzVerify(f *testing.F) {
	f.Add("msg_1", []byte(`{"id":1}`), []byte(`{"id":2}`), "v1,abc")
	f.Add("", []byte{}, []byte{0}, "")
	f.Add("a.b.c", []byte("x.y"), []byte("x.z"), "v1,,v1 v2,zz")
	f.Fuzz(func(t *testing.T, id string, body, other []byte, rawSig string) {
		h := http.Header{}
		h.Set("webhook-id", id)
		h.Set("webhook-timestamp", strconv.FormatInt(time.Now().Unix(), 10))
		h.Set("webhook-signature", rawSig)
		_ = verify.Verify([]string{secret}, h, body, 0) // must not panic

		if id == "" || strings.ContainsAny(id, "\r\n") || strings.TrimSpace(id) != id {
			return // not a header value that survives the trip
		}
		signed := refSigned(t, secret, id, time.Now(), body)
		if err := verify.Verify([]string{secret}, signed, body, 0); err != nil {
			t.Fatalf("reference signature rejected: %v", err)
		}
		if !bytes.Equal(body, other) {
			if err := verify.Verify([]string{secret}, signed, other, 0); !errors.Is(err, verify.ErrInvalidSignature) {
				t.Fatalf("signature verified over a different body: %v", err)
			}
		}
	})
}
