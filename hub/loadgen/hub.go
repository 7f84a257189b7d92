package loadgen

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"path/filepath"
	"strings"
	"time"

	"github.com/hubproject/hub/config"
	"github.com/hubproject/hub/hub"
	"github.com/hubproject/hub/hub/node"
	"github.com/hubproject/hub/subscribers/email"
	"github.com/hubproject/hub/subscribers/sms"
	"github.com/hubproject/hub/subscribers/webhook"
)

// Spec is the subscriptions of a run: how many per channel, all matching
// the run's event type and delivering to the Sinks.
type Spec struct {
	Type                  string
	Webhooks, Emails, SMS int
}

// Targets is the deliveries one event causes.
func (s Spec) Targets() int { return s.Webhooks + s.Emails + s.SMS }

// Subscriptions are the spec's subscriptions to the sinks. Email and SMS
// render "<event id> <unix ns>" as the subject and body, so the sinks can
// measure latency without parsing the message.
func (s Spec) Subscriptions(run string, sinks *Sinks, secret string) []hub.Subscription {
	typ := s.Type
	if typ == "" {
		typ = DefaultType
	}
	const idTime = "{{ .id }} {{ .time.UnixNano }}"
	var out []hub.Subscription
	for i := 0; i < s.Webhooks; i++ {
		out = append(out, hub.Subscription{ID: fmt.Sprintf("bench-%s-w%d", run, i), Channel: "webhook", Events: []string{typ},
			URL: sinks.Webhook.URL(i), Secret: config.Secret(secret)})
	}
	for i := 0; i < s.Emails; i++ {
		out = append(out, hub.Subscription{ID: fmt.Sprintf("bench-%s-e%d", run, i), Channel: "email", Events: []string{typ},
			To: SMTPRecipient(i), Subject: idTime, Text: "hub bench " + idTime})
	}
	for i := 0; i < s.SMS; i++ {
		out = append(out, hub.Subscription{ID: fmt.Sprintf("bench-%s-s%d", run, i), Channel: "sms", Events: []string{typ},
			To: SMSPhone(i), Body: idTime})
	}
	return out
}

// InProcessConfig turns base (the defaults or a config file) into the
// configuration of an in-process hub for a run: JetStream in storeDir with
// no TCP port unless natsListen is set, HTTP on a random loopback port when
// http is true, logs at error level, the spec's subscriptions added, the
// webhook SSRF guard opened for 127.0.0.0/8 so the local receiver is
// reachable, the email and SMS channels pointed at the sinks, and an
// enabled audit trail written inside storeDir.
func InProcessConfig(base node.Config, storeDir, natsListen string, http bool, spec Spec, run string, sinks *Sinks) (node.Config, error) {
	cfg := base
	cfg.NATS.Embedded, cfg.NATS.URL = true, ""
	cfg.NATS.StoreDir, cfg.NATS.Listen = storeDir, natsListen
	cfg.HTTP.Listen = ""
	if http {
		cfg.HTTP.Listen = "127.0.0.1:0"
	}
	cfg.Log.Level = "error"
	if cfg.Channels.Audit.Enabled && cfg.Channels.Audit.File != "" {
		// Bench events do not belong in the configured audit trail.
		cfg.Channels.Audit.File = filepath.Join(storeDir, "audit.log")
	}
	cfg.Channels.Webhook.AllowCIDRs = append(append([]string(nil), cfg.Channels.Webhook.AllowCIDRs...), "127.0.0.0/8")
	if sinks.SMTP != nil {
		ec := email.DefaultConfig()
		if cfg.Channels.Email != nil {
			ec = *cfg.Channels.Email
		}
		host, port := sinks.SMTP.Addr()
		ec.SMTP = email.SMTPConfig{Host: host, Port: port, TLS: email.TLSNone, Timeout: config.Duration(30 * time.Second)}
		ec.From = "hub bench <bench@bench.example>"
		cfg.Channels.Email = &ec
	}
	if sinks.SMS != nil {
		sc := sms.DefaultConfig()
		sc.Provider = sms.ProviderTwilio
		sc.Twilio.BaseURL, sc.Twilio.AccountSID = sinks.SMS.BaseURL(), "ACbench"
		sc.Twilio.AuthToken, sc.Twilio.From = config.Secret("bench"), "+15550000000"
		cfg.Channels.SMS = &sc
	}
	cfg.Subscriptions = append(append([]hub.Subscription(nil), cfg.Subscriptions...), spec.Subscriptions(run, sinks, webhook.GenerateSecret())...)
	if err := config.Check(&cfg); err != nil {
		return cfg, fmt.Errorf("in-process hub configuration:\n%w", err)
	}
	return cfg, nil
}

// CreateWebhooks creates the spec's webhook subscriptions on a running hub
// through POST /v1/subscriptions and returns their ids. The hub's SSRF
// guard must allow 127.0.0.0/8 (channels.webhook.allow_cidrs) for the
// deliveries to reach the receiver.
func CreateWebhooks(ctx context.Context, c *http.Client, base string, spec Spec, run string, sinks *Sinks) ([]string, error) {
	var ids []string
	for _, s := range spec.Subscriptions(run, sinks, webhook.GenerateSecret()) {
		if s.Channel != "webhook" {
			continue
		}
		body, _ := json.Marshal(map[string]any{"id": s.ID, "channel": "webhook", "events": s.Events, "url": s.URL, "secret": s.Secret.Value()})
		req, err := http.NewRequestWithContext(ctx, http.MethodPost, strings.TrimRight(base, "/")+"/v1/subscriptions", bytes.NewReader(body))
		if err != nil {
			return ids, err
		}
		req.Header.Set("Content-Type", "application/json")
		resp, err := c.Do(req)
		if err != nil {
			return ids, fmt.Errorf("create subscription %s: %w", s.ID, err)
		}
		b, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
		resp.Body.Close()
		if resp.StatusCode != http.StatusCreated {
			return ids, fmt.Errorf("create subscription %s: HTTP %d: %s", s.ID, resp.StatusCode, strings.TrimSpace(string(b)))
		}
		ids = append(ids, s.ID)
	}
	return ids, nil
}

// DeleteWebhooks deletes subscriptions CreateWebhooks made.
func DeleteWebhooks(ctx context.Context, c *http.Client, base string, ids []string) error {
	for _, id := range ids {
		req, err := http.NewRequestWithContext(ctx, http.MethodDelete, strings.TrimRight(base, "/")+"/v1/subscriptions/"+id, nil)
		if err != nil {
			return err
		}
		resp, err := c.Do(req)
		if err != nil {
			return fmt.Errorf("delete subscription %s: %w", id, err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusNoContent && resp.StatusCode != http.StatusNotFound {
			return fmt.Errorf("delete subscription %s: HTTP %d", id, resp.StatusCode)
		}
	}
	return nil
}
