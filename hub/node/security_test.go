package node_test

import (
	"bytes"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nkeys"
	"github.com/rs/zerolog"
	"golang.org/x/crypto/bcrypt"

	"github.com/hubproject/hub/config"
	"github.com/hubproject/hub/embedded"
	"github.com/hubproject/hub/embedded/embeddedtest"
	"github.com/hubproject/hub/hub/api"
	"github.com/hubproject/hub/hub/node"
	"github.com/hubproject/hub/publisher"
	"github.com/hubproject/hub/subscribers/email/smtptest"
	"github.com/hubproject/hub/subscribers/webhook"
	"github.com/hubproject/hub/subscribers/webhook/verify"
)

// syncBuffer collects log lines from many goroutines.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// secureYAML is a hub with every kind of secret: NATS users (a password
// and a bcrypt hash), an API token, an SMTP password and a webhook secret,
// all from the environment, with TLS on both ports.
const secureYAML = `
log: {level: trace, format: json}
nats:
  listen: 127.0.0.1:0
  store_dir: ${T_STORE}
  tls: {cert_file: "${T_TLS}/server.pem", key_file: "${T_TLS}/server-key.pem"}
  auth:
    users:
      - {name: shop, role: publisher, password_env: T_NATS_PASSWORD}
      - {name: ops, role: admin, password_bcrypt_env: T_OPS_BCRYPT}
http:
  listen: 127.0.0.1:0
  tls: {cert_file: "${T_TLS}/server.pem", key_file: "${T_TLS}/server-key.pem"}
  tokens:
    - {name: shop, token_env: T_API_TOKEN, scopes: [publish, read]}
delivery:
  backoff: [20ms, 50ms]
  max_attempts: 4
  ack_wait: 5s
channels:
  webhook:
    allow_cidrs: [127.0.0.0/8]
  email:
    smtp: {host: "${T_SMTP_HOST}", port: "${T_SMTP_PORT}", tls: starttls, username: hub, password_env: T_SMTP_PASSWORD, root_ca_file: "${T_SMTP_CA}"}
    from: "hub <hub@example.com>"
subscriptions:
  - {id: hook, channel: webhook, events: ["order.>"], url: "${T_HOOK_URL}", secret_env: T_WEBHOOK_SECRET}
  - {id: mail, channel: email, events: [order.created], to: "{{ .data.email }}", subject: "Order {{ .data.id }}", text: "Thanks"}
`

