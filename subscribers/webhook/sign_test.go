package webhook

import (
	"encoding/base64"
	"errors"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	standardwebhooks "github.com/standard-webhooks/standard-webhooks/libraries/go"

	"github.com/hubproject/hub/subscribers/webhook/verify"
)

// Two 24-byte keys; the first is the Standard Webhooks example secret.
const (
	testSecret  = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
	testSecret2 = "whsec_QUJDREVGR0hJSktMTU5PUFFSU1RVVldY"
)

func signedHeader(t *testing.T, secret, id string, ts time.Time, body []byte) http.Header {
	t.Helper()
	sig, err := Sign(secret, id, ts, body)
	if err != nil {
		t.Fatalf("Sign: %v", err)
	}
	h := http.Header{}
	h.Set(HeaderID, id)
	h.Set(HeaderTimestamp, strconv.FormatInt(ts.Unix(), 10))
	h.Set(HeaderSignature, sig)
	return h
}

func refWebhook(t *testing.T, secret string) *standardwebhooks.Webhook {
	t.Helper()
	wh, err := standardwebhooks.NewWebhook(secret)
	if err != nil {
		t.Fatalf("reference NewWebhook: %v", err)
	}
	return wh
}

func TestSignVerifiesWithReferenceLibrary(t *testing.T) {
	body := []byte(`{"specversion":"1.0","id":"e1","type":"order.created","data":{"id":42}}`)
	id := "e1/crm/"
	now := time.Now()
	h := signedHeader(t, testSecret, id, now, body)

	if err := refWebhook(t, testSecret).Verify(body, h); err != nil {
		t.Fatalf("reference library rejects our signature: %v", err)
	}
	if err := verify.Verify([]string{testSecret}, h, body, 0); err != nil {
		t.Fatalf("verify package rejects our signature: %v", err)
	}
	// The same bytes as the reference library's own signature.
	want, err := refWebhook(t, testSecret).Sign(id, now, body)
	if err != nil {
		t.Fatal(err)
	}
	if got := h.Get(HeaderSignature); got != want {
		t.Fatalf("signature %q, reference library signs %q", got, want)
	}
}

func TestSignWithoutPrefixMatchesReference(t *testing.T) {
	raw := strings.TrimPrefix(testSecret, SecretPrefix)
	now := time.Now()
	a, err := Sign(raw, "id", now, []byte("x"))
	if err != nil {
		t.Fatal(err)
	}
	b, err := Sign(testSecret, "id", now, []byte("x"))
	if err != nil {
		t.Fatal(err)
	}
	if a != b {
		t.Fatalf("whsec_ prefix changes the signature: %q vs %q", a, b)
	}
}

func TestSignRotationTwoSignatures(t *testing.T) {
	body := []byte(`{"id":"e2"}`)
	h := signedHeader(t, testSecret+" "+testSecret2, "e2", time.Now(), body)
	sigs := strings.Fields(h.Get(HeaderSignature))
	if len(sigs) != 2 || !strings.HasPrefix(sigs[0], "v1,") || !strings.HasPrefix(sigs[1], "v1,") {
		t.Fatalf("want two v1 signatures, got %q", h.Get(HeaderSignature))
	}
	for _, secret := range []string{testSecret, testSecret2} {
		if err := refWebhook(t, secret).Verify(body, h); err != nil {
			t.Errorf("reference library, one secret of the rotation: %v", err)
		}
		if err := verify.Verify([]string{secret}, h, body, 0); err != nil {
			t.Errorf("verify package, one secret of the rotation: %v", err)
		}
	}
	other := GenerateSecret()
	if err := refWebhook(t, other).Verify(body, h); err == nil {
		t.Error("an unrelated secret verified")
	}
}

func TestTamperedRequestsAreRejected(t *testing.T) {
	body := []byte(`{"id":"e3","data":{"amount":100}}`)
	now := time.Now()
	base := signedHeader(t, testSecret, "e3", now, body)

	cases := []struct {
		name   string
		header func() http.Header
		body   []byte
		want   error // verify package error
	}{
		{"changed id", func() http.Header { h := base.Clone(); h.Set(HeaderID, "e4"); return h }, body, verify.ErrInvalidSignature},
		{"changed timestamp", func() http.Header {
			h := base.Clone()
			h.Set(HeaderTimestamp, strconv.FormatInt(now.Unix()+1, 10))
			return h
		}, body, verify.ErrInvalidSignature},
		{"one body byte", func() http.Header { return base.Clone() }, []byte(`{"id":"e3","data":{"amount":900}}`), verify.ErrInvalidSignature},
		{"timestamp too old", func() http.Header { return signedHeader(t, testSecret, "e3", now.Add(-6*time.Minute), body) }, body, verify.ErrTimestampTooOld},
		{"timestamp too new", func() http.Header { return signedHeader(t, testSecret, "e3", now.Add(6*time.Minute), body) }, body, verify.ErrTimestampTooNew},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			h := c.header()
			if err := refWebhook(t, testSecret).Verify(c.body, h); err == nil {
				t.Error("reference library accepted it")
			}
			if err := verify.Verify([]string{testSecret}, h, c.body, 5*time.Minute); !errors.Is(err, c.want) {
				t.Errorf("verify package: got %v, want %v", err, c.want)
			}
		})
	}
}

func TestParseSecrets(t *testing.T) {
	short := SecretPrefix + base64.StdEncoding.EncodeToString(make([]byte, 16))
	cases := []struct {
		in      string
		keys    int
		wantErr string
	}{
		{"", 0, "no secret"},
		{"   ", 0, "no secret"},
		{testSecret, 1, ""},
		{strings.TrimPrefix(testSecret, SecretPrefix), 1, ""},
		{testSecret + " " + testSecret2, 2, ""},
		{" " + testSecret + "  " + testSecret2 + " ", 2, ""},
		{"whsec_not base64!", 0, "secret 1 of 2: not whsec_"},
		{"whsec_%%%", 0, "not whsec_ followed by base64"},
		{testSecret + " whsec_%%%", 0, "secret 2 of 2"},
		{short, 0, "key is 16 bytes, need at least 24"},
	}
	for _, c := range cases {
		keys, err := ParseSecrets(c.in)
		if c.wantErr != "" {
			if err == nil || !strings.Contains(err.Error(), c.wantErr) {
				t.Errorf("ParseSecrets(%q) error %v, want it to contain %q", c.in, err, c.wantErr)
			}
			if err != nil && strings.Contains(err.Error(), "MfKQ9r8") {
				t.Errorf("error leaks the secret: %v", err)
			}
			continue
		}
		if err != nil || len(keys) != c.keys {
			t.Errorf("ParseSecrets(%q) = %d keys, %v; want %d keys", c.in, len(keys), err, c.keys)
		}
	}
}

func TestGenerateSecret(t *testing.T) {
	a, b := GenerateSecret(), GenerateSecret()
	if a == b {
		t.Fatal("two generated secrets are equal")
	}
	if !strings.HasPrefix(a, SecretPrefix) {
		t.Fatalf("%q lacks the whsec_ prefix", a)
	}
	keys, err := ParseSecrets(a)
	if err != nil || len(keys) != 1 || len(keys[0]) != 32 {
		t.Fatalf("ParseSecrets(GenerateSecret()) = %v, %v; want one 32-byte key", keys, err)
	}
	// Usable by the reference library as is.
	body := []byte("{}")
	h := signedHeader(t, a, "id", time.Now(), body)
	if err := refWebhook(t, a).Verify(body, h); err != nil {
		t.Fatal(err)
	}
}
