package webhook

import (
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"
)

// Standard Webhooks header names.
const (
	HeaderID        = "webhook-id"
	HeaderTimestamp = "webhook-timestamp"
	HeaderSignature = "webhook-signature"
)

// SecretPrefix starts a Standard Webhooks secret: whsec_<base64 key>.
const SecretPrefix = "whsec_"

// MinSecretBytes is the shortest key ParseSecrets accepts: the Standard
// Webhooks spec asks for 24 to 64 bytes, and a shorter HMAC key is weak.
const MinSecretBytes = 24

// secretBytes is the key size GenerateSecret makes.
const secretBytes = 32

// GenerateSecret returns a new random secret, whsec_ followed by 32 random
// bytes in base64.
func GenerateSecret() string {
	b := make([]byte, secretBytes)
	// crypto/rand.Read never returns an error (it panics if the system's
	// randomness fails, which nothing could recover from anyway).
	_, _ = rand.Read(b)
	return SecretPrefix + base64.StdEncoding.EncodeToString(b)
}

// ErrNoSecret is returned by ParseSecrets (and Sign) for an empty secret.
var ErrNoSecret = errors.New("no secret: a webhook subscription needs a whsec_ secret")

// ParseSecrets decodes a subscription secret: one or more space-separated
// secrets, each base64 with an optional whsec_ prefix, as the Standard
// Webhooks reference libraries read them. During a rotation there are two,
// and each request carries a signature for each. Errors never contain the
// secret.
func ParseSecrets(s string) ([][]byte, error) {
	fields := strings.Fields(s)
	if len(fields) == 0 {
		return nil, ErrNoSecret
	}
	keys := make([][]byte, 0, len(fields))
	for i, f := range fields {
		key, err := base64.StdEncoding.DecodeString(strings.TrimPrefix(f, SecretPrefix))
		if err != nil {
			return nil, fmt.Errorf("secret %d of %d: not whsec_ followed by base64", i+1, len(fields))
		}
		if len(key) < MinSecretBytes {
			return nil, fmt.Errorf("secret %d of %d: key is %d bytes, need at least %d", i+1, len(fields), len(key), MinSecretBytes)
		}
		keys = append(keys, key)
	}
	return keys, nil
}

// Sign returns the webhook-signature header value for one request: a
// "v1,<base64 HMAC-SHA256 of id.timestamp.body>" per secret, space
// separated. secret is as in ParseSecrets.
func Sign(secret, id string, ts time.Time, body []byte) (string, error) {
	keys, err := ParseSecrets(secret)
	if err != nil {
		return "", err
	}
	return signKeys(keys, id, ts.Unix(), body), nil
}

// signKeys is Sign with the secrets already parsed.
func signKeys(keys [][]byte, id string, unix int64, body []byte) string {
	// The signed content is "<id>.<timestamp>.<body>"; the prefix is the
	// same for every key.
	prefix := make([]byte, 0, len(id)+24)
	prefix = append(prefix, id...)
	prefix = append(prefix, '.')
	prefix = strconv.AppendInt(prefix, unix, 10)
	prefix = append(prefix, '.')

	enc := base64.StdEncoding
	out := make([]byte, 0, len(keys)*(4+enc.EncodedLen(sha256.Size)))
	var sum [sha256.Size]byte
	for i, key := range keys {
		mac := hmac.New(sha256.New, key)
		mac.Write(prefix)
		mac.Write(body)
		if i > 0 {
			out = append(out, ' ')
		}
		out = append(out, "v1,"...)
		out = enc.AppendEncode(out, mac.Sum(sum[:0]))
	}
	return string(out)
}