// TestSecretsNeverLogged runs a whole hub with configured secrets, uses
// every path that touches them (including failed logins and a failing
// webhook), and then looks for each secret in everything it logged.
func TestSecretsNeverLogged(t *testing.T) {
	const (
		natsPassword = "nats-shop-S3cret-value"
		opsPassword  = "nats-ops-S3cret-value"
		apiToken     = "api-token-S3cret-value-0123"
		smtpPassword = "smtp-S3cret-value"
	)
	webhookSecret := webhook.GenerateSecret()
	opsHash, err := bcrypt.GenerateFromPassword([]byte(opsPassword), bcrypt.MinCost)
	if err != nil {
		t.Fatal(err)
	}
	certs := embeddedtest.NewCerts(t)
	smtpSrv := smtptest.Start(t, smtptest.Options{Username: "hub", Password: smtpPassword, StartTLS: true})

	var hookMu sync.Mutex
	verified := map[string]bool{}
	calls := 0
	receiver := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		hookMu.Lock()
		defer hookMu.Unlock()
		calls++
		if calls == 1 { // one retry, so the failure path logs too
			http.Error(w, "try later", http.StatusInternalServerError)
			return
		}
		if err := verify.Verify([]string{webhookSecret}, r.Header, body, 0); err != nil {
			http.Error(w, err.Error(), http.StatusUnauthorized)
			return
		}
		var ev struct {
			ID string `json:"id"`
		}
		_ = json.Unmarshal(body, &ev)
		verified[ev.ID] = true
	}))
	defer receiver.Close()

	for k, v := range map[string]string{
		"T_STORE": t.TempDir(), "T_TLS": certs.Dir, "T_NATS_PASSWORD": natsPassword, "T_OPS_BCRYPT": string(opsHash),
		"T_API_TOKEN": apiToken, "T_SMTP_HOST": smtpSrv.Host(), "T_SMTP_PORT": strconv.Itoa(smtpSrv.Port()),
		"T_SMTP_PASSWORD": smtpPassword, "T_SMTP_CA": smtpSrv.CAFile(), "T_HOOK_URL": receiver.URL, "T_WEBHOOK_SECRET": webhookSecret,
	} {
		t.Setenv(k, v)
	}
	cfg := node.DefaultConfig()
	if err := config.Decode([]byte(secureYAML), &cfg); err != nil {
		t.Fatal(err)
	}
	secrets := map[string]string{
		"nats password": natsPassword, "ops password": opsPassword, "ops bcrypt hash": string(opsHash),
		"api token": apiToken, "smtp password": smtpPassword, "webhook secret": webhookSecret,
		"webhook key": strings.TrimPrefix(webhookSecret, webhook.SecretPrefix),
	}
	// The config itself never prints them, however it is formatted.
	dump := fmt.Sprintf("%v\n%+v\n%#v\n%s", cfg, cfg, cfg, strings.Join(cfg.Warnings(), "\n"))
	if b, err := json.Marshal(cfg); err == nil {
		dump += string(b)
	}
	for what, s := range secrets {
		if what != "ops bcrypt hash" && strings.Contains(dump, s) {
			t.Errorf("the formatted config shows the %s", what)
		}
	}

	logs := &syncBuffer{}
	log := zerolog.New(logs).Level(zerolog.TraceLevel).With().Timestamp().Logger()
	n := node.New(cfg, node.WithLogger(log))
	ctx := ctxT(t, 60*time.Second)
	if err := n.Start(ctx); err != nil {
		t.Fatal(err)
	}
	defer stop(t, n)
	if !strings.HasPrefix(n.NATSURL(), "tls://") || !strings.HasPrefix(n.HTTPURL(), "https://") {
		t.Fatalf("URLs %s %s", n.NATSURL(), n.HTTPURL())
	}

	// NATS: the publisher over TLS with its password and private inbox; a
	// wrong password and a client without the CA are refused.
	nc, err := nats.Connect(n.NATSURL(), nats.UserInfo("shop", natsPassword), nats.RootCAs(certs.CAFile),
		nats.CustomInboxPrefix(embedded.InboxPrefix("shop")))
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	p, err := publisher.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := p.Publish(ctx, publisher.Event{Type: "order.created", ID: "o-1", Data: []byte(`{"id":"o-1","email":"ada@example.com"}`)}); err != nil {
		t.Fatal(err)
	}
	if _, err := nats.Connect(n.NATSURL(), nats.UserInfo("shop", natsPassword+"x"), nats.RootCAs(certs.CAFile), nats.MaxReconnects(0)); !errors.Is(err, nats.ErrAuthorization) {
		t.Fatalf("wrong password: %v", err)
	}
	if _, err := nats.Connect(n.NATSURL(), nats.UserInfo("shop", natsPassword), nats.MaxReconnects(0)); err == nil {
		t.Fatal("connected without the CA")
	}
	ops, err := nats.Connect(n.NATSURL(), nats.UserInfo("ops", opsPassword), nats.RootCAs(certs.CAFile))
	if err != nil {
		t.Fatal(err)
	}
	ops.Close()

	// HTTP: the token over TLS; no token and a wrong one are refused.
	client := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: certs.Pool, MinVersion: tls.VersionTLS12}}, Timeout: 10 * time.Second}
	defer client.CloseIdleConnections()
	call := func(method, path, token, body string) int {
		req, _ := http.NewRequest(method, n.HTTPURL()+path, strings.NewReader(body))
		req.Header.Set("Content-Type", "application/json")
		if token != "" {
			req.Header.Set("Authorization", "Bearer "+token)
		}
		resp, err := client.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		_, _ = io.Copy(io.Discard, resp.Body)
		_ = resp.Body.Close()
		return resp.StatusCode
	}
	ev2 := `{"type":"order.created","id":"o-2","data":{"id":"o-2","email":"bob@example.com"}}`
	for _, c := range []struct {
		method, path, token, body string
		want                      int
	}{
		{"POST", "/v1/events", apiToken, ev2, 202},
		{"POST", "/v1/events", "", ev2, 401},
		{"POST", "/v1/events", apiToken + "x", ev2, 401},
		{"GET", "/v1/dlq", apiToken, "", 200},
		{"POST", "/v1/subscriptions", apiToken, `{"id":"x","channel":"webhook","events":["a"],"url":"https://example.com"}`, 403},
		{"GET", "/healthz", "", "", 200},
	} {
		if got := call(c.method, c.path, c.token, c.body); got != c.want {
			t.Fatalf("%s %s: %d, want %d", c.method, c.path, got, c.want)
		}
	}
	plain := &http.Client{Timeout: 10 * time.Second}
	if _, err := plain.Get(n.HTTPURL() + "/healthz"); err == nil {
		t.Fatal("HTTPS without the CA succeeded")
	}
	plain.CloseIdleConnections()

	// Email with SMTP AUTH and both webhooks, signed, after one retry.
	if _, err := smtpSrv.WaitMessages(ctx, 2); err != nil {
		t.Fatal(err)
	}
	for {
		hookMu.Lock()
		done := verified["o-1"] && verified["o-2"]
		hookMu.Unlock()
		if done {
			break
		}
		select {
		case <-ctx.Done():
			t.Fatal("webhooks not delivered")
		case <-time.After(10 * time.Millisecond):
		}
	}
	if m := smtpSrv.Messages(); m[0].User != "hub" || !m[0].TLS {
		t.Fatalf("SMTP message %+v", m[0])
	}
	nc.Close()
	stop(t, n)

	out := logs.String()
	if !strings.Contains(out, "webhook") || len(out) < 1000 {
		t.Fatalf("suspiciously little was logged (%d bytes): %s", len(out), out)
	}
	t.Logf("%d bytes, %d lines of logs checked", len(out), strings.Count(out, "\n"))
	if f := os.Getenv("HUB_TEST_DUMP_LOGS"); f != "" {
		_ = os.WriteFile(f, []byte(out), 0o600)
	}
	for what, s := range secrets {
		if strings.Contains(out, s) {
			i := strings.Index(out, s)
			t.Errorf("the %s appears in the logs: ...%s...", what, out[max(0, i-200):min(len(out), i+len(s)+50)])
		}
	}
}

