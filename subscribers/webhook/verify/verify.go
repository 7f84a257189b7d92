// Package verify checks, on the receiving side, that a webhook request came
// from the hub: it verifies the Standard Webhooks headers (webhook-id,
// webhook-timestamp, webhook-signature) against the subscription's
// whsec_ secret. It uses the standard library only, so a receiver can
// import it without pulling in the hub.
//
// Wrap a handler:
//
//	secret := os.Getenv("HUB_WEBHOOK_SECRET") // whsec_...
//	http.Handle("/hooks", verify.Middleware([]string{secret}, 0, http.HandlerFunc(
//		func(w http.ResponseWriter, r *http.Request) {
//			// The request is authentic. Dedup on r.Header.Get("webhook-id"):
//			// a delivery may arrive more than once.
//			body, _ := io.ReadAll(r.Body) // the CloudEvent JSON
//			...
//			w.WriteHeader(http.StatusNoContent)
//		})))
//
// or call Verify with the raw body. During a secret rotation pass both the
// old and the new secret; a request is accepted when any signature matches
// any secret.
package verify

import (
	"bytes"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"time"
)

// DefaultTolerance is how far webhook-timestamp may be from the receiver's
// clock, either way, when the tolerance passed is 0.
const DefaultTolerance = 5 * time.Minute

// DefaultMaxBodyBytes is the largest body Middleware reads (1 MiB, well
// above the hub's default 256 KiB event limit).
const DefaultMaxBodyBytes = 1 << 20

// Header names.
const (
	HeaderID        = "webhook-id"
	HeaderTimestamp = "webhook-timestamp"
	HeaderSignature = "webhook-signature"
)

// Errors Verify returns, to be told apart with errors.Is.
var (
	ErrMissingHeaders   = errors.New("missing webhook-id, webhook-timestamp or webhook-signature header")
	ErrInvalidTimestamp = errors.New("webhook-timestamp is not a Unix time in seconds")
	ErrTimestampTooOld  = errors.New("webhook-timestamp too old")
	ErrTimestampTooNew  = errors.New("webhook-timestamp too far in the future")
	ErrInvalidSignature = errors.New("no webhook-signature matches")
	ErrInvalidSecret    = errors.New("invalid secret: want whsec_ followed by base64")
	ErrBodyTooLarge     = errors.New("request body too large")
)

// Verifier verifies requests against a fixed set of secrets. Make one with
// NewVerifier; it is safe for concurrent use.
type Verifier struct {
	keys      [][]byte
	tolerance time.Duration
	// MaxBodyBytes bounds the body Middleware reads (DefaultMaxBodyBytes
	// when 0). Set it before use.
	MaxBodyBytes int64
}

// NewVerifier decodes the secrets (each "whsec_<base64>", the prefix being
// optional; an entry may hold several separated by spaces). tolerance <= 0
// means DefaultTolerance.
func NewVerifier(secrets []string, tolerance time.Duration) (*Verifier, error) {
	v := &Verifier{tolerance: tolerance}
	if v.tolerance <= 0 {
		v.tolerance = DefaultTolerance
	}
	for _, s := range secrets {
		for _, f := range strings.Fields(s) {
			key, err := base64.StdEncoding.DecodeString(strings.TrimPrefix(f, "whsec_"))
			if err != nil || len(key) == 0 {
				return nil, ErrInvalidSecret
			}
			v.keys = append(v.keys, key)
		}
	}
	if len(v.keys) == 0 {
		return nil, fmt.Errorf("%w: no secret given", ErrInvalidSecret)
	}
	return v, nil
}

// Verify checks one request's headers and raw body. See the package
// function Verify.
func (v *Verifier) Verify(header http.Header, body []byte) error {
	return v.verifyAt(header, body, time.Now())
}

func (v *Verifier) verifyAt(header http.Header, body []byte, now time.Time) error {
	id := header.Get(HeaderID)
	tsText := header.Get(HeaderTimestamp)
	sigs := header.Get(HeaderSignature)
	if id == "" || tsText == "" || sigs == "" {
		return ErrMissingHeaders
	}
	ts, err := strconv.ParseInt(tsText, 10, 64)
	if err != nil {
		return ErrInvalidTimestamp
	}
	// Compare in seconds against now±tolerance, which cannot overflow
	// (tolerance in seconds is at most ~2^33), whatever ts is.
	tol := int64(v.tolerance / time.Second)
	switch unix := now.Unix(); {
	case ts < unix-tol:
		return ErrTimestampTooOld
	case ts > unix+tol:
		return ErrTimestampTooNew
	}

	expected := make([][]byte, len(v.keys))
	for i, key := range v.keys {
		mac := hmac.New(sha256.New, key)
		mac.Write([]byte(id))
		mac.Write([]byte{'.'})
		mac.Write([]byte(tsText))
		mac.Write([]byte{'.'})
		mac.Write(body)
		expected[i] = mac.Sum(nil)
	}
	for _, vs := range strings.Fields(sigs) {
		version, sig, ok := strings.Cut(vs, ",")
		if !ok || version != "v1" {
			continue // other schemes (v1a: asymmetric) are not ours to check
		}
		got, err := base64.StdEncoding.DecodeString(sig)
		if err != nil {
			continue
		}
		for _, want := range expected {
			if hmac.Equal(got, want) {
				return nil
			}
		}
	}
	return ErrInvalidSignature
}

// Verify checks that a webhook request is authentic: webhook-id,
// webhook-timestamp and webhook-signature are present, the timestamp is
// within ±tolerance of now (tolerance <= 0: DefaultTolerance), and a "v1,"
// signature in webhook-signature is the HMAC-SHA256 of
// "<id>.<timestamp>.<body>" under one of the secrets. body must be the raw
// bytes received, before any JSON decoding. The error is one of the Err
// values of this package.
func Verify(secrets []string, header http.Header, body []byte, tolerance time.Duration) error {
	v, err := NewVerifier(secrets, tolerance)
	if err != nil {
		return err
	}
	return v.Verify(header, body)
}

// Middleware verifies each request before passing it to next: it reads the
// body (at most MaxBodyBytes; 413 beyond), answers 401 with the reason when
// verification fails, and otherwise hands next the request with its body
// restored.
func (v *Verifier) Middleware(next http.Handler) http.Handler {
	limit := v.MaxBodyBytes
	if limit <= 0 {
		limit = DefaultMaxBodyBytes
	}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, limit))
		if err != nil {
			var tooLarge *http.MaxBytesError
			if errors.As(err, &tooLarge) {
				http.Error(w, ErrBodyTooLarge.Error(), http.StatusRequestEntityTooLarge)
				return
			}
			http.Error(w, "cannot read request body", http.StatusBadRequest)
			return
		}
		if err := v.Verify(r.Header, body); err != nil {
			http.Error(w, "webhook verification failed: "+err.Error(), http.StatusUnauthorized)
			return
		}
		r.Body = io.NopCloser(bytes.NewReader(body))
		r.ContentLength = int64(len(body))
		next.ServeHTTP(w, r)
	})
}

// Middleware is NewVerifier(secrets, tolerance).Middleware(next). It panics
// when a secret is invalid, as http.Handle does for an invalid pattern: that
// is a setup error, found at start-up rather than on the first request.
func Middleware(secrets []string, tolerance time.Duration, next http.Handler) http.Handler {
	v, err := NewVerifier(secrets, tolerance)
	if err != nil {
		panic("verify.Middleware: " + err.Error())
	}
	return v.Middleware(next)
}
