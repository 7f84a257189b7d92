package main

import (
	"encoding/json"
	"strings"
	"testing"
)

// TestClientCommandsAuthenticate: with NATS users configured, the CLI
// publishes as a publisher user (password from the environment, private
// inbox) and reads the DLQ as an admin; anonymous use is refused.
func TestClientCommandsAuthenticate(t *testing.T) {
	t.Setenv("HUB_TEST_APP_PW", "app-password-123")
	t.Setenv("HUB_TEST_OPS_PW", "ops-password-456")
	p := startHub(t, writeConfig(t, baseConfig(t.TempDir())+`
  auth:
    users:
      - {name: app, role: publisher, publish_prefix: events.shop, password_env: HUB_TEST_APP_PW}
      - {name: ops, role: admin, password_env: HUB_TEST_OPS_PW}
`))
	defer p.stop(t)
	if _, errOut, code := runHub(t, "publish", "-server", p.natsURL, "-type", "shop.order"); code == 0 {
		t.Fatalf("anonymous publish succeeded: %s", errOut)
	}
	t.Setenv("HUB_NATS_PASSWORD", "app-password-123")
	out, errOut, code := runHub(t, "publish", "-server", p.natsURL, "-user", "app", "-type", "shop.order", "-id", "a1")
	var a ack
	if code != 0 || json.Unmarshal([]byte(out), &a) != nil || a.ID != "a1" {
		t.Fatalf("publish as app: exit %d %s %s", code, out, errOut)
	}
	if _, _, code := runHub(t, "publish", "-server", p.natsURL, "-user", "app", "-type", "billing.paid", "-timeout", "2s"); code == 0 {
		t.Fatal("publisher published outside its prefix")
	}
	if _, _, code := runHub(t, "dlq", "list", "-server", p.natsURL, "-user", "app"); code == 0 {
		t.Fatal("publisher read the DLQ")
	}
	out, errOut, code = runHub(t, "dlq", "list", "-server", p.natsURL, "-user", "ops", "-password", "ops-password-456")
	if code != 0 || !strings.Contains(out, "0 dead letter(s)") {
		t.Fatalf("dlq list as ops: exit %d %s %s", code, out, errOut)
	}
}