func TestNonLoopbackNeedsAuth(t *testing.T) {
	base := func() node.Config {
		cfg := node.DefaultConfig()
		cfg.NATS.Listen = "0.0.0.0:4222"
		cfg.HTTP.Listen = "[::]:8080"
		return cfg
	}
	cfg := base()
	err := cfg.Validate()
	for _, want := range []string{"nats.listen: \"0.0.0.0:4222\" is not a loopback address and nats.auth.users is empty",
		"add users under nats.auth.users", "http.listen: \"[::]:8080\" is not a loopback address and http.tokens is empty", "add tokens under http.tokens"} {
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("%v: want %q", err, want)
		}
	}
	cfg = base()
	cfg.NATS.Auth.Users = []node.NATSUser{{Name: "shop", Password: "pw-0123456789", Role: "publisher"}}
	cfg.HTTP.Tokens = api.Tokens{{Name: "shop", Token: "tok-0123456789abcdef", Scopes: []string{"publish"}}}
	if err := config.Check(&cfg); err != nil {
		t.Fatalf("with users and tokens: %v", err)
	}

	cfg = base()
	cfg.NATS.Listen, cfg.HTTP.Listen = "127.0.0.1:4222", "localhost:8080"
	if err := config.Check(&cfg); err != nil {
		t.Fatalf("loopback without auth: %v", err)
	}

	cfg = node.DefaultConfig()
	cfg.NATS.Embedded, cfg.NATS.URL, cfg.NATS.Listen = false, "nats://a:4222", ""
	cfg.NATS.Auth.Users = []node.NATSUser{{Name: "shop", Password: "pw-0123456789", Role: "publisher"}}
	cfg.NATS.TLS = api.TLSConfig{CertFile: "x", KeyFile: "y"}
	err = cfg.Validate()
	for _, want := range []string{"nats.auth: only for the embedded server", "nats.tls: only for the embedded server"} {
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("%v: want %q", err, want)
		}
	}
}

