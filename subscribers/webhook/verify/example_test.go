package verify_test

import (
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"time"

	"github.com/hubproject/hub/subscribers/webhook"
	"github.com/hubproject/hub/subscribers/webhook/verify"
)

// A receiver wraps its handler with Middleware; requests the hub signed
// reach the handler, anything else gets 401.
func ExampleMiddleware() {
	secret := "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw" // the subscription's secret

	handler := verify.Middleware([]string{secret}, 5*time.Minute, http.HandlerFunc(
		func(w http.ResponseWriter, r *http.Request) {
			// Authentic. A delivery can arrive more than once: dedup on webhook-id.
			body, _ := io.ReadAll(r.Body)
			fmt.Printf("event %s: %s\n", r.Header.Get("webhook-id"), body)
			w.WriteHeader(http.StatusNoContent)
		}))

	// What the hub sends: the CloudEvent, signed.
	body := `{"specversion":"1.0","id":"01J0","source":"shop","type":"order.created","data":{"id":42}}`
	now := time.Now()
	sig, _ := webhook.Sign(secret, "01J0/crm/", now, []byte(body))
	req := httptest.NewRequest(http.MethodPost, "/hooks", strings.NewReader(body))
	req.Header.Set("webhook-id", "01J0/crm/")
	req.Header.Set("webhook-timestamp", strconv.FormatInt(now.Unix(), 10))
	req.Header.Set("webhook-signature", sig)

	w := httptest.NewRecorder()
	handler.ServeHTTP(w, req)
	fmt.Println(w.Code)

	// The same request with the body changed.
	forged := httptest.NewRequest(http.MethodPost, "/hooks", strings.NewReader(strings.Replace(body, "42", "43", 1)))
	forged.Header = req.Header.Clone()
	w = httptest.NewRecorder()
	handler.ServeHTTP(w, forged)
	fmt.Print(w.Code, " ", w.Body.String())

	// Output:
	// event 01J0/crm/: {"specversion":"1.0","id":"01J0","source":"shop","type":"order.created","data":{"id":42}}
	// 204
	// 401 webhook verification failed: no webhook-signature matches
}

// Verify checks a request whose body was already read.
func ExampleVerify() {
	secret := "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
	body := []byte(`{"type":"order.created"}`)
	old := time.Now().Add(-time.Hour)
	sig, _ := webhook.Sign(secret, "msg_1", old, body)
	h := http.Header{}
	h.Set("webhook-id", "msg_1")
	h.Set("webhook-timestamp", strconv.FormatInt(old.Unix(), 10))
	h.Set("webhook-signature", sig)

	err := verify.Verify([]string{secret}, h, body, 0)
	fmt.Println(err)
	// Output: webhook-timestamp too old
}
