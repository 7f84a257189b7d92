package webhook

import (
	"fmt"
	"net/http"
	"strings"

	"github.com/hubproject/hub/config"
	"github.com/hubproject/hub/hub"
)

// reservedHeaders are set by the sender; a subscription's headers must not
// replace them (the signature would no longer describe the request) or
// corrupt the framing.
var reservedHeaders = map[string]bool{
	"Webhook-Id": true, "Webhook-Timestamp": true, "Webhook-Signature": true,
	"Content-Type": true, "Content-Length": true, "Content-Encoding": true,
	"Transfer-Encoding": true, "Host": true, "Connection": true, "Te": true,
	"Trailer": true, "Upgrade": true, "User-Agent": true, "Idempotency-Key": true,
}

// CheckSubscription checks a webhook subscription's own fields: url (see
// CheckURL), secret (see ParseSecrets) and headers (valid, and none of the
// headers the sender sets). Paths in the returned config.Errors are the
// subscription's YAML keys. The config loader and the subscription API call
// it; the fields every channel shares are hub.Subscription.Validate's.
func CheckSubscription(sub *hub.Subscription) error {
	var errs config.Errors
	if err := CheckURL(sub.URL); err != nil {
		errs.Add("url", "%v", err)
	}
	if _, err := ParseSecrets(sub.Secret.Value()); err != nil {
		errs.Add("secret", "%v", err)
	}
	for k, v := range sub.Headers {
		if err := checkHeader(k, v); err != nil {
			errs.Add("headers."+k, "%v", err)
		}
	}
	return errs.Err()
}

func checkHeaders(h map[string]string) error {
	for k, v := range h {
		if err := checkHeader(k, v); err != nil {
			return fmt.Errorf("header %q: %w", k, err)
		}
	}
	return nil
}

func checkHeader(name, value string) error {
	if !validHeaderName(name) {
		return fmt.Errorf("not a valid header name")
	}
	if reservedHeaders[http.CanonicalHeaderKey(name)] {
		return fmt.Errorf("set by the hub; it cannot be overridden")
	}
	if !validHeaderValue(value) {
		return fmt.Errorf("value must not contain control characters")
	}
	return nil
}

// validHeaderName reports whether s is an RFC 9110 token.
func validHeaderName(s string) bool {
	if s == "" {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z', c >= '0' && c <= '9':
		case strings.IndexByte("!#$%&'*+-.^_`|~", c) >= 0:
		default:
			return false
		}
	}
	return true
}

// validHeaderValue refuses control characters (CR and LF above all) other
// than tab.
func validHeaderValue(s string) bool {
	for i := 0; i < len(s); i++ {
		if c := s[i]; (c < 0x20 && c != '\t') || c == 0x7f {
			return false
		}
	}
	return true
}