func TestNATSUsersConfig(t *testing.T) {
	kp, _ := nkeys.CreateUser()
	pub, _ := kp.PublicKey()
	hash, err := bcrypt.GenerateFromPassword([]byte("x"), bcrypt.MinCost)
	if err != nil {
		t.Fatal(err)
	}
	t.Setenv("T_PW", "from-the-environment")
	cfg := node.DefaultConfig()
	err = config.Decode([]byte(`
nats:
  auth:
    users:
      - {name: shop, role: publisher, password_env: T_PW, publish_prefix: events.shop}
      - {name: svc, role: responder, nkey: `+pub+`, subjects: [svc.user.>]}
      - {name: ops, role: admin, password_bcrypt: "`+string(hash)+`"}
`), &cfg)
	if err != nil {
		t.Fatal(err)
	}
	if u := cfg.NATS.Auth.Users[0]; u.Password.Value() != "from-the-environment" || u.PublishPrefix != "events.shop" {
		t.Fatalf("decoded %+v", u)
	}
	cases := map[string]string{
		"{name: a, role: admin}":                                          "nats.auth.users[0]: one of password, password_bcrypt or nkey is required",
		"{name: a, role: root, password: x}":                              "nats.auth.users[0].role: must be one of",
		"{role: admin, password: x}":                                      "nats.auth.users[0].name: required",
		"{name: a, role: admin, password: x, nkey: " + pub + "}":          "not several",
		"{name: a, role: admin, password_bcrypt: nothash}":                "not a bcrypt hash",
		"{name: a, role: admin, nkey: SUAFOO}":                            "public user key",
		"{name: a, role: admin, password: x, publish_prefix: events.a}":   "nats.auth.users[0].publish_prefix: only for role publisher",
		"{name: a, role: publisher, password: x, publish_prefix: orders}": "publish prefix",
		"{name: a, role: publisher, password: x, subjects: [svc.>]}":      "nats.auth.users[0].subjects: only for role responder",
		"{name: a.b, role: admin, password: x}":                           "name",
	}
	for item, want := range cases {
		c := node.DefaultConfig()
		err := config.Decode([]byte("nats:\n  auth:\n    users:\n      - "+item+"\n"), &c)
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("%s: %v, want %q", item, err, want)
		}
	}
	c := node.DefaultConfig()
	err = config.Decode([]byte("nats:\n  auth:\n    users:\n      - {name: a, role: admin, password: x}\n      - {name: a, role: admin, password: y}\n"), &c)
	if err == nil || !strings.Contains(err.Error(), `nats.auth.users[1].name: "a" is already used`) {
		t.Errorf("duplicate names: %v", err)
	}
}

func TestWarnings(t *testing.T) {
	cfg := node.DefaultConfig()
	if w := cfg.Warnings(); len(w) != 0 {
		t.Fatalf("the development default warns: %q", w)
	}
	cfg.NATS.Listen = "0.0.0.0:4222"
	cfg.HTTP.Listen = "0.0.0.0:8080"
	cfg.HTTP.MetricsPublic = true
	cfg.Channels.Webhook.AllowPrivateNetworks = true
	cfg.HTTP.Tokens = api.Tokens{
		{Name: "ops", Scopes: []string{"admin"}},
		{Name: "ops-limited", Scopes: []string{"admin"}, RateLimit: api.RateLimit{RPS: 5}},
		{Name: "shop", Scopes: []string{"publish"}},
	}
	w := strings.Join(cfg.Warnings(), "\n")
	for _, want := range []string{
		"nats.listen: 0.0.0.0:4222 is reachable from the network without TLS",
		"http.listen: 0.0.0.0:8080 is reachable from the network without TLS",
		"http.metrics_public",
		"channels.webhook.allow_private_networks: true on a hub reachable from the network",
		"http.tokens[0] (ops): admin scope without a rate limit",
	} {
		if !strings.Contains(w, want) {
			t.Errorf("warnings lack %q:\n%s", want, w)
		}
	}
	if strings.Contains(w, "ops-limited") || strings.Contains(w, "(shop)") {
		t.Errorf("warned about a limited or non-admin token:\n%s", w)
	}
	// allow_private_networks on a loopback-only hub is development.
	dev := node.DefaultConfig()
	dev.Channels.Webhook.AllowPrivateNetworks = true
	if w := dev.Warnings(); len(w) != 0 {
		t.Fatalf("loopback hub warns: %q", w)
	}
}

// TestHardenedConfig: configs/hardened.yaml is valid with its environment,
// warns about nothing, and runs.
func TestHardenedConfig(t *testing.T) {
	certs := embeddedtest.NewCerts(t)
	hash, err := bcrypt.GenerateFromPassword([]byte("ops-password"), bcrypt.MinCost)
	if err != nil {
		t.Fatal(err)
	}
	bcryptFile := certs.Dir + "/ops.bcrypt"
	if err := os.WriteFile(bcryptFile, append(hash, '\n'), 0o600); err != nil {
		t.Fatal(err)
	}
	for k, v := range map[string]string{
		"HUB_TLS_DIR": certs.Dir, "HUB_NATS_SHOP_PASSWORD": "shop-password", "HUB_NATS_OPS_BCRYPT_FILE": bcryptFile,
		"HUB_TOKEN_GRAFANA": "grafana-token-0123456789", "HUB_TOKEN_OPS": "ops-token-0123456789abcd",
		"CRM_SECRET": webhook.GenerateSecret(), "HUB_STORE_DIR": t.TempDir(),
	} {
		t.Setenv(k, v)
	}
	cfg, err := node.Load("../../configs/hardened.yaml")
	if err != nil {
		t.Fatal(err)
	}
	if w := cfg.Warnings(); len(w) != 0 {
		t.Fatalf("hardened config warns:\n%s", strings.Join(w, "\n"))
	}
	if cfg.NATS.Listen != "0.0.0.0:4222" || len(cfg.NATS.Auth.Users) != 3 || len(cfg.HTTP.Tokens) != 3 || !cfg.NATS.TLS.VerifyClients {
		t.Fatalf("loaded %+v", cfg.NATS)
	}
	// It runs (on random loopback ports here) and refuses what it should.
	t.Setenv("HUB_NATS_LISTEN", "127.0.0.1:0")
	t.Setenv("HUB_HTTP_LISTEN", "127.0.0.1:0")
	cfg, err = node.Load("../../configs/hardened.yaml")
	if err != nil {
		t.Fatal(err)
	}
	n := start(t, cfg)
	defer stop(t, n)
	tlsOpts := []nats.Option{nats.RootCAs(certs.CAFile), nats.ClientCert(certs.ClientCert, certs.ClientKey), nats.MaxReconnects(0)}
	if _, err := nats.Connect(n.NATSURL(), tlsOpts...); !errors.Is(err, nats.ErrAuthorization) {
		t.Fatalf("anonymous: %v", err)
	}
	nc, err := nats.Connect(n.NATSURL(), append(tlsOpts, nats.UserInfo("ops", "ops-password"))...)
	if err != nil {
		t.Fatal(err)
	}
	nc.Close()
	client := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: certs.Pool, MinVersion: tls.VersionTLS12}}, Timeout: 10 * time.Second}
	defer client.CloseIdleConnections()
	for token, want := range map[string]int{"": 401, "grafana-token-0123456789": 200} {
		req, _ := http.NewRequest(http.MethodGet, n.HTTPURL()+"/v1/dlq", nil)
		if token != "" {
			req.Header.Set("Authorization", "Bearer "+token)
		}
		resp, err := client.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		_ = resp.Body.Close()
		if resp.StatusCode != want {
			t.Fatalf("token %q: %d, want %d", token, resp.StatusCode, want)
		}
	}
}
